"""One way to get a ready diffusers pipeline: `load_pipeline(kind, model, text_encoder=...)`.

`model` is `tinyworld` (the embedded default), `tinyworld-animatediff` (TinyWorld's image model animated by
AnimateDiff's motion modules, video only), a registered base name (see `pipelines/registry.py`) or a local
diffusers folder. A video pipeline is a `TextToVideoSDPipeline` (ModelScope-style) or an `AnimateDiffPipeline`.
`text_encoder` is a loaded encoder, or a function that makes one from the pipeline's own encoder and tokenizer;
`t2v_unlearn.encoders.load_pipeline` passes one that reads an encoder checkpoint from `t2v-unlearn erase` and
checks that it fits (this layer knows nothing of checkpoints).
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from diffusers import (
    AnimateDiffPipeline,
    DiffusionPipeline,
    MotionAdapter,
    StableDiffusionPipeline,
    TextToVideoSDPipeline,
)

TINYWORLD = "tinyworld"
TINYWORLD_ANIMATEDIFF = "tinyworld-animatediff"
WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "tinyworld" / "weights"
# the pipeline classes each kind accepts, the first its default
PIPELINE_CLASSES = {
    "image": (StableDiffusionPipeline,),
    "video": (TextToVideoSDPipeline, AnimateDiffPipeline),
}
KINDS = tuple(PIPELINE_CLASSES)


class ModelNotFoundError(FileNotFoundError):
    pass


def tinyworld_path(component: str) -> Path:
    """The folder of a shipped TinyWorld model: `image`, `video`, `animatediff`, `evaluator` or `classifier`."""
    path = WEIGHTS_DIR / component
    if not path.is_dir():
        raise ModelNotFoundError(
            f"the TinyWorld {component} model is missing at {path}; reinstall t2v_unlearn or retrain it with "
            "`python -m t2v_unlearn.tinyworld.train`"
        )
    return path


def resolve_model(model: str | Path, kind: str) -> Path:
    """Map a model argument to a local diffusers pipeline folder for `kind` ("image" or "video")."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if str(model) == TINYWORLD:
        return tinyworld_path(kind)
    if str(model) == TINYWORLD_ANIMATEDIFF:
        if kind != "video":
            raise ModelNotFoundError(f"{TINYWORLD_ANIMATEDIFF} is a video model (AnimateDiff); for images use "
                                     f"--model {TINYWORLD}, whose image UNet it animates")  # fmt: skip
        return tinyworld_path("animatediff")
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise ModelNotFoundError(f"{path} is a folder but not a diffusers pipeline (no model_index.json)")
        return path
    from .registry import resolve_registered  # registry names resolve through the Hugging Face cache

    resolved = resolve_registered(str(model), kind)
    if resolved is not None:
        return resolved
    raise ModelNotFoundError(
        f"model {str(model)!r} is neither 'tinyworld', a registered base name, nor an existing folder; "
        f"pass '{TINYWORLD_ANIMATEDIFF}', a local diffusers pipeline folder, or see `t2v-unlearn inspect --help`"
    )


def pipeline_class_name(path: Path) -> str:
    return json.loads((path / "model_index.json").read_text()).get("_class_name", "?")


EncoderSwap = Callable[[torch.nn.Module, object], torch.nn.Module]  # (pipeline's encoder, tokenizer) -> encoder


def load_pipeline(
    kind: str = "image",
    model: str | Path = TINYWORLD,
    text_encoder: torch.nn.Module | EncoderSwap | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    progress: bool = True,
    offload: bool = False,
    vae_slicing: bool = False,
) -> DiffusionPipeline:
    """Load an image (`StableDiffusionPipeline`) or video (`TextToVideoSDPipeline`, `AnimateDiffPipeline`) pipeline.

    Args:
        kind: "image" or "video".
        model: "tinyworld", "tinyworld-animatediff" (video), a registered base name, or a local diffusers folder.
        text_encoder: an encoder to use instead of the pipeline's, or a function of (the pipeline's encoder, its
            tokenizer) that returns one. For an encoder checkpoint folder use `t2v_unlearn.encoders.load_pipeline`.
        offload: on a GPU, keep each model in CPU memory until its turn (diffusers' model CPU offload, through
            accelerate): peak GPU memory drops to the largest model. Ignored on the CPU.
        vae_slicing: decode one image, or one video frame, at a time: less memory for the same output.
    """
    from .registry import motion_adapter_folder

    path = resolve_model(model, kind)
    found, extra = pipeline_class_name(path), {}
    classes = {c.__name__: c for c in PIPELINE_CLASSES[kind]}
    adapter = motion_adapter_folder(str(model)) if kind == "video" and not Path(model).expanduser().is_dir() else None
    if adapter is not None:  # a registered AnimateDiff pair: the image base's folder, animated by the adapter
        with warnings.catch_warnings(), _quiet_loading():
            warnings.simplefilter("ignore", FutureWarning)
            extra["motion_adapter"] = MotionAdapter.from_pretrained(adapter, dtype=dtype)
        found = AnimateDiffPipeline.__name__
    if found not in classes:
        other = "video" if kind == "image" else "image"
        raise ValueError(
            f"{path} holds a {found}, but a {kind} pipeline needs a {' or '.join(classes)} folder; "
            f"pass --kind {other} or another --model"
        )
    cls = classes[found]
    with warnings.catch_warnings(), _quiet_loading():
        warnings.simplefilter("ignore", FutureWarning)
        pipe = cls.from_pretrained(path, dtype=dtype, **extra)
    if isinstance(text_encoder, str | Path):
        raise TypeError(
            f"t2v_unlearn.pipelines.load_pipeline takes a loaded encoder, not the folder {text_encoder}; load an "
            "encoder checkpoint with t2v_unlearn.encoders.load_pipeline, which checks that it fits the pipeline"
        )
    if text_encoder is not None:  # swapped in before placement, so offloading hooks see the encoder that is used
        if not isinstance(text_encoder, torch.nn.Module):
            text_encoder = text_encoder(pipe.text_encoder, pipe.tokenizer)
        pipe.text_encoder = text_encoder.to(dtype)
    if vae_slicing:
        pipe.vae.enable_slicing()
    if offload and torch.device(device).type == "cuda":
        pipe.enable_model_cpu_offload(device=device)
    else:
        pipe.to(device)
    pipe.set_progress_bar_config(disable=not progress, leave=False)
    return pipe


class _quiet_loading:
    """Silence the deprecation notice TextToVideoSDPipeline logs on every construction, and loading bars."""

    def __enter__(self):
        from diffusers.utils import logging as diffusers_logging
        from transformers.utils import logging as transformers_logging

        self.modules = (diffusers_logging, transformers_logging)
        self.logger = logging.getLogger("diffusers")
        self.level = self.logger.level
        self.logger.setLevel(logging.ERROR)
        self.bars = [m.is_progress_bar_enabled() for m in self.modules]
        for module in self.modules:
            module.disable_progress_bar()

    def __exit__(self, *exc):
        self.logger.setLevel(self.level)
        for module, enabled in zip(self.modules, self.bars, strict=True):
            if enabled:
                module.enable_progress_bar()
