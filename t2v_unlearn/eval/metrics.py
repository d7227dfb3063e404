"""Frame-level M-Score and its intervals (shared/METHOD.md, sections 3 and 5), as pure functions of arrays.

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
    """H = 2 E R / (E + R), with E and R clipped to [0, 1] first (H = 0 when either is 0)."""
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
    return estimate(statistic(rates), low, high, int(np.prod(rates.shape[:2])))


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
    if statistic is None:

        def statistic(o, u):
            return normalised_m_score(m_score(u), m_score(o))

    rng = np.random.default_rng(seed)
    index = rng.integers(original.shape[0], size=(n_resamples, original.shape[0]))
    draws = np.array([statistic(original[i], unlearned[i]) for i in index], dtype=np.float64)
    low, high = percentile_interval(draws, level)
    return estimate(statistic(original, unlearned), low, high, original.size)


def wilson_interval(successes: int, n: int, level: float = DEFAULT_LEVEL) -> Estimate:
    """Wilson score interval for a binomial rate: (p + z²/2n ± z sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n)."""
    if n <= 0:
        return estimate(float("nan"), None, None, 0)
    if not 0 <= successes <= n:
        raise ValueError(f"successes must lie in [0, n={n}], got {successes}")
    z = _normal_quantile(0.5 + level / 2)
    p = successes / n
    centre = p + z * z / (2 * n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    denominator = 1 + z * z / n
    return estimate(p, max(0.0, (centre - half) / denominator), min(1.0, (centre + half) / denominator), n)


def _normal_quantile(q: float) -> float:
    """Inverse standard normal CDF (Acklam's rational approximation, relative error < 1.2e-9)."""
    a = (-3.969683028665376e01, 2.209460984245205e02, -2.759285104469687e02, 1.383577518672690e02,
         -3.066479806614716e01, 2.506628277459239e00)  # fmt: skip
    b = (-5.447609879822406e01, 1.615858368580409e02, -1.556989798598866e02, 6.680131188771972e01,
         -1.328068155288572e01)  # fmt: skip
    c = (-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e00, -2.549732539343734e00,
         4.374664141464968e00, 2.938163982698783e00)  # fmt: skip
    d = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e00, 3.754408661907416e00)
    if not 0 < q < 1:
        raise ValueError(f"quantile must lie in (0, 1), got {q}")
    if q < 0.02425:
        t = math.sqrt(-2 * math.log(q))
        return (((((c[0] * t + c[1]) * t + c[2]) * t + c[3]) * t + c[4]) * t + c[5]) / (
            (((d[0] * t + d[1]) * t + d[2]) * t + d[3]) * t + 1
        )
    if q > 1 - 0.02425:
        return -_normal_quantile(1 - q)
    t = q - 0.5
    r = t * t
    return (
        (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5])
        * t
        / (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1)
    )


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

    erasure_point = erasure(float(np.mean([point[t] for t in targets])))
    erasure_draws = erasure(np.mean([draws[t] for t in targets], axis=0))
    out = {"erasure": summarise(erasure_point, erasure_draws, sum(n_videos[t] for t in targets))}
    for name, members in groups.items():
        if members:
            value = retention(np.array([point[c] for c in members]))
            samples = retention(np.stack([draws[c] for c in members], axis=1), axis=1)
        else:
            value, samples = float("nan"), np.full(n_resamples, np.nan)
        defined = [c for c in members if not np.isnan(point[c])]  # concepts the original model never shows drop out
        out[name] = summarise(value, samples, sum(n_videos[c] for c in defined))
        if name == "retention":
            retention_point, retention_draws = value, samples
    out["harmonic_mean"] = summarise(
        harmonic_mean(erasure_point, retention_point),
        harmonic_mean(erasure_draws, retention_draws),
        sum(n_videos.values()),
    )
    return out
