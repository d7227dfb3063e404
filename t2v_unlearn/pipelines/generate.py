"""Seeded generation of images and videos as uint8 arrays, one generator per sample.

Each sample gets its own `torch.Generator` seeded with its seed, so a sample is the same whatever else
is in the batch: the original and the unlearned model see identical initial noise for a prompt/seed pair.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from diffusers import DiffusionPipeline, DPMSolverMultistepScheduler, UniPCMultistepScheduler

DEFAULT_STEPS = 25
DEFAULT_GUIDANCE = 6.0
DEFAULT_NUM_FRAMES = 8
# "pipeline": the pipeline's own scheduler (DDIM for TinyWorld); the multistep solvers are good in 10-15 steps
SAMPLERS = {"pipeline": None, "dpm-solver": DPMSolverMultistepScheduler, "unipc": UniPCMultistepScheduler}


MAX_FRAMES = 64  # the video UNets here are trained on 8 (TinyWorld) to 16-24 frames (ModelScope, Zeroscope)


@dataclass
class GenerateConfig:
    """What `t2v-unlearn generate` makes: the one home of its defaults and help (saved as generate.json)."""

    prompt: str = field(default="", metadata={"help": "what to generate"})
    kind: str = field(default="image", metadata={"help": "image or video"})
    num: int = field(default=1, metadata={"help": "how many samples (seeds seed, seed+1, ...)"})
    seed: int = field(default=0, metadata={"help": "the first sample's seed"})
    steps: int = field(default=DEFAULT_STEPS, metadata={"help": "denoising steps"})
    sampler: str = field(
        default="pipeline",
        metadata={"help": "the pipeline's own scheduler, or a multistep solver (good in 10-15 steps)"},
    )
    guidance: float = field(default=DEFAULT_GUIDANCE, metadata={"help": "classifier-free guidance scale"})
    frames: int = field(default=DEFAULT_NUM_FRAMES, metadata={"help": "frames per video"})
    fps: int = field(default=8, metadata={"help": "frames per second of the written mp4 and gif"})

    def __post_init__(self):
        if not self.prompt.strip():
            raise ValueError("--prompt is empty; say what to generate")
        if self.kind not in ("image", "video"):
            raise ValueError(f"--kind must be image or video, got {self.kind!r}")
        if self.sampler not in SAMPLERS:
            raise ValueError(f"--sampler must be one of {', '.join(SAMPLERS)}, got {self.sampler!r}")
        for name, low, high in (("num", 1, 10_000), ("steps", 1, 1000), ("frames", 1, MAX_FRAMES), ("fps", 1, 120)):
            value = getattr(self, name)
            if not low <= value <= high:
                raise ValueError(f"--{name} must be between {low} and {high}, got {value}")
        if not self.guidance >= 0:  # also refuses NaN
            raise ValueError(f"--guidance must be 0 or more, got {self.guidance}")


@contextlib.contextmanager
def sampler(pipe: DiffusionPipeline, name: str) -> Iterator[DiffusionPipeline]:
    """The pipeline with its scheduler swapped for `name`'s (same noise schedule), restored on exit."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; choose from {', '.join(SAMPLERS)}")
    original = pipe.scheduler
    if SAMPLERS[name] is not None:
        pipe.scheduler = SAMPLERS[name].from_config(original.config)
    try:
        yield pipe
    finally:
        pipe.scheduler = original


def _generators(seeds: list[int], device) -> list[torch.Generator]:
    # CPU generators give the same noise on every device, so results do not depend on where they ran
    return [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]


def _to_uint8(array) -> np.ndarray:
    array = np.asarray(array, dtype=np.float32)
    return (np.clip(array, 0.0, 1.0) * 255).round().astype(np.uint8)


def _generate(pipe, prompts, seeds, batch_size, output, **call_kwargs) -> np.ndarray:
    """Run a pipeline over (prompt, seed) pairs in batches; `output` names the result field (images or frames)."""
    if len(prompts) != len(seeds):
        raise ValueError(f"got {len(prompts)} prompts but {len(seeds)} seeds")
    out = []
    for start in range(0, len(prompts), batch_size):
        chunk = slice(start, start + batch_size)
        result = pipe(prompt=prompts[chunk], generator=_generators(seeds[chunk], pipe.device), output_type="np",
                      **call_kwargs)  # fmt: skip
        out.append(_to_uint8(getattr(result, output)))
    return np.concatenate(out)


@torch.no_grad()
def generate_images(
    pipe: DiffusionPipeline,
    prompts: list[str],
    seeds: list[int],
    steps: int = DEFAULT_STEPS,
    guidance: float = DEFAULT_GUIDANCE,
    batch_size: int = 16,
) -> np.ndarray:
    """Images as uint8 (N, H, W, 3), one per (prompt, seed) pair."""
    return _generate(pipe, prompts, seeds, batch_size, "images", num_inference_steps=steps, guidance_scale=guidance)


@torch.no_grad()
def generate_videos(
    pipe: DiffusionPipeline,
    prompts: list[str],
    seeds: list[int],
    steps: int = DEFAULT_STEPS,
    guidance: float = DEFAULT_GUIDANCE,
    num_frames: int = DEFAULT_NUM_FRAMES,
    batch_size: int = 4,
    height: int | None = None,
    width: int | None = None,
) -> np.ndarray:
    """Videos as uint8 (N, F, H, W, 3), one per (prompt, seed) pair; `height`/`width` default to the pipeline's."""
    size = {k: v for k, v in (("height", height), ("width", width)) if v is not None}
    return _generate(pipe, prompts, seeds, batch_size, "frames", num_inference_steps=steps, guidance_scale=guidance,
                     num_frames=num_frames, **size)  # fmt: skip
