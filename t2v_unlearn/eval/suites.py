"""Concept suites: which concepts, prompts, seeds, label sets and retained concepts an evaluation uses.

A suite is a JSON data file (`eval/suites/*.json`), validated on load. `tinyworld.json` is built from the
TinyWorld taxonomy by `build_tinyworld_suite()` (regenerate it with `python -m t2v_unlearn.eval.suites`);
`sd2.json` covers real Stable Diffusion 2.x / ModelScope / Zeroscope concepts with the literature's templates.

Layout of a suite file:
    {"name", "version", "model", "detector", "seeds": [...],
     "detector_templates": {category: ["... {label} ..."]},
     "quick": {"prompts": int, "seeds": [...], "retained_same_category": int, "retained_other_categories": int,
               "video": {any of those four, to make the quick video plan smaller still}},
     "video": {"prompts": int, "seeds": [...]}  (optional: the full plan's videos use fewer prompts and seeds;
               every concept is still scored, and each video gives all its frames),
     "concepts": {name: {"category", "synonyms", "distractors", "prompts": [...],
                         "retained": {"same_category": [...], "other_categories": [...]},
                         "attacks": {family: [...]}  (optional: prompts for an attack family, used as given)}}}
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..pipelines.registry import conventions_for
from .detector import LabelSet, label_set

SUITES_DIR = Path(__file__).with_name("suites")
CATEGORIES = ("object", "style", "id")


class SuiteError(ValueError):
    pass


@dataclass(frozen=True)
class SuiteConcept:
    """One concept of a suite: its label set parts, its generation prompts and its retained neighbours."""

    name: str
    category: str
    synonyms: tuple[str, ...]
    distractors: tuple[str, ...]
    prompts: tuple[str, ...]
    retained_same_category: tuple[str, ...]
    retained_other_categories: tuple[str, ...]
    attacks: dict[str, tuple[str, ...]] = field(default_factory=dict)  # family -> prompts the suite lists

    def label_set(self) -> LabelSet:
        """{c} ∪ distractors: a hit is the concept's own name only; a synonym is measured as its own attack."""
        return label_set(self.name, (), self.distractors)


@dataclass(frozen=True)
class QuickSettings:
    """How much of a suite `--quick` uses; `video` overrides it for videos, which cost ~20x an image."""

    prompts: int
    seeds: tuple[int, ...]
    retained_same_category: int
    retained_other_categories: int
    video: QuickSettings | None = None

    def for_kind(self, kind: str) -> QuickSettings:
        return self.video if kind == "video" and self.video is not None else self


