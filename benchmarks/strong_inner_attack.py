"""A screen, not a method: the robust erase with a stronger inner attack (fresh inversions, or random restarts).

    python benchmarks/strong_inner_attack.py --concept diamond --out runs/dia/dia-ti [--every 10] [--ti-steps 50]
    python benchmarks/strong_inner_attack.py --concept diamond --out runs/dia/dia-rr --restarts 3 --radius 6
    python benchmarks/strong_inner_attack.py --concept diamond --out runs/dia/dia-shell --shell 1.0 --max-steps 50
    python benchmarks/strong_inner_attack.py --concept diamond --out runs/dia/dia-place --place 8 --max-steps 50

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

With `--latent-layer K` instead, the inner attack is the default one, but its offset is added to the residual stream
after layer K, at the concept's tokens, not to their input embeddings (latent adversarial training: Casper et al.
2024; Sheshadri et al. 2024). An attacker's token must recreate, somewhere in the layers, the state that draws the
concept; an erase that holds under offsets of that state holds against every input that reaches it. `--radius` and
`--robust-lr` are still in token lengths: a shape's state after layer 1 lies 15-24 from the other shapes' (0.45 at
the input, 2.8 token lengths).

With `--place K` instead, the inner attack searches the encoder alone (`place_search`): the concept is a place in
the space its category shares after the name (`shape_place`, benchmarks/linear_readout.py), and the attacker's
way back is a pocket 4-6 token lengths out that steers the encodings there. Each call runs `--place-steps` Adam steps
from the warm start and K random offsets of `--shell-lengths` token lengths, all in one batch through the encoder
(no UNet), and returns the offset that came closest to the concept's place; the outer step erases under it.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

import torch

from t2v_unlearn.encoders import EraseConfig, erase_concept, save_checkpoint
from t2v_unlearn.encoders import erase as erase_module
from t2v_unlearn.encoders.embedding import token_offset
from t2v_unlearn.eval.embedding_attack import EmbeddingAttackConfig
from t2v_unlearn.pipelines import load_pipeline

sys.path.insert(0, str(Path(__file__).resolve().parent))
from attack_reach import position_masks  # noqa: E402


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


def latent_offset(layer: int):
    """A stand-in for `token_offset` whose offset is added to the output of the encoder's layer `layer` (the residual
    stream) at the positions of the concept's tokens, found from the input ids by a hook on the input embedding."""

    @contextlib.contextmanager
    def offset_after_layer(text_encoder, token_ids: list[int], offset: torch.Tensor):
        ids, state = torch.tensor(token_ids), {}

        def find(module, inputs, output):
            state["mask"] = torch.isin(inputs[0], ids.to(inputs[0].device)).unsqueeze(-1)

        def add(module, inputs, output):
            return output + state["mask"].to(output.dtype) * offset.to(output.dtype)

        handles = [text_encoder.get_input_embeddings().register_forward_hook(find),
                   text_encoder.get_submodule("encoder.layers")[layer].register_forward_hook(add)]  # fmt: skip
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    return offset_after_layer


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


def shape_place(text_encoder, tokenizer, concept: str, others: list[str], prompts: list[str]):
    """The category's shared space after the name, and the concept's place in it: the centred class means of the
    final encodings at the positions after the name, for the prompts naming the concept and each other concept; returns
    (directions (K, D), the concept's coordinates (K,), the mean (D,))."""
    from t2v_unlearn.encoders.prompts import _replace_word

    token_ids = erase_module.concept_token_ids(tokenizer, concept)
    after = position_masks(tokenizer, prompts, token_ids)["after"].squeeze(-1)
    means = []
    with torch.no_grad():
        for name in [concept, *others]:
            encoded = erase_module._encode(text_encoder, tokenizer, [_replace_word(p, concept, name) for p in prompts])
            means.append(encoded[after].mean(0))
    means = torch.stack(means)
    centre = means.mean(0)
    directions = torch.linalg.svd(means - centre, full_matrices=False)[2][: len(others)]
    return directions, directions @ (means[0] - centre), centre


