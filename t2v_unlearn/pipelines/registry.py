"""The models the tool knows: TinyWorld (shipped) and real bases (their Hugging Face repos and published configs).

    resolve_registered("sd-2.1-base", "image")   # -> the cached snapshot folder, offline
    get_base("modelscope-1.7b").unet              # the UNet3DConditionModel config, as published
    conventions_for(pipe).prompts                 # "tinyworld" or "literature": asked, never guessed

Every entry of `MODELS` holds its `Conventions`: the prompt templates erase trains on and the evaluation suite
(which names its detector) that measures it. TinyWorld is one entry beside the real bases; the rest of the tool asks
`conventions_for(model)` instead of guessing from a tokenizer or a folder.

The configs are copied from the repos' own `*/config.json` files, so `pipelines/standins.py` can build
randomly initialised models of exactly the real shapes without downloading anything. Resolution never
downloads: a base whose weights are not in the Hugging Face cache raises an error that says which repo to
fetch and how (`hf download ...`). SD 2.x, ModelScope and Zeroscope share one text-encoder architecture
(OpenCLIP ViT-H/14 text tower, last layer dropped). SD 1.x uses CLIP ViT-L/14; its video counterpart is
AnimateDiff, a motion adapter that animates the SD 1.5 UNet and keeps SD 1.5's encoder: the entry
`animatediff-sd-1.5` is the adapter's repo plus the `sd-1.5` snapshot it animates (`motion_adapter_folder`).
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from .load import KINDS, TINYWORLD, TINYWORLD_ANIMATEDIFF, ModelNotFoundError, tinyworld_path

# --- the published configs -------------------------------------------------------------------------------------

# OpenCLIP ViT-H/14 text tower without its last layer: SD 2.0/2.1/2.1-base and ModelScope text-to-video
# (stabilityai/stable-diffusion-2-1*/text_encoder/config.json, damo-vilab/text-to-video-ms-1.7b/text_encoder/...)
OPENCLIP_H14_TEXT = {
    "architectures": ["CLIPTextModel"],
    "attention_dropout": 0.0,
    "bos_token_id": 0,
    "dropout": 0.0,
    "eos_token_id": 2,
    "hidden_act": "gelu",
    "hidden_size": 1024,
    "initializer_factor": 1.0,
    "initializer_range": 0.02,
    "intermediate_size": 4096,
    "layer_norm_eps": 1e-05,
    "max_position_embeddings": 77,
    "model_type": "clip_text_model",
    "num_attention_heads": 16,
    "num_hidden_layers": 23,
    "pad_token_id": 1,
    "projection_dim": 512,
    "vocab_size": 49408,
}

# CLIP ViT-L/14 text tower (openai/clip-vit-large-patch14), the encoder of SD 1.x
CLIP_L14_TEXT = {
    "architectures": ["CLIPTextModel"],
    "attention_dropout": 0.0,
    "bos_token_id": 0,
    "dropout": 0.0,
    "eos_token_id": 2,
    "hidden_act": "quick_gelu",
    "hidden_size": 768,
    "initializer_factor": 1.0,
    "initializer_range": 0.02,
    "intermediate_size": 3072,
    "layer_norm_eps": 1e-05,
    "max_position_embeddings": 77,
    "model_type": "clip_text_model",
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "pad_token_id": 1,
    "projection_dim": 768,
    "vocab_size": 49408,
}

# The special tokens of the CLIP BPE tokenizer; SD 2.x and ModelScope pad with "!" (special_tokens_map.json)
SD2_TOKENIZER = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
                 "pad_token": "!", "model_max_length": 77, "do_lower_case": True}  # fmt: skip
SD1_TOKENIZER = {**SD2_TOKENIZER, "pad_token": "<|endoftext|>"}

_SD_DOWN_2D = ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"]
_SD_UP_2D = ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]

# stabilityai/stable-diffusion-2-1-base/unet/config.json (stable-diffusion-2-1: sample_size 96, upcast_attention)
SD21_BASE_UNET = {
    "act_fn": "silu",
    "attention_head_dim": [5, 10, 20, 20],  # in UNet2DConditionModel: the NUMBER of heads per block (width 64)
    "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False,
    "cross_attention_dim": 1024,
    "down_block_types": _SD_DOWN_2D,
    "downsample_padding": 1,
    "dual_cross_attention": False,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "num_class_embeds": None,
    "only_cross_attention": False,
    "out_channels": 4,
    "sample_size": 64,
    "up_block_types": _SD_UP_2D,
    "use_linear_projection": True,
}
SD21_UNET = {**SD21_BASE_UNET, "sample_size": 96, "upcast_attention": True}

# runwayml/stable-diffusion-v1-5/unet/config.json
SD15_UNET = {
    **{k: v for k, v in SD21_BASE_UNET.items() if k not in ("use_linear_projection", "dual_cross_attention")},
    "attention_head_dim": 8,
    "cross_attention_dim": 768,
}

# damo-vilab/text-to-video-ms-1.7b/unet/config.json
MODELSCOPE_UNET = {
    "act_fn": "silu",
    "attention_head_dim": 64,  # in UNet3DConditionModel: the WIDTH of a head (see TECH-NOTES.md)
    "block_out_channels": [320, 640, 1280, 1280],
    "cross_attention_dim": 1024,
    "down_block_types": ["CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "DownBlock3D"],
    "downsample_padding": 1,
    "in_channels": 4,
    "layers_per_block": 2,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "out_channels": 4,
    "sample_size": 32,
    "up_block_types": ["UpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D"],
}

# guoyww/animatediff-motion-adapter-v1-5-2/config.json (AnimateDiff's mm_sd_v15_v2 motion modules, converted by
# diffusers' scripts/convert_animatediff_motion_module_to_diffusers.py --use_motion_mid_block): motion modules for
# the SD 1.5 UNet's channels, 2 per block plus one in the mid block, 8 heads, positions for up to 32 frames
MOTION_ADAPTER_V15_2 = {
    "block_out_channels": [320, 640, 1280, 1280],
    "conv_in_channels": None,
    "motion_layers_per_block": 2,
    "motion_max_seq_length": 32,
    "motion_mid_block_layers_per_block": 1,
    "motion_norm_num_groups": 32,
    "motion_num_attention_heads": 8,
    "use_motion_mid_block": True,
}

# the Stable Diffusion VAE (*/vae/config.json); the same architecture in every base here
SD_VAE = {
    "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "in_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": 768,
    "scaling_factor": 0.18215,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
}

# */scheduler/scheduler_config.json: the SD noise schedule, shared by every base here
_SD_SCHEDULE = {
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
}

# SD 2.x, ModelScope and Zeroscope: an encoder unlearned on one fits the others' architecture and tokenizer
SD2_ENCODER_FAMILY = "openclip-vit-h-14-text-23-layers"
SD1_ENCODER_FAMILY = "clip-vit-l-14-text"
WEIGHT_PATTERNS = ["model_index.json", "*/*.json", "*/*.txt", "*/*.safetensors"]
ADAPTER_PATTERNS = ["config.json", "*.safetensors"]  # a MotionAdapter repo: one model at its root


@dataclass(frozen=True)
class Conventions:
    """How the rest of the tool treats a model family: what it asks the registry instead of guessing."""

    prompts: str = field(
        metadata={
            "help": "erase's prompt templates: 'tinyworld' (the world's captions, "
            "tinyworld/taxonomy.json) or 'literature' (encoders/prompts.py)"
        }
    )
    suite: str = field(
        metadata={
            "help": "the default evaluation suite (eval/suites/NAME.json), which names its "
            "detector and the detector folder its normalisation"
        }
    )


LITERATURE = Conventions(prompts="literature", suite="sd2")
TINYWORLD_CONVENTIONS = Conventions(prompts="tinyworld", suite="tinyworld")


@dataclass(frozen=True)
class ShippedModel:
    """A model shipped inside the package (TinyWorld's): one pipeline folder per kind it serves."""

    name: str
    folders: dict[str, str]  # kind -> the folder under tinyworld/weights
    conventions: Conventions

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(self.folders)

    def folder(self, kind: str) -> Path:
        """The shipped pipeline folder of `kind` ("image" or "video")."""
        if kind not in self.folders:
            raise RegistryError(f"{self.name} serves {' and '.join(self.kinds)} only, not {kind}")
        return tinyworld_path(self.folders[kind])


@dataclass(frozen=True)
class RegisteredBase:
    """A published base model: where it lives on the hub, what it serves, its component configs."""

    name: str = field(metadata={"help": "the registry name, e.g. sd-2.1-base"})
    repo_id: str = field(metadata={"help": "the Hugging Face repo id"})
    kinds: tuple[str, ...] = field(metadata={"help": "what it serves: 'image' and/or 'video'"})
    pipeline_class: str = field(metadata={"help": "the diffusers pipeline class of the repo"})
    encoder_family: str = field(metadata={"help": "bases of one family share the encoder architecture"})
    text_encoder: dict = field(metadata={"help": "CLIPTextConfig fields"})
    tokenizer: dict = field(metadata={"help": "CLIPTokenizer special tokens and maximum length"})
    unet_class: str = field(metadata={"help": "UNet2DConditionModel or UNet3DConditionModel"})
    unet: dict = field(metadata={"help": "the UNet config"})
    vae: dict = field(metadata={"help": "the AutoencoderKL config"})
    scheduler_class: str = field(metadata={"help": "the repo's default scheduler class"})
    scheduler: dict = field(metadata={"help": "the scheduler config, prediction_type included"})
    height: int = field(metadata={"help": "default output height in pixels"})
    width: int = field(metadata={"help": "default output width in pixels"})
    aliases: tuple[str, ...] = field(default=(), metadata={"help": "other repo ids of the same weights"})
    encoder_note: str = field(default="", metadata={"help": "what is known about its encoder's weights"})
    conventions: Conventions = field(default=LITERATURE, metadata={"help": "prompts and suite (see Conventions)"})
    animates: str | None = field(
        default=None,
        metadata={"help": "a motion adapter's entry: the registered image base whose snapshot it animates (the "
                          "encoder, tokenizer, VAE and image UNet come from there; repo_id holds the adapter)"},
    )  # fmt: skip
    motion_adapter: dict | None = field(default=None, metadata={"help": "the MotionAdapter config (with animates)"})

    @property
    def prediction_type(self) -> str:
        return self.scheduler["prediction_type"]

    def config(self, component: str) -> dict:
        """A deep copy of one component's config: text_encoder, tokenizer, unet, vae or scheduler."""
        return copy.deepcopy(getattr(self, component))

    @property
    def weight_patterns(self) -> list[str]:
        """The repo's files this tool loads: a pipeline's diffusers files, or a motion adapter's config and weights."""
        return ADAPTER_PATTERNS if self.animates else WEIGHT_PATTERNS

    def download_command(self) -> str:
        """The shell command that puts this base's diffusers files (no .ckpt duplicates) in the HF cache."""
        patterns = " ".join(f'"{p}"' for p in self.weight_patterns)
        return f"hf download {self.repo_id} --include {patterns}"


# sd-1.5, named here because the AnimateDiff pair is derived from it
_SD15 = RegisteredBase(
    name="sd-1.5",
    repo_id="stable-diffusion-v1-5/stable-diffusion-v1-5",
    aliases=("runwayml/stable-diffusion-v1-5",),
    kinds=("image",),
    pipeline_class="StableDiffusionPipeline",
    encoder_family=SD1_ENCODER_FAMILY,
    text_encoder=CLIP_L14_TEXT,
    tokenizer=SD1_TOKENIZER,
    unet_class="UNet2DConditionModel",
    unet=SD15_UNET,
    vae={**SD_VAE, "sample_size": 512},
    scheduler_class="PNDMScheduler",
    scheduler={**_SD_SCHEDULE, "prediction_type": "epsilon"},
    height=512,
    width=512,
    encoder_note="CLIP ViT-L/14 text tower (hidden 768, 12 layers); animatediff-sd-1.5 animates it with "
    "this very encoder",
)


REGISTRY: dict[str, RegisteredBase] = {
    base.name: base
    for base in (
        RegisteredBase(
            name="sd-2.1-base",
            repo_id="stabilityai/stable-diffusion-2-1-base",
            kinds=("image",),
            pipeline_class="StableDiffusionPipeline",
            encoder_family=SD2_ENCODER_FAMILY,
            text_encoder=OPENCLIP_H14_TEXT,
            tokenizer=SD2_TOKENIZER,
            unet_class="UNet2DConditionModel",
            unet=SD21_BASE_UNET,
            vae=SD_VAE,
            scheduler_class="PNDMScheduler",
            scheduler={**_SD_SCHEDULE, "prediction_type": "epsilon"},
            height=512,
            width=512,
            encoder_note="frozen OpenCLIP ViT-H/14 text tower, expected identical to sd-2.1's; check with inspect",
        ),
        RegisteredBase(
            name="sd-2.1",
            repo_id="stabilityai/stable-diffusion-2-1",
            kinds=("image",),
            pipeline_class="StableDiffusionPipeline",
            encoder_family=SD2_ENCODER_FAMILY,
            text_encoder=OPENCLIP_H14_TEXT,
            tokenizer=SD2_TOKENIZER,
            unet_class="UNet2DConditionModel",
            unet=SD21_UNET,
            vae=SD_VAE,
            scheduler_class="DDIMScheduler",
            scheduler={**_SD_SCHEDULE, "prediction_type": "v_prediction"},
            height=768,
            width=768,
            encoder_note="frozen OpenCLIP ViT-H/14 text tower; ModelScope's fp16 encoder is byte-identical to it",
        ),
        RegisteredBase(
            name="modelscope-1.7b",
            repo_id="damo-vilab/text-to-video-ms-1.7b",
            aliases=("ali-vilab/text-to-video-ms-1.7b",),
            kinds=("video",),
            pipeline_class="TextToVideoSDPipeline",
            encoder_family=SD2_ENCODER_FAMILY,
            text_encoder=OPENCLIP_H14_TEXT,
            tokenizer=SD2_TOKENIZER,
            unet_class="UNet3DConditionModel",
            unet=MODELSCOPE_UNET,
            vae={**SD_VAE, "sample_size": 512},
            scheduler_class="DDIMScheduler",
            scheduler={**_SD_SCHEDULE, "prediction_type": "epsilon"},
            height=256,
            width=256,
            encoder_note="fp16 weights byte-identical to sd-2.1's encoder, tokenizer files identical (pad '!')",
        ),
        RegisteredBase(
            name="zeroscope-v2-576w",
            repo_id="cerspense/zeroscope_v2_576w",
            kinds=("video",),
            pipeline_class="TextToVideoSDPipeline",
            encoder_family=SD2_ENCODER_FAMILY,
            text_encoder=OPENCLIP_H14_TEXT,
            tokenizer=SD2_TOKENIZER,
            unet_class="UNet3DConditionModel",
            unet=MODELSCOPE_UNET,  # fine-tuned from ModelScope, same architecture
            vae={**SD_VAE, "sample_size": 512},
            scheduler_class="DDIMScheduler",
            scheduler={**_SD_SCHEDULE, "prediction_type": "epsilon"},
            height=320,
            width=576,
            encoder_note="fine-tuned from ModelScope; whether its encoder still equals sd-2.1's is not established: "
            "compare tensor by tensor with `t2v-unlearn inspect zeroscope-v2-576w sd-2.1-base`",
        ),
        _SD15,
        # AnimateDiff animates sd-1.5: its snapshot's encoder, tokenizer, VAE, image UNet and scheduler, plus the
        # motion adapter of this repo (AnimateDiffPipeline wraps the UNet in a UNetMotionModel)
        replace(
            _SD15,
            name="animatediff-sd-1.5",
            repo_id="guoyww/animatediff-motion-adapter-v1-5-2",
            aliases=(),
            kinds=("video",),
            pipeline_class="AnimateDiffPipeline",
            animates=_SD15.name,
            motion_adapter=MOTION_ADAPTER_V15_2,
            encoder_note="SD 1.5's own encoder, tokenizer and VAE (loaded from the sd-1.5 snapshot): an encoder "
            "unlearned on sd-1.5 is the encoder this pipeline runs",
        ),
    )
}

TINYWORLD_MODEL = ShippedModel(TINYWORLD, {"image": "image", "video": "video"}, TINYWORLD_CONVENTIONS)
# TinyWorld's image model animated by AnimateDiff's motion modules: the same encoder, a second video family
TINYWORLD_ANIMATEDIFF_MODEL = ShippedModel(TINYWORLD_ANIMATEDIFF, {"video": "animatediff"}, TINYWORLD_CONVENTIONS)
# every model the tool knows by name: TinyWorld's and the real bases
MODELS: dict[str, ShippedModel | RegisteredBase] = {
    TINYWORLD: TINYWORLD_MODEL,
    TINYWORLD_ANIMATEDIFF: TINYWORLD_ANIMATEDIFF_MODEL,
    **REGISTRY,
}


def model_entry(model) -> ShippedModel | RegisteredBase | None:
    """The entry a model belongs to: a name, a pipeline folder, or a loaded pipeline (its `name_or_path`).

    A folder is TinyWorld's when it is a folder of a TinyWorld export (the `tinyworld.train` export stage writes
    training.json beside the pipeline folders; the shipped weights are one), and a registered base's when it is that
    base's Hugging Face cache snapshot (`models--ORG--NAME/snapshots/REVISION`). None for any other folder.
    """
    model = getattr(model, "name_or_path", model)  # a loaded pipeline
    if not model:
        return None
    if str(model) in MODELS:
        return MODELS[str(model)]
    path = Path(str(model)).expanduser()
    if (path / "training.json").is_file() or (path.parent / "training.json").is_file():
        return TINYWORLD_ANIMATEDIFF_MODEL if path.name == "animatediff" else TINYWORLD_MODEL
    repos = {repo: base for base in REGISTRY.values() for repo in (base.repo_id, *base.aliases)}
    cached = [p.removeprefix("models--").replace("--", "/", 1) for p in path.parts if p.startswith("models--")]
    return next((repos[repo] for repo in cached if repo in repos), None)


def animatediff_for(model) -> str | None:
    """The registered AnimateDiff pair that animates `model` (a registered image base: a name, a cached snapshot or
    a loaded pipeline), e.g. "animatediff-sd-1.5" for "sd-1.5"; None when the registry holds none."""
    entry = model_entry(model)
    if not isinstance(entry, RegisteredBase):
        return None
    return next((base.name for base in REGISTRY.values() if base.animates == entry.name), None)


def conventions_for(model) -> Conventions:
    """A model's conventions (see `model_entry`); the literature's for a model the registry does not know."""
    entry = model_entry(model)
    return entry.conventions if entry is not None else LITERATURE


# the message for a kind a base does not serve, where there is more to say than "it does not"
_KIND_HINTS = {
    (SD1_ENCODER_FAMILY, "video"): "For video use animatediff-sd-1.5 (SD 1.5 animated by AnimateDiff's motion "
    "adapter), which runs SD 1.5's own encoder; its CLIP ViT-L/14 encoder cannot serve ModelScope/Zeroscope "
    "(hidden 768 vs 1024).",
    (SD1_ENCODER_FAMILY, "image"): "AnimateDiff animates sd-1.5: erase on sd-1.5, whose text encoder it runs, then "
    "swap the checkpoint into this video model.",
    (SD2_ENCODER_FAMILY, "video"): "For video use modelscope-1.7b or zeroscope-v2-576w, which share its text "
    "encoder architecture: an encoder unlearned on it can be swapped into them.",
    (SD2_ENCODER_FAMILY, "image"): "Erasing needs an image pipeline: unlearn on sd-2.1-base or sd-2.1, whose "
    "text encoder it shares, then swap the checkpoint into this video model.",
}


class RegistryError(ValueError):
    """A registered base asked for something it does not serve."""


class BaseNotDownloadedError(ModelNotFoundError):
    """A registered base whose weights are not in the local Hugging Face cache."""


def registered_names() -> list[str]:
    return list(REGISTRY)


def get_base(name: str) -> RegisteredBase:
    """The registry entry for a name; a `KeyError` that lists the known names otherwise."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"{name!r} is not a registered base; known: {', '.join(REGISTRY)}") from None


def check_kind(base: RegisteredBase, kind: str) -> None:
    """Raise a `RegistryError` explaining why, if `base` does not serve `kind` ("image" or "video")."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if kind in base.kinds:
        return
    hint = _KIND_HINTS.get((base.encoder_family, kind), "")
    raise RegistryError(f"{base.name} ({base.repo_id}) is {'an image' if kind == 'video' else 'a video'} model "
                        f"and serves no {kind} pipeline. {hint}".strip())  # fmt: skip


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache, read from the environment now (HF_HUB_CACHE, else HF_HOME/hub)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")) / "huggingface"
    return Path(home).expanduser() / "hub"


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE")


def missing_components(folder: Path, base: RegisteredBase) -> list[str]:
    """What a snapshot folder lacks to load as `base`: model_index.json, configs, weights, tokenizer files (for a
    motion adapter: its config.json and weights)."""
    if base.animates:
        missing = [] if (folder / "config.json").is_file() else ["config.json"]
        return missing + ([] if any(folder.glob("*.safetensors")) else ["weights (*.safetensors)"])
    missing = [] if (folder / "model_index.json").is_file() else ["model_index.json"]
    for component in ("text_encoder", "unet", "vae"):
        sub = folder / component
        if not (sub / "config.json").is_file():
            missing.append(f"{component}/config.json")
        if not any(sub.glob("*.safetensors")) and not any(sub.glob("*.bin")):
            missing.append(f"{component} weights")
    if not (folder / "scheduler" / "scheduler_config.json").is_file():
        missing.append("scheduler/scheduler_config.json")
    tokenizer = folder / "tokenizer"
    if not (tokenizer / "tokenizer.json").is_file() and not (tokenizer / "vocab.json").is_file():
        missing.append("tokenizer files")
    return missing


def cached_snapshot(base: RegisteredBase, cache_dir: str | Path | None = None) -> Path | None:
    """The cached snapshot folder of a base (its repo id or an alias), without network; None if absent."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    cache_dir = Path(cache_dir) if cache_dir is not None else hub_cache_dir()
    for repo_id in (base.repo_id, *base.aliases):
        try:
            return Path(snapshot_download(repo_id, cache_dir=cache_dir, local_files_only=True))
        except (LocalEntryNotFoundError, FileNotFoundError):
            continue
    return None


def resolve_registered(name: str, kind: str, local_files_only: bool = True) -> Path | None:
    """The local diffusers folder of a registered base, from the Hugging Face cache; None for unknown names.

    For an AnimateDiff entry it is the folder of the image base it animates (its encoder's home), once the motion
    adapter is cached too; `load_pipeline` adds the adapter from `motion_adapter_folder`.

    Args:
        name: a registry name (`registered_names()`).
        kind: "image" or "video"; a base that does not serve it raises a `RegistryError` saying why.
        local_files_only: never reach the network (the default). With False, and HF_HUB_OFFLINE unset, a base
            missing from the cache is downloaded (only its diffusers files, `WEIGHT_PATTERNS`).
    Raises:
        BaseNotDownloadedError: the base is known but its weights are not (all) in the cache; the message
            names the repo and the command that fetches it.
    """
    if name not in REGISTRY:
        return None
    base = REGISTRY[name]
    check_kind(base, kind)
    if base.animates:  # the adapter must be there too; the pipeline's folder is the image base's snapshot
        motion_adapter_folder(name, local_files_only)
        return resolve_registered(base.animates, "image", local_files_only)
    return _snapshot(base, local_files_only)


def motion_adapter_folder(name: str, local_files_only: bool = True) -> Path | None:
    """The cached MotionAdapter folder of an AnimateDiff entry (`animates` set); None for any other name.

    Raises `BaseNotDownloadedError`, naming the adapter's repo and its download command, when it is not cached.
    """
    base = REGISTRY.get(name)
    return _snapshot(base, local_files_only) if base is not None and base.animates else None


def _snapshot(base: RegisteredBase, local_files_only: bool) -> Path:
    """A base's complete cached snapshot (downloaded only with `local_files_only=False` and not offline)."""
    name = base.name
    cache_dir = hub_cache_dir()
    folder = cached_snapshot(base, cache_dir)
    if folder is None and not local_files_only and not _offline():
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(base.repo_id, cache_dir=cache_dir, allow_patterns=base.weight_patterns))
    if folder is None:
        why = "HF_HUB_OFFLINE is set" if _offline() else "t2v_unlearn never downloads on its own"
        raise BaseNotDownloadedError(
            f"{name} is a registered base, but its weights ({base.repo_id}) are not in the Hugging Face cache at "
            f"{cache_dir} ({why}). Download them once with `{base.download_command()}` (or "
            f"`huggingface-cli download {base.repo_id}` with older huggingface_hub), or pass a local diffusers "
            "folder as the model."
        )
    missing = missing_components(folder, base)
    if missing:
        raise BaseNotDownloadedError(
            f"the cached snapshot of {name} at {folder} is incomplete (missing {', '.join(missing)}); "
            f"complete it with `{base.download_command()}`"
        )
    if base.animates:
        return folder
    found = json.loads((folder / "model_index.json").read_text()).get("_class_name")
    if found != base.pipeline_class:
        raise RegistryError(
            f"the cached snapshot of {name} at {folder} holds a {found}, not the {base.pipeline_class} the registry "
            f"expects; update it with `{base.download_command()}`"
        )
    return folder


def shared_encoder_architecture(a: str, b: str) -> bool:
    """Whether two registered bases have the same text-encoder architecture and tokenizer (by config alone).

    Equal configs are necessary, not sufficient, for a swap: the weights must also be the same; compare them
    with `t2v-unlearn inspect A B` once both are downloaded.
    """
    first, second = get_base(a), get_base(b)
    return first.text_encoder == second.text_encoder and first.tokenizer == second.tokenizer
