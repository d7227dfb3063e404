"""A screen, not a method: the robust erase with a stronger inner attack (fresh inversions, or random restarts).

    python benchmarks/strong_inner_attack.py --concept diamond --out runs/dia/dia-ti [--every 10] [--ti-steps 50]
    python benchmarks/strong_inner_attack.py --concept diamond --out runs/dia/dia-rr --restarts 3 --radius 6
    python benchmarks/strong_inner_attack.py --concept diamond --out runs/dia/dia-shell --shell 1.0 --max-steps 50

The eval's embedding attack (textual inversion: Adam on a token offset, 200 steps from zero) brings a shape back
after the default robust erase, whose inner attack takes 2 signed-gradient steps a step, warm-started, within one
token length. Here every `--every`-th call of the inner attack starts again from zero and runs `--ti-steps` Adam
steps at the attacker's learning rate, on the step's shots with fresh noise and timesteps, with no radius; the calls
in between continue from it as the default does (with `--radius` token lengths as their reach). The erase is
otherwise `t2v-unlearn erase`'s default (robust); it writes an encoder checkpoint for `embedding_attack.py`.

With `--restarts K` instead, every call runs the default signed-gradient attack from the warm start and from K
random points of the ball of `--radius` token lengths (PGD with random restarts, as adversarial training does), and
keeps the offset under which the shots' denoising loss is lowest: the attacker's textual inversion reaches offsets of
about 6 token lengths, where the default's one warm-started path covers one direction of the ball
(benchmarks/attack_reach.py). This swaps `t2v_unlearn.encoders.erase._inner_attack` for the run: a screen of the
idea, before any change to it.

With `--shell W` instead, the inner attack is the default one, and each step's attacked-prompt loss gains W x a
far-offset term (`shell_term`; it also swaps `anchor_loss`): the concept prompts, each with a random offset of
`--shell-lengths` token lengths, must encode as the original encoder's anchor prompts do. `--max-steps N` runs
exactly N steps, as the default robust shape erase does when its stop rule does not fire.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from t2v_unlearn.encoders import EraseConfig, erase_concept, save_checkpoint
from t2v_unlearn.encoders import erase as erase_module
from t2v_unlearn.encoders.embedding import token_offset
from t2v_unlearn.eval.embedding_attack import EmbeddingAttackConfig
from t2v_unlearn.pipelines import load_pipeline


def restarting_attack(every: int, ti_steps: int, lr: float, seed: int = 0):
    """An `_inner_attack` that, on every `every`-th call, starts from zero and runs `ti_steps` Adam steps."""
    default = erase_module._inner_attack
    calls = {"n": 0}
    generator = torch.Generator("cpu").manual_seed(seed)

    def attack(model, tokenizer, unet, scheduler, prompts, latents, noise, timesteps, concept_ids, start, config):
        calls["n"] += 1
        if (calls["n"] - 1) % every:
            return default(model, tokenizer, unet, scheduler, prompts, latents, noise, timesteps, concept_ids, start,
                           config)  # fmt: skip
        offset = torch.zeros_like(start, requires_grad=True)
        optimizer = torch.optim.Adam([offset], lr=lr)
        for _ in range(ti_steps):
            fresh = torch.randn(latents.shape, generator=generator).to(latents.device)
            steps = torch.randint(0, scheduler.config.num_train_timesteps, (len(latents),), generator=generator)
            with token_offset(model, concept_ids, offset):
                hidden = erase_module._encode(model, tokenizer, prompts)
            loss = erase_module.denoising_loss(unet, scheduler, latents, fresh, steps.to(latents.device), hidden)
            optimizer.zero_grad(set_to_none=True)
            (grad,) = torch.autograd.grad(loss, offset)
            offset.grad = grad
            optimizer.step()
        return offset.detach()

    return attack


def random_restart_attack(restarts: int, seed: int = 0):
    """An `_inner_attack` that runs the default attack from its warm start and from `restarts` random points of the
    ball (`config.robust_radius` token lengths; direction uniform, radius uniform in [0, 1] of the reach), and returns
    the offset under which the step's shots denoise best through the concept prompts: the strongest it found."""
    default = erase_module._inner_attack
    generator = torch.Generator("cpu").manual_seed(seed)

    def attack(model, tokenizer, unet, scheduler, prompts, latents, noise, timesteps, concept_ids, start, config):
        scale = model.get_input_embeddings().weight.detach().norm(dim=-1).mean()
        starts = [start]
        for _ in range(restarts):
            direction = torch.randn(start.shape, generator=generator).to(start.device)
            reach = config.robust_radius * scale * torch.rand((), generator=generator).item()
            starts.append(direction / direction.norm() * reach)
        best, best_loss = None, float("inf")
        for begin in starts:
            offset = default(model, tokenizer, unet, scheduler, prompts, latents, noise, timesteps, concept_ids,
                             begin, config)  # fmt: skip
            with torch.no_grad(), token_offset(model, concept_ids, offset):
                hidden = erase_module._encode(model, tokenizer, prompts)
                loss = erase_module.denoising_loss(unet, scheduler, latents, noise, timesteps, hidden).item()
            if loss < best_loss:
                best, best_loss = offset, loss
        return best

    return attack


