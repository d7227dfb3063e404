import numpy as np
import pytest

from t2v_unlearn.tinyworld.render import CHARACTER_COLOURS, Scene, caption, frame_scene, render, sample_scene
from t2v_unlearn.tinyworld.taxonomy import load_taxonomy


def test_render_is_deterministic():
    a = render(sample_scene(np.random.default_rng(3), video=True))
    b = render(sample_scene(np.random.default_rng(3), video=True))
    assert a.dtype == np.uint8 and a.shape == (8, 64, 64, 3)
    assert np.array_equal(a, b)


def test_solid_object_shows_its_colour_on_its_background():
    taxonomy = load_taxonomy()
    scene = Scene("object", "square", "gray", colour="red", style="solid", size=0.6)
    image = render(scene)[0].astype(int)
    assert np.abs(image[32, 32] - taxonomy.colours["red"]).max() <= 2
    assert np.abs(image[1, 1] - taxonomy.backgrounds["gray"]).max() <= 2


@pytest.mark.parametrize("style", ["striped", "dotted", "checkered"])
def test_patterned_styles_mix_colour_and_tint_inside_the_shape(style):
    blue = np.array(load_taxonomy().colours["blue"])
    tint = blue + (255 - blue) * 0.65
    scene = Scene("object", "square", "black", colour="blue", style=style, size=0.8)
    inside = render(scene)[0][20:44, 20:44].reshape(-1, 3).astype(float)
    for fill in (blue, tint):  # both fills of the pattern show inside the shape
        assert (np.abs(inside - fill).max(axis=1) < 8).mean() > 0.15
    solid = render(Scene("object", "square", "black", colour="blue", style="solid", size=0.8))[0][20:44, 20:44]
    assert len(np.unique(solid.reshape(-1, 3), axis=0)) == 1


def test_outlined_leaves_the_inside_as_background():
    taxonomy = load_taxonomy()
    image = render(Scene("object", "circle", "white", colour="green", style="outlined", size=0.8))[0].astype(int)
    assert np.abs(image[32, 32] - taxonomy.backgrounds["white"]).max() <= 2


def test_characters_show_their_body_colour():
    for name, colour in CHARACTER_COLOURS.items():
        image = render(Scene("id", name, "white", size=0.8))[0].reshape(-1, 3).astype(int)
        share = (np.abs(image - colour).max(axis=1) <= 3).mean()
        assert share > 0.1, name


def _centroid(frame, background):
    mask = np.abs(frame.astype(int) - background).max(axis=-1) > 10
    ys, xs = np.nonzero(mask)
    return xs.mean(), ys.mean(), mask.sum()


@pytest.mark.parametrize(
    "motion, check",
    [
        ("moving right", lambda a, b: b[0] > a[0] + 10),
        ("moving left", lambda a, b: b[0] < a[0] - 10),
        ("moving down", lambda a, b: b[1] > a[1] + 10),
        ("moving up", lambda a, b: b[1] < a[1] - 10),
        ("growing", lambda a, b: b[2] > 1.5 * a[2]),
        ("shrinking", lambda a, b: b[2] < a[2] / 1.5),
    ],
)
def test_motions_move_the_subject_as_labelled(motion, check):
    background = load_taxonomy().backgrounds["black"]
    frames = render(Scene("object", "star", "black", colour="yellow", style="solid", motion=motion))
    assert check(_centroid(frames[0], background), _centroid(frames[-1], background))


def test_frame_scene_matches_video_frame():
    scene = Scene("object", "heart", "beige", colour="pink", style="dotted", motion="rotating")
    frames = render(scene)
    assert np.array_equal(render(frame_scene(scene, 1.0))[0], frames[-1])