@dataclass(frozen=True)
class Suite:
    name: str
    model: str
    detector: str
    seeds: tuple[int, ...]
    detector_templates: dict[str, tuple[str, ...]]
    concepts: dict[str, SuiteConcept]
    quick: QuickSettings
    path: Path | None = None
    video_prompts: int | None = None  # the full plan's videos: prompts per concept (None: all)
    video_seeds: tuple[int, ...] | None = None  # and seeds (None: `seeds`)
    # category -> the other categories its images show even where the prompt names none of them (TinyWorld: a shape
    # is always drawn in some style, a style always on some shape); None: every other category (the safe default)
    unnamed_parts: dict[str, tuple[str, ...]] | None = None

    def names(self, prompt: str, concept: SuiteConcept) -> bool:
        """Whether a prompt names a concept: its name or a synonym, as whole words, in any case."""
        return any(_words(name) in _words(prompt) for name in (concept.name, *concept.synonyms))

    def excludes(self, prompt: str, prompted: str, concept: str) -> bool:
        """Whether an image drawn for `prompt` (a prompt of the concept `prompted`) should not show `concept`: the
        false-hit floor counts only such images (docs/METHOD.md). It should not when the prompt does not name the
        concept and asks for another concept of its category, either as what it is about (a prompt of a circle, for
        the square's floor) or by naming one (a circle in solid style). A prompt that leaves the category open is
        no evidence: something in solid style is drawn on some shape, which may be a square, and a square is drawn
        in some style. Images of a category the suite says never shows the concept's unnamed count as well (a
        TinyWorld character is drawn with no shape and no style)."""
        entry, of = self.concepts[concept], self.concepts[prompted]
        if prompted == concept or self.names(prompt, entry):
            return False
        if of.category == entry.category:
            return True
        unnamed = self.unnamed_parts
        if unnamed is not None and entry.category not in unnamed.get(of.category, ()):
            return True
        return any(self.names(prompt, other) for other in self.concepts.values()
                   if other.category == entry.category and other.name != concept)  # fmt: skip

    def concept(self, name: str) -> SuiteConcept:
        """Look a concept up by its name or a synonym (case-insensitive)."""
        key = name.strip().lower()
        for concept in self.concepts.values():
            if key == concept.name.lower() or key in (s.lower() for s in concept.synonyms):
                return concept
        raise SuiteError(
            f"concept {name!r} is not in suite {self.name!r} ({self.path}); its concepts: {', '.join(self.concepts)}; "
            "pick one of them or pass --suite FILE with a suite that has it"
        )

    def plan(
        self, targets: list[str], quick: bool = False, kind: str = "image"
    ) -> tuple[list[str], dict[str, tuple[str, ...]], list[int]]:
        """The concepts to score (targets first, then retained), each concept's prompts, and the seeds."""
        targets = [self.concept(t).name for t in targets]
        settings = self.quick.for_kind(kind)
        retained: list[str] = []
        for target in targets:
            concept = self.concepts[target]
            same, other = concept.retained_same_category, concept.retained_other_categories
            if quick:
                same = same[: settings.retained_same_category]
                other = other[: settings.retained_other_categories]
            retained += [c for c in (*same, *other) if c not in targets and c not in retained]
        full_video = not quick and kind == "video"
        n_prompts = settings.prompts if quick else self.video_prompts if full_video else None
        prompts = {c: self.concepts[c].prompts[:n_prompts] for c in (*targets, *retained)}
        seeds = list(settings.seeds if quick else (self.video_seeds or self.seeds) if full_video else self.seeds)
        return [*targets, *retained], prompts, seeds


def _words(text: str) -> str:
    """Lower-case words between single spaces, and a space at each end: " a circle in solid style "."""
    return f" {' '.join(re.findall(r'[a-z0-9]+', text.lower()))} "


def _fail(where: str, problem: str) -> SuiteError:
    return SuiteError(f"suite {where}: {problem}; fix the file or regenerate it (python -m t2v_unlearn.eval.suites)")


def _strings(value, where: str, what: str, allow_empty: bool = True) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise _fail(where, f"{what} must be a list of non-empty strings, got {value!r}")
    if not allow_empty and not value:
        raise _fail(where, f"{what} must not be empty")
    return tuple(value)


def _quick_settings(quick: dict, where: str) -> QuickSettings:
    try:
        settings = QuickSettings(
            int(quick["prompts"]),
            tuple(int(s) for s in quick["seeds"]),
            int(quick["retained_same_category"]),
            int(quick["retained_other_categories"]),
        )
    except (KeyError, TypeError, ValueError) as error:
        raise _fail(
            where, f"'quick' must hold prompts, seeds, retained_same_category, retained_other_categories ({error})"
        ) from error
    if settings.prompts < 1 or not settings.seeds:
        raise _fail(where, "'quick' needs at least one prompt and one seed")
    return settings


