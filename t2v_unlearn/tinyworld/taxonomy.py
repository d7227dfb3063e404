"""The TinyWorld concept taxonomy: the one place that says which concepts exist.

Everything else (the renderer, the captions, the concept suites, the `concepts` command) reads
`taxonomy.json` through `load_taxonomy()`.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path

TAXONOMY_PATH = Path(__file__).with_name("taxonomy.json")
CATEGORIES = ("object", "style", "id")


@dataclass(frozen=True)
class Concept:
    """One erasable concept: its category, canonical name, synonyms and near distractors."""

    category: str
    name: str
    synonyms: tuple[str, ...] = ()
    distractors: tuple[str, ...] = ()


@dataclass(frozen=True)
class Taxonomy:
    concepts: tuple[Concept, ...]
    colours: dict[str, tuple[int, int, int]]
    backgrounds: dict[str, tuple[int, int, int]]
    motions: tuple[str, ...]
    caption_templates: dict[str, tuple[str, ...]]
    generation_templates: dict[str, tuple[str, ...]]
    detector_templates: dict[str, tuple[str, ...]]
    looks: dict[str, tuple[str, ...]] = field(default_factory=dict)  # a character described without its name
    paraphrase_templates: dict[str, tuple[str, ...]] = field(default_factory=dict)  # other wordings of captions
    pair_templates: tuple[str, ...] = ()  # captions of a character beside a shape
    _by_name: dict[str, Concept] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self):
        for concept in self.concepts:
            for word in (concept.name, *concept.synonyms):
                self._by_name[word] = concept

    def names(self, category: str) -> list[str]:
        return [c.name for c in self.concepts if c.category == category]

    def get(self, name: str) -> Concept:
        """Look a concept up by its name or one of its synonyms (case-insensitive)."""
        key = name.strip().lower()
        if key not in self._by_name:
            known = ", ".join(c.name for c in self.concepts)
            raise KeyError(f"unknown TinyWorld concept {name!r}; known concepts: {known}")
        return self._by_name[key]

    def concept_prompts(self, name: str, per_template: int = 4) -> tuple[str, ...]:
        """The one generator of a concept's prompts, which erase, the evaluation suite and the quality benchmark all
        take from: the category's generation templates, filled with the world's shapes and backgrounds. Template by
        template, so the first few prompts cover every template; repeats dropped."""
        concept = self.get(name)
        templates = self.generation_templates[concept.category]
        objects, backgrounds = self.names("object"), list(self.backgrounds)
        prompts = []
        for k in range(per_template):
            for t, template in enumerate(templates):
                fill = {"object": objects[(t * per_template + k) % len(objects)],
                        "background": backgrounds[(t + k) % len(backgrounds)]}  # fmt: skip
                prompts.append(template.format(concept=concept.name, **fill))
        return tuple(dict.fromkeys(prompts))

    def words(self) -> list[str]:
        """Every word that captions can contain, for building the tokenizer."""
        words = set()
        for concept in self.concepts:
            words.update([concept.name, *concept.synonyms])
        words.update(self.colours)
        words.update(self.backgrounds)
        for phrase in self.motions:
            words.update(phrase.split())
        for descriptions in self.looks.values():
            for text in descriptions:
                words.update(text.replace(",", " ").split())
        for templates in (self.caption_templates, self.generation_templates, self.detector_templates,
                          self.paraphrase_templates, {"pair": self.pair_templates}):  # fmt: skip
            for group in templates.values():
                for template in group:
                    words.update(w for w in template.replace(",", " ").split() if "{" not in w)
        return sorted(words)


@functools.cache
def load_taxonomy(path: str | Path = TAXONOMY_PATH) -> Taxonomy:
    data = json.loads(Path(path).read_text())
    concepts = []
    for category in CATEGORIES:
        for name, entry in data["concepts"][category].items():
            concepts.append(
                Concept(category, name, tuple(entry.get("synonyms", ())), tuple(entry.get("distractors", ())))
            )
    return Taxonomy(
        concepts=tuple(concepts),
        colours={k: tuple(v) for k, v in data["colours"].items()},
        backgrounds={k: tuple(v) for k, v in data["backgrounds"].items()},
        motions=tuple(data["motions"]),
        caption_templates={k: tuple(v) for k, v in data["caption_templates"].items()},
        generation_templates={k: tuple(v) for k, v in data["generation_templates"].items()},
        detector_templates={k: tuple(v) for k, v in data["detector_templates"].items()},
        looks={k: tuple(v) for k, v in data.get("looks", {}).items()},
        paraphrase_templates={k: tuple(v) for k, v in data.get("paraphrase_templates", {}).items()},
        pair_templates=tuple(data.get("pair_templates", ())),
    )
