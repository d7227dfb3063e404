"""The `t2v-unlearn` command: erase, generate, eval, inspect, export, concepts.

t2v-unlearn erase --concept zorbo --out zorbo-erased
t2v-unlearn generate --kind video --prompt "zorbo moving left" --text-encoder zorbo-erased
t2v-unlearn eval --text-encoder zorbo-erased --quick
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

# Library notices that say nothing to a user of this command (e.g. that torchvision is absent, printed while
# diffusers imports its pipelines) stay hidden; set before those imports, and only where the user has not.
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")

from .artefacts import atomic_folder, validate_output  # noqa: E402
from .config_args import add_config_arguments, config_from_args  # noqa: E402
from .encoders.erase import OBJECTIVES, STOP_RULES, EraseConfig  # noqa: E402
from .encoders.trainable import TRAINABLE_PRESETS  # noqa: E402
from .pipelines.generate import SAMPLERS, GenerateConfig  # noqa: E402

START = time.perf_counter()

DTYPES = ("float32", "float16", "bfloat16")


def _device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"error: --device {name} asked for, but no CUDA GPU is visible; use --device cpu")
    return name


def _placement(args) -> tuple[str, object]:
    """(device, dtype) from --device and --dtype; says so when --offload can have no effect."""
    device = _device(args.device)
    if args.offload and not device.startswith("cuda"):
        print(f"note: --offload has no effect on --device {device} (it keeps idle models off a GPU)", file=sys.stderr)
    return device, _dtype(args.dtype)


def _dtype(name: str):
    import torch

    return getattr(torch, name)


def _add_model_args(parser: argparse.ArgumentParser, model_default: str | None = "tinyworld") -> None:
    parser.add_argument("--model", default=model_default,
                        help="'tinyworld' (default), a registered base name, or a local diffusers folder")  # fmt: skip
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N, or auto (default: cuda if present)")
    parser.add_argument("--dtype", default="float32", choices=DTYPES, help="weights dtype of the frozen models")
    parser.add_argument("--offload", action="store_true",
                        help="on a GPU, keep idle models in CPU memory (less GPU memory, slower)")  # fmt: skip
    parser.add_argument("--vae-slicing", action="store_true", help="decode one image or video frame at a time")


# --- concepts -------------------------------------------------------------------------------------------------


def cmd_concepts(args) -> int:
    if args.model != "tinyworld":
        raise SystemExit("error: the concept taxonomy is known for --model tinyworld only; for real models see "
                         "the concept suite t2v_unlearn/eval/suites/sd2.json")  # fmt: skip
    from .tinyworld.taxonomy import load_taxonomy

    for concept in load_taxonomy().concepts:
        print(f"{concept.category}\t{concept.name}\t{','.join(concept.synonyms)}")
    return 0


# --- generate -------------------------------------------------------------------------------------------------


def cmd_generate(args) -> int:
    import json
    from dataclasses import asdict

    from .encoders.checkpoint import load_pipeline
    from .pipelines.generate import generate_images, generate_videos, sampler
    from .pipelines.video_io import write_frames, write_gif, write_mp4

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
        device, dtype = _placement(args)
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
                from PIL import Image

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


# --- erase ------------------------------------------------------------------------------------------------------


def _preview_prompts(result, count: int = 2) -> list[str]:
    from .encoders.prompts import retain_prompts

    own = [p for spec in result.concepts for p in spec.prompts[:count]]
    others = [p for p in retain_prompts(result.concepts, seed=1) if p][:count]
    return own + others


PREVIEW_STEPS = 10


def write_erase_preview(
    out: Path, result, video_model: str | None, device: str, dtype, image_pipe, steps: int
) -> Path:
    """Same prompts and seeds through the original and the unlearned encoder: images, and videos on request.

    Sampled with a multistep solver (DPM-Solver++) at `steps` steps, so the preview costs no more than the erase.
    """
    from .pipelines.generate import generate_images, generate_videos, sampler
    from .pipelines.load import load_pipeline
    from .pipelines.preview import write_preview

    prompts = _preview_prompts(result)
    seeds = list(range(len(prompts)))
    original = image_pipe.text_encoder
    with sampler(image_pipe, "dpm-solver"):
        try:
            images = [generate_images(image_pipe, prompts, seeds, steps)]
            image_pipe.text_encoder = result.text_encoder.to(device, dtype)
            images.append(generate_images(image_pipe, prompts, seeds, steps))
        finally:
            image_pipe.text_encoder = original
    videos = None
    if video_model is not None:
        video_pipe = load_pipeline("video", video_model, device=device, dtype=dtype, progress=False)
        concept_prompts = prompts[: len(prompts) // 2]  # the erased concepts' prompts only: videos cost ~10 images
        video_seeds = seeds[: len(concept_prompts)]
        with sampler(video_pipe, "dpm-solver"):
            videos = [generate_videos(video_pipe, concept_prompts, video_seeds, steps)]
            video_pipe.text_encoder = result.text_encoder.to(device, dtype)
            videos.append(generate_videos(video_pipe, concept_prompts, video_seeds, steps))
    with atomic_folder(out / "preview", overwrite=True, kind="preview") as tmp:
        write_preview(tmp, prompts, tuple(images), tuple(videos) if videos else None)
    return out / "preview"


def cmd_erase(args) -> int:
    from .encoders.checkpoint import read_manifest, save_checkpoint
    from .encoders.erase import erase_concept
    from .pipelines.load import load_pipeline

    saved = None
    if args.config is not None:  # re-run a saved erase: its concepts, base model and every EraseConfig field
        manifest = read_manifest(Path(args.config).parent if Path(args.config).is_file() else args.config)
        saved = manifest["config"]
        args.concept = args.concept or list(manifest["concepts"])
        if args.model is None:
            args.model = manifest.get("base_model", "tinyworld")
    args.model = args.model or "tinyworld"
    if not args.concept:
        raise SystemExit("error: no concept given: pass --concept NAME (repeat it for several), or --config")
    out = Path(args.out or "erased-" + "-".join(c.strip().replace(" ", "_") for c in args.concept))
    validate_output(out, args.overwrite, kind="checkpoint")  # now, not after training
    try:
        config = config_from_args(EraseConfig, args, base=saved, offload=args.offload)
    except (TypeError, ValueError) as error:
        raise SystemExit(f"error: {error}") from None
    if config.images is not None and not Path(config.images).is_dir():
        raise SystemExit(f"error: --images {config.images} is not a folder; pass a folder of .png/.jpg images")
    device, dtype = _placement(args)

    # 1. load the image pipeline (its UNet and VAE stay frozen)
    start = time.perf_counter()
    # (erase parks idle models itself with --offload: accelerate's offload hooks would move the UNet mid-step)
    pipe = load_pipeline("image", args.model, device=device, dtype=dtype, progress=False,
                         vae_slicing=args.vae_slicing)  # fmt: skip
    timings = {"load": time.perf_counter() - start}

    # 2. shots, then gradient ascent until the stop rule fires
    try:
        result = erase_concept(pipe, args.concept, config, progress=not args.quiet)
    except (ValueError, FileNotFoundError) as error:
        raise SystemExit(f"error: {error}") from None
    timings.update(result.timings)

    # 3. the checkpoint, atomically
    extra = {"process_seconds": round(time.perf_counter() - START, 3)}
    out = save_checkpoint(out, result, pipe.text_encoder, pipe.tokenizer, config, args.model, timings,
                          overwrite=args.overwrite, extra=extra, dtype=_dtype(args.save_dtype))  # fmt: skip
    import json

    manifest = json.loads((out / "unlearn.json").read_text())
    split = ", ".join(f"{k} {v:.1f} s" for k, v in manifest["timings"].items())
    print(f"checkpoint written to {out} ({result.steps} steps, stopped by {result.stopped_by})")
    print(f"time: {split}; {time.perf_counter() - START:.1f} s since start")

    # 4. the before/after preview: images, and videos with --preview-video
    if args.preview:
        start = time.perf_counter()
        video_model = None
        if args.preview_video:
            video_model = args.video_model or ("tinyworld" if args.model == "tinyworld" else None)
            if video_model is None:
                print("no --video-model given: the preview shows images only")
        preview = write_erase_preview(out, result, video_model, device, dtype, pipe, args.preview_steps)
        what = "images and videos" if video_model else "images; --preview-video adds videos"
        print(f"preview (original vs unlearned, {what}) in {preview}: {time.perf_counter() - start:.1f} s")
    return 0


# --- export -----------------------------------------------------------------------------------------------------


def cmd_export(args) -> int:
    from .encoders.export import export_checkpoint, format_summary

    summary = export_checkpoint(args.checkpoint, args.format, args.out, layout=args.layout, rank=args.rank,
                                merge_into=args.merge_into, model=args.model, overwrite=args.overwrite,
                                force=args.force)  # fmt: skip
    print(format_summary(summary))
    return 0


# --- main -------------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="t2v-unlearn", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("erase", help="unlearn concepts from the shared text encoder, write an encoder checkpoint")
    p.add_argument("--concept", action="append", help="concept to erase (repeat for several)")
    p.add_argument("--config", help="re-run a saved erase: its unlearn.json (or folder); flags given override it")
    p.add_argument("--out", help="checkpoint folder (default: erased-<concept>)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out written by t2v-unlearn")
    add_config_arguments(p, EraseConfig, skip=["offload"],
                         aliases={"anchor": "--to", "synonyms": "--synonym", "num_shots": "--shots"},
                         choices={"objective": OBJECTIVES, "stop_rule": STOP_RULES, "trainable": TRAINABLE_PRESETS,
                                  "category": ("object", "style", "id")})  # fmt: skip
    p.add_argument("--save-dtype", default="float32", choices=DTYPES,
                   help="precision of the saved weights (float16: half the size, for sharing)")  # fmt: skip
    p.add_argument("--preview", action=argparse.BooleanOptionalAction, default=True,
                   help="write a before/after preview for the image and the video model (default: on)")  # fmt: skip
    p.add_argument("--preview-steps", type=int, default=PREVIEW_STEPS,
                   help="denoising steps of the preview's samples (multistep solver)")  # fmt: skip
    p.add_argument(
        "--preview-video",
        action="store_true",
        help="the preview also shows videos of the erased concepts (on TinyWorld about twice the erase time)",
    )
    p.add_argument("--video-model", help="video pipeline for the preview (default: tinyworld's, for tinyworld)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_model_args(p, model_default=None)
    p.set_defaults(func=cmd_erase)

    p = sub.add_parser("generate", help="generate images or videos, optionally with an unlearned encoder")
    p.add_argument("--config", help="re-make a saved generation: its generate.json; flags given override it")
    add_config_arguments(p, GenerateConfig, choices={"kind": ("image", "video"), "sampler": SAMPLERS})
    p.add_argument("--text-encoder", help="an encoder checkpoint folder from `erase`")
    p.add_argument("--force", action="store_true", help="accept a checkpoint unlearned from other base weights")
    p.add_argument("--out", help="output folder (default: outputs/<kind>-<time>)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    _add_model_args(p)
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("concepts", help="list the concept taxonomy: category, name, synonyms (tab-separated)")
    p.add_argument("--model", default="tinyworld")
    p.set_defaults(func=cmd_concepts)

    from .encoders.export import FORMATS, LAYOUTS

    p = sub.add_parser("export", help="write a checkpoint's encoder for Automatic1111, ComfyUI or as a diffusers LoRA")
    p.add_argument("checkpoint", help="an encoder checkpoint folder from `erase`")
    p.add_argument("--format", required=True, choices=FORMATS,
                   help="a1111: original-checkpoint keys; comfyui: a Load CLIP file; diffusers-lora")  # fmt: skip
    p.add_argument("--out", required=True, help="output folder: the file, export.json and a README on loading it")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out written by t2v-unlearn")
    p.add_argument("--layout", default="auto", choices=LAYOUTS,
                   help="a1111 keys: sd1 (CLIP) or sd2 (OpenCLIP); auto: quick_gelu is sd1, gelu sd2")  # fmt: skip
    p.add_argument("--merge-into", metavar="BASE.safetensors",
                   help="a1111: a full model: this original-format base, text encoder replaced")  # fmt: skip
    p.add_argument("--rank", type=int, default=8, help="diffusers-lora: rank of a LoRA computed from the delta")
    p.add_argument("--model", help="the base model (default: unlearn.json's base_model)")
    p.add_argument("--force", action="store_true",
                   help="skip the fingerprint checks (altered weights, a base with another encoder)")  # fmt: skip
    p.set_defaults(func=cmd_export)

    try:
        from .eval.cli import add_eval_arguments, run_eval
    except ImportError:
        pass
    else:
        p = sub.add_parser("eval", help="frame-level M-Score of an unlearned encoder on images and videos")
        add_eval_arguments(p)
        p.set_defaults(func=run_eval)

    try:
        from .encoders.inspect import add_inspect_arguments, run_inspect
    except ImportError:
        pass
    else:
        p = sub.add_parser("inspect", help="what an encoder is, whether bases share it, whether a checkpoint fits")
        add_inspect_arguments(p)
        p.set_defaults(func=run_inspect)
    return parser


def _quiet_libraries() -> None:
    """Library notices that say nothing to a user of this command (e.g. torchvision is absent) stay hidden."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()
    diffusers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()  # "Writing model shards" for a 2 MB encoder: our own bars tell


def main(argv: list[str] | None = None) -> int:
    _quiet_libraries()
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except (FileNotFoundError, FileExistsError, ValueError) as error:
        if args.debug:
            raise
        print(f"error: {args.command}: {error}", file=sys.stderr)
        return 2
    except SystemExit as error:
        if not isinstance(error.code, str):
            raise
        print(error.code, file=sys.stderr)  # an input error raised as SystemExit("error: ..."): exit 2 like the rest
        return 2
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"\n{args.command}: interrupted; no output was replaced (outputs are swapped in only when complete)",
              file=sys.stderr)  # fmt: skip
        return 130
    except OSError as error:  # the disk is full, a folder is not writable, ...: the system's words and the path
        if args.debug:
            raise
        where = f" ({error.filename})" if error.filename else ""
        print(f"error: {args.command}: {error.strerror or error}{where}; rerun with --debug for the traceback",
              file=sys.stderr)  # fmt: skip
        return 1


if __name__ == "__main__":
    sys.exit(main())
