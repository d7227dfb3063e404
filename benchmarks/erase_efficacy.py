"""Does erasing work on TinyWorld? One concept per category, default vs previous default, images and videos.

    python benchmarks/erase_efficacy.py [--concepts zorbo star striped] [--variants default previous-default] [--full]

For each concept and variant (`default`: today's EraseConfig; `previous-default`: gradient ascent with the
loss-ratio rule and no synonym/misspelling prompts, as before the anchor objective; `plain`: no preservation
term; `lora`), `erase_concept`, then `evaluate` (the frame-level M-Score of t2v_unlearn.eval) on images and
videos with the TinyWorld suite (--quick plan unless --full) and the prompt attacks (synonyms, misspellings,
paraphrases). All runs share one generation folder, so the original model's samples are generated once.
Prints a table and writes benchmarks/results/erase_efficacy.json. Targets (issue "Erasure that holds"):
concept prompts under 5% of images and video frames, attack prompts under 10%, retention at least 95% (same
category 90%).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from t2v_unlearn.encoders import EraseConfig, erase_concept, save_checkpoint
from t2v_unlearn.eval.evaluate import EvalConfig, evaluate
from t2v_unlearn.pipelines import load_pipeline

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = {
    "default": {},
    "previous-default": {"objective": "ascent", "variants": False, "shot_sampler": "pipeline", "shot_steps": 25},
    "plain": {"preserve_weight": 0.0},
    "lora": {"trainable": "lora"},
    "robust": {"robust": True},
    "robust-radius4": {"robust": True, "robust_radius": 4.0},  # the inner attack reaching 4 token lengths, not 1
    "no-contexts": {"contexts": False},  # without the concept beside other things
    "gap0.2": {"gap_ratio": 0.2},  # the threshold for styles up to the tenth session (and for characters)
    "gap0.1": {"gap_ratio": 0.1},  # the anchor-gap rule's threshold for objects up to the sixth session
    "gap0.05": {"gap_ratio": 0.05},  # the default for objects since the sixth session
    "gap0.08": {"gap_ratio": 0.08},  # where the spellings handle's gap levels off on the shape (ninth session)
    "batch2": {"batch_size": 2},  # two shots a step, as the published recipe (eleventh session; not adopted)
    "batch2-shots8": {"batch_size": 2, "shot_steps": 8},  # and the shots drawn in 8 solver steps, not 12
    "batch2-shots8-preserve8": {"batch_size": 2, "shot_steps": 8, "preserve_batch": 8},  # and 8 retained prompts
    # the defaults before the seventeenth session, which made them depend on the category (12 and 4 for objects and
    # styles, as before; 8 and 2 for characters)
    "s16-default": {"shot_steps": 12, "eval_timesteps": 4},
    "to-checkered": {"anchor": "checkered", "max_steps": 50},  # the style fallback candidate for solid (s17)
    "to-square": {"anchor": "square", "max_steps": 50},  # the diamond's anchor since s18
    "to-triangle": {"anchor": "triangle", "max_steps": 50},  # the diamond's default anchor until s18
    "to-three": {"anchor": "triangle, cross, star", "max_steps": 50},  # the square's since s19: one per row and step
    "to-square-cross-hexagon": {"anchor": "square, cross, hexagon", "max_steps": 50},  # the diamond's since s19
    "ts2": {"eval_timesteps": 2},  # the stop rule's check set at 2 timesteps per shot, not 4 (fourteenth session)
    "shots8": {"shot_steps": 8},  # the shots drawn in 8 solver steps, not 12
    "ts2-shots8": {"eval_timesteps": 2, "shot_steps": 8},
    "seed2": {"seed": 2},  # the default at another erase seed (other shots, batches and noise)
    "seed2-gap0.07": {"seed": 2, "gap_ratio": 0.07},  # seed 2 stopped a style at a gap of 0.094 (eleventh session)
    "to-circle": {"anchor": "circle"},  # the shape anchor up to the seventh session
    "misspell8": {"misspellings": 8},  # eight spelling-variant draws (the default is one)
    # the seventh session's default: the inner attack on the name's token only, each spelling variant in one prompt
    "name-handle": {"robust_handle": "name", "variant_contexts": 1},
    # every spelling as the attack's handle, each variant in 3 sentences: an object's default since the eighth session
    "spellings": {"robust_handle": "spellings", "variant_contexts": 3},
    # the same for 50 steps, no stop rule: as many steps as the default takes on the shape (it ends at the cap)
    "name-handle-50": {"robust_handle": "name", "variant_contexts": 1, "stop_rule": "max-steps", "max_steps": 50},
}
ATTACKS = ["synonyms", "misspellings", "paraphrases", "descriptions", "embedding"]


def fmt(estimate: dict) -> str:
    return f"{estimate['value']:.2f} [{estimate['low']:.2f}, {estimate['high']:.2f}]"


def target_rates(metrics: dict, kind: str, concept: str) -> tuple[float, float]:
    entry = metrics[kind]["concepts"][concept]
    return entry["original"]["m_score"]["value"], entry["unlearned"]["m_score"]["value"]


def transfer_table(results: dict, variant: str = "default") -> list[str]:
    """Erased on the image model, measured on images and on video frames: one row per concept and kind."""
    rows = ["| concept | measured on | hit rate before -> after | erasure | retention, same category | "
            "retention, other categories | retention, all | harmonic mean |",
            "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for key, entry in results.items():
        concept, run_variant = key.split("/")
        if run_variant != variant:
            continue
        for kind, label in (("image", "images"), ("video", "video frames")):
            if kind not in entry:  # a run of one kind only (--kind)
                continue
            e = entry[kind]
            rows.append(f"| {concept} | {label} | {e['target_before']:.2f} -> {e['target_after']:.2f} | "
                        f"{fmt(e['erasure'])} | {fmt(e['retention_same_category'])} | "
                        f"{fmt(e['retention_other_categories'])} | {fmt(e['retention'])} | "
                        f"{fmt(e['harmonic_mean'])} |")  # fmt: skip
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concepts", nargs="+", default=["zorbo", "star", "striped"])
    parser.add_argument("--variants", nargs="+", default=["default", "previous-default"], choices=list(VARIANTS))
    parser.add_argument("--full", action="store_true", help="the full suite instead of the --quick plan")
    parser.add_argument("--work", default=str(ROOT / "runs" / "efficacy"), help="checkpoints and samples")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "erase_efficacy.json"))
    parser.add_argument("--attacks", action=argparse.BooleanOptionalAction, default=True,
                        help="also measure the attacks (synonyms, misspellings, paraphrases, embedding)")  # fmt: skip
    parser.add_argument("--table-only", action="store_true", help="print the transfer table of --out; run nothing")
    parser.add_argument(
        "--embedding",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="with --attacks, also the embedding attack (textual inversion: minutes per concept)",
    )
    parser.add_argument("--only-attacks", nargs="+", choices=ATTACKS, help="measure just these attack families")
    parser.add_argument("--sampler", default="pipeline", help="eval's sampler (pipeline, dpm-solver, unipc)")
    parser.add_argument("--steps", type=int, default=25, help="eval's denoising steps")
    parser.add_argument("--seeds", type=int, help="seeds per prompt (eval --seeds; default: the plan's)")
    parser.add_argument("--kind", default="both", choices=["image", "video", "both"], help="what eval generates")
    parser.add_argument("--detector", help="eval's detector (a classifier folder); default: the suite's")
    args = parser.parse_args()
    if args.table_only:
        print("\n".join(transfer_table(json.loads(Path(args.out).read_text())["results"])))
        return

    work = Path(args.work)
    attacks = [a for a in ATTACKS if args.attacks and (args.embedding or a != "embedding")]
    if args.only_attacks:
        attacks = [a for a in ATTACKS if a in args.only_attacks]
    pipe = load_pipeline("image", progress=False)
    rows, results = [], {}
    for concept in args.concepts:
        for variant in args.variants:
            config = EraseConfig(**VARIANTS[variant])
            start = time.perf_counter()
            result = erase_concept(pipe, [concept], config, progress=False)
            seconds = time.perf_counter() - start
            folder = save_checkpoint(work / "checkpoints" / f"{concept}-{variant}", result, pipe.text_encoder,
                                     pipe.tokenizer, config, "tinyworld", result.timings, overwrite=True)  # fmt: skip
            eval_config = EvalConfig(
                text_encoder=str(folder),
                quick=not args.full,
                progress=False,
                attacks=attacks,
                sampler=args.sampler,
                steps=args.steps,
                seeds=args.seeds,
                kind=args.kind,
                detector=args.detector,
            )
            # samples are cached by row, not by sampler: one folder per sampling setting
            metrics, _ = evaluate(eval_config, work / f"samples-{args.sampler}-{args.steps}")
            entry = {"steps": result.steps, "stopped_by": result.stopped_by, "erase_seconds": round(seconds, 1),
                     "attacks": metrics.get("attacks", {}),
                     "collateral_encoder": metrics["collateral_encoder"]}  # fmt: skip
            for kind in eval_config.kinds():
                before, after = target_rates(metrics, kind, concept)
                entry[kind] = {
                    "target_before": before,
                    "target_after": after,
                    **{k: metrics[kind][k] for k in ("erasure", "retention", "retention_same_category",
                                                     "retention_other_categories", "harmonic_mean", "floor",
                                                     "collateral", "notes")},
                    "target_after_interval": metrics[kind]["concepts"][concept]["unlearned"]["m_score"],
                }  # fmt: skip
            results[f"{concept}/{variant}"] = entry

            def cell(kind, show, entry=entry):
                return show(entry[kind]) if kind in entry else "-"

            def rates(e):
                return f"{e['target_before']:.2f} -> {e['target_after']:.2f} {fmt(e['target_after_interval'])}"

            row = (
                f"| {concept} | {variant} | {result.steps} ({result.stopped_by}) | "
                f"{cell('image', rates)} | {cell('video', rates)} | "
                f"{cell('image', lambda e: fmt(e['retention']))} | {cell('video', lambda e: fmt(e['retention']))} | "
                f"{cell('image', lambda e: fmt(e['harmonic_mean']))} | "
                f"{cell('video', lambda e: fmt(e['harmonic_mean']))} |"
            )
            rows.append(row)
            print(row, flush=True)
            out = Path(args.out)
            out.parent.mkdir(parents=True, exist_ok=True)
            previous = json.loads(out.read_text()) if out.exists() else {}
            plan = ("full" if args.full else "quick") + (f", {args.seeds} seeds" if args.seeds else "")
            if previous.get("plan") == plan:  # runs of other concepts or variants are kept
                results = {**previous["results"], **results}
                rows = [r for r in previous["table"] if r not in rows] + rows
            summary = {
                "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
                "plan": plan,
                "sampling": {"sampler": args.sampler, "steps": args.steps},
                "detector": args.detector or "the suite's",
                "results": results,
                "table": rows,
            }
            out.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    print("| concept | variant | steps | image target hit rate | video frame hit rate | image retention | "
          "video retention | image H | video H |")  # fmt: skip
    print("\n".join(rows))
    print("\n".join(transfer_table(results)))


if __name__ == "__main__":
    main()