def test_labels_and_captions_name_the_drawn_concepts():
    rng = np.random.default_rng(0)
    taxonomy = load_taxonomy()
    for _ in range(50):
        scene = sample_scene(rng, video=True)
        text = caption(scene, rng, synonym_prob=0.0)
        labels = scene.labels()
        named = [v for v in labels.values() if v is not None and v in text.split()]
        assert named, (text, labels)
        assert text.endswith(scene.motion)
        if scene.category == "id":
            assert labels["id"] in taxonomy.names("id") and labels["object"] is None


def test_captions_use_synonyms_and_many_templates():
    rng = np.random.default_rng(1)
    texts = [caption(sample_scene(rng), rng) for _ in range(400)]
    synonyms = {s for c in load_taxonomy().concepts for s in c.synonyms}
    assert any(set(t.split()) & synonyms for t in texts)
    assert len({t.split(" ")[0] for t in texts}) >= 5
    assert sum(len(v) for v in load_taxonomy().caption_templates.values()) >= 10


def test_sample_scene_can_fix_a_concept():
    rng = np.random.default_rng(2)
    assert all(sample_scene(rng, subject="zorbo").subject == "zorbo" for _ in range(5))
    assert all(sample_scene(rng, style="striped").style == "striped" for _ in range(5))


def test_v2_captions_misspell_paraphrase_and_describe_by_look():
    from t2v_unlearn.tinyworld.render import LANGUAGE_V2

    rng = np.random.default_rng(2)
    taxonomy = load_taxonomy()
    names = {c.name for c in taxonomy.concepts} | {s for c in taxonomy.concepts for s in c.synonyms}
    scenes = [sample_scene(rng) for _ in range(600)]
    texts = [caption(scene, rng, **LANGUAGE_V2) for scene in scenes]
    looks = {text for descriptions in taxonomy.looks.values() for text in descriptions}
    described = [t for t, s in zip(texts, scenes, strict=True) if s.category == "id" and any(d in t for d in looks)]
    assert described and all(s.subject not in t for t, s in zip(texts, scenes, strict=True) if t in described)
    for text, scene in zip(texts, scenes, strict=True):  # a look names its own character, never another's
        for name, descriptions in taxonomy.looks.items():
            if any(d in text for d in descriptions):
                assert scene.subject == name
    misspelt = [t for t in texts if not set(t.split()) & names and not any(d in t for d in looks)
                and "something" not in t]  # fmt: skip
    assert len(misspelt) > 10, "no caption with a misspelt name"
    paraphrases = {t.split("{")[0] for group in taxonomy.paraphrase_templates.values() for t in group}
    assert any(t.startswith(p) for t in texts for p in paraphrases if p)
    # the v1 default draws exactly as before: the new probabilities consume no random numbers at 0
    a, b = np.random.default_rng(5), np.random.default_rng(5)
    scene = sample_scene(np.random.default_rng(0))
    assert [caption(scene, a) for _ in range(20)] == [caption(scene, b, misspell_prob=0.0) for _ in range(20)]


def test_a_pair_shows_a_character_beside_a_shape_and_says_both():
    taxonomy = load_taxonomy()
    rng = np.random.default_rng(4)
    for _ in range(12):
        scene = sample_scene(rng, pair_share=1.0)
        labels = scene.labels()
        assert labels["id"] in taxonomy.names("id") and labels["object"] in taxonomy.names("object")
        text = caption(scene, rng, synonym_prob=0.0)
        assert labels["id"] in text and labels["object"] in text
        pixels = render(scene)[0].reshape(-1, 3).astype(int)
        body = np.array(CHARACTER_COLOURS[labels["id"]])
        assert (np.abs(pixels - body).sum(1) < 30).mean() > 0.02  # the character is drawn
        assert scene.companion.x != scene.x  # side by side
    fixed = sample_scene(np.random.default_rng(0), subject="star", pair_share=1.0)
    assert fixed.labels()["object"] == "star" and fixed.companion.category == "id"
    # without pairs, sampling draws exactly what it drew before they existed
    assert sample_scene(np.random.default_rng(9)) == sample_scene(np.random.default_rng(9), pair_share=0.0)
    assert sample_scene(np.random.default_rng(9), video=True, pair_share=1.0).companion is None  # videos: one thing


