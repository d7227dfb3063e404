import pytest

from t2v_unlearn.encoders.prompts import resolve_concepts
from t2v_unlearn.eval.attacks import PROMPT_ATTACKS, attack_prompts, base_concept, parse_attacks
from t2v_unlearn.eval.suites import load_suite
from t2v_unlearn.spelling import TRAINING_SEEDS, spelling_variants, training_variants


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
    trained = {v.lower() for seed in TRAINING_SEEDS for v in spelling_variants("zorbo", seed=seed)}
    words = {w for p in attack_prompts(zorbo, "misspellings") for w in p.split()}
    assert words and not words & trained and "zorbo" not in words
    trained_prompts = resolve_concepts(["zorbo"], None, "tinyworld", misspellings=8)[0].prompts
    erase_words = {w.lower() for p in trained_prompts for w in p.split()}
    misspelt = {w for w in words if w not in {w for p in zorbo.prompts for w in p.split()}}  # the template's words out
    assert misspelt and not misspelt & erase_words  # what erase trains on, at its most draws


def test_training_variants_grow_with_the_draws_and_start_with_the_first():
    one, every = training_variants("square", 1), training_variants("square")
    assert one == spelling_variants("square", seed=0) and every[: len(one)] == one
    assert len(set(every)) == len(every) > 2 * len(one) and "square" not in every
    assert training_variants("square", 0) == []
    with pytest.raises(ValueError, match="between 0 and 8"):
        training_variants("square", 9)


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
        # random, not constant: the encoder's layer norms subtract a constant offset (all ones) out
        offset = torch.randn(encoder.config.hidden_size, generator=torch.Generator().manual_seed(0))
        with token_offset(encoder, concept_token_ids(tokenizer, "zorbo"), offset):
            during = _encode(encoder, tokenizer, prompts)
        after = _encode(encoder, tokenizer, prompts)
    assert (during[0] - before[0]).abs().max() > 1e-2 and torch.equal(during[1], before[1])
    assert torch.equal(after, before)


def test_the_attackers_shot_seeds_never_meet_the_erases():
    from t2v_unlearn.eval.embedding_attack import ATTACK_SHOT_SEED, attack_shot_seed, shot_seeds

    assert attack_shot_seed(ATTACK_SHOT_SEED, {"seed": 0, "num_shots": 4}) == ATTACK_SHOT_SEED
    assert attack_shot_seed(500, {"seed": 500, "num_shots": 4}) == 501  # the same seeds: moved on
    assert attack_shot_seed(500, {"seed": 2500, "num_shots": 4}) == 501  # 2500 and 3500 are both sides' shots
    assert attack_shot_seed(500, {"seed": 4500, "num_shots": 4}) == 500  # 4500 + 1000 i: none of 500 + 1000 i, i < 4
    assert attack_shot_seed(500, {"seed": 500, "images": "my/photos"}) == 500  # the erase read its shots
    assert attack_shot_seed(500, None) == 500
    assert attack_shot_seed(501, {"seed": 500, "num_shots": 4}, taken={501, 1501}) == 502  # another attacker's
    for erase_seed in range(0, 5000, 250):
        seed = attack_shot_seed(ATTACK_SHOT_SEED, {"seed": erase_seed, "num_shots": 6})
        assert not set(shot_seeds(seed, 4)) & set(shot_seeds(erase_seed, 6))


def test_a_bounded_attacker_stays_within_its_reach_and_an_unbounded_one_does_not(image_pipe):
    """At a learning rate that carries the offset far in 3 steps: `max_norm` holds it on its ball (in token lengths,
    the mean norm of the input embeddings); without it, the same steps go past."""
    import numpy as np
    import torch

    from t2v_unlearn.eval.embedding_attack import EmbeddingAttackConfig, invert_concept

    shots = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    length = image_pipe.text_encoder.get_input_embeddings().weight.norm(dim=-1).mean().item()
    bounded, _ = invert_concept(image_pipe, image_pipe.text_encoder, "zorbo", shots,
                                EmbeddingAttackConfig(steps=3, lr=0.5, batch_size=2, max_norm=0.5))  # fmt: skip
    free, _ = invert_concept(image_pipe, image_pipe.text_encoder, "zorbo", shots,
                             EmbeddingAttackConfig(steps=3, lr=0.5, batch_size=2))  # fmt: skip
    assert bounded.norm().item() == pytest.approx(0.5 * length, rel=1e-4)
    assert free.norm().item() > 2 * length
    assert not any(p.requires_grad for p in image_pipe.text_encoder.parameters())
    with pytest.raises(ValueError, match="max_norm"):
        EmbeddingAttackConfig(max_norm=0)
    assert torch.isfinite(bounded).all()
