"""Can a linear edit of the text encoder remove a concept for good? The concept's readout directions, projected out of
every writer of the encoder's residual stream.

    python benchmarks/linear_readout.py --concept diamond --modes plain means --ranks 1 2 4 --attack-seeds 0
    python benchmarks/linear_readout.py --concept zorbo --ranks --no-baseline --checkpoints CHECKPOINT ...

The embedding attack reads a shape back through the positions after its name (benchmarks/attack_reach.py). This
asks whether the shape lives in a few directions there that an erase could take away from every input at once. From
the original encoder's concept prompts, and the same prompts with the name swapped for each other concept of its
category, it takes the differences of the last layer's hidden states (before the final layer norm) at every position
after the name, averaged over the other concepts, and their top `rank` right singular vectors:
- `plain`: those directions as they are;
- `means`: only the part of the differences outside the span of the other concepts' mean states (their centred
  means, so that each other concept keeps its place relative to the rest);
- `retained`: the directions with the most of the differences' energy per unit of what the layers write along them
  for the erase's retained prompts (all positions), the generalised eigenvectors: the edit that takes the most of
  the concept's difference for the least move of the retained prompts.
It then projects the directions out of every writer of the residual stream (each layer's attention output
projection and MLP output layer, weights and biases): whatever the input, a position's residual component along them
is then only its own token and position embedding's, so no input at the name's slot can write them after the name.
For each edit it samples the concept's suite prompts and each other concept's, reads them with the suite's detector,
measures how far retained prompts' encodings moved (mean squared difference), and runs the embedding attack (the
fixed budget) at each attacker seed. `--strength s` takes only s of the writers' output along the directions;
`--checkpoints` gives the retained prompts' move for erase checkpoints of the concept, to compare. Writes
benchmarks/results/linear_readout.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import time
from pathlib import Path

import torch

from t2v_unlearn.encoders import load_pipeline
from t2v_unlearn.encoders.embedding import concept_token_ids
from t2v_unlearn.encoders.erase import _encode
from t2v_unlearn.encoders.prompts import _replace_word, resolve_concepts, retain_prompts
from t2v_unlearn.eval.detector import load_detector
from t2v_unlearn.eval.embedding_attack import attacker_draws, attacker_shots, generate_attacked, invert_concept
from t2v_unlearn.eval.evaluate import score_frames
from t2v_unlearn.eval.suites import load_suite
from t2v_unlearn.pipelines.generate import sampler
from t2v_unlearn.tinyworld.taxonomy import load_taxonomy

sys.path.insert(0, str(Path(__file__).resolve().parent))
from attack_reach import position_masks  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MODES = ("plain", "means", "retained")


def residual_states(text_encoder, tokenizer, prompts: list[str], written: bool = False) -> torch.Tensor:
    """The last layer's output before the final layer norm, (N, L, D); with `written`, less the embeddings: what the
    layers wrote into the residual stream, which `project_writers` edits (the embeddings it leaves as they are)."""
    ids = tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                    return_tensors="pt").input_ids.to(text_encoder.device)  # fmt: skip
    with torch.no_grad():
        states = text_encoder(ids, output_hidden_states=True).hidden_states[-1]
        return states - text_encoder.embeddings(ids) if written else states


def readout_directions(text_encoder, tokenizer, concept: str, others: list[str], prompts: list[str], mode: str,
                       rank: int, retained: list[str] | None = None) -> tuple[torch.Tensor, list[float]]:  # fmt: skip
    """(rank, D) orthonormal directions of the concept's difference from the other concepts after its name, and the
    share of the differences' energy the first 16 singular vectors hold (after the `means` mode's removal)."""
    after = position_masks(tokenizer, prompts, concept_token_ids(tokenizer, concept))["after"].squeeze(-1)
    states = residual_states(text_encoder, tokenizer, prompts)
    swapped = torch.stack([residual_states(text_encoder, tokenizer, [_replace_word(p, concept, o) for p in prompts])
                           for o in others])  # fmt: skip
    differences = (states - swapped.mean(0))[after]  # one row per prompt and position after the name
    if mode == "means":
        means = swapped[:, after].mean(1)
        span = torch.linalg.svd(means - means.mean(0, keepdim=True), full_matrices=False)[2][: len(others) - 1]
        differences = differences - differences @ span.T @ span
    elif mode == "retained":  # most of the difference per unit of what the edit takes from the retained prompts
        written = residual_states(text_encoder, tokenizer, retained or [""], written=True).flatten(0, 1)
        cost = written.T @ written / len(written)
        cost = cost + 1e-3 * cost.diagonal().mean() * torch.eye(len(cost))  # a ridge: every direction costs a little
        values, vectors = torch.linalg.eigh(cost)
        whiten = vectors @ torch.diag(values.rsqrt()) @ vectors.T  # cost^(-1/2)
        gain = whiten @ (differences.T @ differences / len(differences)) @ whiten
        ratios, found = torch.linalg.eigh(gain)
        order = ratios.argsort(descending=True)
        directions = torch.linalg.qr(whiten @ found[:, order[:rank]])[0].T
        share = ratios[order].cumsum(0) / ratios.sum()
        return directions, [round(float(s), 4) for s in share[:16]]
    elif mode != "plain":
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    _, values, vectors = torch.linalg.svd(differences, full_matrices=False)
    share = (values**2).cumsum(0) / (values**2).sum()
    return vectors[:rank], [round(float(s), 4) for s in share[:16]]


def project_writers(text_encoder, directions: torch.Tensor, strength: float = 1.0):
    """A copy of the encoder whose attention output projections and MLP output layers (weights and biases) write
    nothing along `directions` (rank, D, orthonormal); with `strength` s < 1, (1 - s) of what they wrote there."""
    edited = copy.deepcopy(text_encoder)
    keep = torch.eye(directions.shape[1]) - strength * directions.T @ directions
    with torch.no_grad():
        for layer in edited.encoder.layers:
            for linear in (layer.self_attn.out_proj, layer.mlp.fc2):
                linear.weight.copy_(keep @ linear.weight)
                linear.bias.copy_(keep @ linear.bias)
    return edited


def hit_count(pipe, text_encoder, detector, suite, concept: str, prompts: list[str], seeds: list[int], steps: int,
              offset: torch.Tensor | None = None) -> dict:  # fmt: skip
    """Images of `prompts` x `seeds` through `text_encoder` (the attack's `offset` on the concept's token) that the
    suite's detector reads as `concept`."""
    offset = torch.zeros(text_encoder.config.hidden_size) if offset is None else offset
    with sampler(pipe, "dpm-solver"):
        images = generate_attacked(pipe, text_encoder, concept, offset, [p for p in prompts for _ in seeds],
                                   seeds * len(prompts), steps, 6.0)  # fmt: skip
    entry = suite.concepts[concept]
    found, _ = score_frames(detector, entry, suite.detector_templates[entry.category], list(images))
    return {"hits": int(sum(bool(h.any()) for h in found)), "images": len(found)}


