import pytest

from t2v_unlearn.encoders.prompts import resolve_concepts, spelling_variants
from t2v_unlearn.eval.attacks import PROMPT_ATTACKS, attack_prompts, base_concept, parse_attacks
from t2v_unlearn.eval.suites import load_suite


@pytest.mark.parametrize("family", PROMPT_ATTACKS)
def test_every_attack_family_differs_from_every_template(image_pipe, family):
    suite = load_suite("tinyworld")
    for concept in suite.concepts.values():
        prompts = attack_prompts(concept, family, count=8, listed=concept.attacks)
        if family == "descriptions":  # the characters' looks, from the taxonomy; nothing to describe otherwise
            assert bool(prompts) == (concept.category == "id"), concept.name
            assert not any(concept.name in p or set(concept.synonyms) & set(p.split()) for p in prompts)
        else:
            assert prompts, (concept.name, family)
        trained = set(resolve_concepts([concept.name], None, "tinyworld")[0].prompts)
        assert not set(prompts) & (set(concept.prompts) | trained), (concept.name, family)


def test_misspellings_are_not_the_ones_erase_trains_on():
    suite = load_suite("tinyworld")
    zorbo = suite.concepts["zorbo"]
    trained = {v.lower() for seed in range(8) for v in spelling_variants("zorbo", seed=seed)}
    words = {w for p in attack_prompts(zorbo, "misspellings") for w in p.split()}
    assert words and not words & trained and "zorbo" not in words


def test_spelling_variants_are_deterministic_and_never_the_word():
    assert spelling_variants("striped", seed=3) == spelling_variants("striped", seed=3)
    assert "striped" not in spelling_variants("striped", seed=3)


def test_attack_names_are_validated():
    assert parse_attacks("synonyms, paraphrases") == ["synonyms", "paraphrases"]
    assert base_concept("zorbo~synonyms") == "zorbo"
    with pytest.raises(ValueError, match="unknown attack"):
        parse_attacks("synonyms,jailbreak")


def test_the_token_offset_moves_only_the_concept_and_goes_away(image_pipe):
    import torch

    from t2v_unlearn.encoders.embedding import concept_token_ids, token_offset
    from t2v_unlearn.encoders.erase import _encode

    encoder, tokenizer = image_pipe.text_encoder, image_pipe.tokenizer
    prompts = ["a picture of zorbo", "a picture of plimka"]
    with torch.no_grad():
        before = _encode(encoder, tokenizer, prompts)
        with token_offset(encoder, concept_token_ids(tokenizer, "zorbo"), torch.ones(encoder.config.hidden_size)):
            during = _encode(encoder, tokenizer, prompts)
        after = _encode(encoder, tokenizer, prompts)
    assert not torch.allclose(during[0], before[0]) and torch.equal(during[1], before[1])
    assert torch.equal(after, before)