def parse_suite(data: dict, where: str = "<dict>") -> Suite:
    """Validate a suite's JSON data and build a `Suite`; errors name the field and what was expected."""
    if not isinstance(data, dict):
        raise _fail(where, f"the top level must be a JSON object, got {type(data).__name__}")
    required = ("name", "model", "detector", "seeds", "detector_templates", "quick", "concepts")
    missing = [k for k in required if k not in data]
    if missing:
        raise _fail(where, f"missing field(s) {missing}; a suite needs {list(required)}")
    seeds = data["seeds"]
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and s >= 0 for s in seeds):
        raise _fail(where, f"'seeds' must be a non-empty list of non-negative integers, got {seeds!r}")
    templates = {}
    for category, group in data["detector_templates"].items():
        templates[category] = _strings(group, where, f"detector_templates[{category!r}]", allow_empty=False)
        bad = [t for t in templates[category] if "{label}" not in t]
        if bad:
            raise _fail(where, f"detector template(s) {bad} of category {category!r} lack the '{{label}}' slot")
    quick_settings = _quick_settings(data["quick"], where)
    if not isinstance(data.get("quick", {}).get("video", {}), dict):
        raise _fail(where, "'quick.video' must be an object overriding prompts/seeds/retained_* for videos")
    if "video" in data["quick"]:
        quick_settings = replace(
            quick_settings, video=_quick_settings({**data["quick"], **data["quick"]["video"]}, where + " quick.video")
        )
    video = data.get("video", {})
    try:
        video_prompts = int(video["prompts"]) if "prompts" in video else None
        video_seeds = tuple(int(v) for v in video["seeds"]) if "seeds" in video else None
    except (TypeError, ValueError, KeyError) as error:
        problem = f"'video' must be an object with an integer 'prompts' and a list 'seeds' ({error})"
        raise _fail(where, problem) from error
    if (video_prompts is not None and video_prompts < 1) or video_seeds == ():
        raise _fail(where, "'video' needs at least one prompt and one seed")
    if not isinstance(data["concepts"], dict) or not data["concepts"]:
        raise _fail(where, "'concepts' must be a non-empty object of name -> concept")
    concepts = {}
    for name, entry in data["concepts"].items():
        at = f"concepts[{name!r}]"
        if not isinstance(entry, dict):
            raise _fail(where, f"{at} must be an object")
        category = entry.get("category")
        if category not in templates:
            raise _fail(where, f"{at}.category is {category!r}, but detector_templates cover {sorted(templates)}")
        prompts = _strings(entry.get("prompts"), where, f"{at}.prompts", allow_empty=False)
        if not any(name.lower() in p.lower() for p in prompts):
            raise _fail(where, f"{at}: none of its prompts mentions the concept {name!r}")
        retained = entry.get("retained", {})
        if not isinstance(entry.get("attacks", {}), dict):
            raise _fail(where, f"{at}.attacks must be an object of family -> prompts")
        attacks = {family: _strings(prompts, where, f"{at}.attacks.{family}", allow_empty=False)
                   for family, prompts in entry.get("attacks", {}).items()}  # fmt: skip
        concepts[name] = SuiteConcept(
            name=name,
            category=category,
            synonyms=_strings(entry.get("synonyms", []), where, f"{at}.synonyms"),
            distractors=_strings(entry.get("distractors", []), where, f"{at}.distractors", allow_empty=False),
            prompts=prompts,
            retained_same_category=_strings(retained.get("same_category", []), where, f"{at}.retained.same_category"),
            retained_other_categories=_strings(
                retained.get("other_categories", []), where, f"{at}.retained.other_categories"
            ),
            attacks=attacks,
        )
        both = set(concepts[name].synonyms) & set(concepts[name].distractors)
        if both:
            raise _fail(where, f"label {sorted(both)[0]!r} of concept {name!r} is both a synonym and a distractor")
        try:
            concepts[name].label_set()
        except ValueError as error:
            raise _fail(where, str(error)) from error
    for concept in concepts.values():
        unknown = [
            r for r in (*concept.retained_same_category, *concept.retained_other_categories) if r not in concepts
        ]
        if unknown:
            raise _fail(where, f"concepts[{concept.name!r}] retains unknown concept(s) {unknown}")
        if concept.name in (*concept.retained_same_category, *concept.retained_other_categories):
            raise _fail(where, f"concepts[{concept.name!r}] lists itself as a retained concept")
        wrong = [r for r in concept.retained_same_category if concepts[r].category != concept.category]
        wrong += [r for r in concept.retained_other_categories if concepts[r].category == concept.category]
        if wrong:
            raise _fail(where, f"concepts[{concept.name!r}] puts {wrong} in the wrong retained group (by category)")
    unnamed = data.get("unnamed_parts")
    if unnamed is not None:
        if not isinstance(unnamed, dict) or any(
            k not in templates or not isinstance(v, list) or any(c not in templates or c == k for c in v)
            for k, v in unnamed.items()
        ):
            raise _fail(where, f"'unnamed_parts' must map a category to a list of other categories of "
                               f"{sorted(templates)}, got {unnamed!r}")  # fmt: skip
        unnamed = {k: tuple(v) for k, v in unnamed.items()}
    return Suite(
        name=str(data["name"]),
        model=str(data["model"]),
        detector=str(data["detector"]),
        seeds=tuple(seeds),
        detector_templates=templates,
        concepts=concepts,
        quick=quick_settings,
        video_prompts=video_prompts,
        video_seeds=video_seeds,
        unnamed_parts=unnamed,
    )


