import copy
import json

import pytest

from t2v_unlearn.eval.suites import SuiteError, build_tinyworld_suite, load_suite, parse_suite
from t2v_unlearn.tinyworld.taxonomy import load_taxonomy


def test_shipped_tinyworld_suite_is_the_one_built_from_the_taxonomy():
    suite = load_suite("tinyworld")
    assert json.loads(suite.path.read_text()) == build_tinyworld_suite()
    taxonomy = load_taxonomy()
    assert set(suite.concepts) == {c.name for c in taxonomy.concepts}
    zorbo = suite.concept("Zorby")  # synonyms and case work
    assert zorbo.name == "zorbo" and zorbo.category == "id"
    # every name of the category and "none"; a synonym is never a hit (it is measured as an attack)
    assert set(zorbo.label_set().labels) == {"zorbo", "plimka", "quaxel", "mirabu", "tondrik", "none"}
    assert zorbo.label_set().positive[0] and not any(zorbo.label_set().positive[1:])


def test_quick_plan_is_small_and_mixes_categories():
    suite = load_suite("tinyworld")
    concepts, prompts, seeds = suite.plan(["zorbo"], quick=True)
    assert concepts[0] == "zorbo" and len(concepts) == 5
    categories = [suite.concepts[c].category for c in concepts[1:]]
    assert categories.count("id") == 2 and len(set(categories)) == 3
    assert all(len(p) == 4 for p in prompts.values()) and seeds == [0, 1]
    video_concepts, video_prompts, video_seeds = suite.plan(["zorbo"], quick=True, kind="video")
    assert video_concepts == concepts[:2] + [concepts[3]] and video_seeds == [0]  # videos: smaller still
    assert all(len(p) == 2 for p in video_prompts.values())
    full_concepts, full_prompts, full_seeds = suite.plan(["zorbo"])
    assert len(full_concepts) == 18 and len(full_seeds) == 4
    # the full plan's videos: every concept still, fewer prompts and seeds (a video costs ~20 images)
    video_concepts, video_prompts, video_seeds = suite.plan(["zorbo"], kind="video")
    assert video_concepts == full_concepts and video_seeds == [0, 1]
    assert all(v == full_prompts[c][:3] for c, v in video_prompts.items())
    assert sum(map(len, full_prompts.values())) > sum(map(len, video_prompts.values()))


def test_sd2_suite_loads_with_the_literature_templates():
    suite = load_suite("sd2")
    assert {c.category for c in suite.concepts.values()} == {"id", "style", "object"}
    assert "a painting in the style of Van Gogh" in suite.concept("van gogh").prompts
    assert "a photo of Taylor Swift" in suite.concept("Taylor Swift").prompts


@pytest.fixture
def data():
    return copy.deepcopy(build_tinyworld_suite())


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d.pop("seeds"), "missing field"),
        (lambda d: d.update(seeds=[]), "'seeds' must be a non-empty list"),
        (lambda d: d["detector_templates"].update(id=["a picture of something"]), "lack the '{label}' slot"),
        (lambda d: d["concepts"]["zorbo"].update(category="person"), "category is 'person'"),
        (lambda d: d["concepts"]["zorbo"].update(prompts=["a cat"]), "none of its prompts mentions"),
        (lambda d: d["concepts"]["zorbo"]["retained"].update(same_category=["nobody"]), "unknown concept"),
        (lambda d: d["concepts"]["zorbo"]["retained"].update(same_category=["circle"]), "wrong retained group"),
        (lambda d: d["concepts"]["zorbo"].update(distractors=["zorby"]), "both a synonym and a distractor"),
        (lambda d: d["quick"].pop("seeds"), "'quick' must hold"),
        (lambda d: d["quick"].update(video=[1]), "'quick.video' must be an object"),
        (lambda d: d["quick"]["video"].update(seeds=[]), "needs at least one prompt and one seed"),
        (lambda d: d["video"].update(prompts="four"), "'video' must be an object with an integer"),
        (lambda d: d["video"].update(seeds=[]), "'video' needs at least one prompt"),
        (lambda d: d["concepts"]["zorbo"].update(attacks=["a robot"]), "attacks must be an object"),
        (lambda d: d["concepts"]["zorbo"].update(attacks={"descriptions": []}), "must not be empty"),
        (lambda d: d.update(unnamed_parts={"object": ["object"]}), "'unnamed_parts' must map"),
        (lambda d: d.update(unnamed_parts={"person": []}), "'unnamed_parts' must map"),
    ],
)
def test_invalid_suites_are_refused_with_a_clear_error(data, edit, message):
    edit(data)
    with pytest.raises(SuiteError, match=message):
        parse_suite(data, where="test.json")


