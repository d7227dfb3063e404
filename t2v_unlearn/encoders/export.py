"""Export an encoder checkpoint for the tools people use: Automatic1111, ComfyUI and diffusers' LoRA loader.

    t2v-unlearn export zorbo-erased --format comfyui --out zorbo-comfyui

Three key layouts of one CLIP text tower (the sources of each are in docs/EXPORT.md):

    transformers (diffusers, ComfyUI)   text_model.encoder.layers.N.self_attn.q_proj.weight, ...mlp.fc1...
    LDM SD 1.x (A1111, CLIP ViT-L/14)   cond_stage_model.transformer.<the transformers name>
    LDM SD 2.x (A1111, OpenCLIP ViT-H)  cond_stage_model.model.transformer.resblocks.N.attn.in_proj_weight
                                        (q, k, v fused), ...ln_1, mlp.c_fc, token_embedding, positional_embedding

The conversions are pure functions of state dicts (tensors are renamed, q/k/v concatenated or split, never
changed); `export_checkpoint` reads a checkpoint folder and writes one safetensors file, atomically.
"""

from __future__ import annotations

import datetime
import json
import math
import re
from pathlib import Path

import torch
from transformers import CLIPTextModel

from ..artefacts import atomic_folder, validate_output
from .checkpoint import (
    LORA_DIR,
    LORA_FILE,
    CheckpointError,
    Manifest,
    check_compatible,
    check_weights,
    read_manifest,
    versions,
)
from .fingerprint import architecture, encoder_fingerprint
from .trainable import LORA_TARGET_MODULES

FORMATS = ("a1111", "comfyui", "diffusers-lora")
LAYOUTS = ("auto", "sd1", "sd2")
SD1_PREFIX = "cond_stage_model.transformer."  # FrozenCLIPEmbedder: a transformers CLIPTextModel
SD2_PREFIX = "cond_stage_model.model."  # FrozenOpenCLIPEmbedder: an open_clip model without its visual tower
TEXT_MODEL = "text_model."  # the transformers 4 names every tool reads; transformers 5 saves without it
LORA_PREFIX = "text_encoder."  # diffusers' text-encoder LoRA keys: text_encoder.<module>.lora_A.weight
FILES = {
    "a1111": "a1111_text_encoder.safetensors",
    "a1111-merged": "a1111_checkpoint.safetensors",
    "comfyui": "comfyui_text_encoder.safetensors",
    "diffusers-lora": LORA_FILE,
}

# transformers name -> OpenCLIP name, outside the layers and inside one layer (resblock)
_TOWER = {
    "embeddings.token_embedding.weight": "token_embedding.weight",
    "embeddings.position_embedding.weight": "positional_embedding",
    "final_layer_norm.weight": "ln_final.weight",
    "final_layer_norm.bias": "ln_final.bias",
}
_MODULES = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj",
            "self_attn.out_proj": "attn.out_proj"}  # fmt: skip
_QKV = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")  # torch MultiheadAttention's in_proj order
_LAYER_MODULES = (*_QKV, *_MODULES)
_LAYER_KEY = re.compile(r"encoder\.layers\.(\d+)\.(.+)\.(weight|bias)")
_RESBLOCK_KEY = re.compile(r"transformer\.resblocks\.(\d+)\.(.+)")
# in an original checkpoint but not in a diffusers CLIPTextModel: the contrastive head and a buffer
_OPENCLIP_EXTRAS = ("text_projection", "logit_scale", "attn_mask")
_POSITION_IDS = "embeddings.position_ids"  # a buffer (arange(77)) some files carry; every tool rebuilds it


# --- the layouts: pure functions of state dicts ------------------------------------------------------------


def _config(config, field: str):
    return config[field] if isinstance(config, dict) else getattr(config, field)


