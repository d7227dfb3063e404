import json
import shutil

import numpy as np
import pytest
import torch

from t2v_unlearn.eval.detector import (
    CLIP_MEAN,
    ZeroShotDetector,
    label_set,
    preprocessing_constants,  # fmt: skip
)
from t2v_unlearn.tinyworld.taxonomy import load_taxonomy


@pytest.fixture(scope="module")
def detector(tiny_clip_dir):
    return ZeroShotDetector.from_pretrained(tiny_clip_dir, batch_size=4)


def test_label_set_puts_the_concept_and_synonyms_first():
    labels = label_set("zorbo", ["zorby"], ["plimka", "quaxel"])
    assert labels.labels == ("zorbo", "zorby", "plimka", "quaxel")
    np.testing.assert_array_equal(labels.mask, [True, True, False, False])
    with pytest.raises(ValueError, match="both a synonym and a distractor"):
        label_set("zorbo", ["plimka"], ["plimka"])


def test_probabilities_shapes_sum_to_one_and_batching_does_not_matter(detector, frames_of):
    concept = load_taxonomy().get("zorbo")
    labels = label_set(concept.name, concept.synonyms, concept.distractors)
    templates = load_taxonomy().detector_templates["id"]
    frames = frames_of("zorbo", 6)  # 64x64 frames, resized to the detector's 32x32
    probabilities = detector.probabilities(frames, labels, templates)
    assert probabilities.shape == (6, len(labels.labels))
    np.testing.assert_allclose(probabilities.sum(1), 1.0, atol=1e-9)
    assert (probabilities > 0).all()
    detector.batch_size = 64
    np.testing.assert_allclose(detector.probabilities(frames, labels, templates), probabilities, atol=1e-5)
    # one frame alone gives the same answer as inside a batch
    np.testing.assert_allclose(detector.probabilities(frames[2:3], labels, templates), probabilities[2:3], atol=1e-5)


def test_prompt_ensembling_averages_template_embeddings(detector):
    one = detector.text_embeddings(["zorbo"], ["a picture of {label}"])
    two = detector.text_embeddings(["zorbo"], ["a picture of {label}", "a drawing of {label}"])
    other = detector.text_embeddings(["zorbo"], ["a drawing of {label}"])
    expected = torch.nn.functional.normalize(one + other, dim=-1)
    torch.testing.assert_close(two, expected, atol=1e-5, rtol=1e-5)
    assert torch.linalg.norm(two, dim=-1).item() == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(ValueError, match="must each contain"):
        detector.text_embeddings(["zorbo"], ["no slot"])


def test_preprocess_resizes_and_crops_and_rejects_bad_input(detector):
    frames = np.zeros((2, 48, 80, 3), np.uint8)
    frames[:, :, 30:50] = 255  # a bright band in the centre survives the centre crop
    pixels = detector.preprocess(frames)
    assert pixels.shape == (2, 3, 32, 32)
    assert pixels[0, 0, 16, 16] > pixels[0, 0, 16, 0]
    with pytest.raises(ValueError, match="uint8"):
        detector.preprocess(frames.astype(np.float32))


def test_normalisation_constants_follow_the_folder(tiny_clip_dir, tmp_path):
    from transformers import CLIPModel

    from t2v_unlearn.pipelines import tinyworld_path

    clip = CLIPModel.from_pretrained(tiny_clip_dir)
    assert preprocessing_constants(tiny_clip_dir, clip)[0] == CLIP_MEAN  # a plain CLIP folder: CLIP's constants
    evaluator = tinyworld_path("evaluator")  # the export says its [-1, 1] pixels in preprocessor_config.json
    assert preprocessing_constants(evaluator, clip)[:2] == ((0.5,) * 3, (0.5,) * 3)
    folder = tmp_path / "evaluator"
    shutil.copytree(tiny_clip_dir, folder)
    (folder / "preprocessor_config.json").write_text(json.dumps({"image_mean": [0.1] * 3, "image_std": [0.2] * 3}))
    assert preprocessing_constants(folder, clip)[:2] == ((0.1,) * 3, (0.2,) * 3)


def test_missing_detector_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a transformers CLIPModel folder"):
        ZeroShotDetector.from_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="hf download"):  # a Hub name is looked up in the cache only
        ZeroShotDetector.from_pretrained("nobody-here/no-such-clip")
