import numpy as np
import pytest

from t2v_unlearn.eval import metrics as M


def test_frame_hits_count_synonyms_and_not_distractors():
    # labels: [concept, synonym, distractor, distractor]
    positive = np.array([True, True, False, False])
    probabilities = np.array([[0.7, 0.1, 0.1, 0.1], [0.1, 0.6, 0.2, 0.1], [0.3, 0.3, 0.35, 0.05]])
    np.testing.assert_array_equal(M.frame_hits(probabilities, positive), [True, True, False])
    np.testing.assert_allclose(M.soft_scores(probabilities, positive), [0.8, 0.7, 0.6])


def test_frame_hits_rejects_a_mask_of_the_wrong_length():
    with pytest.raises(ValueError, match="labels but the mask has"):
        M.frame_hits(np.ones((2, 3)) / 3, np.array([True, False]))


def test_video_rates_and_any_frame():
    hits = np.array([[1, 0, 0, 1], [0, 0, 0, 0], [1, 1, 1, 1]], dtype=bool)
    np.testing.assert_allclose(M.video_frame_rate(hits), [0.5, 0.0, 1.0])
    np.testing.assert_array_equal(M.any_frame_hit(hits), [True, False, True])
    assert M.m_score(M.video_frame_rate(hits)) == pytest.approx(0.5)


def test_evenly_spaced_frames():
    np.testing.assert_array_equal(M.evenly_spaced_frames(8, 4), [0, 2, 5, 7])
    np.testing.assert_array_equal(M.evenly_spaced_frames(3, None), [0, 1, 2])


def test_normalised_score_erasure_retention_harmonic_mean():
    assert M.normalised_m_score(0.2, 0.8) == pytest.approx(0.25)
    assert np.isnan(M.normalised_m_score(0.2, 0.0))
    assert M.erasure(0.25) == pytest.approx(0.75)
    assert M.retention(np.array([1.0, 0.5, np.nan])) == pytest.approx(0.75)  # undefined nM left out
    assert M.harmonic_mean(0.75, 0.75) == pytest.approx(0.75)
    assert M.harmonic_mean(1.0, 0.5) == pytest.approx(2 / 3)
    assert M.harmonic_mean(-0.2, 0.9) == 0.0  # clipped: an encoder that shows the target more erased nothing
    assert M.harmonic_mean(1.0, 1.3) == pytest.approx(1.0)


def test_wilson_matches_known_values():
    # 8 of 10, 95%: the textbook Wilson interval is [0.4902, 0.9433]
    result = M.wilson_interval(8, 10)
    assert result["value"] == pytest.approx(0.8)
    assert result["low"] == pytest.approx(0.4902, abs=1e-4)
    assert result["high"] == pytest.approx(0.9433, abs=1e-4)
    assert result["n"] == 10
    zero = M.wilson_interval(0, 20)
    assert zero["low"] == 0.0 and zero["high"] == pytest.approx(0.1611, abs=1e-4)
    assert M._normal_quantile(0.975) == pytest.approx(1.959964, abs=1e-6)
    with pytest.raises(ValueError):
        M.wilson_interval(11, 10)


def _rates(n_prompts, n_seeds, p, seed):
    rng = np.random.default_rng(seed)
    prompt_level = np.clip(p + rng.normal(0, 0.15, size=(n_prompts, 1)), 0, 1)
    return (rng.random((n_prompts, n_seeds)) < prompt_level).astype(float)


def test_cluster_bootstrap_contains_value_shrinks_with_n_and_is_seeded():
    small, large = _rates(6, 3, 0.6, 0), _rates(96, 3, 0.6, 0)
    a = M.cluster_bootstrap(small, n_resamples=500, seed=3)
    b = M.cluster_bootstrap(large, n_resamples=500, seed=3)
    for result, rates in ((a, small), (b, large)):
        assert result["value"] == pytest.approx(rates.mean())
        assert result["low"] <= result["value"] <= result["high"]
        assert result["n"] == rates.size
    assert b["high"] - b["low"] < (a["high"] - a["low"]) / 2
    assert M.cluster_bootstrap(small, n_resamples=500, seed=3) == a
    continuous = np.random.default_rng(5).random((12, 2))

    def mean(x):
        return float(np.mean(x))

    assert M.cluster_bootstrap(continuous, mean, 500, seed=4) != M.cluster_bootstrap(continuous, mean, 500)