@pytest.mark.parametrize("kind", ["egg", "lumpy"])
def test_a_blob_is_drawn_in_the_scenes_style_with_no_corner_and_is_no_shape_for_the_classifier(kind):
    from t2v_unlearn.tinyworld.classifier import NONE, head_classes
    from t2v_unlearn.tinyworld.render import blob_outline, lumpy_outline
    from t2v_unlearn.tinyworld.train import classifier_batch

    outline = {"egg": blob_outline, "lumpy": lumpy_outline}[kind](np.random.default_rng(0))
    points = np.array(outline)
    radii = np.hypot(*points.T)
    assert radii.max() / radii.min() > 1.2 and np.abs(points).max() <= 1.0  # not a circle; no larger than a shape
    if kind == "lumpy":  # it wavers: the radius turns from growing to shrinking more often than a square's (8 times)
        turns = np.sign(np.diff(np.r_[radii, radii[:1]]))
        assert (turns != np.roll(turns, 1)).sum() > 8
    scene = Scene("object", "square", "gray", colour="red", style="solid", size=0.7)
    square, blob = render(scene)[0], render(scene, outline=outline)[0]
    assert not np.array_equal(square, blob) and np.abs(blob[32, 32].astype(int) - (220, 40, 40)).max() < 80
    # every shape scene a blob: the object head says none, the style head what was drawn
    _, with_blobs = classifier_batch(5, 32, blob_share=1.0, blob_kind=kind)
    classes = head_classes()
    assert {classes["object"][t] for t in with_blobs["object"].tolist()} == {NONE}
    assert {classes["style"][t] for t in with_blobs["style"].tolist()} - {NONE}  # shape scenes were drawn, as blobs
    assert bool((classifier_batch(5, 8, blob_share=0.0)[0] == classifier_batch(5, 8)[0]).all())  # no draw at 0


def test_a_wavering_shape_keeps_its_outline_within_its_amount_and_its_label_for_the_classifier():
    from t2v_unlearn.tinyworld.classifier import NONE, head_classes
    from t2v_unlearn.tinyworld.render import SHAPES, wavering_shape
    from t2v_unlearn.tinyworld.train import classifier_batch

    rng = np.random.default_rng(0)
    for shape in SHAPES:
        steady = np.array(wavering_shape(shape, np.random.default_rng(1), amount=(0.0, 0.0)))
        shaky = np.array(wavering_shape(shape, np.random.default_rng(1), amount=(0.05, 0.05)))
        change = np.hypot(*shaky.T) / np.hypot(*steady.T) - 1
        assert len(shaky) == 96 and abs(np.abs(change).max() - 0.05) < 1e-9  # moved along its radius, by its amount
        assert not np.allclose(change, change[0])  # unevenly: it wavers
        assert len(wavering_shape(shape, rng, n=40)) == 40
    circle = np.array(wavering_shape("circle", rng, amount=(0.0, 0.0)))
    assert np.allclose(np.hypot(*circle.T), 0.9)  # the circle as it is drawn, radius 0.9
    square = np.array(wavering_shape("square", rng, amount=(0.0, 0.0)))
    assert np.allclose(np.abs(square).max(1), 0.8)  # every point on the square's edges
    # every single shape wavering: the object head still says the shape wherever a shape was drawn (a styled scene)
    pixels, targets = classifier_batch(5, 32, waver_share=1.0)
    classes = head_classes()
    shapes = [classes["object"][t] for t in targets["object"].tolist()]
    styled = [classes["style"][t] != NONE for t in targets["style"].tolist()]
    assert [shape != NONE for shape in shapes] == styled and sum(styled) >= 8
    assert not bool((pixels == classifier_batch(5, 32)[0]).all())  # drawn otherwise than steadily