def canonical_names(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A CLIPTextModel state dict under the `text_model.` names (transformers 5 drops that prefix)."""
    return {name if name.startswith(TEXT_MODEL) else TEXT_MODEL + name: t for name, t in state_dict.items()}


def _split(state_dict: dict[str, torch.Tensor], config, where: str):
    """(tower tensors by transformers name, {layer: {module.kind: tensor}}) of a complete CLIPTextModel state dict."""
    tower, layers = {}, {}
    for name, tensor in state_dict.items():
        rest = name.removeprefix(TEXT_MODEL)
        if rest == _POSITION_IDS:
            continue
        match = _LAYER_KEY.fullmatch(rest)
        if rest in _TOWER:
            tower[rest] = tensor
        elif match and match.group(2) in _LAYER_MODULES:
            layers.setdefault(int(match.group(1)), {})[f"{match.group(2)}.{match.group(3)}"] = tensor
        else:
            raise ValueError(f"{where}: {name!r} is not a tensor of a CLIP text encoder (transformers CLIPTextModel); "
                             "pass the state dict of a CLIPTextModel")  # fmt: skip
    _check_complete(tower, layers, config, where)
    return tower, layers


def _check_complete(tower: dict, layers: dict, config, where: str) -> None:
    count, width = _config(config, "num_hidden_layers"), _config(config, "hidden_size")
    missing = [name for name in _TOWER if name not in tower]
    if sorted(layers) != list(range(count)):
        raise ValueError(f"{where} holds layers {sorted(layers)}, but the encoder config has {count} "
                         f"(0 to {count - 1}); pass the state dict and config of one encoder")  # fmt: skip
    for index, tensors in layers.items():
        names = (f"{module}.{kind}" for module in _LAYER_MODULES for kind in ("weight", "bias"))
        missing += [f"layer {index} {name}" for name in names if name not in tensors]
    if missing:
        raise ValueError(f"{where} lacks {missing[:3]}{' ...' if len(missing) > 3 else ''}; the file is incomplete")
    found = tower["embeddings.token_embedding.weight"].shape[-1]
    if found != width:
        raise ValueError(f"{where} has hidden size {found}, but the encoder config says {width}")


def _transformers_dict(tower: dict, layers: dict) -> dict[str, torch.Tensor]:
    out = {TEXT_MODEL + name: tower[name] for name in _TOWER}
    for index in sorted(layers):
        out.update({f"{TEXT_MODEL}encoder.layers.{index}.{name}": t for name, t in sorted(layers[index].items())})
    return out


def to_openclip(state_dict: dict[str, torch.Tensor], config, prefix: str = SD2_PREFIX) -> dict[str, torch.Tensor]:
    """A CLIPTextModel state dict under OpenCLIP names (SD 2.x original checkpoints): q, k, v fused into in_proj.

    Args:
        config: the encoder's CLIPTextConfig (or its dict); the state dict must hold exactly its layers.
        prefix: put before every name: "cond_stage_model.model." (LDM checkpoints, the default) or "" (bare tower).
    """
    tower, layers = _split(state_dict, config, "to_openclip")
    out = {prefix + _TOWER[name]: tensor for name, tensor in tower.items()}
    for index, tensors in sorted(layers.items()):
        block = f"{prefix}transformer.resblocks.{index}."
        for kind in ("weight", "bias"):
            out[f"{block}attn.in_proj_{kind}"] = torch.cat([tensors[f"{m}.{kind}"] for m in _QKV])
            out.update({f"{block}{_MODULES[m]}.{kind}": tensors[f"{m}.{kind}"] for m in _MODULES})
    return out


def from_openclip(state_dict: dict[str, torch.Tensor], config, prefix: str = SD2_PREFIX) -> dict[str, torch.Tensor]:
    """The CLIPTextModel state dict (`text_model.` names) inside OpenCLIP-named tensors: in_proj split into q, k, v.

    Keys outside `prefix` are ignored, so a whole SD 2.x checkpoint can be passed. Inside it, what a diffusers
    CLIPTextModel lacks is skipped: `text_projection`, `logit_scale`, `attn_mask`, and the layers past the
    config's `num_hidden_layers` (SD 2.x's 24th, which the diffusers encoder drops).
    """
    width, count = _config(config, "hidden_size"), _config(config, "num_hidden_layers")
    inverse_tower = {v: k for k, v in _TOWER.items()}
    inverse_modules = {v: k for k, v in _MODULES.items()}
    tower, layers = {}, {}
    for name, tensor in state_dict.items():
        if not name.startswith(prefix):
            continue
        rest = name[len(prefix) :]
        match = _RESBLOCK_KEY.fullmatch(rest)
        if rest in inverse_tower:
            tower[inverse_tower[rest]] = tensor
        elif rest in _OPENCLIP_EXTRAS or (match and int(match.group(1)) >= count):
            continue
        elif match and match.group(2) in ("attn.in_proj_weight", "attn.in_proj_bias"):
            kind = match.group(2).removeprefix("attn.in_proj_")
            parts = torch.split(tensor, width)
            if len(parts) != 3:
                raise ValueError(f"{name} has {tensor.shape[0]} rows, not 3 x hidden size {width} (q, k, v)")
            for module, part in zip(_QKV, parts, strict=True):
                layers.setdefault(int(match.group(1)), {})[f"{module}.{kind}"] = part.clone()
        elif match and match.group(2).rsplit(".", 1)[0] in inverse_modules:
            module, kind = match.group(2).rsplit(".", 1)
            layers.setdefault(int(match.group(1)), {})[f"{inverse_modules[module]}.{kind}"] = tensor
        else:
            raise ValueError(f"{name!r} is not a tensor of an OpenCLIP text tower; is {prefix!r} the right prefix?")
    _check_complete(tower, layers, config, f"the OpenCLIP tensors under {prefix!r}")
    return _transformers_dict(tower, layers)


def to_ldm_sd1(state_dict: dict[str, torch.Tensor], config, prefix: str = SD1_PREFIX) -> dict[str, torch.Tensor]:
    """A CLIPTextModel state dict under SD 1.x original-checkpoint names (`cond_stage_model.transformer.*`)."""
    tower, layers = _split(state_dict, config, "to_ldm_sd1")
    return {prefix + name: tensor for name, tensor in _transformers_dict(tower, layers).items()}


def from_ldm_sd1(state_dict: dict[str, torch.Tensor], config, prefix: str = SD1_PREFIX) -> dict[str, torch.Tensor]:
    """The CLIPTextModel state dict (`text_model.` names) inside SD 1.x original-checkpoint names.

    Keys outside `prefix` are ignored. Old checkpoints without `text_model.` after the prefix are read too
    (A1111 renames them the same way); the `position_ids` buffer is skipped.
    """
    inner = {name[len(prefix) :]: t for name, t in state_dict.items() if name.startswith(prefix)}
    tower, layers = _split(canonical_names(inner), config, f"the SD 1.x tensors under {prefix!r}")
    return _transformers_dict(tower, layers)


def choose_layout(config, layout: str = "auto") -> str:
    """The LDM layout of an encoder, "sd1" or "sd2"; `auto` decides by `hidden_act` (see docs/EXPORT.md)."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if layout != "auto":
        return layout
    act = _config(config, "hidden_act")
    if act == "quick_gelu":  # OpenAI CLIP (SD 1.x's ViT-L/14) uses QuickGELU
        return "sd1"
    if act == "gelu":  # OpenCLIP towers (SD 2.x's ViT-H/14) use exact GELU
        return "sd2"
    raise ValueError(f"cannot tell the layout of an encoder with hidden_act {act!r} (quick_gelu is SD 1.x's CLIP, "
                     "gelu SD 2.x's OpenCLIP); pass --layout sd1 or --layout sd2")  # fmt: skip


