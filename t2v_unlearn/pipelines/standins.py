"""Randomly initialised stand-ins of the registered bases, built offline with the real classes and shapes.

    image = build_standin("sd-2.1-base")              # StableDiffusionPipeline, 865M-parameter UNet, random
    video = build_standin("modelscope-1.7b")          # TextToVideoSDPipeline, 1.41B-parameter UNet3D, random
    animated = build_standin("animatediff-sd-1.5")    # AnimateDiffPipeline: SD 1.5's shapes plus a MotionAdapter
    encoder_fingerprint(image.text_encoder) == encoder_fingerprint(video.text_encoder)  # True: same seed

They exercise the real-scale code paths (memory, time, the encoder swap between image and video) without a
download. Their outputs are noise: no quality or erasure figure may be read off them. The tokenizer is a real
CLIP byte-level BPE with a small synthetic vocabulary (any text tokenizes, byte by byte where it must) and
the base's own special tokens ("!" pads SD 2.x and ModelScope); the embedding keeps the published vocab size.

`scale="reduced"` builds the same structure (classes, block types, the SD 2.x/ModelScope encoder identity,
the 768-vs-1024 split of SD 1.x) at a few hundred thousand parameters, for fast tests.
"""

from __future__ import annotations

import contextlib
import functools
import json
import tempfile
from pathlib import Path

