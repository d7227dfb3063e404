"""Where the embedding attack wins: how far its token offset must reach, and which encoder outputs carry it.

    python benchmarks/attack_reach.py CHECKPOINT --attack-seeds 0 1 2 [--radii 1 3] [--parts reach positions transfer]
    python benchmarks/attack_reach.py CHECKPOINT --parts random [--random-lengths 0 3 6 10]
    python benchmarks/attack_reach.py CHECKPOINT --attack-seeds 0 1 2 --radii --parts ray [--ray-lengths 1 2 4 6 8]

Five questions about the attack of `embedding_attack.py` on one erased encoder (one concept), for each attacker seed:
- **Reach.** The same attack (the same images, noise and 200 steps) with its offset held within a ball of r
  token-embedding lengths (`EmbeddingAttackConfig.max_norm`), for each r of `--radii`, beside the unbounded attack
  (the fixed budget). `--robust`'s inner attack searches a ball of `robust_radius` token lengths (default 1); the
  unbounded attacker ends about 6 away. If recovery grows with r, the erase holds only where it was attacked.
- **Positions.** The unbounded attack's prompt encodings, spliced with the unattacked ones: attacked only at the
  concept token's own output position(s) ("token only"), or only at the positions after its last token (the end
  token and the padding, which read the token through the encoder's causal attention; "after only"). A text
  encoder can only block what reaches the UNet through positions it computes: the split says where it must.
- **Transfer.** The unbounded attack's offset put through the original encoder: if the original draws the concept
  there too, the attacker found a part of the original's way to the concept that the erase left open; if not, a
  way the erase itself opened (the offset undoes the erase). Beside it, the attack run on the original encoder
  (the control's offset) put through the erased one, and the cosine between the two offsets.
- **Rays** (`--parts ray`): the directions of both offsets above (the erased encoder's attacker's, and the
  attack on the original's), each scaled to every length of `--ray-lengths` token lengths, through the erased
  encoder. The original's direction is where the concept grows stronger from its name: if the erased encoder draws
  it far out along that ray but not near the name, the erase moved the concept outward rather than removing it,
  and the attacker's way back is to overshoot.
- **Random offsets** (`--parts random`, no attacker): each image's prompt with its own random offset of each of
  `--random-lengths` token lengths (direction uniform), through the erased encoder and through the original. If the
  erased one draws the concept no more than without an offset, the concept comes back only where an optimiser looks.

Each run samples the concept's first `--prompts` suite prompts at `--seeds` sampling seeds (DPM-Solver++ 12 steps,
guidance 6, as eval) and reads every image with the suite's detector; images with a hit, with Wilson intervals.
Writes benchmarks/results/attack_reach.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from t2v_unlearn.encoders import load_pipeline, read_manifest
from t2v_unlearn.encoders.embedding import concept_token_ids, token_offset
from t2v_unlearn.encoders.erase import _encode
from t2v_unlearn.eval import metrics as M
from t2v_unlearn.eval.detector import load_detector
from t2v_unlearn.eval.embedding_attack import attacker_draws, attacker_shots, invert_concept
from t2v_unlearn.eval.evaluate import score_frames
from t2v_unlearn.eval.suites import load_suite
from t2v_unlearn.pipelines.generate import _generators, _to_uint8, sampler

ROOT = Path(__file__).resolve().parent.parent
PARTS = ("reach", "positions", "transfer", "random", "ray")


def position_masks(tokenizer, prompts: list[str], token_ids: list[int]) -> dict[str, torch.Tensor]:
    """Per prompt and position (N, L, 1), booleans: the concept's own tokens ("token"), and every position after the
    last of them ("after"). A prompt without the concept's tokens has neither."""
    ids = tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                    return_tensors="pt").input_ids  # fmt: skip
    token = torch.isin(ids, torch.tensor(token_ids))
    positions = torch.arange(ids.shape[1]).expand_as(ids)
    last = torch.where(token, positions, torch.full_like(positions, -1)).max(dim=1, keepdim=True).values
    after = (positions > last) & (last >= 0)
    return {"token": token.unsqueeze(-1), "after": after.unsqueeze(-1)}


def spliced_encodings(text_encoder, tokenizer, concept: str, offset: torch.Tensor, prompts: list[str]):
    """The prompts' encodings attacked everywhere ("full"), not at all ("none"), only at the concept's own token
    positions ("token only") and only after them ("after only")."""
    token_ids = concept_token_ids(tokenizer, concept)
    with torch.no_grad():
        plain = _encode(text_encoder, tokenizer, prompts)
        with token_offset(text_encoder, token_ids, offset):
            attacked = _encode(text_encoder, tokenizer, prompts)
    masks = {k: v.to(plain.device) for k, v in position_masks(tokenizer, prompts, token_ids).items()}
    return {"full": attacked, "none": plain, "token only": torch.where(masks["token"], attacked, plain),
            "after only": torch.where(masks["after"], attacked, plain)}  # fmt: skip