def to_ldm(state_dict: dict[str, torch.Tensor], config, layout: str) -> dict[str, torch.Tensor]:
    """`to_ldm_sd1` or `to_openclip` with the LDM prefix, by layout ("sd1" or "sd2")."""
    return to_ldm_sd1(state_dict, config) if layout == "sd1" else to_openclip(state_dict, config)


def from_ldm(state_dict: dict[str, torch.Tensor], config, layout: str) -> dict[str, torch.Tensor]:
    """`from_ldm_sd1` or `from_openclip`, by layout ("sd1" or "sd2")."""
    return from_ldm_sd1(state_dict, config) if layout == "sd1" else from_openclip(state_dict, config)


def checkpoint_layout(keys) -> str | None:
    """The layout of an original (LDM) checkpoint by its text-encoder keys: "sd1", "sd2", or None."""
    keys = list(keys)
    if any(k.startswith(SD2_PREFIX + "transformer.resblocks.") for k in keys):
        return "sd2"
    if any(k.startswith(SD1_PREFIX) for k in keys):
        return "sd1"
    return None


def merge_into_checkpoint(base: dict[str, torch.Tensor], text_encoder: dict[str, torch.Tensor],
                          where: str = "the base checkpoint") -> dict[str, torch.Tensor]:  # fmt: skip
    """`base` (a full original checkpoint) with its text-encoder tensors replaced by `text_encoder`'s.

    Every key of `text_encoder` must be in `base` with the same shape (old SD 1.x names without `text_model.`
    are matched too); every other tensor of `base`, e.g. SD 2.x's 24th layer and `text_projection`, stays.
    """
    merged = dict(base)
    for name, tensor in text_encoder.items():
        target = name
        if target not in base and name.startswith(SD1_PREFIX + TEXT_MODEL):
            target = SD1_PREFIX + name[len(SD1_PREFIX + TEXT_MODEL) :]  # checkpoints from before text_model.
        if target not in base:
            raise ValueError(f"{where} has no tensor {name!r}: it is no checkpoint of this encoder's kind; pass "
                             "the original-format checkpoint of the model the encoder was unlearned from")  # fmt: skip
        if base[target].shape != tensor.shape:
            raise ValueError(f"{where} holds {target} of shape {tuple(base[target].shape)}, the unlearned "
                             f"encoder {tuple(tensor.shape)}: another model; pass the base checkpoint")  # fmt: skip
        merged[target] = tensor
    return merged


