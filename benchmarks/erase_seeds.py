"""How much of an attack's leak is the erase's own seed: erase variants, each at several erase seeds.

    python benchmarks/erase_seeds.py --concept square --variants default name-handle --erase-seeds 0 1 2

One erase of a concept leaves a misspelling leak that one run of the evaluation suite measures as, say, 9 of 80
images, most from one prompt; another erase seed (other shots, batches and noise) may leave it at 4. Comparing two
erase settings on one seed each then compares two draws. This runs each variant (erase_efficacy.py's `VARIANTS`)
at every `--erase-seeds` seed and samples, for every resulting encoder, the evaluation suite's prompts of one
attack family (`eval.attacks.attack_prompts`) and the concept's own suite prompts, at sampling seeds 200 and up
(the suite and its benchmarks sample seeds 0-59, so this never re-draws their images). Each image is read by the
TinyWorld detector on the concept's category head, as `eval` reads it. Reports, per variant, each seed's hit rate
and the pooled one with a Wilson interval over all of the variant's images, and each erase's steps, stop rule and
anchor-gap checks (step, gap). Writes benchmarks/results/erase_seeds.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from t2v_unlearn.encoders.erase import EraseConfig, erase_concept
from t2v_unlearn.eval.attacks import PROMPT_ATTACKS, attack_prompts
from t2v_unlearn.eval.detector import load_detector
from t2v_unlearn.eval.metrics import wilson_bounds
from t2v_unlearn.eval.suites import load_suite
from t2v_unlearn.pipelines import load_pipeline
from t2v_unlearn.pipelines.generate import generate_images, sampler
from t2v_unlearn.tinyworld.classifier import NONE
from t2v_unlearn.tinyworld.taxonomy import load_taxonomy

sys.path.insert(0, str(Path(__file__).resolve().parent))
from erase_efficacy import VARIANTS  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
FIRST_SEED = 200  # sampling seeds from here: the suite and its benchmarks use 0-59


def pooled(hits: list[int], n: list[int]) -> dict:
    """Hits over images pooled across erase seeds, with the Wilson interval of the pooled count."""
    total, count = int(sum(hits)), int(sum(n))
    value = total / count if count else 0.0
    low, high = wilson_bounds(value, count)
    return {"value": round(value, 4), "low": round(low, 4), "high": round(high, 4), "hits": total, "n": count}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concept", default="square")
    parser.add_argument("--variants", nargs="+", default=["default", "name-handle"], choices=list(VARIANTS))
    parser.add_argument("--erase-seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--attack", default="misspellings", choices=PROMPT_ATTACKS)
    parser.add_argument("--samples", type=int, default=12, help="sampling seeds per prompt")
    parser.add_argument("--steps", type=int, default=12, help="DPM-Solver++ steps (the eval sampler's default)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "erase_seeds.json"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    taxonomy = load_taxonomy()
    category = taxonomy.get(args.concept).category
    labels = [*taxonomy.names(category), NONE]
    suite_concept = load_suite("tinyworld").concepts[args.concept]
    families = {"concept": list(suite_concept.prompts)[:4], args.attack: attack_prompts(suite_concept, args.attack)}
    seeds = list(range(FIRST_SEED, FIRST_SEED + args.samples))
    pipe = load_pipeline("image", progress=False)
    detector = load_detector("tinyworld")
    original = pipe.text_encoder

    def hits(prompts: list[str]) -> np.ndarray:
        """(prompts, seeds) booleans: the image read as the concept."""
        with sampler(pipe, "dpm-solver"):
            images = generate_images(pipe, [p for p in prompts for _ in seeds], seeds * len(prompts), args.steps)
        read = np.asarray(labels)[detector.probabilities(images, labels).argmax(-1)]
        return (read == args.concept).reshape(len(prompts), len(seeds))

    results = {}
    for variant in args.variants:
        runs = []
        for seed in args.erase_seeds:
            config = EraseConfig(**{**VARIANTS[variant], "seed": seed})
            start = time.perf_counter()
            result = erase_concept(pipe, [args.concept], config, progress=False)
            erase_seconds = time.perf_counter() - start
            pipe.text_encoder = result.text_encoder
            try:
                gaps = [[h["step"], round(h["gap_ratio"], 4)] for h in result.history if "gap_ratio" in h]
                run = {"erase_seed": seed, "steps": result.steps, "stopped_by": result.stopped_by,
                       "erase_seconds": round(erase_seconds, 1), "gaps": gaps}  # fmt: skip
                for family, prompts in families.items():
                    found = hits(prompts)
                    by_prompt = {p: int(h.sum()) for p, h in zip(prompts, found, strict=True)}
                    run[family] = {"hits": int(found.sum()), "n": int(found.size), "by_prompt": by_prompt}
            finally:
                pipe.text_encoder = original
            runs.append(run)
            print(f"{variant:12s} seed {seed}: {result.steps} steps ({result.stopped_by}), "
                  + ", ".join(f"{f} {run[f]['hits']}/{run[f]['n']}" for f in families), flush=True)  # fmt: skip
        results[variant] = {
            "config": VARIANTS[variant],
            "runs": runs,
            **{f: pooled([r[f]["hits"] for r in runs], [r[f]["n"] for r in runs]) for f in families},
        }
        print(f"{variant:12s} pooled: " + ", ".join(
            f"{f} {results[variant][f]['value']:.3f} [{results[variant][f]['low']:.3f}, "
            f"{results[variant][f]['high']:.3f}]" for f in families), flush=True)  # fmt: skip
    record = {
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
        "command": "python benchmarks/erase_seeds.py " + " ".join(sys.argv[1:]),
        "concept": args.concept,
        "prompts": families,
        "sampling": {"sampler": "dpm-solver", "steps": args.steps, "seeds": seeds},
        "results": results,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
