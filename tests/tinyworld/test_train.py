import shutil

import torch
from safetensors.torch import load_file
from transformers import CLIPModel

from t2v_unlearn.pipelines import tinyworld_path
from t2v_unlearn.tinyworld.taxonomy import load_taxonomy
from t2v_unlearn.tinyworld.train import evaluator_batch, main


def _named_label(text: str) -> str | None:
    """The label an attribute caption names, or None for a full caption."""
    for templates in load_taxonomy().detector_templates.values():
        for template in templates:
            prefix, suffix = template.split("{label}")
            if text.startswith(prefix) and text.endswith(suffix):
                label = text[len(prefix) : len(text) - len(suffix)]
                if " " not in label:
                    return label
    return None


def test_an_attribute_caption_is_true_of_every_image_with_that_attribute():
    pixels, captions, true_of = evaluator_batch(3, 64)
    assert pixels.shape == (64, 3, 64, 64) and true_of.shape == (64, 64)
    assert torch.all(true_of.diagonal() == 1)
    labels = [_named_label(c) for c in captions]
    pairs = [(i, j) for i in range(64) for j in range(64)
             if i < j and labels[i] and labels[i] == labels[j] and captions[i] != captions[j]]  # fmt: skip
    assert pairs, "no two wordings of one attribute in the batch"
    for i, j in pairs:  # two wordings of one attribute are true of the same images, both of them included
        assert torch.equal(true_of[:, i], true_of[:, j]) and true_of[i, j] == 1 and true_of[j, i] == 1
    named = [j for j, label in enumerate(labels) if label]
    assert true_of[:, named].sum(0).float().mean() > 3  # each is true of several images, not its own only


def test_evaluator_fine_tuning_starts_from_the_given_weights(tmp_path):
    shutil.copytree(tinyworld_path("evaluator"), tmp_path / "tokenizer")  # a folder the tokenizer loads from
    main(["--work", str(tmp_path), "--stages", "evaluator", "--evaluator-steps", "2", "--device", "cpu",
          "--evaluator-init", str(tinyworld_path("evaluator")), "--threads", "1"])  # fmt: skip
    before = CLIPModel.from_pretrained(tinyworld_path("evaluator"), dtype=torch.float32).state_dict()
    after = load_file(str(tmp_path / "evaluator" / "final" / "model.safetensors"))
    assert after.keys() <= before.keys()
    assert any(not torch.allclose(after[k].float(), before[k]) for k in after)  # it trained
    assert (tmp_path / "evaluator" / "DONE").exists()