# --- LoRA from a weight delta ------------------------------------------------------------------------------


def _lora_module(name: str) -> str | None:
    """The module of a Linear weight diffusers' text-encoder LoRA loader targets, else None."""
    module = name.removesuffix(".weight")
    return module if name.endswith(".weight") and module.rsplit(".", 1)[-1] in LORA_TARGET_MODULES else None


@torch.no_grad()
def lora_from_delta(base: dict[str, torch.Tensor], unlearned: dict[str, torch.Tensor], rank: int = 8,
                    names: list[str] | None = None) -> tuple[dict[str, torch.Tensor], dict]:  # fmt: skip
    """A LoRA whose B @ A is the best rank-`rank` approximation (truncated SVD, Eckart-Young) of each weight delta.

    Keys are diffusers' text-encoder format (`text_encoder.text_model.encoder.layers.N.mlp.fc1.lora_A.weight`),
    loaded with alpha = rank (scale 1), so the patch adds exactly B @ A. Only Linear weights of the attention and
    MLP can be carried; changed biases, layer norms and embeddings are reported as `not_carried`.

    Args:
        names: the tensors to consider (e.g. unlearn.json's `changed_tensors`); default: those that differ.
    Returns:
        (the LoRA state dict, a report: relative Frobenius errors ||delta - B A|| / ||delta|| and what is not carried)
    """
    if rank < 1:
        raise ValueError(f"rank must be at least 1, got {rank}")
    base, unlearned = canonical_names(base), canonical_names(unlearned)
    if names is None:
        names = [n for n in unlearned if n in base and not torch.equal(unlearned[n], base[n].to(unlearned[n].dtype))]
    lora, errors, not_carried = {}, {}, {}
    residual_sq = carried_sq = 0.0
    for name in sorted(canonical_names(dict.fromkeys(names))):
        if name not in unlearned or name not in base:
            raise ValueError(f"tensor {name} is not in both encoders; pass the base the checkpoint was unlearned from")
        delta = unlearned[name].float() - base[name].float()
        norm_sq = float(delta.square().sum())
        module = _lora_module(name)
        if norm_sq == 0.0:
            continue
        if module is None or delta.ndim != 2:
            not_carried[name] = math.sqrt(norm_sq)
            continue
        u, s, vh = torch.linalg.svd(delta, full_matrices=False)
        keep = min(rank, s.numel())
        root = s[:keep].sqrt()
        down, up = (root[:, None] * vh[:keep]).contiguous(), (u[:, :keep] * root).contiguous()
        lora[f"{LORA_PREFIX}{module}.lora_A.weight"] = down
        lora[f"{LORA_PREFIX}{module}.lora_B.weight"] = up
        residual = float((delta - up @ down).square().sum())
        errors[name] = math.sqrt(residual / norm_sq)
        residual_sq, carried_sq = residual_sq + residual, carried_sq + norm_sq
    lost_sq = sum(v * v for v in not_carried.values())
    total_sq = carried_sq + lost_sq
    worst = max(errors, key=errors.get) if errors else None
    report = {
        "rank": rank,
        "modules": len(errors),
        "relative_error": math.sqrt(residual_sq / carried_sq) if carried_sq else 0.0,
        "worst_tensor": worst,
        "worst_relative_error": errors[worst] if worst else 0.0,
        "not_carried": sorted(not_carried),
        "not_carried_share": math.sqrt(lost_sq / total_sq) if total_sq else 0.0,
        "relative_error_all": math.sqrt((residual_sq + lost_sq) / total_sq) if total_sq else 0.0,
    }
    return lora, report


