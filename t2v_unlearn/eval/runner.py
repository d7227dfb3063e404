"""Generation for evaluation: a list of rows, one deterministic output file each, resumable and shardable.

A row is (kind, model, encoder, concept, prompt, seed). Its output is a lossless uint8 `.npy` of shape
(F, H, W, 3) (an image is a one-frame video) at a path that depends only on the row, so a rerun skips the
rows already written and an interrupted evaluation resumes where it stopped. Under `accelerate launch`
the pending rows are split between processes (`PartialState.split_between_processes`); every process
writes its own files and, after `wait_for_everyone`, the results are gathered by reading the files.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..artefacts import atomic_file
from ..encoders.checkpoint import load_pipeline, read_manifest
from ..pipelines.generate import (
    DEFAULT_GUIDANCE,
    DEFAULT_NUM_FRAMES,
    DEFAULT_STEPS,
    SAMPLERS,
    generate_images,
    generate_videos,
    sampler,
)

ORIGINAL, UNLEARNED = "original", "unlearned"


@dataclass(frozen=True)
class Row:
    """One sample to generate: the same (concept, prompt, seed) is one row per encoder, with identical noise."""

    kind: str
    model: str
    encoder: str  # a label: "original" or "unlearned"
    encoder_path: str | None  # the checkpoint folder, None for the model's own encoder
    concept: str
    prompt_index: int
    prompt: str
    seed: int

    def path(self, root: str | Path) -> Path:
        """Where this row's frames live under `root`; it depends on nothing but the row."""
        name = f"p{self.prompt_index:02d}_s{self.seed}.npy"
        encoder = self.encoder if self.encoder_path is None else f"{self.encoder}-{encoder_tag(self.encoder_path)}"
        return Path(root) / "samples" / self.kind / encoder / slug(self.concept) / name


@dataclass
class GenerationConfig:
    """How samples are generated."""

    steps: int = field(default=DEFAULT_STEPS, metadata={"help": "denoising steps per sample"})
    sampler: str = field(default="pipeline", metadata={"help": f"scheduler: {', '.join(SAMPLERS)}"})
    guidance: float = field(default=DEFAULT_GUIDANCE, metadata={"help": "classifier-free guidance scale"})
    num_frames: int = field(default=DEFAULT_NUM_FRAMES, metadata={"help": "frames per video"})
    image_batch_size: int = field(default=16, metadata={"help": "images per pipeline call"})
    video_batch_size: int = field(default=4, metadata={"help": "videos per pipeline call"})
    device: str = field(default="cpu", metadata={"help": "torch device of the pipelines"})
    progress: bool = field(default=True, metadata={"help": "show progress bars"})


@functools.cache
def encoder_tag(encoder_path: str) -> str:
    """A short content tag of an encoder checkpoint, so samples of different checkpoints never share a path."""
    if (Path(encoder_path) / "unlearn.json").is_file():
        fingerprint = read_manifest(encoder_path).unlearned_fingerprint
        if fingerprint:
            return str(fingerprint)[:12]
    return hashlib.sha256(str(Path(encoder_path).resolve()).encode()).hexdigest()[:12]


def slug(text: str) -> str:
    """A file-name-safe form of a concept name ("Van Gogh" -> "van-gogh")."""
    cleaned = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return cleaned or "concept"


def make_rows(
    kind: str,
    model: str,
    encoders: dict[str, str | None],
    prompts: dict[str, tuple[str, ...] | list[str]],
    seeds: list[int],
) -> list[Row]:
    """Every (encoder, concept, prompt, seed) combination for one kind, in a fixed order."""
    return [
        Row(kind, str(model), label, None if path is None else str(path), concept, i, prompt, int(seed))
        for label, path in encoders.items()
        for concept, concept_prompts in prompts.items()
        for i, prompt in enumerate(concept_prompts)
        for seed in seeds
    ]


# an evaluated kind -> the pipeline kind that generates it; "animatediff" is a second video family (AnimateDiff)
PIPELINE_KIND = {"image": "image", "video": "video", "animatediff": "video"}