def test_the_nested_bootstrap_widens_when_groups_differ_and_pools_the_counts():
    """Three attackers at 6%, 50% and 94% (4 prompts x 20 seeds each): resampling attackers gives an interval that
    spans most of that range, where resampling the 12 prompts as if independent gives a narrow one. Alike groups
    give about the prompt-level interval, never narrower than Wilson's; the value is the pooled rate."""
    rng = np.random.default_rng(0)
    apart = [(rng.random((4, 20)) < p).astype(float) for p in (0.06, 0.5, 0.94)]
    nested = M.nested_cluster_bootstrap(apart, n_resamples=2000, seed=1)
    flat = M.cluster_bootstrap(np.concatenate(apart), n_resamples=2000, seed=1)
    assert nested["value"] == pytest.approx(np.concatenate(apart).mean()) and nested["n"] == 240
    assert nested["low"] < 0.25 and nested["high"] > 0.75
    assert flat["high"] - flat["low"] < 0.6 * (nested["high"] - nested["low"])
    alike = [_rates(4, 20, 0.3, seed) for seed in range(3)]
    together = M.nested_cluster_bootstrap(alike, n_resamples=2000, seed=1)
    wilson = M.wilson_bounds(np.concatenate(alike).mean(), 240)
    assert together["low"] <= wilson[0] and together["high"] >= wilson[1]
    assert together["high"] - together["low"] < 0.3
    unequal = [np.ones((2, 5)), np.zeros((4, 5))]  # 10 hits of 30 samples: the pooled count, not a mean of means
    assert M.nested_cluster_bootstrap(unequal, n_resamples=50)["value"] == pytest.approx(1 / 3)
    assert M.nested_cluster_bootstrap(apart, n_resamples=500, seed=2) == M.nested_cluster_bootstrap(apart, 500, 2)
    with pytest.raises(ValueError, match="at least one group"):
        M.nested_cluster_bootstrap([])


def test_an_interval_is_never_narrower_than_the_wilson_interval_of_its_pooled_counts():
    # 4 prompts x 2 seeds that all behave alike: the bootstrap alone would say [1, 1] (or [0, 0])
    for rates in (np.ones((4, 2)), np.zeros((4, 2))):
        result = M.cluster_bootstrap(rates, n_resamples=200, seed=0)
        wilson = M.wilson_interval(int(rates.sum()), rates.size)
        assert result["low"] <= wilson["low"] and result["high"] >= wilson["high"]
        assert result["high"] - result["low"] > 0.3
    # 0 hits in 8 images: anywhere in [0, 0.32]
    zero = M.cluster_bootstrap(np.zeros((4, 2)), n_resamples=200, seed=0)
    assert zero["low"] == 0.0 and zero["high"] == pytest.approx(0.324, abs=2e-3)
    # ratios too: an unlearned model with 0 hits in 8 images vs an original with 8 of 8
    nm = M.paired_bootstrap(np.ones((4, 2)), np.zeros((4, 2)), n_resamples=200, seed=0)
    assert nm["value"] == 0.0 and nm["high"] == pytest.approx(0.324, abs=2e-3)
    summary = M.erasure_summary({"a": (np.ones((4, 2)), np.zeros((4, 2))), "b": (np.ones((4, 2)), np.ones((4, 2)))},
                                "a", {"a": "id", "b": "id"}, n_resamples=200)  # fmt: skip
    assert summary["erasure"]["value"] == 1.0 and summary["erasure"]["low"] == pytest.approx(0.676, abs=2e-3)
    assert summary["retention"]["value"] == 1.0 and summary["retention"]["low"] < 0.7


