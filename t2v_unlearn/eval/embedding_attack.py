"""The embedding attack: textual inversion of the erased concept's token against an encoder, with a fixed budget.

The UNet still holds an erased concept (only the encoder changed), so whoever can optimise a token embedding may
bring it back. `invert_concept` learns one vector added to the input embedding of the concept's token(s) (starting
from the concept's own word, as textual inversion starts from an initialiser token), by minimising the ordinary
denoising loss of the pipeline on the concept's few shots (the same shots `erase` uses), through the frozen UNet
and the frozen encoder. `attacked_embeddings` then encodes prompts with that vector in place, for the pipelines'
`prompt_embeds`. The recovery rate is the hit rate of the concept in what they generate; the original encoder,
attacked with the same budget, is the control that must succeed. Budget (issue "Erasure that holds"): 200
steps, the 4 shots.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..encoders.embedding import concept_token_ids, token_offset
from ..encoders.erase import EraseConfig, _encode, denoising_loss, encode_shots, generate_shots
from ..encoders.prompts import resolve_concepts
from ..pipelines.generate import _generators, _to_uint8
from ..pipelines.registry import conventions_for


@dataclass
class EmbeddingAttackConfig:
    """The attack's fixed budget."""

    steps: int = field(default=200, metadata={"help": "optimisation steps of the inverted token"})
    lr: float = field(default=5e-3, metadata={"help": "Adam learning rate of the token vector"})
    batch_size: int = field(default=4, metadata={"help": "shots per step"})
    seed: int = field(default=0, metadata={"help": "seeds the shots, noise and timesteps"})


def invert_concept(pipe, text_encoder, concept: str, config: EmbeddingAttackConfig | None = None,
                   shots: np.ndarray | None = None) -> tuple[torch.Tensor, list[float]]:  # fmt: skip
    """Learn the token offset that best brings `concept` back through `text_encoder`; returns it and the losses."""
    config = config or EmbeddingAttackConfig()
    spec = resolve_concepts([concept], None, conventions_for(pipe).prompts, variants=False)[0]
    erase_config = EraseConfig(seed=config.seed)
    if shots is None:
        shots = generate_shots(pipe, spec, erase_config)
    latents = encode_shots(pipe, shots, flip=False).to(pipe.unet.device)
    token_ids = concept_token_ids(pipe.tokenizer, spec.name)
    embedding = text_encoder.get_input_embeddings()
    offset = torch.zeros(embedding.weight.shape[1], device=embedding.weight.device, requires_grad=True)
    optimizer = torch.optim.Adam([offset], lr=config.lr)
    generator = torch.Generator("cpu").manual_seed(config.seed)
    prompts = list(spec.prompts)
    scheduler, unet = pipe.scheduler, pipe.unet
    text_encoder.requires_grad_(False)
    losses = []
    with token_offset(text_encoder, token_ids, offset):
        for _ in range(config.steps):
            index = torch.randint(len(latents), (config.batch_size,), generator=generator)
            batch_prompts = [prompts[i] for i in torch.randint(len(prompts), (len(index),), generator=generator)]
            noise = torch.randn(latents[index].shape, generator=generator).to(latents.device)
            timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (len(index),), generator=generator)
            hidden = _encode(text_encoder, pipe.tokenizer, batch_prompts)
            loss = denoising_loss(unet, scheduler, latents[index], noise, timesteps.to(latents.device), hidden)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    return offset.detach(), losses


@torch.no_grad()
def generate_attacked(pipe, text_encoder, concept: str, offset: torch.Tensor, prompts: list[str], seeds: list[int],
                      steps: int, guidance: float, num_frames: int | None = None) -> np.ndarray:  # fmt: skip
    """Samples of `prompts` with the inverted token in place: (N, F, H, W, 3) uint8 (F = 1 for images)."""
    token_ids = concept_token_ids(pipe.tokenizer, concept)
    with token_offset(text_encoder, token_ids, offset):
        prompt_embeds = _encode(text_encoder, pipe.tokenizer, prompts)
    negative = _encode(text_encoder, pipe.tokenizer, [""]).expand(len(prompts), -1, -1)
    dtype = pipe.unet.dtype
    kwargs = {"num_frames": num_frames} if num_frames else {}
    result = pipe(prompt_embeds=prompt_embeds.to(dtype), negative_prompt_embeds=negative.to(dtype),
                  generator=_generators(seeds, pipe.device), num_inference_steps=steps, guidance_scale=guidance,
                  output_type="np", **kwargs)  # fmt: skip
    if num_frames:
        return _to_uint8(result.frames)
    return _to_uint8(result.images)[:, None]
