"""Does the stop rule track forgetting? Hit rate on the development split against the rule's statistic, step by step.

    python benchmarks/stop_rule.py [--concepts zorbo striped star] [--steps 0 5 10 15 20 30 40] [--lr 2e-4]

For each concept (one per category): erase with the rule switched off for the largest step count once, recording
the rule's statistics at every step (the trajectory does not depend on when a rule would stop it: every draw comes
from one seeded generator), and erase again with a fixed step count for each checkpoint in --steps, whose images
of the development-split prompts (benchmarks/erase_dev.py; never the evaluation suite's) the TinyWorld detector
scores. Then it says at which step the default rule fires and what the hit rate is there. Writes
benchmarks/results/stop_rule.json.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import numpy as np
import torch
from erase_dev import dev_prompts

from t2v_unlearn.encoders import EraseConfig, erase_concept
from t2v_unlearn.eval.detector import load_detector
from t2v_unlearn.eval.metrics import wilson_bounds
from t2v_unlearn.pipelines import load_pipeline
from t2v_unlearn.pipelines.generate import SAMPLERS, generate_images, sampler
from t2v_unlearn.tinyworld.classifier import NONE
from t2v_unlearn.tinyworld.taxonomy import load_taxonomy

ROOT = Path(__file__).resolve().parent.parent


def hit_rate(pipe, detector, concept: str, category: str, prompts: int, seeds: list[int], text_encoder=None,
             solver: str = "pipeline", steps: int = 25) -> dict:  # fmt: skip
    texts = dev_prompts(concept, category, prompts)
    original = pipe.text_encoder
    if text_encoder is not None:
        pipe.text_encoder = text_encoder
    try:
        with sampler(pipe, solver):
            images = generate_images(pipe, [t for t in texts for _ in seeds], seeds * len(texts), steps)
    finally:
        pipe.text_encoder = original
    labels = [*load_taxonomy().names(category), NONE]
    hits = np.asarray(labels)[detector.probabilities(images, labels).argmax(-1)] == concept
    low, high = wilson_bounds(float(hits.mean()), hits.size)
    return {"value": float(hits.mean()), "low": low, "high": high, "n": int(hits.size)}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concepts", nargs="+", default=["zorbo", "striped", "star"])
    parser.add_argument("--steps", nargs="+", type=int, default=[0, 5, 10, 15, 20, 30, 40])
    parser.add_argument("--lr", type=float, default=EraseConfig().lr)
    parser.add_argument("--gap-ratio", type=float, default=None, help="the rule's threshold (default: by category)")
    parser.add_argument("--max-steps", type=int, default=EraseConfig().max_steps, help="the rule's cap on steps")
    parser.add_argument("--sampler", default="pipeline", choices=SAMPLERS, help="the scored samples' sampler")
    parser.add_argument("--sample-steps", type=int, default=25, help="the scored samples' denoising steps")
    parser.add_argument("--prompts", type=int, default=6)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--detector", default="tinyworld")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "stop_rule.json"))
    args = parser.parse_args()

    taxonomy = load_taxonomy()
    pipe = load_pipeline("image", progress=False)
    detector = load_detector(args.detector)
    seeds = [100 + s for s in range(args.seeds)]
    default = EraseConfig(lr=args.lr, gap_ratio=args.gap_ratio, max_steps=args.max_steps)
    scoring = {"solver": args.sampler, "steps": args.sample_steps}
    results = {}
    for concept in args.concepts:
        category = taxonomy.get(concept).category
        longest = max(args.steps)
        # the rule's statistic at every step, never firing (the check set has its own noise: the same trajectory)
        watch = EraseConfig(lr=args.lr, stop_rule="anchor-gap", gap_ratio=0.0, check_every=1, max_steps=longest)
        full = erase_concept(pipe, [concept], watch, progress=False)
        rule = erase_concept(pipe, [concept], default, progress=False, shots=full.shots)
        trace = []
        for steps in args.steps:
            encoder = None
            if steps > 0:
                encoder = erase_concept(pipe, [concept], EraseConfig(lr=args.lr, stop_rule="max-steps",
                                                                     max_steps=steps), progress=False,
                                        shots=full.shots).text_encoder  # fmt: skip
            record = full.history[steps - 1] if steps > 0 else {"distance_ratio": 1.0, "text_ratio": 1.0,
                                                                "gap_ratio": 1.0}  # fmt: skip
            rate = hit_rate(pipe, detector, concept, category, args.prompts, seeds, encoder, **scoring)
            entry = {"steps": steps, "hit_rate": rate, "distance_ratio": record.get("distance_ratio"),
                     "text_ratio": record.get("text_ratio"), "gap_ratio": record.get("gap_ratio")}  # fmt: skip
            trace.append(entry)
            print(f"{concept:8s} step {steps:3d}: hit rate {entry['hit_rate']['value']:.2f} "
                  f"[{entry['hit_rate']['low']:.2f}, {entry['hit_rate']['high']:.2f}]  distance ratio "
                  f"{entry['distance_ratio']:.3f}  gap ratio {entry['gap_ratio']:.3f}", flush=True)  # fmt: skip
        fired = {
            "steps": rule.steps,
            "stopped_by": rule.stopped_by,
            "hit_rate": hit_rate(pipe, detector, concept, category, args.prompts, seeds, rule.text_encoder, **scoring),
        }
        print(f"{concept:8s} the default rule fired at step {rule.steps} ({rule.stopped_by}): hit rate "
              f"{fired['hit_rate']['value']:.2f} [{fired['hit_rate']['low']:.2f}, {fired['hit_rate']['high']:.2f}]",
              flush=True)  # fmt: skip
        results[concept] = {
            "category": category,
            "trace": trace,
            "fired": fired,
            "history": [{k: v for k, v in h.items() if k != "step"} for h in full.history],
        }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    summary = {
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
        "command": "python benchmarks/stop_rule.py " + " ".join(
            f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
            for k, v in vars(args).items() if k != "out"),
        "rule": {"stop_rule": default.stop_rule, "gap_ratio": default.gap_ratio or "by category", "lr": args.lr,
                 "max_steps": default.max_steps},
        "results": results,
    }  # fmt: skip
    out.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