def place_search(directions: torch.Tensor, place: torch.Tensor, centre: torch.Tensor, starts: int, steps: int,
                 lengths: tuple[float, float], lr: float, seed: int = 0):  # fmt: skip
    """An `_inner_attack` that searches the encoder alone, not the UNet: from the warm start and `starts` random
    offsets (direction uniform, length uniform in `lengths` token lengths), `steps` Adam steps each, all in one batch,
    bring the step's prompts' encodings after the name to the concept's place in the category's shared space
    (`shape_place`); it returns the offset of the start that came closest (as measured before its last step, after
    which it is returned). The outer step then erases under it through the UNet. Returns the function and a list
    collecting each call's closest distance."""
    generator = torch.Generator("cpu").manual_seed(seed)
    distances = []

    def attack(model, tokenizer, unet, scheduler, prompts, latents, noise, timesteps, concept_ids, start, config):
        embeddings = model.get_input_embeddings()
        scale = embeddings.weight.detach().norm(dim=-1).mean()
        begin = [start.detach()]
        for _ in range(starts):
            direction = torch.randn(start.shape, generator=generator).to(start.device)
            length = lengths[0] + (lengths[1] - lengths[0]) * torch.rand((), generator=generator).item()
            begin.append(direction / direction.norm() * length * scale)
        offsets = torch.stack(begin).clone().requires_grad_(True)  # (S, D): one offset per start, for all its prompts
        rows = [p for _ in begin for p in prompts]
        ids = tokenizer(rows, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                        return_tensors="pt").input_ids.to(start.device)  # fmt: skip
        slot = torch.isin(ids, torch.tensor(concept_ids, device=ids.device)).unsqueeze(-1)
        after = position_masks(tokenizer, rows, concept_ids)["after"].to(start.device)
        owner = torch.arange(len(begin), device=start.device).repeat_interleave(len(prompts))
        optimizer = torch.optim.Adam([offsets], lr=lr)
        for _ in range(steps):
            handle = embeddings.register_forward_hook(lambda m, i, out: out + slot * offsets[owner].unsqueeze(1))
            try:
                encoded = model(ids)[0]
            finally:
                handle.remove()
            mean_after = (encoded * after).sum(1) / after.sum(1).clamp_min(1)
            gap = ((mean_after - centre) @ directions.T - place).pow(2).sum(-1)  # per row
            per_start = gap.reshape(len(begin), len(prompts)).mean(1)
            optimizer.zero_grad(set_to_none=True)
            (grad,) = torch.autograd.grad(per_start.sum(), offsets)
            offsets.grad = grad
            optimizer.step()
        best = int(per_start.argmin())
        distances.append(float(per_start[best].detach()))
        return offsets[best].detach()

    return attack, distances


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concept", default="diamond")
    parser.add_argument("--out", type=Path, required=True, help="the checkpoint folder to write")
    parser.add_argument("--every", type=int, default=10, help="inner-attack calls between two fresh inversions")
    parser.add_argument("--ti-steps", type=int, default=50, help="Adam steps of each fresh inversion")
    parser.add_argument(
        "--radius",
        type=float,
        help="the inner attack's reach, token lengths (default 10; with --shell, the erase's own)",
    )
    parser.add_argument(
        "--shell",
        type=float,
        help="instead: the default inner attack, and this weight of the far-offset anchor term (`shell_term`)",
    )
    parser.add_argument("--shell-lengths", nargs=2, type=float, default=[2.0, 10.0], help="its offsets' lengths")
    parser.add_argument("--restarts", type=int, help="random restarts per call instead of fresh inversions")
    parser.add_argument("--robust-lr", type=float, default=EraseConfig.robust_lr, help="the inner attack's step")
    parser.add_argument("--shots", type=int, default=EraseConfig.num_shots, help="images generated per concept")
    parser.add_argument("--place", type=int, metavar="STARTS",
                        help="instead: search the encoder alone for the concept's place (`place_search`), from the "
                        "warm start and STARTS random offsets")  # fmt: skip
    parser.add_argument("--place-steps", type=int, default=15, help="Adam steps of each place search")
    parser.add_argument("--place-lr", type=float, default=2e-2, help="its learning rate")
    parser.add_argument("--latent-layer", type=int, metavar="K",
                        help="instead: the default inner attack, its offset added after layer K (`latent_offset`)")
    parser.add_argument("--max-steps", type=int, help="run exactly this many steps (stop rule 'max-steps')")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    pipe = load_pipeline("image", progress=False)
    radius = args.radius or (EraseConfig.robust_radius if args.shell or args.place or args.latent_layer is not None
                             else 10.0)  # fmt: skip
    steps = {"max_steps": args.max_steps, "stop_rule": "max-steps"} if args.max_steps else {}
    config = EraseConfig(robust=True, robust_radius=radius, robust_lr=args.robust_lr, num_shots=args.shots, **steps)
    values = []
    if args.place:
        from t2v_unlearn.encoders.prompts import resolve_concepts
        from t2v_unlearn.tinyworld.taxonomy import load_taxonomy

        spec = resolve_concepts([args.concept], None, "tinyworld", variants=False)[0]
        others = [n for n in load_taxonomy().names(spec.category) if n != spec.name]
        place = shape_place(pipe.text_encoder, pipe.tokenizer, spec.name, others, list(spec.prompts))
        erase_module._inner_attack, values = place_search(*place, args.place, args.place_steps,
                                                          tuple(args.shell_lengths), args.place_lr)  # fmt: skip
    elif args.latent_layer is not None:  # the default attack and the attacked prompts' encoding, both offset there
        erase_module.token_offset = latent_offset(args.latent_layer)
    elif args.shell:
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
        print(f"{'place distance' if args.place else 'far-offset term'}: first {values[0]:.4f}, last {values[-1]:.4f}")


if __name__ == "__main__":
    main()
