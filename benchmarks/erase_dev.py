"""Erase variants side by side on a development split of prompts: erasure, retention, collateral, time, steps.

    python benchmarks/erase_dev.py [--concepts zorbo striped star] [--variants anchor ascent-old ...] [--seeds 2]

The development split holds TinyWorld caption templates that neither erase (its training prompts) nor the
evaluation suite use ("the character {c}", "a {colour} {object} in {c} style", ...), so choosing defaults here
never tunes on the evaluation suite. For each concept and variant: `erase_concept` on shots generated once per way
of drawing them, then images of every concept of the world through the original and the unlearned encoder (same
prompts and seeds), classified by the TinyWorld detector. Reports per variant: the target's hit rate before and
after (Wilson interval), retention of the same category and of the others (hit rate after / before, pooled), the
encoder's output distance on retained prompts, the steps and the optimisation time. Writes
benchmarks/results/erase_dev.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from t2v_unlearn.encoders import EraseConfig, erase_concept
from t2v_unlearn.encoders.erase import _encode
from t2v_unlearn.encoders.prompts import resolve_concepts, retain_prompts
from t2v_unlearn.eval.detector import load_detector
from t2v_unlearn.eval.metrics import wilson_bounds
from t2v_unlearn.pipelines import load_pipeline
from t2v_unlearn.pipelines.generate import SAMPLERS, generate_images, sampler
from t2v_unlearn.spelling import spelling_variants, training_variants
from t2v_unlearn.tinyworld.classifier import NONE
from t2v_unlearn.tinyworld.taxonomy import load_taxonomy

ROOT = Path(__file__).resolve().parent.parent
DEV_TEMPLATES = {
    "id": ["the character {c}", "a cartoon of {c}", "{c} alone", "a small {c}", "a {background} background with {c}",
           "{c} the character on a {background} background"],
    "style": ["a {colour} {object} in {c} style", "a {object} in {c} style on a {background} background",
              "an image of a {object} in {c} style",
              "a {background} background with a {colour} {object} in {c} style",
              "a small {colour} {object} in {c} style",
              "a {colour} {object} in {c} style on a {background} background"],
    "object": ["a {colour} {c}", "a small {colour} {c}", "a {c} in {style} style", "a {colour} {c} on a {background} "
               "background", "a picture of a {colour} {c} in {style} style", "a small {c}"],
}  # fmt: skip
# the development split's own attack prompts (`--attacks`): sentences that neither erase, the dev templates above nor
# the evaluation suite's attack families use, and spelling variants from seeds neither of those draws from
DEV_PARAPHRASES = ("you can see {c} in this picture", "this image has {c} in it", "{c} right in the centre",
                   "a plain picture with {c}", "what this picture shows is {c}", "{c} can be seen here")  # fmt: skip
DEV_MISSPELLING_SEEDS = range(300, 340)
# the erase variants compared: "default" is today's EraseConfig; "ascent-old" the previous default (gradient ascent,
# loss-ratio rule); "published" the published recipe (10 steps of batch 2, no stop rule, no preservation)
VARIANTS = {
    "default": {},
    "lr1e-3": {"lr": 1e-3},
    "lr5e-4": {"lr": 5e-4},
    "lr2e-3": {"lr": 2e-3},
    "steps40": {"max_steps": 40},
    "lr5e-4-40": {"lr": 5e-4, "max_steps": 40},
    "lr1e-3-40": {"lr": 1e-3, "max_steps": 40},
    "no-variants": {"variants": False},
    "all": {"trainable": "all"},
    "preserve0.3": {"preserve_weight": 0.3},
    "to-circle": {"anchor": "circle"},
    "to-something": {"anchor": "something"},  # the previous object anchor: draws a random shape, the erased one too
    "to-heart": {"anchor": "heart"},
    "to-checkered": {"anchor": "checkered", "max_steps": 50},  # the style fallback candidate (seventeenth session)
    "to-outlined": {"anchor": "outlined", "max_steps": 50},  # the style fallback until then
    "to-triangle": {"anchor": "triangle"},
    "to-circle-p0.3": {"anchor": "circle", "preserve_weight": 0.3},
    "gap0.1": {"gap_ratio": 0.1, "max_steps": 50},
    "ts4": {"eval_timesteps": 4},  # a stop-rule check set half as large: 4 timesteps per shot
    # the defaults before the seventeenth session, which made them depend on the category (12 and 4 for objects and
    # styles, as before; 8 and 2 for characters)
    "s16-default": {"shot_steps": 12, "eval_timesteps": 4},
    "ts2": {"eval_timesteps": 2},  # and half as large again (fourteenth session)
    "shots8": {"shot_steps": 8},  # the shots drawn in 8 solver steps, not 12
    "ts2-shots8": {"eval_timesteps": 2, "shot_steps": 8},
    "misspell8": {"misspellings": 8},  # eight spelling-variant draws (the default is one)
    "name-handle": {"robust_handle": "name", "variant_contexts": 1},  # the seventh session's default
    "to-circle-misspell8": {"anchor": "circle", "misspellings": 8},
    "no-contexts": {"contexts": False},  # the concept's prompts without the concept beside other things
    "ascent-old": {"objective": "ascent", "variants": False, "shot_sampler": "pipeline", "shot_steps": 25,
                   "lr": 2e-4, "max_steps": 200},
    "published": {"objective": "ascent", "variants": False, "shot_sampler": "pipeline", "shot_steps": 25,
                  "stop_rule": "max-steps", "max_steps": 10, "batch_size": 2, "preserve_weight": 0.0, "lr": 1e-3},
}  # fmt: skip


def dev_prompts(name: str, category: str, count: int) -> list[str]:
    taxonomy = load_taxonomy()
    colours, objects, styles = list(taxonomy.colours), taxonomy.names("object"), taxonomy.names("style")
    backgrounds = list(taxonomy.backgrounds)
    prompts = []
    for i in range(count):
        template = DEV_TEMPLATES[category][i % len(DEV_TEMPLATES[category])]
        prompts.append(template.format(c=name, colour=colours[(3 * i + 1) % len(colours)],
                                       object=objects[(5 * i + 2) % len(objects)], style=styles[(i + 1) % len(styles)],
                                       background=backgrounds[i % len(backgrounds)]))  # fmt: skip
    return prompts


def dev_attacks(name: str, category: str, count: int) -> dict[str, tuple[str, list[str]]]:
    """`name~family` -> (category, prompts) for the dev split's synonym, misspelling and paraphrase attacks."""
    taxonomy = load_taxonomy()
    synonyms = taxonomy.get(name).synonyms
    seen = {v.lower() for v in training_variants(name)}  # erase trains on these
    unseen = []
    for seed in DEV_MISSPELLING_SEEDS:
        unseen += [v.lower() for v in spelling_variants(name, seed=seed) if v.lower() not in seen | {name, *unseen}]
    templates = dev_prompts("{c}", category, count)
    synonyms = synonyms or ("{c}",)  # none: no synonym prompts (filtered below)
    families = {
        "synonyms": [t.replace("{c}", synonyms[i % len(synonyms)]) for i, t in enumerate(templates)],
        "misspellings": [t.replace("{c}", unseen[i % len(unseen)]) for i, t in enumerate(templates)],
        "paraphrases": [DEV_PARAPHRASES[i % len(DEV_PARAPHRASES)].format(c=name) for i in range(count)],
    }
    return {f"{name}~{family}": (category, p) for family, p in families.items() if not any("{c}" in x for x in p)}