def canonical_lora_names(lora: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Text-encoder LoRA keys under `text_encoder.text_model.`, as ComfyUI's loader and older diffusers expect."""
    out = {}
    for name, tensor in lora.items():
        if name.startswith(LORA_PREFIX) and not name.startswith(LORA_PREFIX + TEXT_MODEL):
            name = LORA_PREFIX + TEXT_MODEL + name.removeprefix(LORA_PREFIX)
        out[name] = tensor
    return out


# --- reading a checkpoint ----------------------------------------------------------------------------------


def _load_base(manifest: Manifest, model: str | None):
    """The base encoder (float32) and tokenizer a checkpoint was unlearned from, without the UNet or VAE."""
    from transformers import CLIPTokenizer

    from ..pipelines.load import _quiet_loading, resolve_model

    name = model or manifest.base_model
    if not name:
        raise CheckpointError("unlearn.json names no base_model; pass --model with the base it was unlearned from")
    path = resolve_model(name, "image")
    with _quiet_loading():
        encoder = CLIPTextModel.from_pretrained(path / "text_encoder", dtype=torch.float32).eval()
    return encoder, CLIPTokenizer.from_pretrained(path / "tokenizer"), name


def load_encoders(folder: str | Path, manifest: Manifest, need_base: bool, model: str | None = None,
                  force: bool = False):  # fmt: skip
    """(unlearned encoder, base encoder or None, base name) of a checkpoint folder, each checked.

    The full encoder is read as saved (its dtype kept) and checked against unlearn.json's fingerprint; the
    compact and LoRA forms need the base, which is then loaded and checked too (`load_text_encoder`).
    """
    from ..pipelines.load import _quiet_loading
    from .checkpoint import load_text_encoder

    folder = Path(folder)
    full = (folder / "text_encoder" / "config.json").is_file()
    base = tokenizer = None
    name = model or manifest.base_model
    if need_base or not full:
        base, tokenizer, name = _load_base(manifest, model)
        check_compatible(manifest, base, tokenizer, force=force, where=str(folder), base_name=str(name))
    if not full:
        return load_text_encoder(folder, base, tokenizer, force=force, base_name=str(name)), base, name
    with _quiet_loading():
        encoder = CLIPTextModel.from_pretrained(folder / "text_encoder").eval()
    if architecture(encoder.config) != manifest.base_architecture:
        raise CheckpointError(f"{folder}/text_encoder/config.json disagrees with unlearn.json's architecture; "
                              "re-run `t2v-unlearn erase`")  # fmt: skip
    if not force:
        check_weights(manifest, encoder_fingerprint(encoder), where=str(folder))
    return encoder, base, name


# --- export ------------------------------------------------------------------------------------------------


def _shape_note(config, layout: str | None, format: str) -> str | None:
    """Why a real tool cannot load this encoder (its shape is no published SD encoder's), or None."""
    from ..pipelines.registry import CLIP_L14_TEXT, OPENCLIP_H14_TEXT

    fields = ("hidden_size", "vocab_size", "max_position_embeddings")
    ours = {f: _config(config, f) for f in fields}
    sd1 = ours == {f: CLIP_L14_TEXT[f] for f in fields} and _config(config, "num_hidden_layers") == 12
    sd2 = ours == {f: OPENCLIP_H14_TEXT[f] for f in fields} and _config(config, "num_hidden_layers") == 23
    if sd1 or sd2:
        return None
    shape = f"{_config(config, 'num_hidden_layers')} layers, hidden size {ours['hidden_size']}"
    if format == "comfyui":
        return (f"ComfyUI picks the encoder type from the keys (layer 22 present: SD 2.x's OpenCLIP-H, otherwise "
                f"SD 1.x's CLIP-L; comfy/sd.py detect_te_model); this encoder ({shape}) is neither, so ComfyUI "
                "cannot load it. TinyWorld exports are for testing the conversion.")  # fmt: skip
    return (
        f"this encoder ({shape}) has the shape of no published SD {'1.x' if layout == 'sd1' else '2.x'} "
        "encoder, so no A1111 model can take it. TinyWorld exports are for testing the conversion."
    )


def _read_merge_base(path: str | Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"--merge-into {path} is not a .safetensors file; convert a .ckpt to safetensors first "
                         "(pickled checkpoints are not read)")  # fmt: skip
    if not path.is_file():
        raise FileNotFoundError(f"--merge-into {path} does not exist; pass the original-format checkpoint of the base")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as error:
        raise ValueError(f"--merge-into {path} is not a readable safetensors file ({error})") from None


def _check_merge_base(state: dict, encoder: CLIPTextModel, layout: str, manifest: Manifest, where: str,
                      force: bool) -> None:  # fmt: skip
    """Refuse a base checkpoint of the other layout, or (unless `force`) one whose text encoder is not the base's."""
    found = checkpoint_layout(state)
    if found is None:
        raise ValueError(f"{where} holds no SD 1.x (cond_stage_model.transformer.*) or SD 2.x "
                         "(cond_stage_model.model.*) text-encoder tensors; --merge-into needs an original-format "
                         "SD 1.x/2.x checkpoint (e.g. v2-1_512-ema-pruned.safetensors), not SDXL or a diffusers "
                         "file")  # fmt: skip
    if found != layout:
        raise ValueError(f"{where} is an {found.upper()} checkpoint, but the encoder is exported as {layout.upper()} "
                         f"(layout {layout}): an encoder unlearned on one cannot serve the other's UNet")  # fmt: skip
    if force:
        return
    with torch.device("meta"):
        model = CLIPTextModel(encoder.config)
    names = set(model.state_dict())
    tower = from_ldm(state, encoder.config, layout)
    tower = {k if k in names else k.removeprefix(TEXT_MODEL): v for k, v in tower.items()}
    model.load_state_dict(tower, assign=True)
    theirs = encoder_fingerprint(model)
    if theirs != manifest.base_fingerprint:
        raise ValueError(f"{where}'s text encoder ({theirs[:12]}) is not the one the checkpoint was unlearned from "
                         f"({manifest.base_fingerprint[:12]}, {manifest.base_model or '?'}): the merged file "
                         "would pair the unlearned encoder with another model. Pass that base's checkpoint, or "
                         "--force to merge anyway")  # fmt: skip


def export_checkpoint(
    folder: str | Path,
    format: str,
    out: str | Path,
    layout: str = "auto",
    rank: int = 8,
    merge_into: str | Path | None = None,
    model: str | None = None,
    overwrite: bool = False,
    force: bool = False,
) -> dict:
    """Write an encoder checkpoint as one safetensors file for a tool, with export.json and a README beside it.

    Args:
        format: "a1111" (original-checkpoint keys), "comfyui" (a text-encoder file for the Load CLIP node) or
            "diffusers-lora" (the checkpoint's own LoRA, or one computed from the weight delta).
        layout: "auto", "sd1" or "sd2": the a1111 key layout (auto: by `hidden_act`, see `choose_layout`).
        rank: the LoRA rank when the LoRA is computed from the delta.
        merge_into: (a1111) an original-format base checkpoint: its tensors are copied and the text encoder's
            replaced, giving a full checkpoint A1111 loads.
        model: the base model, if not unlearn.json's `base_model`.
        force: skip the fingerprint checks (altered weights, a --merge-into base with another text encoder).
    Returns:
        The export summary (also written as export.json).
    """
    # 1. check every input before any work
    if format not in FORMATS:
        raise ValueError(f"unknown format {format!r}; choose from {', '.join(FORMATS)}")
    if merge_into is not None and format != "a1111":
        raise ValueError("--merge-into makes a full A1111 checkpoint: use it with --format a1111")
    if rank < 1:
        raise ValueError(f"--rank must be at least 1, got {rank}")
    manifest = read_manifest(folder)
    layout = choose_layout(manifest.base_architecture, layout) if format == "a1111" else None
    validate_output(out, overwrite, kind="export")
    merge_base = _read_merge_base(merge_into) if merge_into is not None else None

    # 2. the unlearned encoder (and the base, for a LoRA from the delta)
    lora_file = Path(folder) / LORA_DIR / LORA_FILE
    from_delta = format == "diffusers-lora" and not lora_file.is_file()
    encoder, base, base_name = load_encoders(folder, manifest, need_base=from_delta, model=model, force=force)
    state = canonical_names({k: v.detach().cpu().contiguous() for k, v in encoder.state_dict().items()})
    summary = {
        "format": format,
        "source": str(Path(folder).resolve()),
        "base_model": str(base_name),
        "concepts": manifest.concepts,
        "dtype": str(next(encoder.parameters()).dtype).removeprefix("torch."),
        "notes": [],
        "versions": versions(),
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }

    # 3. the tensors, in the tool's names
    if format == "a1111":
        tensors = to_ldm(state, encoder.config, layout)
        summary.update(layout=layout, file=FILES["a1111"], text_encoder_tensors=len(tensors))
        if merge_base is not None:
            _check_merge_base(merge_base, encoder, layout, manifest, f"--merge-into {merge_into}", force)
            tensors = merge_into_checkpoint(merge_base, tensors, f"--merge-into {merge_into}")
            summary.update(file=FILES["a1111-merged"], merged_into=str(Path(merge_into).resolve()))
    elif format == "comfyui":
        tensors = state
        summary.update(file=FILES["comfyui"], text_encoder_tensors=len(tensors))
    else:
        if from_delta:
            names = manifest.changed_tensors
            tensors, report = lora_from_delta(base.state_dict(), encoder.state_dict(), rank, names)
            if not tensors:
                raise ValueError(f"{folder}: no Linear weight differs from the base, so there is no LoRA to write")
            summary["lora"] = {"source": "computed from the weight delta (truncated SVD)", **report}
        else:
            from safetensors.torch import load_file

            tensors = canonical_lora_names(load_file(str(lora_file)))
            ranks = {t.shape[0] for k, t in tensors.items() if k.endswith("lora_A.weight")}
            summary["lora"] = {"source": f"copied from {LORA_DIR}/{LORA_FILE} (the trained patch, exact)",
                               "rank": max(ranks, default=0), "modules": len(tensors) // 2}  # fmt: skip
            own = summary["lora"]["rank"]
            if rank != own:
                summary["notes"].append(f"--rank {rank} applies to a LoRA computed from the weight delta; this "
                                        f"checkpoint's own LoRA (rank {own}) was copied")  # fmt: skip
        summary["file"] = FILES["diffusers-lora"]
    if format != "diffusers-lora":
        note = _shape_note(encoder.config, layout, format)
        summary["notes"] += [note] if note else []
    summary["tensors"] = len(tensors)

    # 4. written atomically: the file, export.json, a README on how to load it
    from safetensors.torch import save_file

    info = {k: summary[k] for k in ("format", "base_model", "concepts")}
    info.update({"layout": layout} if format == "a1111" else {})
    metadata = {"format": "pt", "t2v_unlearn": json.dumps(info)}
    with atomic_folder(out, overwrite, kind="export") as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp / summary["file"]), metadata=metadata)
        summary["bytes"] = (tmp / summary["file"]).stat().st_size
        (tmp / "export.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
        (tmp / "README.md").write_text(instructions(summary))
    summary["path"] = str(Path(out) / summary["file"])
    return summary


def instructions(summary: dict) -> str:
    """How to load an export in its tool (the facts and their sources are in the project's docs/EXPORT.md)."""
    file, concepts = summary["file"], ", ".join(summary["concepts"])
    head = f"# {file}: CLIP text encoder with {concepts} erased (t2v_unlearn)\n\nBase: `{summary['base_model']}`.\n\n"
    if summary["format"] == "a1111" and "merged_into" in summary:
        body = (f"A full original-format checkpoint: `{Path(summary['merged_into']).name}` with its text encoder "
                f"replaced. Copy it to `stable-diffusion-webui/models/Stable-diffusion/` and select it as the model. "
                "Its keys are the base's, so A1111 picks the same config (SD 2.x v-prediction included). ComfyUI's "
                "Load Checkpoint node reads it too.\n")  # fmt: skip
    elif summary["format"] == "a1111":
        prefix = SD1_PREFIX if summary["layout"] == "sd1" else SD2_PREFIX
        body = (f"The text encoder alone, under original-checkpoint keys (`{prefix}*`, layout {summary['layout']}). "
                "A1111 loads only full checkpoints; do not select this file as the model. Either\n\n"
                "- run `t2v-unlearn export ... --format a1111 --merge-into BASE.safetensors`, or\n"
                "- in A1111's Checkpoint Merger: Primary model (A) = the base checkpoint, Secondary model (B) = this "
                "file (copy it to `models/Stable-diffusion/`), Interpolation Method = Weighted sum, Multiplier (M) "
                "= 1. Every tensor of B replaces A's; the rest of A stays.\n")  # fmt: skip
    elif summary["format"] == "comfyui":
        body = ("A text-encoder file in the transformers layout (`text_model.*`), as ComfyUI's CLIPSave writes. Copy "
                "it to `ComfyUI/models/text_encoders/` (`models/clip/` in older releases), add a Load CLIP node "
                "(type `stable_diffusion`) and wire its CLIP output into the CLIP Text Encode nodes in place of the "
                "checkpoint's CLIP. ComfyUI logs the tensors the file lacks (`text_projection.weight`, for SD 2.x "
                "also layer 23): neither is used for SD 1.x/2.x conditioning.\n")  # fmt: skip
    else:
        lora = summary["lora"]
        body = ("A diffusers text-encoder LoRA (`text_encoder.text_model.*.lora_A/lora_B.weight`, scale 1):\n\n"
                "```python\npipe.load_lora_weights(\"path/to/this/folder\")\n```\n\n"
                f"Source: {lora['source']}, rank {lora['rank']}, {lora['modules']} modules.\n")  # fmt: skip
        if "relative_error" in lora:
            body += (f"Relative error of the weight delta: {lora['relative_error']:.2e}; changed tensors a LoRA "
                     f"cannot carry (biases, norms, embeddings): {len(lora['not_carried'])}, "
                     f"{100 * lora['not_carried_share']:.1f}% of the delta.\n")  # fmt: skip
    notes = "".join(f"\nNote: {note}\n" for note in summary["notes"])
    return head + body + notes


def format_summary(summary: dict) -> str:
    """The lines `t2v-unlearn export` prints."""
    size = summary["bytes"] / 2**20
    what = {"a1111": f"A1111, layout {summary.get('layout')}", "comfyui": "ComfyUI text encoder",
            "diffusers-lora": "diffusers LoRA"}[summary["format"]]  # fmt: skip
    lines = [f"wrote {summary['path']} ({what}, {summary['tensors']} tensors, {size:.1f} MiB)"]
    if summary["format"] == "a1111" and "merged_into" not in summary:
        lines.append("A1111 loads full checkpoints only: merge this file into the base with --merge-into "
                     "BASE.safetensors, or in A1111's Checkpoint Merger (see README.md)")  # fmt: skip
    lora = summary.get("lora")
    if lora and "relative_error" in lora:
        lines.append(f"LoRA rank {lora['rank']} on {lora['modules']} Linear weights: relative error of the weight "
                     f"delta {lora['relative_error']:.2e} (worst {lora['worst_relative_error']:.2e}, "
                     f"{lora['worst_tensor']})")  # fmt: skip
        if lora["not_carried"]:
            count = len(lora["not_carried"])
            lines.append(f"not carried by a LoRA: {count} changed tensor{'s' * (count != 1)} (biases, norms, "
                         f"embeddings), {100 * lora['not_carried_share']:.1f}% of the delta; relative error "
                         f"of the whole delta {lora['relative_error_all']:.2e}; a1111/comfyui are exact")  # fmt: skip
    elif lora:
        lines.append(f"LoRA {lora['source']}, rank {lora['rank']}, {lora['modules']} modules")
    lines += [f"note: {note}" for note in summary["notes"]]
    lines.append(f"how to load it: {Path(summary['path']).parent / 'README.md'}")
    return "\n".join(lines)
