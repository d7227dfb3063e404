"""The embedding attack: textual inversion of the erased concept's token against an encoder, with a fixed budget.

The UNet still holds an erased concept (only the encoder changed), so whoever can optimise a token embedding may
bring it back. `invert_concept` learns one vector added to the input embedding of the concept's token(s) (starting
from the concept's own word, as textual inversion starts from an initialiser token), by minimising the ordinary
denoising loss of the pipeline on a few images of the concept, through the frozen UNet and the frozen encoder.
`attacked_embeddings` then encodes prompts with that vector in place, for the pipelines' `prompt_embeds`. The
recovery rate is the hit rate of the concept in what they generate; the original encoder, attacked with the same
budget and the same images, is the control that must succeed. Budget (issue "Erasure that holds"): 200 steps, 4
images.

The attacker's images (`attacker_shots`) show the concept and are not the erase's: the original pipeline's samples
of the concept's prompts (as `erase` generates its own shots) from seeds `shot_seed + 1000 i` where an erase draws
`seed + 1000 i` (`ATTACK_SHOT_SEED`, moved on where a checkpoint's manifest says its erase drew the same:
`attack_shot_seed`). Up to the twelfth session the attack drew its images from the pipeline under attack (for an
unlearned encoder: images of the anchor, not of the concept) at the default erase's own seeds: an attack that
flattered the eraser twice over.
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

# the attacker's images come from seeds 500 + 1000 i (plus eval's seed): an erase at seed s draws s + 1000 i, so only
# an erase seed of 500 (mod 1000) would share one, and `attack_shot_seed` moves the attacker's on for it
ATTACK_SHOT_SEED = 500


@dataclass
class EmbeddingAttackConfig:
    """The attack's fixed budget."""

    steps: int = field(default=200, metadata={"help": "optimisation steps of the inverted token"})
    lr: float = field(default=5e-3, metadata={"help": "Adam learning rate of the token vector"})
    batch_size: int = field(default=4, metadata={"help": "shots per step"})
    seed: int = field(default=0, metadata={"help": "seeds the noise, timesteps and prompts of each step"})
    num_shots: int = field(default=4, metadata={"help": "the attacker's images of the concept"})
    shot_seed: int = field(default=ATTACK_SHOT_SEED, metadata={"help": "the shots' seeds: shot_seed + 1000 i"})
    shot_steps: int = field(
        default=12,
        metadata={"help": "solver steps of the attacker's images: 12 for every category, as erase drew its shots "
                          "until its defaults came to depend on the category (seventeenth session), so that the "
                          "instrument does not move with the method"},
    )  # fmt: skip
    max_norm: float | None = field(
        default=None,
        metadata={"help": "a bounded attacker: the offset is held within this many token-embedding lengths (the mean "
                          "norm of the encoder's input embeddings), as --robust's inner attack is; default unbounded, "
                          "the fixed budget"},
    )  # fmt: skip

    def __post_init__(self):
        if self.max_norm is not None and not self.max_norm > 0:
            raise ValueError(f"max_norm must be positive, got {self.max_norm}")


def shot_seeds(seed: int, count: int) -> list[int]:
    """The generation seeds of `count` shots from `seed`, as `generate_shots` draws them."""
    return [seed + 1000 * i for i in range(count)]


def attack_shot_seed(shot_seed: int, erase_config: dict | None, shots: int = 4, taken: set[int] = frozenset()) -> int:
    """`shot_seed`, or the next seed whose shots share no generation seed with the erase's own shots (from the
    checkpoint's recorded `EraseConfig`: its `seed` and `num_shots`, when it generated them rather than reading
    `images`) nor with `taken` (other attackers' seeds), so that the attacker never inverts the images the erase
    trained on, and two attackers never hold the same image."""
    avoid = set(taken)
    if erase_config and erase_config.get("images") is None:
        avoid |= set(shot_seeds(int(erase_config.get("seed", 0)), int(erase_config.get("num_shots", 4))))
    while avoid & set(shot_seeds(shot_seed, shots)):
        shot_seed += 1
    return shot_seed


def attacker_draws(seeds: list[int], erase_config: dict | None, **budget) -> list[EmbeddingAttackConfig]:
    """One attack per seed s (its noise from s, its images from `ATTACK_SHOT_SEED + s` on), each drawing images that
    neither the erase nor an earlier draw holds: eval's `--attack-draws` and benchmarks/embedding_attack.py."""
    draws, taken = [], set()
    for seed in seeds:
        attack = EmbeddingAttackConfig(seed=seed, **budget)
        attack.shot_seed = attack_shot_seed(ATTACK_SHOT_SEED + seed, erase_config, attack.num_shots, taken)
        taken |= set(shot_seeds(attack.shot_seed, attack.num_shots))
        draws.append(attack)
    return draws


def _spec(pipe, concept: str):
    return resolve_concepts([concept], None, conventions_for(pipe).prompts, variants=False)[0]


def attacker_shots(original_pipe, concept: str, config: EmbeddingAttackConfig) -> np.ndarray:
    """The attacker's images of `concept`: `config.num_shots` samples of its prompts from the original pipeline (whose
    encoder still draws the concept; an unlearned one would draw the anchor), from the attack's own seeds."""
    erase_like = EraseConfig(seed=config.shot_seed, num_shots=config.num_shots, shot_steps=config.shot_steps)
    return generate_shots(original_pipe, _spec(original_pipe, concept), erase_like)


def invert_concept(pipe, text_encoder, concept: str, shots: np.ndarray,
                   config: EmbeddingAttackConfig | None = None) -> tuple[torch.Tensor, list[float]]:  # fmt: skip
    """Learn the token offset that best brings `concept` back through `text_encoder`, on the attacker's `shots` (uint8
    images of the concept, `attacker_shots`) through `pipe`'s UNet; returns the offset and the losses."""
    config = config or EmbeddingAttackConfig()
    spec = _spec(pipe, concept)
    latents = encode_shots(pipe, shots, flip=False).to(pipe.unet.device)
    token_ids = concept_token_ids(pipe.tokenizer, spec.name)
    embedding = text_encoder.get_input_embeddings()
    offset = torch.zeros(embedding.weight.shape[1], device=embedding.weight.device, requires_grad=True)
    optimizer = torch.optim.Adam([offset], lr=config.lr)
    generator = torch.Generator("cpu").manual_seed(config.seed)
    prompts = list(spec.prompts)
    scheduler, unet = pipe.scheduler, pipe.unet
    text_encoder.requires_grad_(False)
    reach = None if config.max_norm is None else config.max_norm * embedding.weight.detach().norm(dim=-1).mean()
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
            if reach is not None:  # projected back onto the ball
                with torch.no_grad():
                    offset.mul_(torch.clamp(reach / offset.norm().clamp_min(1e-12), max=1.0))
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