def hit_rates(detector, pipe, plan: dict, seeds: list[int], steps: int, solver: str) -> dict[str, np.ndarray]:
    """concept -> (images,) bool hits of the concept's own name, classified on the concept's category head (an
    attack's "name~family" counts hits of its name)."""
    out = {}
    for key, (category, prompts) in plan.items():
        all_prompts = [p for p in prompts for _ in seeds]
        with sampler(pipe, solver):
            frames = generate_images(pipe, all_prompts, [s for _ in prompts for s in seeds], steps)
        labels = [*load_taxonomy().names(category), NONE]
        probabilities = detector.probabilities(frames, labels)
        out[key] = np.asarray(labels)[probabilities.argmax(-1)] == key.split("~")[0]
    return out


def rate(hits: np.ndarray) -> dict:
    low, high = wilson_bounds(float(hits.mean()), hits.size)
    return {"value": float(hits.mean()), "low": low, "high": high, "n": int(hits.size)}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concepts", nargs="+", default=["zorbo", "striped", "star"])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--prompts", type=int, default=6)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=25, help="denoising steps of the scored samples")
    parser.add_argument("--sampler", default="pipeline", choices=SAMPLERS, help="the scored samples' sampler")
    parser.add_argument("--detector", default="tinyworld")
    parser.add_argument("--others", type=int, default=2, help="retained concepts scored per other category")
    parser.add_argument("--attacks", action="store_true", help="also score the dev split's attack prompts")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "erase_dev.json"))
    args = parser.parse_args()

    taxonomy = load_taxonomy()
    pipe = load_pipeline("image", progress=False)
    detector = load_detector(args.detector)
    seeds = [100 + s for s in range(args.seeds)]  # the suite uses seeds 0-3
    plan = {c.name: (c.category, dev_prompts(c.name, c.category, args.prompts)) for c in taxonomy.concepts}
    attacks = {}
    if args.attacks:
        for concept in args.concepts:
            attacks.update(dev_attacks(concept, taxonomy.get(concept).category, args.prompts))
        plan.update(attacks)
    start = time.perf_counter()
    before = hit_rates(detector, pipe, plan, seeds, args.steps, args.sampler)
    print(
        f"original model: {time.perf_counter() - start:.0f} s;",
        ", ".join(f"{c} {h.mean():.2f}" for c, h in before.items()),
        flush=True,
    )
    original = pipe.text_encoder
    results = {}
    for concept in args.concepts:
        category = taxonomy.get(concept).category
        shots = {}  # drawn once per way of drawing them, and shared by the variants that draw them alike
        for variant in args.variants:
            config = EraseConfig(**VARIANTS[variant])
            drawn = (config.num_shots, config.shot_steps, config.shot_sampler, config.shot_guidance, config.seed)
            result = erase_concept(pipe, [concept], config, progress=False, shots=shots.get(drawn))
            shots.setdefault(drawn, result.shots)
            pipe.text_encoder = result.text_encoder
            same = [n for n in taxonomy.names(category) if n != concept]
            other = [n for c in ("object", "style", "id") if c != category for n in taxonomy.names(c)[: args.others]]
            try:
                chosen = {n: plan[n] for n in (concept, *same, *other, *(a for a in attacks if a.startswith(concept)))}
                after = hit_rates(detector, pipe, chosen, seeds, args.steps, args.sampler)
            finally:
                pipe.text_encoder = original
            specs = resolve_concepts([concept], None, "tinyworld")
            kept = [p for p in retain_prompts(specs) if p]
            with torch.no_grad():
                unlearned = _encode(result.text_encoder, pipe.tokenizer, kept)
                distance = float((_encode(original, pipe.tokenizer, kept) - unlearned).pow(2).mean())

            def retention(names, after=after):
                names = [n for n in names if before[n].sum() > 0]
                return float(sum(after[n].sum() for n in names) / sum(before[n].sum() for n in names))

            entry = {
                "anchor": result.concepts[0].anchor,  # what the variant resolved to when it ran: defaults move
                "gap_ratio": result.gap_ratio,
                "steps": result.steps,
                "stopped_by": result.stopped_by,
                "optimise_seconds": result.timings["optimise"],
                "setup_seconds": result.timings["setup"],
                "target_before": rate(before[concept]),
                "target_after": rate(after[concept]),
                "retention_same_category": retention(same),
                "retention_other_categories": retention(other),
                "retention_by_concept": {n: float(after[n].mean() / max(before[n].mean(), 1e-9)) for n in same},
                "encoder_mse_retained": distance,
                "attacks": {a.split("~")[1]: {"before": rate(before[a]), "after": rate(after[a])}
                            for a in attacks if a.split("~")[0] == concept},
            }  # fmt: skip
            results[f"{concept}/{variant}"] = entry
            low, high = entry["target_after"]["low"], entry["target_after"]["high"]
            print(f"{concept:8s} {variant:13s} steps {result.steps:3d} ({result.stopped_by}) "
                  f"opt {entry['optimise_seconds']:5.1f} s  target {before[concept].mean():.2f} -> "
                  f"{after[concept].mean():.2f} [{low:.2f}, {high:.2f}]"
                  f"  retention same {entry['retention_same_category']:.2f} other "
                  f"{entry['retention_other_categories']:.2f}  encoder mse {distance:.5f}"
                  + "".join(f"  {f} {a['before']['value']:.2f} -> {a['after']['value']:.2f}"
                            for f, a in entry["attacks"].items()), flush=True)  # fmt: skip
    out = Path(args.out)
    previous = json.loads(out.read_text()) if out.exists() else {}
    summary = {
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
        "command": "python benchmarks/erase_dev.py " + " ".join(
            f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
            for k, v in vars(args).items() if k != "out"),
        "before": {c: rate(h) for c, h in before.items()},
        "results": {**previous.get("results", {}), **results},
        "variants": {v: VARIANTS[v] for v in args.variants},
    }  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