@torch.no_grad()
def sample_embeddings(pipe, prompt_embeds: torch.Tensor, seeds: list[int], steps: int) -> np.ndarray:
    """Images (N, 1, H, W, 3) uint8 from given prompt encodings, as eval samples (DPM-Solver++, guidance 6)."""
    negative = _encode(pipe.text_encoder, pipe.tokenizer, [""]).expand(len(prompt_embeds), -1, -1)
    dtype = pipe.unet.dtype
    with sampler(pipe, "dpm-solver"):
        images = pipe(prompt_embeds=prompt_embeds.to(dtype), negative_prompt_embeds=negative.to(dtype),
                      generator=_generators(seeds, pipe.device), num_inference_steps=steps, guidance_scale=6.0,
                      output_type="np").images  # fmt: skip
    return _to_uint8(images)[:, None]


def random_offset_encodings(text_encoder, tokenizer, concept: str, prompts: list[str], length: float,
                            seed: int = 0) -> torch.Tensor:  # fmt: skip
    """The prompts' encodings, each with its own random offset (direction uniform) of `length` token lengths on the
    concept's tokens; the same directions for every encoder and length (one generator from `seed`)."""
    token_ids = concept_token_ids(tokenizer, concept)
    scale = text_encoder.get_input_embeddings().weight.detach().norm(dim=-1).mean()
    generator = torch.Generator("cpu").manual_seed(seed)
    rows = []
    with torch.no_grad():
        for prompt in prompts:
            direction = torch.randn(text_encoder.config.hidden_size, generator=generator)
            offset = (direction / direction.norm() * length * scale).to(text_encoder.device)
            with token_offset(text_encoder, token_ids, offset):
                rows.append(_encode(text_encoder, tokenizer, [prompt]))
    return torch.cat(rows)


