"""Which concept of a category makes the best anchor: what the unerased models draw for each candidate's prompts.

    python benchmarks/anchor_choice.py [--category object] [--prompts 6] [--seeds 4] [--kinds image video]

Under the anchor objective an erased concept's prompts come to draw what the anchor's prompts draw, so whatever the
models draw for the anchor is the floor of what is left of an erased concept. For each candidate (every concept
of the category), the development split's prompts (benchmarks/erase_dev.py's templates, never the evaluation
suite's) go through the original image and video pipelines (the eval sampler: DPM-Solver++ at 12 steps, 8 frames)
and every image and frame is classified on the category's head, as `eval` scores them. Reports per candidate and
kind its own hit rate and its confusion row: the share of images or frames read as each other concept of the
category, the rate at which that concept would still show after being erased toward this anchor. The worst
confusion (`max_other`) is what a default anchor has to keep low for every concept it may serve. Writes
benchmarks/results/anchor_choice.json.
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

from t2v_unlearn.eval.detector import load_detector
from t2v_unlearn.eval.metrics import wilson_bounds
from t2v_unlearn.pipelines import load_pipeline
from t2v_unlearn.pipelines.generate import generate_images, generate_videos, sampler
from t2v_unlearn.tinyworld.classifier import NONE
from t2v_unlearn.tinyworld.taxonomy import load_taxonomy

sys.path.insert(0, str(Path(__file__).resolve().parent))
from erase_dev import dev_prompts  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def confusion(detector, frames: np.ndarray, labels: list[str], clusters: int) -> dict:
    """The share of `frames` read as each label, with Wilson intervals whose n is `clusters` (videos or images): the
    frames of one video are not independent."""
    read = np.asarray(labels)[detector.probabilities(frames, labels).argmax(-1)]
    out = {}
    for label in labels:
        share = float((read == label).mean())
        low, high = wilson_bounds(share, clusters)
        out[label] = {"value": round(share, 4), "low": round(low, 4), "high": round(high, 4), "n": clusters}
    return out


def worst_other(row: dict, name: str) -> dict:
    """The other concept `name`'s samples are most often read as (`concept` None when none is read at all)."""
    others = {k: v for k, v in row.items() if k not in (name, NONE)}
    worst = max(others, key=lambda k: others[k]["value"])
    return {"concept": worst if others[worst]["value"] > 0 else None, **others[worst]}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--category", default="object", choices=["object", "style", "id"])
    parser.add_argument("--candidates", nargs="+", help="default: every concept of the category")
    parser.add_argument("--prompts", type=int, default=6)
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=12, help="DPM-Solver++ steps (the eval default)")
    parser.add_argument("--kinds", nargs="+", default=["image", "video"], choices=["image", "video"])
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "anchor_choice.json"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    taxonomy = load_taxonomy()
    names = taxonomy.names(args.category)
    candidates = args.candidates or names
    labels = [*names, NONE]
    detector = load_detector("tinyworld")
    seeds = list(range(args.seeds))
    results = {}
    for kind in args.kinds:
        pipe = load_pipeline(kind, progress=False)
        for name in candidates:
            prompts = dev_prompts(name, args.category, args.prompts)
            all_prompts, all_seeds = [p for p in prompts for _ in seeds], seeds * len(prompts)
            start = time.perf_counter()
            with sampler(pipe, "dpm-solver"):
                if kind == "video":
                    samples = generate_videos(pipe, all_prompts, all_seeds, args.steps)
                    frames = samples.reshape(-1, *samples.shape[2:])
                else:
                    frames = generate_images(pipe, all_prompts, all_seeds, args.steps)
            row = confusion(detector, frames, labels, len(all_prompts))
            worst = worst_other(row, name)
            results.setdefault(name, {})[kind] = {
                "own": row[name], "max_other": worst, "confusion": row,
                "samples": len(all_prompts), "seconds": round(time.perf_counter() - start, 1)}  # fmt: skip
            print(f"{kind:5s} {name:10s} own {row[name]['value']:.3f}  worst other {worst['concept']} "
                  f"{worst['value']:.3f}", flush=True)  # fmt: skip
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {"machine": f"{platform.machine()}, {torch.get_num_threads()} threads", "category": args.category,
              "prompts": args.prompts, "seeds": args.seeds, "sampling": {"sampler": "dpm-solver", "steps": args.steps},
              "results": results}  # fmt: skip
    out.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