def model_for_kind(model: str, kind: str) -> str:
    """A folder holding `image/` and `video/` pipelines (like TinyWorld's weights) stands for both kinds."""
    path = Path(model).expanduser()
    if path.is_dir() and not (path / "model_index.json").is_file() and (path / kind / "model_index.json").is_file():
        return str(path / kind)
    return str(model)


def pending_rows(rows: list[Row], root: str | Path) -> list[Row]:
    """The rows whose output file does not exist yet."""
    return [row for row in rows if not row.path(root).is_file()]


def save_sample(frames: np.ndarray, path: Path) -> None:
    """Write frames atomically (a temporary file, then a rename), so a killed run never leaves half a file."""
    with atomic_file(path) as tmp:
        np.save(tmp, np.ascontiguousarray(frames, dtype=np.uint8))


def load_sample(row: Row, root: str | Path) -> np.ndarray:
    """A row's frames, uint8 (F, H, W, 3)."""
    path = row.path(root)
    if not path.is_file():
        raise FileNotFoundError(f"no output for {row.kind} {row.encoder} {row.concept!r} seed {row.seed} at {path}")
    return np.load(path)


def generate_rows(
    rows: list[Row],
    root: str | Path,
    config: GenerationConfig | None = None,
    load: Callable = load_pipeline,
) -> list[Row]:
    """Generate the given rows that have no output yet (in this process) and return the rows generated.

    Rows are grouped by (kind, model, encoder) so that each pipeline is loaded once.
    """
    config = config or GenerationConfig()
    todo = pending_rows(rows, root)
    groups: dict[tuple[str, str, str | None], list[Row]] = {}
    for row in todo:
        groups.setdefault((row.kind, row.model, row.encoder_path), []).append(row)
    done = []
    bar = tqdm(total=len(todo), desc="generating", unit="sample", disable=not config.progress or not todo)
    for (kind, model, encoder_path), group in groups.items():
        # 1. load the pipeline with the encoder swapped in
        kind = PIPELINE_KIND[kind]
        pipe = load(
            kind, model=model_for_kind(model, kind), text_encoder=encoder_path, device=config.device, progress=False
        )
        batch_size = config.image_batch_size if kind == "image" else config.video_batch_size
        # 2. generate batch by batch, writing each sample as soon as its batch is done
        for start in range(0, len(group), batch_size):
            batch = group[start : start + batch_size]
            prompts, seeds = [r.prompt for r in batch], [r.seed for r in batch]
            with sampler(pipe, config.sampler):
                if kind == "image":
                    frames = generate_images(pipe, prompts, seeds, config.steps, config.guidance)[:, None]
                else:
                    frames = generate_videos(pipe, prompts, seeds, config.steps, config.guidance, config.num_frames)
            for row, sample in zip(batch, frames, strict=True):
                save_sample(sample, row.path(root))
                done.append(row)
            bar.update(len(batch))
        del pipe
    bar.close()
    return done


def distributed_state(device: str = "cpu"):
    """accelerate's `PartialState`; on the CPU it joins a torchrun/`accelerate launch` group over gloo.

    (`accelerate launch --cpu --num_processes N` starts N processes only through mpirun; launch CPU shards with
    `accelerate launch --multi_gpu --num_processes N` or `torchrun --nproc_per_node N` instead.)
    """
    from accelerate import PartialState

    return PartialState(cpu=str(device).startswith("cpu"))


def generate_distributed(
    rows: list[Row],
    root: str | Path,
    config: GenerationConfig | None = None,
    load: Callable = load_pipeline,
) -> list[Row]:
    """Split the pending rows between the processes of `accelerate launch` (one process without it).

    Every process must call this with the same rows. Returns the rows this process generated; once it
    returns, every process's files are written (all processes passed `wait_for_everyone`).
    """
    config = config or GenerationConfig()
    state = distributed_state(config.device)
    todo = pending_rows(rows, root)
    state.wait_for_everyone()  # every process has listed the same pending rows before any is written
    with state.split_between_processes(todo) as mine:
        done = generate_rows(list(mine), root, config, load) if mine else []
    state.wait_for_everyone()
    missing = pending_rows(rows, root)
    if missing:
        raise RuntimeError(f"{len(missing)} rows have no output after generation, e.g. {missing[0].path(root)}")
    return done
