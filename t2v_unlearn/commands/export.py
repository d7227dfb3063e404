"""`t2v-unlearn export`: a checkpoint's encoder for Automatic1111, ComfyUI or as a diffusers LoRA."""

from __future__ import annotations

import argparse

from ..encoders.export import FORMATS, LAYOUTS, export_checkpoint, format_summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="an encoder checkpoint folder from `erase`")
    parser.add_argument("--format", required=True, choices=FORMATS,
                        help="a1111: original-checkpoint keys; comfyui: a Load CLIP file; diffusers-lora")  # fmt: skip
    parser.add_argument("--out", required=True, help="output folder: the file, export.json and a README on loading it")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out written by t2v-unlearn")
    parser.add_argument("--layout", default="auto", choices=LAYOUTS,
                        help="a1111 keys: sd1 (CLIP) or sd2 (OpenCLIP); auto: quick_gelu means sd1")  # fmt: skip
    parser.add_argument("--merge-into", metavar="BASE.safetensors",
                        help="a1111: a full model: this original-format base, text encoder replaced")  # fmt: skip
    parser.add_argument("--rank", type=int, default=8, help="diffusers-lora: rank of a LoRA computed from the delta")
    parser.add_argument("--model", help="the base model (default: unlearn.json's base_model)")
    parser.add_argument("--force", action="store_true",
                        help="skip the fingerprint checks (altered weights, a base with another encoder)")  # fmt: skip


def run(args) -> int:
    summary = export_checkpoint(args.checkpoint, args.format, args.out, layout=args.layout, rank=args.rank,
                                merge_into=args.merge_into, model=args.model, overwrite=args.overwrite,
                                force=args.force)  # fmt: skip
    print(format_summary(summary))
    return 0
