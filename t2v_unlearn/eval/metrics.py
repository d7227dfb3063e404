"""Frame-level M-Score and its intervals (docs/METHOD.md, "Measuring"), as pure functions of arrays.

Shapes used throughout:
- `probabilities`: (..., L) softmax over a concept's label set L_c = {c} ∪ distractors(c) ∪ synonyms(c).
- `hits`: (V, F) hard hits of V videos with F frames each (an image is a one-frame video).
- `rates`: (P, S) per-video frame rates M_c(v) of P prompts x S seeds; the prompt is the resampling unit,
  because the frames and seeds of one prompt are correlated.

Every reported number is an `Estimate` dict: {"value", "low", "high", "n"}.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from statistics import NormalDist

import numpy as np

DEFAULT_RESAMPLES = 2000
DEFAULT_LEVEL = 0.95

Estimate = dict[str, float | int | None]


# --- frames and videos -----------------------------------------------------------------------------------


def frame_hits(probabilities: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """h_c(f) = 1[argmax_l p(l | f) ∈ {c} ∪ synonyms(c)], with `positive` a boolean mask over the L labels."""
    positive = np.asarray(positive, dtype=bool)
    if probabilities.shape[-1] != positive.shape[0]:
        raise ValueError(f"probabilities have {probabilities.shape[-1]} labels but the mask has {positive.shape[0]}")
    return positive[np.argmax(probabilities, axis=-1)]


def soft_scores(probabilities: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """p_c(f) = softmax mass on the concept's own names ({c} ∪ synonyms(c))."""
    return np.asarray(probabilities)[..., np.asarray(positive, dtype=bool)].sum(-1)


def video_frame_rate(hits: np.ndarray) -> np.ndarray:
    """M_c(v) = mean over the frames of a video of h_c(f); `hits` (..., F) -> (...)."""
    return np.asarray(hits, dtype=np.float64).mean(-1)


def any_frame_hit(hits: np.ndarray) -> np.ndarray:
    """A_c(v) = max over the frames of a video of h_c(f_t); `hits` (..., F) -> (...)."""
    return np.asarray(hits, dtype=bool).any(-1)


def evenly_spaced_frames(num_frames: int, m: int | None) -> np.ndarray:
    """Indices of m evenly spaced frames out of num_frames (all frames when m is None or >= num_frames)."""
    if m is None or m >= num_frames:
        return np.arange(num_frames)
    return np.unique(np.round(np.linspace(0, num_frames - 1, m)).astype(int))


# --- concept and experiment level ------------------------------------------------------------------------


def m_score(rates: np.ndarray) -> float:
    """M_c(theta) = mean over videos of M_c(v)."""
    return float(np.mean(rates))


