"""Cluster-bootstrap confidence intervals and a weighted AUROC.

Every confidence interval of the study is a percentile interval from a *cluster* bootstrap that
resamples patients (``subject_id``) with replacement, because images and questions of one patient
are not independent. Seeds are fixed, so a rerun draws the same resamples.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "Estimate",
    "bootstrap_mean",
    "bootstrap_sd",
    "cluster_bootstrap",
    "weighted_auroc",
]


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its bootstrap confidence interval.

    ``n`` counts observations, ``n_clusters`` the resampled units (patients, images or groups).
    """

    value: float
    ci_low: float
    ci_high: float
    n: int
    n_clusters: int


def _cluster_counts(
    clusters: Sequence, n_boot: int, seed: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """Codes of each observation's cluster and the (n_boot, n_clusters) resampling counts."""
    if n_boot < 1:
        raise ValueError(f"n_boot must be positive, got {n_boot}")
    labels = np.asarray([str(c) for c in clusters])
    # Sorted unique labels: the draw does not depend on the order of the rows.
    unique, codes = np.unique(labels, return_inverse=True)
    n_clusters = unique.size
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, max(n_clusters, 1), size=(n_boot, n_clusters))
    counts = np.zeros((n_boot, n_clusters), dtype=np.float64)
    rows = np.repeat(np.arange(n_boot), n_clusters)
    np.add.at(counts, (rows, draws.ravel()), 1.0)
    return codes, counts, n_clusters


def _percentile_interval(replicates: np.ndarray, confidence: float) -> tuple[float, float]:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    finite = replicates[np.isfinite(replicates)]
    if finite.size == 0:
        return math.nan, math.nan
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(finite, [tail, 100 - tail])
    return float(low), float(high)


def cluster_bootstrap(
    statistic: Callable[[np.ndarray], float],
    clusters: Sequence,
    *,
    n_boot: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Estimate:
    """Percentile bootstrap interval of any statistic, resampling clusters with replacement.

    Parameters
    ----------
    statistic : callable
        ``statistic(weights) -> float`` where ``weights`` (one per observation, float) counts how
        often each observation occurs in a resample; all ones gives the point estimate.
    clusters : sequence
        Cluster label of each observation (e.g. ``subject_id``): clusters are drawn, and every
        observation of a drawn cluster comes along.
    n_boot, confidence, seed
        Resamples, interval level, seed of ``numpy.random.default_rng``.

    Returns
    -------
    Estimate
        NaN interval with fewer than two clusters (nothing to resample).
    """
    n_obs = len(clusters)
    point = float(statistic(np.ones(n_obs))) if n_obs else math.nan

    def replicates(codes: np.ndarray, counts: np.ndarray, n_clusters: int) -> np.ndarray:
        return np.array([statistic(counts[b, codes]) for b in range(n_boot)], dtype=np.float64)

    return _resampled_estimate(
        point, clusters, n_obs, replicates, n_boot=n_boot, confidence=confidence, seed=seed
    )


def _resampled_estimate(
    point: float,
    clusters: Sequence,
    n_obs: int,
    replicates: Callable[[np.ndarray, np.ndarray, int], np.ndarray],
    *,
    n_boot: int,
    confidence: float,
    seed: int,
) -> Estimate:
    """``point`` with the percentile interval of a statistic's cluster-bootstrap replicates.

    ``replicates(codes, counts, n_clusters)`` gives the statistic of each resample from the
    observations' cluster codes and the (n_boot, n_clusters) counts of :func:`_cluster_counts`.
    The interval is NaN with fewer than two clusters (nothing to resample).
    """
    codes, counts, n_clusters = _cluster_counts(clusters, n_boot, seed)
    if n_clusters < 2:
        return Estimate(point, math.nan, math.nan, n_obs, n_clusters)
    low, high = _percentile_interval(replicates(codes, counts, n_clusters), confidence)
    return Estimate(point, low, high, n_obs, n_clusters)


def _finite(values: Iterable, clusters: Sequence) -> tuple[np.ndarray, np.ndarray]:
    values = np.asarray(values, dtype=np.float64)
    clusters = np.asarray([str(c) for c in clusters])
    if values.shape != clusters.shape:
        raise ValueError("values and clusters differ in length")
    keep = np.isfinite(values)
    return values[keep], clusters[keep]


def bootstrap_mean(
    values: Iterable,
    clusters: Sequence,
    *,
    n_boot: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Estimate:
    """Mean of ``values`` (NaN dropped) with a cluster-bootstrap interval (vectorised)."""
    values, clusters = _finite(values, clusters)
    if values.size == 0:
        return Estimate(math.nan, math.nan, math.nan, 0, 0)

    def replicates(codes: np.ndarray, counts: np.ndarray, n_clusters: int) -> np.ndarray:
        sums = np.bincount(codes, weights=values, minlength=n_clusters)
        sizes = np.bincount(codes, minlength=n_clusters).astype(np.float64)
        return (counts @ sums) / (counts @ sizes)

    point = float(values.mean())
    return _resampled_estimate(
        point, clusters, values.size, replicates, n_boot=n_boot, confidence=confidence, seed=seed
    )


def bootstrap_sd(
    values: Iterable,
    clusters: Sequence,
    *,
    n_boot: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Estimate:
    """Sample standard deviation (ddof 1, NaN dropped) with a cluster-bootstrap interval."""
    values, clusters = _finite(values, clusters)
    if values.size < 2:
        return Estimate(math.nan, math.nan, math.nan, values.size, len(set(clusters)))

    def replicates(codes: np.ndarray, counts: np.ndarray, n_clusters: int) -> np.ndarray:
        centred = values - values.mean()  # centring first keeps the sums of squares accurate
        s1 = counts @ np.bincount(codes, weights=centred, minlength=n_clusters)
        s2 = counts @ np.bincount(codes, weights=centred**2, minlength=n_clusters)
        n = counts @ np.bincount(codes, minlength=n_clusters).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            variance = (s2 - s1**2 / n) / (n - 1)
        sds = np.sqrt(np.clip(variance, 0.0, None))
        sds[n < 2] = np.nan
        return sds

    point = float(values.std(ddof=1))
    return _resampled_estimate(
        point, clusters, values.size, replicates, n_boot=n_boot, confidence=confidence, seed=seed
    )


def weighted_auroc(
    scores: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None
) -> float:
    """Area under the ROC curve with observation weights (ties count one half).

    The probability that a random positive scores above a random negative, each drawn with
    probability proportional to its weight; with integer weights equal to replicating rows.
    NaN when either class has no weight.
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels).astype(bool)
    weights = np.ones(scores.size) if weights is None else np.asarray(weights, dtype=np.float64)
    unique_scores, codes = np.unique(scores, return_inverse=True)
    positive = np.bincount(codes, weights=weights * labels, minlength=unique_scores.size)
    negative = np.bincount(codes, weights=weights * ~labels, minlength=unique_scores.size)
    total_positive, total_negative = positive.sum(), negative.sum()
    if total_positive <= 0 or total_negative <= 0:
        return math.nan
    negatives_below = np.cumsum(negative) - negative
    wins = np.sum(positive * (negatives_below + 0.5 * negative))
    return float(wins / (total_positive * total_negative))