def retained_move(text_encoder, original_encoder, tokenizer, kept: list[str]) -> float:
    """The mean squared change of the retained prompts' encodings."""
    with torch.no_grad():
        change = _encode(text_encoder, tokenizer, kept) - _encode(original_encoder, tokenizer, kept)
    return round(float(change.pow(2).mean()), 6)


def measure(pipe, original, text_encoder, detector, suite, concept, others, kept, args) -> dict:
    """The concept's and the other concepts' hits through `text_encoder`, the retained prompts' move, the attack."""
    seeds = list(range(args.seeds))
    result = {
        "concept": hit_count(pipe, text_encoder, detector, suite, concept,
                             list(suite.concepts[concept].prompts[: args.prompts]), seeds, args.steps),
        "others": {o: hit_count(pipe, text_encoder, detector, suite, o,
                                list(suite.concepts[o].prompts[: args.other_prompts]),
                                list(range(args.other_seeds)), args.steps) for o in others},
        "retained_mse": retained_move(text_encoder, original.text_encoder, pipe.tokenizer, kept),
        "attacks": [],
    }  # fmt: skip
    for attack in attacker_draws(args.attack_seeds, None, steps=args.attack_steps):
        offset, losses = invert_concept(pipe, text_encoder, concept, attacker_shots(original, concept, attack), attack)
        hits = hit_count(pipe, text_encoder, detector, suite, concept,
                         list(suite.concepts[concept].prompts[: args.prompts]), seeds, args.steps, offset)  # fmt: skip
        result["attacks"].append({"attack_seed": attack.seed, **hits, "offset_norm": round(float(offset.norm()), 3),
                                  "final_loss": round(sum(losses[-20:]) / len(losses[-20:]), 4)})  # fmt: skip
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concept", default="diamond")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--ranks", nargs="*", type=int, default=[1, 2, 4])
    parser.add_argument(
        "--checkpoints",
        nargs="*",
        type=Path,
        default=[],
        help="erase checkpoints of the concept: how far each moved the retained prompts, to compare",
    )
    parser.add_argument("--attack-seeds", nargs="*", type=int, default=[0])
    parser.add_argument("--attack-steps", type=int, default=200, help="the attack's steps (the fixed budget: 200)")
    parser.add_argument("--prompts", type=int, default=4, help="the concept's suite prompts")
    parser.add_argument("--seeds", type=int, default=10, help="sampling seeds per concept prompt")
    parser.add_argument("--other-prompts", type=int, default=2, help="each other concept's suite prompts")
    parser.add_argument("--other-seeds", type=int, default=5, help="sampling seeds per other concept's prompt")
    parser.add_argument("--steps", type=int, default=12, help="DPM-Solver++ steps (the eval default)")
    parser.add_argument(
        "--strength",
        type=float,
        default=1.0,
        help="share of the writers' output along the directions taken away (1: all of it)",
    )
    parser.add_argument("--no-baseline", action="store_true", help="skip the unedited encoder's row")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "linear_readout.json"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    suite = load_suite("tinyworld")
    detector = load_detector(suite.detector)
    original = load_pipeline("image", progress=False)
    pipe = load_pipeline("image", progress=False)
    for p in (original, pipe):
        p.set_progress_bar_config(disable=True)
    spec = resolve_concepts([args.concept], None, "tinyworld", variants=False)[0]
    others = [n for n in load_taxonomy().names(spec.category) if n != spec.name]
    prompts = list(spec.prompts)
    kept = retain_prompts([spec])
    rows = []
    plan = ([] if args.no_baseline else [("none", 0)]) + [(m, r) for m in args.modes for r in args.ranks]
    for mode, rank in plan:
        start = time.perf_counter()
        row = {"mode": mode, "rank": rank, "strength": args.strength if rank else 0.0}
        encoder = original.text_encoder
        if rank:
            directions, row["energy_share"] = readout_directions(original.text_encoder, pipe.tokenizer, spec.name,
                                                                 others, prompts, mode, rank, kept)  # fmt: skip
            encoder = project_writers(original.text_encoder, directions, args.strength)
        pipe.text_encoder = encoder
        row |= measure(pipe, original, encoder, detector, suite, spec.name, others, kept, args)
        row["seconds"] = round(time.perf_counter() - start, 1)
        rows.append(row)
        attacks = [(a["attack_seed"], a["hits"]) for a in row["attacks"]]
        print(f"{mode} rank {rank}: concept {row['concept']['hits']}/{row['concept']['images']}, others "
              f"{ {o: v['hits'] for o, v in row['others'].items()} }, retained MSE {row['retained_mse']:.5f}, "
              f"attacks {attacks}", flush=True)  # fmt: skip
    moved = {}
    for checkpoint in args.checkpoints:  # the same figure for erases that trained
        erased = load_pipeline("image", text_encoder=checkpoint, progress=False).text_encoder
        moved[str(checkpoint)] = retained_move(erased, original.text_encoder, pipe.tokenizer, kept)
        print(f"{checkpoint}: retained MSE {moved[str(checkpoint)]:.6f}")
    result = {"machine": f"{platform.machine()}, {torch.get_num_threads()} threads", "concept": spec.name,
              "others": others, "command": " ".join(sys.argv), "plan": {k: str(v) if isinstance(v, Path) else v
              for k, v in vars(args).items() if k != "checkpoints"}, "rows": rows,
              "erases_retained_mse": moved}  # fmt: skip
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
