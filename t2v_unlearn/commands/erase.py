"""`t2v-unlearn erase`: unlearn concepts from the shared text encoder and write an encoder checkpoint."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..artefacts import atomic_folder, validate_output
from ..config_args import add_config_arguments, config_from_args
from ..encoders.checkpoint import read_manifest, save_checkpoint
from ..encoders.erase import OBJECTIVES, STOP_RULES, EraseConfig, erase_concept
from ..encoders.prompts import retain_prompts
from ..encoders.trainable import TRAINABLE_PRESETS
from ..pipelines.generate import generate_images, generate_videos, sampler
from ..pipelines.load import load_pipeline
from ..pipelines.preview import write_preview
from .clock import START
from .common import DTYPES, add_model_arguments, dtype_from, placement

PREVIEW_STEPS = 10


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--concept", action="append", help="concept to erase (repeat for several)")
    parser.add_argument("--config", help="re-run a saved erase: its unlearn.json (or folder); flags given override it")
    parser.add_argument("--out", help="checkpoint folder (default: erased-<concept>)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out written by t2v-unlearn")
    add_config_arguments(parser, EraseConfig, skip=["offload"],
                         aliases={"anchor": "--to", "synonyms": "--synonym", "num_shots": "--shots"},
                         choices={"objective": OBJECTIVES, "stop_rule": STOP_RULES, "trainable": TRAINABLE_PRESETS,
                                  "category": ("object", "style", "id")})  # fmt: skip
    parser.add_argument("--save-dtype", default="float32", choices=DTYPES,
                        help="precision of the saved weights (float16: half the size, for sharing)")  # fmt: skip
    parser.add_argument("--preview", action=argparse.BooleanOptionalAction, default=True,
                        help="write a before/after preview of the unlearned encoder (default: on)")  # fmt: skip
    parser.add_argument("--preview-steps", type=int, default=PREVIEW_STEPS,
                        help="denoising steps of the preview's samples (multistep solver)")  # fmt: skip
    parser.add_argument(
        "--preview-video",
        action="store_true",
        help="the preview also shows videos of the erased concepts (on TinyWorld about twice the erase time)",
    )
    parser.add_argument("--video-model", help="video pipeline for the preview (default: tinyworld's, for tinyworld)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_model_arguments(parser, model_default=None)


def _preview_prompts(result, count: int = 2) -> list[str]:
    own = [p for spec in result.concepts for p in spec.prompts[:count]]
    others = [p for p in retain_prompts(result.concepts, seed=1) if p][:count]
    return own + others


def write_erase_preview(
    out: Path, result, video_model: str | None, device: str, dtype, image_pipe, steps: int
) -> Path:
    """Same prompts and seeds through the original and the unlearned encoder: images, and videos on request.

    Sampled with a multistep solver (DPM-Solver++) at `steps` steps, so the preview costs no more than the erase.
    """
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


LEVELLED = 2.0  # a robust run's gap within this factor of the rule's threshold has levelled off, not failed


def stop_message(result) -> str | None:
    """What the user should know when the anchor-gap rule did not fire: a warning when the gap is still far from
    the threshold, a note when the concept went toward several anchors (its gap need not close), or when a robust
    run's gap levelled off near it (a shape's, under the inner attack on every
    spelling, stays at 0.05-0.08 against 0.05 and its images are erased: docs/BENCHMARKS.md) or is still falling
    slowly near it (a style's: dotted's reaches 0.15 against 0.1 at the cap, erased too), else nothing."""
    gaps = [h["gap_ratio"] for h in result.history if "gap_ratio" in h]
    if result.stopped_by != "max_steps" or not gaps or gaps[-1] <= result.gap_ratio:
        return None
    several = [f"{s.name}: {s.anchor}" for s in result.concepts if "," in (s.anchor or "")]
    if several:  # the square's default: its gap levels off at 0.22-0.27 while the suite's images show crosses
        return (f"note: erased toward several anchors ({'; '.join(several)}): the rule measures the gap to the mean "
                "of their predictions, which no one drawn image reaches, so it stays above the "
                f"rule's {result.gap_ratio} (last {gaps[-1]:.2f} of its start) and the run went to the step cap "
                f"({result.steps}); check the preview")  # fmt: skip
    if result.robust and min(gaps) <= LEVELLED * result.gap_ratio:
        if len(gaps) > 1 and gaps[-1] < min(gaps[:-1]):
            return (f"note: the UNet's prediction gap to the anchor was still falling slowly at the step cap "
                    f"({result.steps}; last {gaps[-1]:.2f} of its start, the rule waits for {result.gap_ratio}): "
                    "under the inner attack it closes slowly for some concepts; check the preview, or run again "
                    "with more --max-steps")  # fmt: skip
        return (f"note: the UNet's prediction gap to the anchor levelled off (lowest {min(gaps):.2f}, last "
                f"{gaps[-1]:.2f} of its start) near the rule's {result.gap_ratio}: under the inner attack the gap "
                f"can stay above the threshold, so the run went to the step cap ({result.steps}); check the "
                "preview")  # fmt: skip
    return (
        f"warning: the stop rule did not fire: the UNet's prediction gap to the anchor is still {gaps[-1]:.2f} "
        f"of its start (the rule waits for {result.gap_ratio}), so the concept may not be erased; check the "
        "preview, or run again with more --max-steps or a higher --lr"
    )


def robustness_note(result) -> str | None:
    """A note for a run without the inner attack: a textual-inversion attack can bring its concept back (on TinyWorld
    it brought an erased character back in 78% of images, and in 10% after `--robust`, over three attacker seeds:
    docs/BENCHMARKS.md, twelfth session). A robust run that erased a shape gets a note too: under the same attack,
    nine attackers on each of several erase seeds drew a square in 34% of images (four erases) and a diamond in
    35% (three; 0-93% by attacker across both shapes, nineteenth session); other robust runs get none."""
    if result.robust:
        if not any(spec.category == "object" for spec in result.concepts):
            return None
        return ("note: erased under the inner attack, but a textual-inversion attacker with a few images of a shape "
                "may still bring it back (on TinyWorld, a square in 34% of images and a diamond in 35%, nine "
                "attackers on each of several erase seeds: docs/BENCHMARKS.md); check with `t2v-unlearn eval "
                "--attacks embedding`")  # fmt: skip
    return ("note: erased without the inner attack: a textual-inversion attacker with a few images of the concept "
            "may bring it back; pass --robust to erase under that attack too (slower)")  # fmt: skip


def run(args) -> int:
    saved = None
    if args.config is not None:  # re-run a saved erase: its concepts, base model and every EraseConfig field
        manifest = read_manifest(Path(args.config).parent if Path(args.config).is_file() else args.config)
        if not manifest.config:
            raise SystemExit(f"error: {args.config} records no erase config to re-run; pass a checkpoint that "
                             "`t2v-unlearn erase` wrote")  # fmt: skip
        saved = manifest.config
        args.concept = args.concept or list(manifest.concepts)
        if args.model is None:
            args.model = manifest.base_model or "tinyworld"
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
    device, dtype = placement(args)

    # 1. load the image pipeline (its UNet and VAE stay frozen)
    start = time.perf_counter()
    # (erase parks idle models itself with --offload: accelerate's offload hooks would move the UNet mid-step)
    pipe = load_pipeline("image", args.model, device=device, dtype=dtype, progress=False,
                         vae_slicing=args.vae_slicing)  # fmt: skip
    timings = {"load": time.perf_counter() - start}

    # 2. shots, then the objective until the stop rule fires
    try:
        result = erase_concept(pipe, args.concept, config, progress=not args.quiet)
    except (ValueError, FileNotFoundError) as error:
        raise SystemExit(f"error: {error}") from None
    timings.update(result.timings)

    # 3. the checkpoint, atomically
    extra = {"process_seconds": round(time.perf_counter() - START, 3)}
    out = save_checkpoint(out, result, pipe.text_encoder, pipe.tokenizer, config, args.model, timings,
                          overwrite=args.overwrite, extra=extra, dtype=dtype_from(args.save_dtype))  # fmt: skip
    manifest = read_manifest(out)
    order = ("load", "shots", "setup", "optimise", "checks_in_optimise", "save")
    timings = sorted(manifest.timings.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order))
    split = ", ".join(f"{k.replace('_', ' ')} {v:.1f} s" for k, v in timings)
    robust = ", erased under the inner attack (robust)" if result.robust else ""
    print(f"checkpoint written to {out} ({result.steps} steps, stopped by {result.stopped_by}{robust})")
    for message in (stop_message(result), robustness_note(result)):
        if message:
            print(message)
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