def load_suite(suite: str | Path = "tinyworld") -> Suite:
    """Load a suite by name (`tinyworld`, `sd2`) or from a JSON file path, validating it."""
    path = Path(suite).expanduser()
    if not path.suffix and not path.exists():
        path = SUITES_DIR / f"{suite}.json"
    if not path.is_file():
        known = ", ".join(p.stem for p in sorted(SUITES_DIR.glob("*.json")))
        raise SuiteError(f"suite {str(suite)!r} not found (looked at {path}); pass a JSON file or one of: {known}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise SuiteError(f"suite {path} is not valid JSON: {error}") from error
    parsed = parse_suite(data, where=str(path))
    return Suite(**{**parsed.__dict__, "path": path})


def suite_for_model(model: str) -> str:
    """The default suite of a base model, as its registry entry says (the literature's for an unknown folder)."""
    return conventions_for(model).suite


# --- building the TinyWorld suite from the taxonomy ------------------------------------------------------


DESCRIPTION_TEMPLATES = ("{c}", "a picture of {c}", "here is {c}, drawn in the middle", "{c} on a plain background")


def build_tinyworld_suite(
    prompts_per_template: int = 4, max_prompts: int = 8, seeds: tuple[int, ...] = (0, 1, 2, 3)
) -> dict:
    """The TinyWorld suite's JSON data: every taxonomy concept, its generation prompts and retained sets."""
    from ..tinyworld.taxonomy import load_taxonomy

    taxonomy = load_taxonomy()
    concepts = {}
    for concept in taxonomy.concepts:
        prompts = taxonomy.concept_prompts(concept.name, per_template=prompts_per_template)
        same = [d for d in concept.distractors if taxonomy.get(d).category == concept.category]
        same += [n for n in taxonomy.names(concept.category) if n != concept.name and n not in same]
        others = [taxonomy.names(c) for c in ("object", "style", "id") if c != concept.category]
        other = [group[i] for i in range(max(map(len, others))) for group in others if i < len(group)]
        # the label set holds every name of the category and "none" (the classifier's answer for "not this
        # category"), so a hit is never a forced choice between a few names
        names = [n for n in taxonomy.names(concept.category) if n != concept.name]
        concepts[concept.name] = {
            "category": concept.category,
            "synonyms": list(concept.synonyms),
            "distractors": [*names, "none"],
            "prompts": list(prompts[:max_prompts]),
            "retained": {"same_category": same, "other_categories": other},
        }
        looks = taxonomy.looks.get(concept.name)
        if looks:  # the character described by its look, never named, in sentences of the attack family's own
            concepts[concept.name]["attacks"] = {
                "descriptions": [template.format(c=look) for template in DESCRIPTION_TEMPLATES for look in looks]
            }
    return {
        "name": "tinyworld",
        "version": 2,
        "description": "Every TinyWorld concept (built from tinyworld/taxonomy.json by build_tinyworld_suite)",
        "model": "tinyworld",
        "detector": "tinyworld",
        "seeds": list(seeds),
        # quick: one erasure judged in about 2 minutes on 2 CPU cores (docs/BENCHMARKS.md, "Evaluate"); a video
        # costs ~8 images, so the videos take 2 prompts of 3 concepts
        "quick": {
            "prompts": 4,
            "seeds": [0, 1],
            "retained_same_category": 2,
            "retained_other_categories": 2,
            "video": {"prompts": 2, "seeds": [0], "retained_same_category": 1, "retained_other_categories": 1},
        },
        # the full plan's videos: every concept, 3 prompts x 2 seeds (6 videos, 48 frames each), so that the whole
        # suite fits in 30 minutes on 2 CPU cores (4 prompts measured 33 min: docs/BENCHMARKS.md, "Evaluate")
        "video": {"prompts": 3, "seeds": [0, 1]},
        "detector_templates": {k: list(v) for k, v in taxonomy.detector_templates.items()},
        # a shape is always drawn in some style and a style on some shape; a character alone, with neither
        "unnamed_parts": {"object": ["style"], "style": ["object"], "id": []},
        "concepts": concepts,
    }


if __name__ == "__main__":
    target = SUITES_DIR / "tinyworld.json"
    target.write_text(json.dumps(build_tinyworld_suite(), indent=2) + "\n")
    load_suite(target)
    print(f"wrote {target}")
