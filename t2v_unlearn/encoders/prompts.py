"""Prompts about a concept (for the loss and the shots) and retained prompts (for the preservation term).

TinyWorld concepts use the world's own templates from its taxonomy; any other concept uses the templates
of the literature, per category.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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


@dataclass(frozen=True)
class ConceptSpec:
    name: str
    category: str
    prompts: tuple[str, ...]
    synonyms: tuple[str, ...] = ()
    tinyworld: bool = False


def speaks_tinyworld(tokenizer) -> bool:
    """True when the tokenizer knows every TinyWorld concept as one token, as TinyWorld's own does."""
    names = [c.name for c in load_taxonomy().concepts]
    return all(len(tokenizer.tokenize(name)) == 1 for name in names)


def _tinyworld_prompts(name: str, category: str, count: int = 8) -> tuple[str, ...]:
    taxonomy = load_taxonomy()
    templates = taxonomy.generation_templates[category]
    objects, backgrounds = taxonomy.names("object"), list(taxonomy.backgrounds)
    prompts = []
    for i in range(count):
        template = templates[i % len(templates)]
        prompts.append(template.format(concept=name, object=objects[i % len(objects)],
                                       background=backgrounds[i % len(backgrounds)]))  # fmt: skip
    return tuple(dict.fromkeys(prompts))


def resolve_concepts(names: list[str], category: str | None, tokenizer) -> list[ConceptSpec]:
    """Concept names -> specs with their category and prompts; TinyWorld's own when the tokenizer speaks it."""
    if not names:
        raise ValueError("no concept given: pass --concept NAME (repeat it for several concepts)")
    if category is not None and category not in CATEGORIES:
        raise ValueError(f"category must be one of {CATEGORIES}, got {category!r}")
    world = speaks_tinyworld(tokenizer)
    taxonomy = load_taxonomy()
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
            prompts = _tinyworld_prompts(concept.name, concept.category)
            specs.append(ConceptSpec(concept.name, concept.category, prompts, concept.synonyms, tinyworld=True))
        else:
            cat = category or "object"
            prompts = tuple(t.format(c=name) for t in LITERATURE_TEMPLATES[cat])
            specs.append(ConceptSpec(name, cat, prompts))
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
                prompts += _tinyworld_prompts(concept.name, concept.category, count=4)
        prompts = [p for p in prompts if not (set(p.split()) & erased)]
    else:
        prompts = [p for p in GENERIC_RETAIN_PROMPTS if not any(name.lower() in p for name in erased)]
    order = np.random.default_rng(seed).permutation(len(prompts))
    return [prompts[i] for i in order]
