"""What every command shares: where models run (--device, --dtype, --offload) and the --model flags."""

from __future__ import annotations

import argparse
import sys

import torch

DTYPES = ("float32", "float16", "bfloat16")


def device_from(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"error: --device {name} asked for, but no CUDA GPU is visible; use --device cpu")
    return name


def placement(args) -> tuple[str, object]:
    """(device, dtype) from --device and --dtype; says so when --offload can have no effect."""
    device = device_from(args.device)
    if args.offload and not device.startswith("cuda"):
        print(f"note: --offload has no effect on --device {device} (it keeps idle models off a GPU)", file=sys.stderr)
    return device, dtype_from(args.dtype)


def dtype_from(name: str) -> torch.dtype:
    return getattr(torch, name)


def add_model_arguments(parser: argparse.ArgumentParser, model_default: str | None = "tinyworld") -> None:
    parser.add_argument("--model", default=model_default,
                        help="'tinyworld' (default), 'tinyworld-animatediff' (video: TinyWorld's image model "
                             "animated by AnimateDiff), a registered base, or a local diffusers folder")  # fmt: skip
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N, or auto (default: cuda if present)")
    parser.add_argument("--dtype", default="float32", choices=DTYPES, help="weights dtype of the frozen models")
    parser.add_argument("--offload", action="store_true",
                        help="on a GPU, keep idle models in CPU memory (less GPU memory, slower)")  # fmt: skip
    parser.add_argument("--vae-slicing", action="store_true", help="decode one image or video frame at a time")
