"""Do erase's own shots show the concept? The detector on the shots `erase` generates, by solver steps.

    python benchmarks/shot_quality.py [--steps 12 8 6] [--seeds 0 1 2] [--out benchmarks/results/shot_quality.json]

For every TinyWorld concept, each erase seed and each number of solver steps, `generate_shots` draws the shots
exactly as `erase` does (`EraseConfig(shot_steps=S, seed=seed)`: its prompts, seeds, sampler and guidance), and the
TinyWorld detector reads each with the head and label set of the concept's category (every name, and "none").
Prints and writes, per step count, the shots that show their concept by category (hits, n and a Wilson interval),
and the time the shots took. Fewer steps make the erase faster (the shots are 12 UNet calls of 8 rows at the
default); this says what they cost in shots that show the concept.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from t2v_unlearn.encoders.erase import EraseConfig, generate_shots
from t2v_unlearn.encoders.prompts import resolve_concepts
from t2v_unlearn.eval.detector import load_detector
from t2v_unlearn.eval.metrics import wilson_interval
from t2v_unlearn.pipelines import load_pipeline
from t2v_unlearn.tinyworld.classifier import NONE
from t2v_unlearn.tinyworld.taxonomy import load_taxonomy

ROOT = Path(__file__).resolve().parent.parent


def shot_hits(pipe, detector, steps: int, seeds: list[int], concepts: list[str] | None = None) -> dict:
    """Per category, whether each shot `erase` would draw at `steps` solver steps (every erase seed, every concept
    of `concepts`, default the whole world) shows its concept by the detector."""
    taxonomy = load_taxonomy()
    hits: dict[str, list[bool]] = {}
    for seed in seeds:
        for concept in [taxonomy.get(name) for name in concepts] if concepts else taxonomy.concepts:
            spec = resolve_concepts([concept.name], None, "tinyworld")[0]
            shots = generate_shots(pipe, spec, EraseConfig(shot_steps=steps, seed=seed))
            labels = [*taxonomy.names(concept.category), NONE]
            said = np.asarray(labels)[detector.probabilities(shots, labels).argmax(-1)]
            hits.setdefault(concept.category, []).extend((said == concept.name).tolist())
    return hits


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", nargs="+", type=int, default=[12, 8, 6])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="erase seeds (EraseConfig.seed)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "shot_quality.json"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    pipe = load_pipeline("image", progress=False)
    detector = load_detector("tinyworld")
    results = {}
    for steps in args.steps:
        start = time.perf_counter()
        hits = shot_hits(pipe, detector, steps, args.seeds)
        results[str(steps)] = {
            "seconds": round(time.perf_counter() - start, 1),
            "by_category": {category: wilson_interval(sum(h), len(h)) for category, h in hits.items()},
        }
        shown = ", ".join(f"{c} {sum(h)}/{len(h)}" for c, h in hits.items())
        print(f"{steps:3d} solver steps: shots showing their concept: {shown}", flush=True)
    summary = {
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, Python {platform.python_version()}",
        "command": "python benchmarks/shot_quality.py " + " ".join(
            [f"--steps {' '.join(map(str, args.steps))}", f"--seeds {' '.join(map(str, args.seeds))}"]
        ),
        "shots_per_concept_and_seed": EraseConfig().num_shots,
        "results": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
