"""A learned offset on the input embedding of a concept's tokens: textual inversion's handle, and --robust's attack.

`token_offset(text_encoder, token_ids, offset)` is a context manager: while it is active, every occurrence of the
concept's tokens in the encoder's input gets `offset` added to its embedding (a forward hook on the input
embedding; the encoder's weights are untouched). An offset that brings an erased concept back is what an attacker
with access to the prompt embedding can find (shared/METHOD.md, threat model).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


def concept_token_ids(tokenizer, name: str) -> list[int]:
    """The ids of the tokens that spell the concept's name (without start and end tokens)."""
    ids = tokenizer(name, add_special_tokens=False).input_ids
    if not ids:
        raise ValueError(f"the tokenizer turns concept {name!r} into no tokens")
    return list(ids)


@contextlib.contextmanager
def token_offset(text_encoder, token_ids: list[int], offset: torch.Tensor) -> Iterator[None]:
    """While active, every occurrence of `token_ids` in the encoder's input gets `offset` added to its embedding."""
    ids = torch.tensor(token_ids)

    def hook(module, inputs, output):
        mask = torch.isin(inputs[0], ids.to(inputs[0].device)).unsqueeze(-1)
        return output + mask.to(output.dtype) * offset.to(output.dtype)

    handle = text_encoder.get_input_embeddings().register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()
