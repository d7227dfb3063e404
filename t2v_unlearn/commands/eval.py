"""`t2v-unlearn eval`: judge an encoder checkpoint (or existing videos) and write metrics.json + report.html.

    t2v-unlearn eval --text-encoder encoders/zorbo --quick --out results/zorbo
    t2v-unlearn eval --videos clips/ --concept zorbo --out results/clips
    accelerate launch --multi_gpu --num_processes 2 -m t2v_unlearn eval --text-encoder encoders/zorbo --out r/z
        # sharded generation (on CPUs too: --multi_gpu only picks accelerate's torchrun launcher)

Results are written into a hidden `.<out>.partial` folder beside `--out` and swapped in when complete, so no
half-written output is left; rerunning the same command after an interruption resumes from the samples
already generated there. `--overwrite` replaces only a folder t2v-unlearn wrote.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from dataclasses import asdict
from pathlib import Path

from ..artefacts import atomic_folder, validate_output
from ..config_args import add_config_arguments
from ..config_args import config_from_args as build_config
from ..eval.evaluate import KIND_CHOICES, EvalConfig, evaluate, evaluate_video_files, resolve_config
from ..eval.report import write_report
from ..eval.runner import distributed_state
from ..pipelines.generate import SAMPLERS

# fields whose change makes already generated samples stale
GENERATION_FIELDS = (
    "text_encoder",
    "model",
    "video_model",
    "suite",
    "quick",
    "concepts",
    "seed",
    "steps",
    "sampler",
    "guidance",
    "num_frames",
)


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the `eval` options to a parser: one flag per `EvalConfig` field (its one home of defaults and help)."""
    parser.add_argument("--config", metavar="FILE",
                        help="re-run a saved evaluation: its eval_config.json; flags given override it")  # fmt: skip
    add_config_arguments(parser, EvalConfig, aliases={"concepts": "--concept", "score_decoded": "--decoded"},
                         choices={"kind": KIND_CHOICES, "sampler": SAMPLERS})  # fmt: skip
    parser.add_argument("--out", metavar="DIR", required=True, help="output folder (metrics.json, report.html)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    return parser


def config_from_args(args: argparse.Namespace) -> EvalConfig:
    saved = None
    if args.config:
        path = Path(args.config).expanduser()
        path = path / "eval_config.json" if path.is_dir() else path
        try:
            saved = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise ValueError(f"--config {args.config}: cannot read a saved eval config ({error})") from error
        if not isinstance(saved, dict):
            raise ValueError(f"--config {args.config} holds no eval config (a JSON object, as eval writes)")
    config = build_config(EvalConfig, args, base=saved)
    if config.videos is None and config.text_encoder is None:
        raise ValueError("pass --text-encoder DIR (a checkpoint from `erase`) or --videos DIR --concept NAME")
    return config


def _check_resumable(partial: Path, config: EvalConfig) -> None:
    saved_path = partial / "eval_config.json"
    if not saved_path.is_file():
        return
    saved = json.loads(saved_path.read_text())
    current = asdict(config)
    changed = [k for k in GENERATION_FIELDS if saved.get(k) != current.get(k)]
    if changed:
        raise ValueError(
            f"{partial} holds an interrupted evaluation with different {', '.join(changed)}; delete it to start "
            "afresh, or rerun with the same options to resume it"
        )


def run(args: argparse.Namespace) -> int:
    """Run the `eval` command; returns the process exit code."""
    out = Path(args.out).expanduser()
    try:
        config = config_from_args(args)
        state = distributed_state(config.device)
        validate_output(out, args.overwrite, kind="eval")
        partial = out.with_name(f".{out.name}.partial")
        if config.videos is None:
            config = resolve_config(config)
        # the main process owns the output: a lock, `partial` as the work folder (kept when interrupted, so a rerun
        # resumes; removed when this run made it and failed on bad input), then the swap into `out`
        owner = atomic_folder(out, args.overwrite, kind="eval", work=partial) if state.is_main_process else None
        with owner or contextlib.nullcontext(partial):
            if state.is_main_process:
                _check_resumable(partial, config)
                (partial / "eval_config.json").write_text(json.dumps(asdict(config), indent=2, sort_keys=True) + "\n")
            state.wait_for_everyone()
            # 1. generate and score
            if config.videos is not None:
                if not state.is_main_process:
                    return 0
                metrics, gallery = evaluate_video_files(config, Path(config.videos))
            else:
                metrics, gallery = evaluate(config, partial)
                if not state.is_main_process:
                    return 0
            # 2. write metrics.json and report.html; leaving the block moves the finished folder into place
            (partial / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")  # order: targets first
            write_report(partial / "report.html", metrics, gallery)
    except (ValueError, FileNotFoundError, FileExistsError, KeyError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"t2v-unlearn eval: error: {message}", file=sys.stderr)
        return 2
    for kind in ("image", "video", "video_mp4", "animatediff"):
        if kind in metrics:
            m = metrics[kind]
            line = ", ".join(f"{k} {_short(m[k])}" for k in ("erasure", "retention", "harmonic_mean"))
            floors = m.get("floor") or {}  # an erased concept's rate at or below its floor is no evidence of it
            shown = [f"{t} {_short(floors[t])}" for t in metrics.get("targets", []) if t in floors]
            print(f"{kind}: {line}" + (f"; false-hit floor {', '.join(shown)}" if shown else ""))
    for family, entry in (metrics.get("attacks") or {}).items():  # the leak under each attack, beside the original's
        for kind, figures in entry.items():
            if isinstance(figures, dict) and "leakage" in figures:
                print(f"attack {family}, {kind}: leakage {_short(figures['leakage'])} "
                      f"(original model {_short(figures['original'])})")  # fmt: skip
    print(f"wrote {out / 'metrics.json'} and {out / 'report.html'}")
    return 0


def _short(entry: dict) -> str:
    if entry.get("value") is None:
        return "n/a"
    if entry.get("low") is None:
        return f"{entry['value']:.3f}"
    return f"{entry['value']:.3f} [{entry['low']:.3f}, {entry['high']:.3f}]"