def test_false_hit_floor_and_output_distance_on_hand_made_inputs():
    floor = M.false_hit_floor(np.array([0.0, 0.0, 0.5, 0.0]))
    assert floor["value"] == 0.125 and floor["n"] == 4 and floor["low"] < 0.125 < floor["high"]
    assert M.false_hit_floor(np.zeros(0))["n"] == 0
    a = np.zeros((2, 4, 4, 3), np.uint8)
    b = a.copy()
    b[1] = 255
    assert M.output_distance(a, b).tolist() == [0.0, 1.0]
    with pytest.raises(ValueError, match="not paired"):
        M.output_distance(a, b[:1])


def test_cluster_bootstrap_resamples_prompts_not_videos():
    # two prompts, one always shows the concept, one never: resampling prompts gives a wide interval,
    # while treating the 40 videos as independent would give a narrow one
    rates = np.array([[1.0] * 20, [0.0] * 20])
    result = M.cluster_bootstrap(rates, n_resamples=1000, seed=0)
    assert result["low"] == 0.0 and result["high"] == 1.0


def test_paired_bootstrap_computes_the_ratio_inside_each_resample():
    original = _rates(40, 2, 0.8, 1)
    unlearned = original * (np.random.default_rng(2).random(original.shape) < 0.25)
    result = M.paired_bootstrap(original, unlearned, n_resamples=1000, seed=0)
    assert result["value"] == pytest.approx(unlearned.mean() / original.mean())
    assert result["low"] <= result["value"] <= result["high"]
    ratio = lambda o, u: M.m_score(u) / M.m_score(o)  # noqa: E731 (no Wilson floor for a custom statistic)
    bare = M.paired_bootstrap(original, unlearned, ratio, n_resamples=1000, seed=0)
    assert bare["high"] < 0.5 and result["high"] >= bare["high"]
    # pairing: identical models give nM = 1 with no bootstrap spread at all
    same = M.paired_bootstrap(original, original, ratio, n_resamples=200, seed=0)
    assert same["value"] == same["low"] == same["high"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="paired arrays differ"):
        M.paired_bootstrap(original, unlearned[:5])


def test_erasure_summary_known_answer_and_groups():
    ones, zeros, half = np.ones((4, 2)), np.zeros((4, 2)), np.tile([[1.0, 0.0]], (4, 1))
    pairs = {"zorbo": (ones, zeros), "plimka": (ones, ones), "circle": (ones, half)}
    categories = {"zorbo": "id", "plimka": "id", "circle": "object"}
    summary = M.erasure_summary(pairs, "zorbo", categories, n_resamples=200, seed=0)
    assert summary["erasure"]["value"] == pytest.approx(1.0)
    assert summary["retention_same_category"]["value"] == pytest.approx(1.0)
    assert summary["retention_other_categories"]["value"] == pytest.approx(0.5)
    assert summary["retention"]["value"] == pytest.approx(0.75)
    assert summary["harmonic_mean"]["value"] == pytest.approx(2 * 0.75 / 1.75)
    assert summary["erasure"]["n"] == 8 and summary["retention"]["n"] == 16
    for entry in summary.values():
        assert set(entry) == {"value", "low", "high", "n"}
        assert entry["low"] <= entry["value"] + 1e-12 and entry["value"] <= entry["high"] + 1e-12
    with pytest.raises(ValueError, match="have no scores"):
        M.erasure_summary(pairs, "mirabu", categories)


def test_erasure_summary_undefined_original_gives_none():
    pairs = {"zorbo": (np.zeros((3, 2)), np.zeros((3, 2))), "plimka": (np.ones((3, 2)), np.ones((3, 2)))}
    summary = M.erasure_summary(pairs, "zorbo", {"zorbo": "id", "plimka": "id"}, n_resamples=100)
    assert summary["erasure"]["value"] is None
    assert summary["retention"]["value"] == pytest.approx(1.0)
