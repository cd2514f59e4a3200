"""Comparisons of two maps: Jensen-Shannon divergence, Pearson correlation, cosine similarity.

The Jensen-Shannon divergence of two distributions ``p`` and ``q`` with ``m = (p + q) / 2`` is::

    JS(p, q) = 0.5 * KL(p || m) + 0.5 * KL(q || m)

Its value depends on the logarithm's base: in base 2 it lies in [0, 1] (our headline unit); in
natural log (the reference study's unit) in [0, ln 2], and ``JS_nat = JS_base2 * ln 2``.
``scipy.spatial.distance.jensenshannon`` returns the *square root* of the divergence (the
Jensen-Shannon distance), natural log unless ``base`` is given.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "JS_BANDS",
    "cosine_similarity",
    "js_band",
    "js_base2_to_natural",
    "js_distance",
    "js_divergence",
    "js_divergence_natural",
    "js_natural_to_base2",
    "pearson_correlation",
]

#: Interpretation bands of the base-2 divergence: (upper bound, name); minor < 0.2 <= moderate
#: <= 0.5 < large.
JS_BANDS = ((0.2, "minor"), (0.5, "moderate"))


def _pair(p: np.ndarray, q: np.ndarray, *, normalise: bool) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(p, dtype=np.float64).ravel()
    q = np.asarray(q, dtype=np.float64).ravel()
    if np.shape(p) != np.shape(q):
        raise ValueError(f"maps differ in size: {p.size} and {q.size}")
    if p.size == 0:
        raise ValueError("the maps are empty")
    if not (np.all(np.isfinite(p)) and np.all(np.isfinite(q))):
        raise ValueError("a map has non-finite values")
    if normalise:
        if np.any(p < 0) or np.any(q < 0):
            raise ValueError("a map has negative values")
        if p.sum() <= 0 or q.sum() <= 0:
            raise ValueError("a map has no mass")
        p, q = p / p.sum(), q / q.sum()
    return p, q


def js_divergence(p: np.ndarray, q: np.ndarray, *, base: float = 2.0) -> float:
    """Jensen-Shannon divergence (not its square root) between two maps.

    Parameters
    ----------
    p, q : ndarray of the same shape
        Non-negative maps; each is normalised to sum 1 first.
    base : float, optional
        Base of the logarithm: 2 (default) gives a value in [0, 1], ``math.e`` the reference's
        natural-log value in [0, ln 2].

    Returns
    -------
    float
        Equals ``scipy.spatial.distance.jensenshannon(p, q, base=base) ** 2``.
    """
    if not base > 0 or base == 1:
        raise ValueError(f"base must be positive and not 1, got {base}")
    p, q = _pair(p, q, normalise=True)
    m = 0.5 * (p + q)

    def _kl_to_m(x: np.ndarray) -> float:
        support = x > 0  # 0 log 0 = 0; m > 0 wherever x > 0
        return float(np.sum(x[support] * np.log(x[support] / m[support])))

    value = 0.5 * _kl_to_m(p) + 0.5 * _kl_to_m(q)
    return max(0.0, value / math.log(base))


def js_divergence_natural(p: np.ndarray, q: np.ndarray) -> float:
    """The reference's value: ``0.5 KL(p||m) + 0.5 KL(q||m)`` in natural log, in [0, ln 2]."""
    return js_divergence(p, q, base=math.e)


def js_distance(p: np.ndarray, q: np.ndarray, *, base: float = math.e) -> float:
    """Square root of the divergence, as ``scipy.spatial.distance.jensenshannon`` returns it."""
    return math.sqrt(js_divergence(p, q, base=base))


def js_base2_to_natural(value: float) -> float:
    """Convert a base-2 divergence to natural log: ``JS_nat = JS_base2 * ln 2``."""
    return value * math.log(2.0)


def js_natural_to_base2(value: float) -> float:
    """Convert a natural-log divergence to base 2: ``JS_base2 = JS_nat / ln 2``."""
    return value / math.log(2.0)


def js_band(value: float) -> str:
    """Band of a base-2 divergence: ``"minor"`` (< 0.2), ``"moderate"`` (0.2-0.5), ``"large"``."""
    if not np.isfinite(value):
        return "undefined"
    (minor_below, _), (moderate_up_to, _) = JS_BANDS
    if value < minor_below:
        return "minor"
    return "moderate" if value <= moderate_up_to else "large"


def pearson_correlation(p: np.ndarray, q: np.ndarray) -> float:
    """Pearson correlation of the two maps' cell values; NaN when either map is constant."""
    p, q = _pair(p, q, normalise=False)
    p_centred, q_centred = p - p.mean(), q - q.mean()
    denominator = math.sqrt(float(np.sum(p_centred**2)) * float(np.sum(q_centred**2)))
    if denominator == 0:
        return math.nan
    return float(np.clip(np.sum(p_centred * q_centred) / denominator, -1.0, 1.0))


def cosine_similarity(p: np.ndarray, q: np.ndarray) -> float:
    """Cosine of the angle between the two maps as vectors; NaN when either is all zeros."""
    p, q = _pair(p, q, normalise=False)
    denominator = float(np.linalg.norm(p) * np.linalg.norm(q))
    if denominator == 0:
        return math.nan
    return float(np.clip(np.dot(p, q) / denominator, -1.0, 1.0))