def test_the_floor_counts_only_images_whose_prompts_exclude_the_concept(data):
    """A false hit is the concept read on an image that should not show it. Prompts of another concept of the same
    category, or naming one, exclude it; prompts that leave its category open (a style on no named shape, a shape in
    no named style) do not; a TinyWorld character is drawn with no shape and no style."""
    suite = parse_suite(data)
    excludes = suite.excludes
    assert excludes("a picture of a circle", "circle", "square")  # another shape
    assert excludes("a circle in solid style", "solid", "square")  # a style's prompt that names another shape
    assert not excludes("something in solid style", "solid", "square")  # some shape: it may be a square
    assert not excludes("a square in solid style", "solid", "square")  # names it
    assert not excludes("a picture of a square", "square", "striped")  # some style: it may be striped
    assert excludes("something in dotted style", "dotted", "striped")  # another style
    assert excludes("a picture of zorbo", "zorbo", "square") and excludes("zorbo", "zorbo", "striped")
    assert not excludes("a picture of zorby", "zorbo", "zorbo")  # a synonym names it
    assert not excludes("A picture of a Square.", "square", "square")
    # a suite that does not say what its images show unnamed: only the same category's, or a named other
    del data["unnamed_parts"]
    cautious = parse_suite(data)
    assert not cautious.excludes("a picture of zorbo", "zorbo", "square")
    assert cautious.excludes("zorbo beside a circle", "zorbo", "square")
    assert cautious.excludes("a picture of plimka", "plimka", "zorbo")


def test_load_suite_errors_name_the_file(tmp_path):
    with pytest.raises(SuiteError, match="not found"):
        load_suite(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(SuiteError, match="not valid JSON"):
        load_suite(bad)
    with pytest.raises(SuiteError, match="is not in suite"):
        load_suite("tinyworld").concept("snoopy")


def test_erase_the_suite_and_the_quality_benchmark_take_prompts_from_one_generator():
    """`Taxonomy.concept_prompts` is the one home of a TinyWorld concept's prompts (issue: one prompt generator)."""
    import importlib.util
    from pathlib import Path

    from t2v_unlearn.encoders.prompts import resolve_concepts
    from t2v_unlearn.tinyworld.taxonomy import load_taxonomy

    spec = importlib.util.spec_from_file_location(
        "tinyworld_quality", Path(__file__).parents[2] / "benchmarks" / "tinyworld_quality.py"
    )
    quality = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(quality)
    taxonomy, suite = load_taxonomy(), load_suite("tinyworld")
    for name in ("zorbo", "striped", "square"):
        generated = taxonomy.concept_prompts(name)
        assert suite.concept(name).prompts == generated[: len(suite.concept(name).prompts)]
        erase = resolve_concepts([name], None, templates="tinyworld", variants=False, contexts=False)[0].prompts
        assert erase[: min(8, len(generated))] == generated[:8]
        assert quality.prompts_for(taxonomy.get(name), 4, motion=False) == list(generated[:4])


def test_the_correction_target_is_one_anchor_the_suite_knows(monkeypatch):
    from types import SimpleNamespace

    from t2v_unlearn.eval import evaluate

    suite = load_suite("tinyworld")
    for anchor, expected in (("Zorby", "zorbo"), ("triangle, cross, star", None), ("a unicorn", None), (None, None)):
        manifest = SimpleNamespace(config={"anchor": anchor})
        monkeypatch.setattr(evaluate, "read_checkpoint_manifest", lambda _, manifest=manifest: manifest)
        assert evaluate.correction_target(evaluate.EvalConfig(text_encoder="ckpt"), suite) == expected, anchor
    assert evaluate.correction_target(evaluate.EvalConfig(), suite) is None  # the original encoder: nothing replaced
