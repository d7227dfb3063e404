"""Which text-encoder parameters the unlearning trains, resolved from the encoder's own config.

The published code hard-coded "layer 11" as the last attention layer: right for CLIP ViT-L/14 (12 layers),
wrong for SD 2.x / ModelScope (23 layers). Here every preset reads `num_hidden_layers`.
"""

from __future__ import annotations

import re

from transformers import CLIPTextModel

TRAINABLE_PRESETS = ("ffn+last-attn", "ffn", "all", "last-k", "lora")
LORA_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")
_LAYER = re.compile(r"\.layers\.(\d+)\.")


def layer_index(parameter_name: str) -> int | None:
    match = _LAYER.search(parameter_name)
    return int(match.group(1)) if match else None


def trainable_parameter_names(text_encoder: CLIPTextModel, preset: str, last_k: int = 1) -> list[str]:
    """Names of the parameters a preset trains.

    Args:
        preset: `ffn+last-attn` (every layer's feed-forward plus the last layer's self-attention, the
            published default), `ffn`, `all`, or `last-k` (every parameter of the last `last_k` layers).
    """
    num_layers = text_encoder.config.num_hidden_layers
    names = [name for name, _ in text_encoder.named_parameters()]
    last = num_layers - 1
    if preset == "all":
        return names
    if preset == "ffn":
        return [n for n in names if ".mlp." in n]
    if preset == "ffn+last-attn":
        return [n for n in names if ".mlp." in n or (layer_index(n) == last and ".self_attn." in n)]
    if preset == "last-k":
        if not 1 <= last_k <= num_layers:
            raise ValueError(f"last_k must be between 1 and {num_layers} (the encoder's layers), got {last_k}")
        return [n for n in names if (layer_index(n) or -1) >= num_layers - last_k]
    raise ValueError(f"unknown trainable preset {preset!r}; choose from {TRAINABLE_PRESETS}")
