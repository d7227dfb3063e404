"""Fingerprints and architecture summaries of text encoders and tokenizers.

A fingerprint is a SHA-256 over the tensors (names, shapes and values rounded to float16), not over a
file: the same weights stored as fp32 or fp16, in one file or several, give the same fingerprint, as
SD 2.1's fp32 encoder and ModelScope's fp16 copy of it do.
"""

from __future__ import annotations

import hashlib
import json

import torch
from transformers import CLIPTextModel

# the config fields that decide whether one encoder can stand in for another
ARCHITECTURE_FIELDS = (
    "model_type",
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "max_position_embeddings",
    "hidden_act",
)


@torch.no_grad()
def tensor_fingerprint(tensors: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().to("cpu", torch.float16).contiguous()
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.view(torch.int16).numpy().tobytes())
    return digest.hexdigest()


def encoder_fingerprint(text_encoder: CLIPTextModel) -> str:
    """SHA-256 over an encoder's tensors at float16 precision."""
    return tensor_fingerprint(text_encoder.state_dict())


def architecture(config) -> dict:
    """The part of a text-encoder config that must match for a swap."""
    data = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    return {field: data.get(field) for field in ARCHITECTURE_FIELDS}


def tokenizer_fingerprint(tokenizer) -> str:
    """SHA-256 over what decides token ids: vocabulary, merges, special tokens, maximum length."""
    backend = json.loads(tokenizer.backend_tokenizer.to_str())
    merges = [m if isinstance(m, str) else " ".join(m) for m in backend["model"].get("merges", [])]
    payload = {
        "vocab": sorted(tokenizer.get_vocab().items()),
        "merges": merges,
        "special": [tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token, tokenizer.unk_token],
        "model_max_length": tokenizer.model_max_length,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