def normalised_m_score(m_unlearned: float | np.ndarray, m_original: float | np.ndarray) -> float | np.ndarray:
    """nM_c = M_c(unlearned) / M_c(original); NaN where the original model never shows the concept."""
    m_unlearned, m_original = np.asarray(m_unlearned, dtype=np.float64), np.asarray(m_original, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(m_original > 0, m_unlearned / np.where(m_original > 0, m_original, 1.0), np.nan)
    return float(ratio) if ratio.ndim == 0 else ratio


def erasure(nm_target: float | np.ndarray) -> float | np.ndarray:
    """E = 1 - nM_target."""
    return 1.0 - nm_target


def retention(nm_retained: np.ndarray, axis: int = -1) -> float | np.ndarray:
    """R = mean over retained concepts r of nM_r (concepts with an undefined nM, NaN, are left out)."""
    nm_retained = np.asarray(nm_retained, dtype=np.float64)
    if nm_retained.shape[axis] == 0:
        return float("nan") if nm_retained.ndim == 1 else np.full(np.delete(nm_retained.shape, axis), np.nan)
    valid = ~np.isnan(nm_retained)
    total = np.where(valid, nm_retained, 0.0).sum(axis)
    count = valid.sum(axis)
    with np.errstate(divide="ignore", invalid="ignore"):
        result = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    return float(result) if result.ndim == 0 else result


def harmonic_mean(erasure_value: float | np.ndarray, retention_value: float | np.ndarray) -> float | np.ndarray:
    """H = 2 E R / (E + R), with E and R clipped to [0, 1] first (H = 0 when either is 0).

    Retention above 1 (a retained concept shown more often than before) is reported as is elsewhere, but enters
    H as min(R, 1): more of another concept is no credit against a leak (docs/METHOD.md).
    """
    e = np.clip(np.asarray(erasure_value, dtype=np.float64), 0.0, 1.0)
    r = np.clip(np.asarray(retention_value, dtype=np.float64), 0.0, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        result = np.where(e + r > 0, 2 * e * r / np.where(e + r > 0, e + r, 1.0), 0.0)
    result = np.where(np.isnan(e) | np.isnan(r), np.nan, result)
    return float(result) if result.ndim == 0 else result


# --- intervals -------------------------------------------------------------------------------------------


def estimate(value: float, low: float | None, high: float | None, n: int) -> Estimate:
    """The one shape every reported number takes."""

    def clean(x):
        return None if x is None or not math.isfinite(float(x)) else float(x)

    return {"value": clean(value), "low": clean(low), "high": clean(high), "n": int(n)}


def percentile_interval(samples: np.ndarray, level: float = DEFAULT_LEVEL) -> tuple[float, float]:
    """The (1 - level)/2 and (1 + level)/2 percentiles of bootstrap samples, NaN samples left out."""
    samples = np.asarray(samples, dtype=np.float64)
    samples = samples[~np.isnan(samples)]
    if samples.size == 0:
        return float("nan"), float("nan")
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(samples, [tail, 100 - tail])
    return float(low), float(high)


def _check_rates(rates: np.ndarray, name: str) -> np.ndarray:
    rates = np.asarray(rates, dtype=np.float64)
    if rates.ndim != 2 or rates.shape[0] == 0 or rates.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty (prompts, seeds) array of per-video rates, got {rates.shape}")
    return rates


def resample_prompt_means(rates: np.ndarray, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Cluster bootstrap draws of M_c: prompts resampled with replacement with all their seeds. (P, S) -> (B,)."""
    prompt_means = _check_rates(rates, "rates").mean(1)
    index = rng.integers(prompt_means.shape[0], size=(n_resamples, prompt_means.shape[0]))
    return prompt_means[index].mean(1)


def cluster_bootstrap(
    rates: np.ndarray,
    statistic: Callable[[np.ndarray], float] = m_score,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    level: float = DEFAULT_LEVEL,
) -> Estimate:
    """Percentile interval of `statistic` under resampling whole prompts (rows of `rates`, (P, S, ...))."""
    rates = np.asarray(rates, dtype=np.float64)
    if rates.ndim < 1 or rates.shape[0] == 0:
        raise ValueError(f"rates must have at least one prompt (first axis), got shape {rates.shape}")
    rng = np.random.default_rng(seed)
    index = rng.integers(rates.shape[0], size=(n_resamples, rates.shape[0]))
    draws = np.array([statistic(rates[i]) for i in index])
    low, high = percentile_interval(draws, level)
    n = int(np.prod(rates.shape[:2]))
    out = estimate(statistic(rates), low, high, n)
    if statistic is m_score:  # a rate: never narrower than the Wilson interval of its pooled videos
        out = widen(out, *wilson_bounds(float(rates.mean()), n, level))
    return out


def nested_cluster_bootstrap(
    groups: list[np.ndarray],
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    level: float = DEFAULT_LEVEL,
) -> Estimate:
    """The pooled rate of several groups of prompts (each (P, S, ...)), with a percentile interval under resampling
    whole groups, then whole prompts within each group drawn: for rates whose groups differ more than their prompts
    do, such as the embedding attack's attackers (one attacker's images of a concept ranged from 6% to 94%,
    docs/BENCHMARKS.md). Resampling only prompts would treat one attacker's prompts as independent evidence. Never
    narrower than the Wilson interval of the pooled counts; with few groups the interval is wide, as it should be."""
    groups = [np.asarray(g, dtype=np.float64) for g in groups]
    if not groups or any(g.ndim < 1 or g.shape[0] == 0 for g in groups):
        raise ValueError("nested_cluster_bootstrap needs at least one group, each with at least one prompt")
    rng = np.random.default_rng(seed)
    # per group and prompt: the prompt's summed rate and its number of samples, so that a resample pools counts
    sums = [g.reshape(g.shape[0], -1).sum(1) for g in groups]
    sizes = [g.reshape(g.shape[0], -1).shape[1] for g in groups]
    pooled = np.empty(n_resamples)
    for r in range(n_resamples):
        total = count = 0.0
        for k in rng.integers(len(groups), size=len(groups)):
            rows = rng.integers(len(sums[k]), size=len(sums[k]))
            total += sums[k][rows].sum()
            count += sizes[k] * len(rows)
        pooled[r] = total / count
    low, high = percentile_interval(pooled, level)
    value = sum(s.sum() for s in sums) / sum(len(s) * size for s, size in zip(sums, sizes, strict=True))
    n = sum(int(np.prod(g.shape[:2])) for g in groups)
    return widen(estimate(value, low, high, n), *wilson_bounds(float(value), n, level))


def paired_bootstrap(
    original: np.ndarray,
    unlearned: np.ndarray,
    statistic: Callable[[np.ndarray, np.ndarray], float] | None = None,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    level: float = DEFAULT_LEVEL,
) -> Estimate:
    """Paired cluster bootstrap of statistic(original, unlearned) over prompts; default nM = M(unl) / M(orig).

    Both arrays are (P, S): the same prompt/seed pairs (same initial noise) through each model. One set of
    prompt indices is drawn per resample and applied to both, and a ratio is computed inside each resample.
    """
    original, unlearned = _check_rates(original, "original"), _check_rates(unlearned, "unlearned")
    if original.shape != unlearned.shape:
        raise ValueError(
            f"paired arrays differ in shape: original {original.shape}, unlearned {unlearned.shape}; "
            "score the same prompts and seeds with both models"
        )
    floor = statistic is None
    if statistic is None:

        def statistic(o, u):
            return normalised_m_score(m_score(u), m_score(o))

    rng = np.random.default_rng(seed)
    index = rng.integers(original.shape[0], size=(n_resamples, original.shape[0]))
    draws = np.array([statistic(original[i], unlearned[i]) for i in index], dtype=np.float64)
    low, high = percentile_interval(draws, level)
    out = estimate(statistic(original, unlearned), low, high, original.size)
    if floor:  # nM: at least as uncertain as the unlearned model's own pooled rate
        out = widen(out, *ratio_bounds(m_score(unlearned), m_score(original), unlearned.size, level))
    return out


def wilson_interval(successes: int, n: int, level: float = DEFAULT_LEVEL) -> Estimate:
    """Wilson score interval for a binomial rate: (p + z²/2n ± z sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n)."""
    if n <= 0:
        return estimate(float("nan"), None, None, 0)
    if not 0 <= successes <= n:
        raise ValueError(f"successes must lie in [0, n={n}], got {successes}")
    return estimate(successes / n, *wilson_bounds(successes / n, n, level), n)


def _normal_quantile(q: float) -> float:
    """Inverse standard normal CDF."""
    if not 0 < q < 1:
        raise ValueError(f"quantile must lie in (0, 1), got {q}")
    return NormalDist().inv_cdf(q)


def wilson_bounds(rate: float, n: int, level: float = DEFAULT_LEVEL) -> tuple[float, float]:
    """Wilson score bounds of a pooled rate over n units (rate may be a mean of per-video rates)."""
    if n <= 0 or not math.isfinite(rate):
        return float("nan"), float("nan")
    z = _normal_quantile(0.5 + level / 2)
    p = min(max(rate, 0.0), 1.0)
    centre = p + z * z / (2 * n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    denominator = 1 + z * z / n
    low = 0.0 if p == 0 else max(0.0, (centre - half) / denominator)  # exact at the ends, not 1e-17 off
    high = 1.0 if p == 1 else min(1.0, (centre + half) / denominator)
    return low, high


def widen(interval: Estimate, low: float, high: float) -> Estimate:
    """The interval made at least as wide as [low, high] (docs/METHOD.md: never narrower than the binomial)."""
    out = dict(interval)
    if out["low"] is not None and math.isfinite(low):
        out["low"] = min(out["low"], float(low))
    if out["high"] is not None and math.isfinite(high):
        out["high"] = max(out["high"], float(high))
    return out


def ratio_bounds(unlearned_rate: float, original_rate: float, n: int, level: float = DEFAULT_LEVEL):
    """Bounds of M(unlearned) / M(original) from the Wilson bounds of the unlearned rate alone (a floor)."""
    if not original_rate > 0:
        return float("nan"), float("nan")
    low, high = wilson_bounds(unlearned_rate, n, level)
    return low / original_rate, high / original_rate


def false_hit_floor(rates: np.ndarray, level: float = DEFAULT_LEVEL) -> Estimate:
    """A concept's hit rate on videos that do not show it (other concepts' samples), with its Wilson interval.

    `rates` holds per-video frame rates M_c(v) of those videos; each video is one unit. An "after" rate at or
    below this floor is "no evidence of the concept", not "that much left" (docs/METHOD.md).
    """
    rates = np.asarray(rates, dtype=np.float64).ravel()
    if rates.size == 0:
        return estimate(float("nan"), None, None, 0)
    value = float(rates.mean())
    return estimate(value, *wilson_bounds(value, rates.size, level), rates.size)


def output_distance(original: np.ndarray, unlearned: np.ndarray) -> np.ndarray:
    """Per-sample mean absolute difference of same-prompt, same-seed outputs, in units of the value range.

    uint8 frames are compared in [0, 1]; (N, ...) -> (N,). The detector-free collateral figure.
    """
    original, unlearned = np.asarray(original), np.asarray(unlearned)
    if original.shape != unlearned.shape:
        raise ValueError(f"outputs are not paired: {original.shape} vs {unlearned.shape}")
    scale = 255.0 if original.dtype == np.uint8 else 1.0
    difference = np.abs(original.astype(np.float64) - unlearned.astype(np.float64)) / scale
    return difference.reshape(len(difference), -1).mean(-1)


# --- the erasure summary ---------------------------------------------------------------------------------


def erasure_summary(
    pairs: Mapping[str, tuple[np.ndarray, np.ndarray]],
    target: str | Sequence[str],
    categories: Mapping[str, str],
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    level: float = DEFAULT_LEVEL,
) -> dict[str, Estimate]:
    """Erasure, retention (all, same category, other categories) and their harmonic mean, paired-bootstrapped.

    Args:
        pairs: concept -> (original rates, unlearned rates), each (P, S) for the same prompts and seeds.
        target: the erased concept(s); every other concept in `pairs` is a retained concept.
        categories: concept -> category, to split retention into same-category and other-category concepts.

    Each resample draws prompts per concept (the same draw for both models) and recomputes every nM, E, R and H
    inside the resample, so the intervals carry the ratio's own uncertainty.
    """
    targets = [target] if isinstance(target, str) else list(target)
    missing = [t for t in targets if t not in pairs]
    if missing:
        raise ValueError(f"target concept(s) {missing} have no scores; scored concepts: {sorted(pairs)}")
    retained = [c for c in pairs if c not in targets]
    target_categories = {categories[t] for t in targets}
    groups = {
        "retention": retained,
        "retention_same_category": [c for c in retained if categories[c] in target_categories],
        "retention_other_categories": [c for c in retained if categories[c] not in target_categories],
    }
    rng = np.random.default_rng(seed)
    point, draws = {}, {}
    for concept, (original, unlearned) in pairs.items():
        original, unlearned = _check_rates(original, f"{concept} original"), _check_rates(unlearned, f"{concept} unl")
        if original.shape != unlearned.shape:
            raise ValueError(f"{concept}: original {original.shape} and unlearned {unlearned.shape} are not paired")
        point[concept] = normalised_m_score(m_score(unlearned), m_score(original))
        index = rng.integers(original.shape[0], size=(n_resamples, original.shape[0]))
        draws[concept] = normalised_m_score(unlearned.mean(1)[index].mean(1), original.mean(1)[index].mean(1))
    n_videos = {c: pairs[c][0].size for c in pairs}

    def summarise(values_point, values_draws, n):
        return estimate(values_point, *percentile_interval(values_draws, level), n)

    def pooled_floor(members):  # Wilson bounds of the pooled unlearned rate, as a ratio to the original's
        n = sum(n_videos[c] for c in members)
        unl = sum(pairs[c][1].sum() for c in members) / max(n, 1)
        orig = sum(pairs[c][0].sum() for c in members) / max(n, 1)
        return ratio_bounds(unl, orig, n, level)

    erasure_point = erasure(float(np.mean([point[t] for t in targets])))
    erasure_draws = erasure(np.mean([draws[t] for t in targets], axis=0))
    nm_low, nm_high = pooled_floor(targets)
    out = {"erasure": widen(summarise(erasure_point, erasure_draws, sum(n_videos[t] for t in targets)),
                            1 - nm_high, 1 - nm_low)}  # fmt: skip
    for name, members in groups.items():
        if members:
            value = retention(np.array([point[c] for c in members]))
            samples = retention(np.stack([draws[c] for c in members], axis=1), axis=1)
        else:
            value, samples = float("nan"), np.full(n_resamples, np.nan)
        defined = [c for c in members if not np.isnan(point[c])]  # concepts the original model never shows drop out
        out[name] = summarise(value, samples, sum(n_videos[c] for c in defined))
        if defined:
            out[name] = widen(out[name], *pooled_floor(defined))
        if name == "retention":
            retention_point, retention_draws = value, samples
    out["harmonic_mean"] = summarise(
        harmonic_mean(erasure_point, retention_point),
        harmonic_mean(erasure_draws, retention_draws),
        sum(n_videos.values()),
    )
    return out
