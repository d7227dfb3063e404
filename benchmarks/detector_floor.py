"""Each concept's false-hit floor under one or more detectors, on the same saved samples of the original model.

    python benchmarks/detector_floor.py --samples runs/eff-a/samples-dpm-solver-12 --targets striped square [--full] \
        --detector tinyworld runs/cls-lumpy/classifier/final [--out benchmarks/results/detector_floor.json]

The floor (docs/METHOD.md; the instrument issue's target: at most 3% per concept) is how often the detector says a
concept on the original model's images whose prompts exclude it (`Suite.excludes`): what `t2v-unlearn eval` writes
under `image.floor`. Beside it, the earlier definition: on every other concept's images, open prompts included
("something in solid style" may be drawn on a square).

This re-reads the image samples an evaluation left in its work folder (`erase_efficacy.py`'s
`samples-SAMPLER-STEPS`, or an `eval --work` folder) and scores them with each detector given, so that a detector
is compared with another on the very same images. Nothing is generated: every sample of the plan must be there
(`--seeds` of them per prompt of the `--quick` plan of `--targets`, or of the full plan with `--full`). The output
also lists, per concept and detector, the prompts whose images were read as the concept, so that a person can look
at them.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import numpy as np
import torch

from t2v_unlearn.eval import metrics as M
from t2v_unlearn.eval.detector import load_detector
from t2v_unlearn.eval.evaluate import false_hit_floors, score_frames
from t2v_unlearn.eval.runner import ORIGINAL, load_sample, make_rows
from t2v_unlearn.eval.suites import load_suite

ROOT = Path(__file__).resolve().parent.parent


def floors(samples: Path, suite_name: str, detectors: list[str], seeds: int, model: str, full: bool,
           targets: list[str]) -> dict:  # fmt: skip
    suite = load_suite(suite_name)
    prompts = {}  # the evaluation's plan: each target's concepts and prompts, as `eval --concept` drew them
    for target in targets:
        prompts |= suite.plan([target], quick=not full, kind="image")[1]
    concepts = list(prompts)
    rows = make_rows("image", model, {ORIGINAL: None}, prompts, list(range(seeds)))
    missing = [row for row in rows if not row.path(samples).is_file()]
    if missing:
        raise SystemExit(f"{len(missing)} of {len(rows)} samples are missing under {samples} (first: "
                         f"{missing[0].path(samples)}); pass the work folder of an evaluation of --targets with "
                         f"--seeds {seeds}")  # fmt: skip
    images = {row: load_sample(row, samples) for row in rows}
    out = {}
    for name in detectors:
        detector = load_detector(name)
        result = false_hit_floors(rows, samples, detector, suite, concepts)  # what `eval` writes: excluding prompts
        every_other, read_as = {}, {}
        for concept in concepts:  # the earlier definition (every other concept's images), and which prompts hit
            entry = suite.concepts[concept]
            others = [row for row in rows if row.concept != concept]
            hits, _ = score_frames(detector, entry, suite.detector_templates[entry.category],
                                   [images[row] for row in others])  # fmt: skip
            every_other[concept] = M.false_hit_floor(np.array([M.video_frame_rate(h) for h in hits]))
            counts = {}
            for row, hit in zip(others, hits, strict=True):
                if hit.any():
                    key = f"{row.prompt} ({'counted' if suite.excludes(row.prompt, row.concept, concept) else 'open'})"
                    counts[key] = counts.get(key, 0) + 1
            read_as[concept] = dict(sorted(counts.items(), key=lambda kv: -kv[1]))
        out[name] = {"floor": result, "floor_every_other_image": every_other, "read_as_the_concept": read_as}
        for label, table in (("floor", result), ("on every other image", every_other)):
            worst = max(table, key=lambda c: table[c]["value"])
            print(f"{name}, {label}: " + ", ".join(f"{c} {e['value']:.3f} (n {e['n']})" for c, e in table.items())
                  + f"; highest {worst} {table[worst]['value']:.3f} [{table[worst]['low']:.3f}, "
                    f"{table[worst]['high']:.3f}]")  # fmt: skip
    plan = ("full" if full else "quick") + f", {seeds} seeds"
    return {"samples": str(samples), "targets": targets, "concepts": concepts, "images": len(rows), "plan": plan,
            "suite": suite_name, "detectors": out}  # fmt: skip


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", required=True, help="an evaluation's work folder holding samples/image/original")
    parser.add_argument("--detector", nargs="+", default=["tinyworld"], help="detectors to compare (names or folders)")
    parser.add_argument("--seeds", type=int, default=20, help="seeds per prompt the evaluation sampled")
    parser.add_argument("--targets", nargs="+", required=True, help="the concepts the evaluation erased (its plan)")
    parser.add_argument("--full", action="store_true",
                        help="the suite's full plan (default: the --quick plan's prompts)")  # fmt: skip
    parser.add_argument("--suite", default="tinyworld")
    parser.add_argument("--model", default="tinyworld", help="the model the samples came from (as the rows name it)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "detector_floor.json"))
    args = parser.parse_args()
    result = floors(Path(args.samples), args.suite, args.detector, args.seeds, args.model, args.full, args.targets)
    result["machine"] = f"{platform.machine()}, {torch.get_num_threads()} threads"
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