def hits(detector, suite, concept: str, images: np.ndarray) -> dict:
    entry = suite.concepts[concept]
    found, _ = score_frames(detector, entry, suite.detector_templates[entry.category], list(images))
    count = int(sum(bool(h.any()) for h in found))
    return {"hits": count, "images": len(found), "rate": M.wilson_interval(count, len(found))}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path, help="an encoder folder written by `t2v-unlearn erase`")
    parser.add_argument("--attack-seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--radii", nargs="*", type=float, default=[1.0, 3.0], help="token lengths; [] for none")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS), help="what to measure")
    parser.add_argument("--ray-lengths", nargs="+", type=float, default=[1.0, 2.0, 4.0, 6.0, 8.0],
                        help="token lengths along each offset's direction (--parts ray)")  # fmt: skip
    parser.add_argument("--random-lengths", nargs="+", type=float, default=[0.0, 3.0, 6.0, 10.0],
                        help="token lengths of the random offsets (--parts random)")  # fmt: skip
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--seeds", type=int, default=20, help="sampling seeds per prompt")
    parser.add_argument("--steps", type=int, default=12, help="DPM-Solver++ steps (the eval default)")
    parser.add_argument("--attack-steps", type=int, default=200, help="the attack's steps (the fixed budget: 200)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "attack_reach.json"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    suite = load_suite("tinyworld")
    detector = load_detector(suite.detector)
    original = load_pipeline("image", progress=False)
    manifest = read_manifest(args.checkpoint)
    if len(manifest.concepts) != 1:
        raise SystemExit(f"{args.checkpoint}: erases {manifest.concepts}; this measures checkpoints of one concept")
    (concept,) = manifest.concepts
    pipe = load_pipeline("image", text_encoder=args.checkpoint, progress=False)
    for p in (original, pipe):
        p.set_progress_bar_config(disable=True)
    prompts = list(suite.concepts[concept].prompts[: args.prompts])
    seeds = list(range(args.seeds))
    rows, row_seeds = [p for p in prompts for _ in seeds], seeds * len(prompts)
    token_length = float(pipe.text_encoder.get_input_embeddings().weight.detach().norm(dim=-1).mean())
    result = {"machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
              "checkpoint": str(args.checkpoint), "concept": concept, "erase_steps": manifest.steps,
              "robust_radius": manifest.config.get("robust_radius"), "token_length": round(token_length, 4),
              "prompts": prompts, "seeds": len(seeds), "sampling": {"sampler": "dpm-solver", "steps": args.steps,
              "guidance": 6.0}}  # fmt: skip
    runs = []
    if "random" in args.parts:
        randoms = {}
        for name, through in (("erased", pipe), ("original", original)):
            for length in args.random_lengths:
                encoded = random_offset_encodings(through.text_encoder, through.tokenizer, concept, rows, length)
                images = sample_embeddings(through, encoded, row_seeds, args.steps)
                randoms[f"{name}, {length:g} token lengths"] = hits(detector, suite, concept, images)
                print(f"random offsets, {name} encoder, {length:g} token lengths: "
                      f"{randoms[f'{name}, {length:g} token lengths']['hits']}/{len(rows)}", flush=True)  # fmt: skip
        result["random_offsets"] = randoms
        write(args.out, result)
    attacking = any(p != "random" for p in args.parts)
    for attack in attacker_draws(args.attack_seeds if attacking else [], manifest.config, steps=args.attack_steps):
        start = time.perf_counter()
        shots = attacker_shots(original, concept, attack)
        run = {"attack_seed": attack.seed, "shot_seed": attack.shot_seed}
        offset = None
        for radius in [*args.radii, None] if "reach" in args.parts else [None]:
            bounded = dataclasses.replace(attack, max_norm=radius)
            offset, losses = invert_concept(pipe, pipe.text_encoder, concept, shots, bounded)
            if "reach" not in args.parts:
                break
            encodings = spliced_encodings(pipe.text_encoder, pipe.tokenizer, concept, offset, rows)
            key = "unbounded" if radius is None else f"{radius:g}"
            run.setdefault("reach", {})[key] = {
                **hits(detector, suite, concept, sample_embeddings(pipe, encodings["full"], row_seeds, args.steps)),
                "offset_norm": round(float(offset.norm()), 3), "final_loss": round(float(np.mean(losses[-20:])), 4),
            }  # fmt: skip
            print(f"seed {attack.seed} reach {key}: {run['reach'][key]['hits']}/{len(rows)} "
                  f"(offset {run['reach'][key]['offset_norm']})", flush=True)  # fmt: skip
        if "positions" in args.parts:  # the unbounded attack's encodings, spliced
            encodings = spliced_encodings(pipe.text_encoder, pipe.tokenizer, concept, offset, rows)
            for name in ("token only", "after only"):
                images = sample_embeddings(pipe, encodings[name], row_seeds, args.steps)
                run.setdefault("positions", {})[name] = hits(detector, suite, concept, images)
                print(f"seed {attack.seed} {name}: {run['positions'][name]['hits']}/{len(rows)}", flush=True)
        control = None
        if "transfer" in args.parts or "ray" in args.parts:
            control, _ = invert_concept(original, original.text_encoder, concept, shots, attack)
        if "transfer" in args.parts:
            crossed = {"erased offset, original encoder": (original, offset),
                       "original's offset, erased encoder": (pipe, control)}  # fmt: skip
            cosine = torch.nn.functional.cosine_similarity(offset, control, dim=0)
            run["transfer"] = {"cosine": round(float(cosine), 3),
                               "offset_norms": {"erased": round(float(offset.norm()), 3),
                                                "original": round(float(control.norm()), 3)}}  # fmt: skip
            for name, (through, moved) in crossed.items():
                encoded = spliced_encodings(through.text_encoder, through.tokenizer, concept, moved, rows)["full"]
                images = sample_embeddings(through, encoded, row_seeds, args.steps)
                run["transfer"][name] = hits(detector, suite, concept, images)
                print(f"seed {attack.seed} {name}: {run['transfer'][name]['hits']}/{len(rows)}", flush=True)
        if "ray" in args.parts:  # both offsets' directions, at each length, through the erased encoder
            for name, direction in (("original's direction", control), ("attacker's direction", offset)):
                unit = direction / direction.norm().clamp_min(1e-12)
                for length in args.ray_lengths:
                    moved = unit * length * token_length
                    encoded = spliced_encodings(pipe.text_encoder, pipe.tokenizer, concept, moved, rows)["full"]
                    key = f"{name}, {length:g} token lengths"
                    run.setdefault("ray", {})[key] = hits(detector, suite, concept,
                                                          sample_embeddings(pipe, encoded, row_seeds, args.steps))
                    print(f"seed {attack.seed} ray, {key}: {run['ray'][key]['hits']}/{len(rows)}", flush=True)
        run["seconds"] = round(time.perf_counter() - start, 1)
        runs.append(run)
        total = len(rows) * len(runs)
        pooled = {}
        for part in ("reach", "positions", "transfer", "ray"):
            for key, first in runs[0].get(part, {}).items():
                if isinstance(first, dict) and "hits" in first:
                    name = {"reach": f"reach {key}", "positions": key}.get(part, f"{part}: {key}")
                    pooled[name] = M.wilson_interval(sum(r[part][key]["hits"] for r in runs), total)
        result.update(runs=runs, pooled=pooled)
        write(args.out, result)


def write(path: str | Path, result: dict) -> None:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")

if __name__ == "__main__":
    main()