def shell_term(weight: float, lengths: tuple[float, float], seed: int = 0):
    """An `_inner_attack` and an `anchor_loss` that add, to each step's attacked-prompt loss, `weight` x the mean
    squared distance between the step's concept prompts, each with its own random offset on the concept's tokens
    (direction uniform, length uniform in `lengths` token lengths), and the original encoder's anchor prompts: far
    from the name, in every direction, the encoder is asked for the anchor (benchmarks/attack_reach.py: the attacker's
    way back is a pocket about 6 token lengths out along its own direction, not a ray). Returns the two functions and
    a list that collects the term's values."""
    default_attack, default_anchor = erase_module._inner_attack, erase_module.anchor_loss
    generator = torch.Generator("cpu").manual_seed(seed)
    context, values = {}, []

    def attack(model, tokenizer, unet, scheduler, prompts, latents, noise, timesteps, concept_ids, start, config):
        context.update(model=model, tokenizer=tokenizer, prompts=prompts, concept_ids=concept_ids, calls=0)
        return default_attack(model, tokenizer, unet, scheduler, prompts, latents, noise, timesteps, concept_ids,
                              start, config)  # fmt: skip

    def anchor(unet, scheduler, latents, noise, timesteps, hidden_states, anchor_hidden_states):
        loss = default_anchor(unet, scheduler, latents, noise, timesteps, hidden_states, anchor_hidden_states)
        if "model" not in context:
            return loss
        context["calls"] += 1
        if context["calls"] != 1:  # only the attacked prompts' call, the first after the inner attack
            return loss
        model, tokenizer = context["model"], context["tokenizer"]
        embeddings = model.get_input_embeddings().weight
        scale = embeddings.detach().norm(dim=-1).mean()
        rows = []
        for prompt in context["prompts"]:
            direction = torch.randn(embeddings.shape[1], generator=generator).to(embeddings.device)
            length = lengths[0] + (lengths[1] - lengths[0]) * torch.rand((), generator=generator).item()
            with token_offset(model, context["concept_ids"], direction / direction.norm() * length * scale):
                rows.append(erase_module._encode(model, tokenizer, [prompt]))
        shell = torch.nn.functional.mse_loss(torch.cat(rows).float(), anchor_hidden_states.float())
        values.append(shell.item())
        return loss + weight * shell

    return attack, anchor, values


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concept", default="diamond")
    parser.add_argument("--out", type=Path, required=True, help="the checkpoint folder to write")
    parser.add_argument("--every", type=int, default=10, help="inner-attack calls between two fresh inversions")
    parser.add_argument("--ti-steps", type=int, default=50, help="Adam steps of each fresh inversion")
    parser.add_argument("--radius", type=float,
                        help="the inner attack's reach, token lengths (default 10; with --shell, the erase's own)")
    parser.add_argument("--shell", type=float, help="instead: the default inner attack, and this weight of the "
                        "far-offset anchor term (`shell_term`)")
    parser.add_argument("--shell-lengths", nargs=2, type=float, default=[2.0, 10.0], help="its offsets' lengths")
    parser.add_argument("--restarts", type=int, help="random restarts per call instead of fresh inversions")
    parser.add_argument("--robust-lr", type=float, default=EraseConfig.robust_lr, help="the inner attack's step")
    parser.add_argument("--shots", type=int, default=EraseConfig.num_shots, help="images generated per concept")
    parser.add_argument("--max-steps", type=int, help="run exactly this many steps (stop rule 'max-steps')")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    pipe = load_pipeline("image", progress=False)
    radius = args.radius or (EraseConfig.robust_radius if args.shell else 10.0)
    steps = {"max_steps": args.max_steps, "stop_rule": "max-steps"} if args.max_steps else {}
    config = EraseConfig(robust=True, robust_radius=radius, robust_lr=args.robust_lr, num_shots=args.shots, **steps)
    values = []
    if args.shell:
        erase_module._inner_attack, erase_module.anchor_loss, values = shell_term(args.shell, args.shell_lengths)
    elif args.restarts:
        erase_module._inner_attack = random_restart_attack(args.restarts)
    else:
        erase_module._inner_attack = restarting_attack(args.every, args.ti_steps, EmbeddingAttackConfig().lr)
    start = time.perf_counter()
    result = erase_concept(pipe, [args.concept], config, progress=False)
    seconds = time.perf_counter() - start
    save_checkpoint(args.out, result, pipe.text_encoder, pipe.tokenizer, config, "tinyworld", result.timings,
                    overwrite=True, extra={"screen": vars(args) | {"out": str(args.out)}})  # fmt: skip
    print(f"{args.concept}: {result.steps} steps ({result.stopped_by}) in {seconds:.0f} s -> {args.out}")
    if values:
        print(f"far-offset term: first {values[0]:.4f}, last {values[-1]:.4f}")


if __name__ == "__main__":
    main()
