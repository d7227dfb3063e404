"""Prompts about a concept (for the loss and the shots) and retained prompts (for the preservation term).

TinyWorld concepts use the world's own templates from its taxonomy; any other concept uses the templates
of the literature, per category.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from ..spelling import training_variants
from ..tinyworld.taxonomy import CATEGORIES, load_taxonomy

LITERATURE_TEMPLATES = {
    "object": ["a photo of a {c}", "an image of a {c}", "a picture of a {c}", "a painting of a {c}", "a {c}"],
    "style": [
        "a painting in the style of {c}",
        "an artwork in the style of {c}",
        "a landscape in the style of {c}",
        "a portrait in the style of {c}",
        "art by {c}",
    ],  # fmt: skip
    "id": ["a photo of {c}", "a portrait of {c}", "{c}", "an image of {c}", "a picture of {c}"],
}
GENERIC_RETAIN_PROMPTS = [
    "", "a photo of a dog", "a photo of a cat", "a photo of a car", "a red apple on a table",
    "a painting of a landscape",
    "a portrait of a woman", "a portrait of a man", "a city street at night", "a mountain lake at sunrise",
    "a bowl of fruit", "a bird on a branch", "a house with a garden", "a plate of food", "a ship at sea",
    "a child playing in a park", "a watercolor painting of flowers", "an oil painting of a harbor",
    "a drawing of a horse", "a cartoon of a robot", "a close-up photo of a face", "a forest in autumn",
    "a beach with palm trees", "a snowy village", "a bicycle leaning on a wall", "a cup of coffee",
]  # fmt: skip


TEMPLATES = ("tinyworld", "literature")  # the prompt families a registry entry can name (pipelines/registry.py)
# what a concept is replaced by under the anchor objective, when no --to is given (docs/METHOD.md). Shapes go to a
# named shape: TinyWorld draws a random shape for "something", the erased one among them (1 in 8); triangle because
# both models draw it most faithfully, in images and video frames (benchmarks/anchor_choice.py)
TINYWORLD_ANCHORS = {"object": "triangle", "style": "solid", "id": "something"}
# the anchor's own anchor, when it is erased itself: solid erased to outlined came back under the embedding attack in
# 148 of 480 images (six attackers), to checkered in 62 (docs/BENCHMARKS.md, seventeenth session)
TINYWORLD_FALLBACKS = {"object": "cross", "style": "checkered"}
# a concept's own anchor where the category's lets the embedding attack back, over nine attackers on each of several
# erase seeds (docs/BENCHMARKS.md, eighteenth and nineteenth sessions): the square, held by no one shape better than
# by triangle (1463 of 2880 images, four erase seeds), and the diamond, better toward square than triangle (170
# against 501 of 720, one erase seed), go to three shapes at once, one drawn per row and step: the square in 967 of
# 2880, the diamond in 755 of 2160 (toward square alone 925)
TINYWORLD_CONCEPT_ANCHORS = {"diamond": "square, cross, hexagon", "square": "triangle, cross, star"}
LITERATURE_ANCHORS = {"object": "an object", "style": "a painting", "id": "a person"}


@dataclass(frozen=True)
class ConceptSpec:
    name: str
    category: str
    prompts: tuple[str, ...]
    synonyms: tuple[str, ...] = ()
    tinyworld: bool = False
    anchor: str | None = None
    # prompts[i] with the concept replaced by the anchor; with k anchors, entry a * len(prompts) + i toward anchor a
    anchor_prompts: tuple[str, ...] = ()

    @property
    def anchor_count(self) -> int:
        """How many anchors the concept goes toward (`--to "a, b"`: 2)."""
        return max(1, len(self.anchor_prompts) // max(1, len(self.prompts)))


def _word(word: str) -> re.Pattern:
    return re.compile(rf"(?<![\w-]){re.escape(word)}(?![\w-])")


def _replace_word(prompt: str, word: str, replacement: str) -> str:
    """`prompt` with the word (or phrase) `word` replaced wherever it stands alone, not inside another word."""
    return _word(word).sub(lambda _: replacement, prompt)


# the concept beside other things, in sentences of the method's own (none is a template of the evaluation suite, its
# attacks or the development split): erasing must hold when the concept shares the prompt with other concepts
TINYWORLD_CONTEXTS = {
    "object": ("{colour} {c}", "a {c} drawn in {style} style", "a {c} next to {id}", "{id} and a {colour} {c}"),
    "style": ("{object} in {c} style", "a {colour} {object}, {c} style", "{id} next to a {object} in {c} style",
              "a {object} and a {other} in {c} style"),
    "id": ("{id} next to a {object}", "{id} beside a {colour} {object}", "{id} with a {object} in {style} style",
           "{id} and {other}"),
}  # fmt: skip
LITERATURE_CONTEXTS = {
    "object": ("a {c} on a table", "a {c} next to a dog", "a close-up of a {c}", "a {c} in a garden"),
    "style": ("a city street in the style of {c}", "a cat, in the style of {c}", "flowers in a vase, style of {c}",
              "a harbor at sunset in the style of {c}"),
    "id": ("{c} standing next to a car", "{c} in a park", "a close-up of {c}", "{c} with a dog"),
}  # fmt: skip

# the name outside any template, in sentences of the method's own (none is an evaluation attack's template), so that
# erasing does not hold only inside the caption templates it trained on
FRAMES = ("{c}", "an image of {c}", "{c}, small", "a picture that shows {c}")
SYNONYM_CONTEXTS = 3  # contexts each synonym is trained in


def training_prompts(name: str, prompts: tuple[str, ...], synonyms: tuple[str, ...], variants: list[str],
                     variant_contexts: int = 1) -> tuple[str, ...]:  # fmt: skip
    """The concept's prompts; the same contexts with each synonym (in `SYNONYM_CONTEXTS`) and each spelling variant
    (in `variant_contexts`; a case variant in one, since most tokenizers lower-case) in its place; then the name and
    its synonyms in `FRAMES`."""
    out = list(prompts)
    stride = max(1, len(prompts) // SYNONYM_CONTEXTS)
    for i, synonym in enumerate(synonyms):
        out += [
            _replace_word(prompts[(i + k * stride) % len(prompts)], name, synonym) for k in range(SYNONYM_CONTEXTS)
        ]
    stride = max(1, len(prompts) // variant_contexts)
    for i, variant in enumerate(variants, start=len(synonyms)):
        contexts = 1 if variant.lower() == name.lower() else variant_contexts
        out += [_replace_word(prompts[(i + k * stride) % len(prompts)], name, variant) for k in range(contexts)]
    out += [frame.format(c=word) for word in (name, *synonyms) for frame in FRAMES]
    return tuple(dict.fromkeys(out))


def split_anchors(anchor: str) -> tuple[str, ...]:
    """The anchors named by an --to value: one concept, or several separated by commas ("triangle, cross, star")."""
    return tuple(part.strip() for part in anchor.split(",") if part.strip())


def default_anchor(name: str, category: str, tinyworld: bool, erased: tuple[str, ...] = ()) -> str:
    """The anchor of `name` when no --to is given: on TinyWorld the concept's own (`TINYWORLD_CONCEPT_ANCHORS`), else
    the category's, else its fallback, the first that neither names the concept nor another concept of the run
    (`erased`: an anchor erased in the same run would not be drawn either); when the run erases them all, the first
    that does not name the concept."""
    if not tinyworld:
        return LITERATURE_ANCHORS[category]
    candidates = (TINYWORLD_CONCEPT_ANCHORS.get(name), TINYWORLD_ANCHORS[category], TINYWORLD_FALLBACKS.get(category))
    own = [c for c in candidates if c is not None and name not in split_anchors(c)]
    return next((c for c in own if not set(split_anchors(c)) & set(erased)), own[0])


def anchor_prompts(spec_prompts: tuple[str, ...], names: tuple[str, ...], anchor: str) -> tuple[str, ...]:
    """Each prompt with the first of `names` (concept, synonyms, variants) it holds replaced by the anchor. With k
    anchors (`split_anchors`), every prompt once per anchor, anchor by anchor: entry a * len(spec_prompts) + i is
    prompt i toward anchor a, so that an erase can draw a prompt and an anchor together."""
    out = []
    for target in split_anchors(anchor):
        for prompt in spec_prompts:
            for name in names:
                if _word(name).search(prompt):
                    prompt = _replace_word(prompt, name, target)
                    break
            else:
                prompt = target
            out.append(prompt)
    return tuple(out)


def _tinyworld_contexts(name: str, category: str) -> tuple[str, ...]:
    """`TINYWORLD_CONTEXTS` of a concept, filled with the world's colours, styles, objects and characters (never the
    concept itself), a different choice for each template."""
    taxonomy = load_taxonomy()
    pools = {
        "colour": list(taxonomy.colours),
        "style": taxonomy.names("style"),
        "object": taxonomy.names("object"),
        "id": taxonomy.names("id"),
    }
    other = "id" if category == "id" else "object"  # {other}: another character beside a character, else a shape
    pools = {key: [v for v in values if v != name] for key, values in pools.items()}
    out = []
    for i, template in enumerate(TINYWORLD_CONTEXTS[category]):
        fill = {key: values[(3 * i + 1) % len(values)] for key, values in pools.items()}
        fill["other"] = pools[other][(3 * i + 2) % len(pools[other])]
        if category == "id":
            template = template.replace("{id}", "{c}", 1)  # the character is the concept; {other} is another one
        out.append(template.format(c=name, **fill))
    return tuple(out)


def _tinyworld_prompts(name: str, count: int = 8) -> tuple[str, ...]:
    """The first `count` of the concept's prompts from the world's one generator (`Taxonomy.concept_prompts`), which
    the evaluation suite also draws from."""
    return load_taxonomy().concept_prompts(name)[:count]


def _world_name(taxonomy, raw: str | None) -> str:
    """The world's name of a concept given by any of its names, or the name as given when the world has none."""
    try:
        return taxonomy.get((raw or "").strip()).name
    except KeyError:
        return (raw or "").strip()