import torch
from diffusers import (
    AnimateDiffPipeline,
    AutoencoderKL,
    DDIMScheduler,
    DiffusionPipeline,
    MotionAdapter,
    PNDMScheduler,
    StableDiffusionPipeline,
    TextToVideoSDPipeline,
    UNet2DConditionModel,
    UNet3DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from .registry import SD1_ENCODER_FAMILY, RegisteredBase, get_base

SCALES = ("real", "reduced")
STANDIN_FILE = "standin.json"
_UNET_CLASSES = {"UNet2DConditionModel": UNet2DConditionModel, "UNet3DConditionModel": UNet3DConditionModel}
_SCHEDULER_CLASSES = {"DDIMScheduler": DDIMScheduler, "PNDMScheduler": PNDMScheduler}
# each component draws from its own seed, so the encoder does not depend on which UNet is built beside it
_SEED_OFFSETS = {"unet": 1, "vae": 2, "motion_adapter": 3}
END_OF_WORD, BOS, EOS = "</w>", "<|startoftext|>", "<|endoftext|>"

# words the synthetic BPE learns merges for: the literature's prompt templates and common concept names
_CORPUS = """
a photo of an image picture painting drawing portrait landscape artwork in the style by art with and on at
the dog cat car bird horse fish tree flower house city street mountain lake river sea beach forest snow rain
sky night day sunset sunrise red blue green yellow black white man woman child people face hand table chair
apple fruit food cup coffee bowl ship boat bicycle garden park village harbor robot cartoon watercolor oil
closeup moving running walking flying dancing video of slowly fast camera zoom left right
snoopy mickey mouse pikachu van gogh picasso monet starry night nudity church parachute tench golf ball
""".split()


# --- the synthetic tokenizer ---------------------------------------------------------------------------------


def _word_merges(words: list[str]) -> list[tuple[str, str]]:
    """BPE merges that build each word left to right, in sorted word order: deterministic in every process.

    (The `tokenizers` trainer breaks ties in hash order, so its merges, and the tokenizer fingerprint, would
    change from one process to the next.) Where an earlier word's merge wins, a word ends up as a few tokens.
    """
    merges, seen = [], set()
    for word in sorted(set(words)):
        symbols = list(word[:-1]) + [word[-1] + END_OF_WORD]
        token = symbols[0]
        for symbol in symbols[1:]:
            if (token, symbol) not in seen:
                seen.add((token, symbol))
                merges.append((token, symbol))
            token += symbol
    return merges


@functools.lru_cache(maxsize=1)
def _vocabulary() -> tuple[dict[str, int], tuple[tuple[str, str], ...]]:
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    merges = _word_merges(_CORPUS)
    symbols = list(bytes_to_unicode().values())
    tokens = symbols + [s + END_OF_WORD for s in symbols]  # laid out as CLIP's: bytes, bytes</w>, merges, specials
    seen = set(tokens)
    for left, right in merges:
        if left + right not in seen:
            seen.add(left + right)
            tokens.append(left + right)
    tokens += [BOS, EOS]
    return {token: i for i, token in enumerate(tokens)}, tuple(merges)


def standin_tokenizer(base: RegisteredBase | str) -> CLIPTokenizer:
    """A CLIP BPE tokenizer with a small synthetic vocabulary and the base's special tokens and padding."""
    base = get_base(base) if isinstance(base, str) else base
    vocab, merges = _vocabulary()
    special = base.config("tokenizer")
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
        (Path(folder) / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
        return CLIPTokenizer.from_pretrained(
            folder,
            model_max_length=special["model_max_length"],
            bos_token=special["bos_token"],
            eos_token=special["eos_token"],
            unk_token=special["unk_token"],
            pad_token=special["pad_token"],
        )


# --- configs -------------------------------------------------------------------------------------------------


def standin_configs(base: RegisteredBase | str, scale: str = "real") -> dict[str, dict]:
    """The component configs of a stand-in: the published ones, or (`reduced`) the same structure made tiny.

    The reduced encoder keeps the vocabulary, the 77 positions and the activation; SD 1.x's is narrower than
    SD 2.x's (48 vs 64, as 768 vs 1024), so the architecture check still tells them apart.
    """
    base = get_base(base) if isinstance(base, str) else base
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")
    configs = {name: base.config(name) for name in ("text_encoder", "unet", "vae", "scheduler")}
    if base.motion_adapter is not None:
        configs["motion_adapter"] = base.config("motion_adapter")
    if scale == "real":
        return configs
    sd1 = base.encoder_family == SD1_ENCODER_FAMILY
    width = 48 if sd1 else 64
    configs["text_encoder"].update(hidden_size=width, intermediate_size=4 * width, num_attention_heads=4,
                                   num_hidden_layers=2 if sd1 else 3, projection_dim=width)  # fmt: skip
    unet = configs["unet"]
    video = base.unet_class == "UNet3DConditionModel"
    unet.update(
        block_out_channels=[32, 64],
        down_block_types=[unet["down_block_types"][0], unet["down_block_types"][-1]],
        up_block_types=[unet["up_block_types"][0], unet["up_block_types"][-1]],
        layers_per_block=1,
        cross_attention_dim=width,
        sample_size=8,
        # UNet3D: width of a head; UNet2D: number of heads per block (heads of width 16 either way)
        attention_head_dim=16 if video else ([2, 4] if isinstance(unet["attention_head_dim"], list) else 2),
    )
    configs["vae"].update(block_out_channels=[32, 32, 32, 32], layers_per_block=1, sample_size=64)
    if "motion_adapter" in configs:  # one motion module per UNet layer, on the reduced UNet's channels
        configs["motion_adapter"].update(block_out_channels=unet["block_out_channels"], motion_layers_per_block=1,
                                         motion_num_attention_heads=2)  # fmt: skip
    return configs


# --- building ------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _seeded(seed: int, dtype: torch.dtype | None = None):
    """Draw from a private seeded RNG (the global one is left as it was), optionally in a default dtype."""
    previous = torch.get_default_dtype()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if dtype is not None and dtype.is_floating_point:
            torch.set_default_dtype(dtype)
        try:
            yield
        finally:
            torch.set_default_dtype(previous)


def _as_dtype(model: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    # built in the default dtype already; a needless .to() makes diffusers warn about modules kept in fp32
    return model if all(p.dtype == dtype for p in model.parameters()) else model.to(dtype)


def standin_text_encoder(base: RegisteredBase | str, scale: str = "real", seed: int = 0,
                         dtype: torch.dtype = torch.float32) -> CLIPTextModel:  # fmt: skip
    """A random CLIPTextModel of the base's architecture; the same (config, seed) gives identical tensors.

    It is drawn in float32 whatever `dtype` is, then cast, so stand-ins of any dtype share the same values.
    """
    config = CLIPTextConfig(**standin_configs(base, scale)["text_encoder"])
    with _seeded(seed):
        encoder = CLIPTextModel(config)
    return encoder.to(dtype).eval()


def build_standin(
    name: str,
    scale: str = "real",
    seed: int = 0,
    encoder_seed: int | None = None,
    dtype: torch.dtype = torch.float32,
) -> DiffusionPipeline:
    """A randomly initialised pipeline of a registered base, in memory (CPU).

    Args:
        name: a registry name, e.g. "sd-2.1-base" (a StableDiffusionPipeline), "modelscope-1.7b"
            (a TextToVideoSDPipeline) or "animatediff-sd-1.5" (an AnimateDiffPipeline).
        scale: "real" (the published shapes: GBs of memory) or "reduced" (tiny, same structure).
        seed: seeds the UNet, the VAE and a motion adapter.
        encoder_seed: seeds the text encoder (default: `seed`). Bases of one encoder family built with the same
            encoder seed share identical encoder tensors, as SD 2.1 and ModelScope do.
        dtype: the dtype of every component. The UNet and VAE are built in it directly, which halves the
            peak memory of a real-scale build in float16/bfloat16.
    """
    base = get_base(name)
    configs = standin_configs(base, scale)
    encoder_seed = seed if encoder_seed is None else encoder_seed

    # 1. the text encoder and tokenizer: what unlearning changes and what the swap checks
    text_encoder = standin_text_encoder(base, scale, encoder_seed, dtype)
    tokenizer = standin_tokenizer(base)

    # 2. the frozen denoiser and autoencoder, each from its own seed
    with _seeded(seed * 1000 + _SEED_OFFSETS["unet"], dtype):
        unet = _UNET_CLASSES[base.unet_class].from_config(configs["unet"])
    with _seeded(seed * 1000 + _SEED_OFFSETS["vae"], dtype):
        vae = AutoencoderKL.from_config(configs["vae"])
    scheduler = _SCHEDULER_CLASSES[base.scheduler_class].from_config(configs["scheduler"])
    unet, vae = (_as_dtype(model, dtype).eval() for model in (unet, vae))

    # 3. the pipeline the registry names
    if base.motion_adapter is not None:
        with _seeded(seed * 1000 + _SEED_OFFSETS["motion_adapter"], dtype):
            adapter = _as_dtype(MotionAdapter.from_config(configs["motion_adapter"]), dtype).eval()
        pipe = AnimateDiffPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   motion_adapter=adapter, scheduler=scheduler)  # fmt: skip
    elif base.pipeline_class == "StableDiffusionPipeline":
        pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                       scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                       requires_safety_checker=False)  # fmt: skip
    else:
        from .load import _quiet_loading  # TextToVideoSDPipeline logs a deprecation notice on construction

        with _quiet_loading():
            pipe = TextToVideoSDPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                         scheduler=scheduler)  # fmt: skip
    pipe.standin = {"standin_of": base.name, "repo_id": base.repo_id, "scale": scale, "seed": seed,
                    "encoder_seed": encoder_seed, "dtype": str(dtype).removeprefix("torch.")}  # fmt: skip
    return pipe


def save_standin(pipe: DiffusionPipeline, folder: str | Path) -> Path:
    """Write a stand-in as a diffusers folder that `load_pipeline` and `t2v-unlearn inspect` read.

    Besides `save_pretrained`'s files it writes the tokenizer's vocab.json + merges.txt (older transformers
    read only those) and `standin.json`, which marks the folder as random weights.
    """
    folder = Path(folder)
    pipe.save_pretrained(folder)
    backend = json.loads(pipe.tokenizer.backend_tokenizer.to_str())["model"]
    merges = [m if isinstance(m, str) else " ".join(m) for m in backend["merges"]]
    (folder / "tokenizer" / "vocab.json").write_text(json.dumps(backend["vocab"], ensure_ascii=False))
    (folder / "tokenizer" / "merges.txt").write_text("#version: 0.2\n" + "".join(m + "\n" for m in merges))
    info = getattr(pipe, "standin", None) or {}
    (folder / STANDIN_FILE).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    return folder


def parameter_counts(pipe: DiffusionPipeline) -> dict[str, int]:
    """Parameters per model component (text_encoder, unet, vae)."""
    return {name: sum(p.numel() for p in getattr(pipe, name).parameters()) for name in ("text_encoder", "unet", "vae")}
