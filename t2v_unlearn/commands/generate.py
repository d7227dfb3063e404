"""`t2v-unlearn generate`: images or videos, with the pipeline's own encoder or an unlearned one."""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

from PIL import Image

from ..artefacts import atomic_folder
from ..config_args import add_config_arguments, config_from_args
from ..encoders.checkpoint import load_pipeline
from ..pipelines.generate import SAMPLERS, GenerateConfig, generate_images, generate_videos, sampler
from ..pipelines.video_io import write_frames, write_gif, write_mp4
from .common import add_model_arguments, placement


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="re-make a saved generation: its generate.json; flags given override it")
    add_config_arguments(parser, GenerateConfig, choices={"kind": ("image", "video"), "sampler": SAMPLERS})
    parser.add_argument("--text-encoder", help="an encoder checkpoint folder from `erase`")
    parser.add_argument("--force", action="store_true", help="accept a checkpoint unlearned from other base weights")
    parser.add_argument("--out", help="output folder (default: outputs/<kind>-<time>)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    add_model_arguments(parser)


def run(args) -> int:
    saved = json.loads(Path(args.config).read_text()) if args.config else {}
    if not isinstance(saved, dict) or not isinstance(saved.get("config", {}), dict):
        raise ValueError(f"--config {args.config} holds no saved generation (the generate.json that generate writes)")
    config = config_from_args(GenerateConfig, args, base=saved.get("config"))
    if args.text_encoder is None:  # a saved run's encoder and model, unless given again
        args.text_encoder = saved.get("text_encoder")
    if args.model == "tinyworld" and saved.get("model"):
        args.model = saved["model"]
    out = Path(args.out or f"outputs/{config.kind}-{time.strftime('%Y%m%d-%H%M%S')}")
    with atomic_folder(out, args.overwrite, kind="generate") as tmp:
        device, dtype = placement(args)
        pipe = load_pipeline(config.kind, args.model, text_encoder=args.text_encoder, device=device, dtype=dtype,
                             force=args.force, offload=args.offload,
                             vae_slicing=args.vae_slicing)  # fmt: skip
        pipe.set_progress_bar_config(disable=False, leave=False)
        seeds = [config.seed + i for i in range(config.num)]
        prompts = [config.prompt] * config.num
        written = []
        with sampler(pipe, config.sampler):
            if config.kind == "image":
                samples = generate_images(pipe, prompts, seeds, config.steps, config.guidance)
            else:
                samples = generate_videos(pipe, prompts, seeds, config.steps, config.guidance, config.frames)
        for seed, sample in zip(seeds, samples, strict=True):
            if config.kind == "image":
                Image.fromarray(sample).save(tmp / f"image_seed{seed}.png")
                written.append(f"image_seed{seed}.png")
            else:
                write_mp4(sample, tmp / f"video_seed{seed}.mp4", fps=config.fps)
                write_gif(sample, tmp / f"video_seed{seed}.gif", fps=config.fps)
                write_frames(sample, tmp / f"video_seed{seed}_frames")
                written += [f"video_seed{seed}.mp4", f"video_seed{seed}.gif", f"video_seed{seed}_frames/"]
        (tmp / "prompt.txt").write_text(config.prompt + "\n")
        record = {"config": asdict(config), "model": args.model, "text_encoder": args.text_encoder}
        (tmp / "generate.json").write_text(json.dumps(record, indent=2) + "\n")  # --config re-makes these
    print(f"wrote {len(written)} files to {out}: {', '.join(written)}")
    return 0