def resolve_concepts(
    names: list[str],
    category: str | None,
    templates: str = "literature",
    anchor: str | None = None,
    synonyms: tuple[str, ...] = (),
    variants: bool = True,
    misspellings: int = 1,
    contexts: bool = True,
    variant_contexts: int = 1,
) -> list[ConceptSpec]:
    """Concept names -> specs with their category, training prompts and anchor prompts.

    `templates` is the model's (`pipelines.registry.conventions_for(pipe).prompts`): "tinyworld", the world's own
    caption templates, or "literature", the erasing literature's. With `variants`, the training prompts also hold
    the concept's synonyms (the world's, plus `synonyms` given by the user) and generated spelling variants (those
    of `misspellings` draws, `spelling.training_variants`, each in `variant_contexts` of the prompts); with
    `contexts`, the concept also stands beside other things (`TINYWORLD_CONTEXTS`, `LITERATURE_CONTEXTS`).
    `anchor` (the --to target) replaces the concept in the anchor prompts; default: a generic anchor per category.
    """
    if not names:
        raise ValueError("no concept given: pass --concept NAME (repeat it for several concepts)")
    if category is not None and category not in CATEGORIES:
        raise ValueError(f"category must be one of {CATEGORIES}, got {category!r}")
    if templates not in TEMPLATES:
        raise ValueError(f"templates must be one of {TEMPLATES}, got {templates!r}")
    world = templates == "tinyworld"
    taxonomy = load_taxonomy()
    erased = tuple(_world_name(taxonomy, raw) for raw in names) if world else ()
    specs = []
    for raw in names:
        name = (raw or "").strip()
        if not name:
            raise ValueError("a concept name is empty: pass --concept NAME with a non-empty name")
        if world:
            try:
                concept = taxonomy.get(name)
            except KeyError as error:
                raise ValueError(f"{error.args[0]} (the model is a TinyWorld model)") from None
            name, cat, own = concept.name, concept.category, (*concept.synonyms, *synonyms)
            prompts = _tinyworld_prompts(concept.name)
            motions = taxonomy.motions  # the same concept in video prompts: with each of the world's motions
            prompts += tuple(f"{prompts[i % len(prompts)]} {motion}" for i, motion in enumerate(motions))
            prompts += _tinyworld_contexts(name, cat) if contexts else ()
        else:
            cat, own = category or "object", tuple(synonyms)
            prompts = tuple(t.format(c=name) for t in LITERATURE_TEMPLATES[cat])
            prompts += tuple(t.format(c=name) for t in LITERATURE_CONTEXTS[cat]) if contexts else ()
        if variants:
            prompts = training_prompts(name, prompts, own, training_variants(name, misspellings), variant_contexts)
        target = anchor or default_anchor(name, cat, world, tuple(n for n in erased if n != name))
        target = ", ".join(split_anchors(target))  # several anchors, as written the same way every time
        if any(part.lower() == name.lower() for part in split_anchors(target)):
            raise ValueError(f"--to {target!r} names the concept itself; pass another concept to replace it with")
        words = (name, *own, *training_variants(name, misspellings))
        specs.append(ConceptSpec(name, cat, prompts, own, tinyworld=world, anchor=target,
                                 anchor_prompts=anchor_prompts(prompts, words, target)))  # fmt: skip
    if len({s.name for s in specs}) != len(specs):
        raise ValueError(f"a concept is named twice: {[s.name for s in specs]}")
    return specs


def retain_prompts(specs: list[ConceptSpec], seed: int = 0) -> list[str]:
    """Prompts whose encodings the preservation term holds in place: everything but the erased concepts."""
    erased = {s.name for s in specs} | {syn for s in specs for syn in s.synonyms}
    if specs and specs[0].tinyworld:
        taxonomy = load_taxonomy()
        prompts = [""]
        for concept in taxonomy.concepts:
            if concept.name not in erased:
                prompts += _tinyworld_prompts(concept.name, count=4)
        prompts = [p for p in prompts if not (set(p.split()) & erased)]
    else:
        prompts = [p for p in GENERIC_RETAIN_PROMPTS if not any(name.lower() in p for name in erased)]
    order = np.random.default_rng(seed).permutation(len(prompts))
    return [prompts[i] for i in order]
