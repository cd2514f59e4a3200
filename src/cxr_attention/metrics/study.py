"""The study's statistics settings: their defaults and the order in which map methods are preferred.

The statistics themselves: :mod:`~cxr_attention.metrics.bootstrap` (intervals),
:mod:`~cxr_attention.metrics.tables` (reading a run's tables),
:mod:`~cxr_attention.metrics.answer_stats`, :mod:`~cxr_attention.metrics.map_stats` and
:mod:`~cxr_attention.metrics.summary` (``summary.json`` and the workflow entry point).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["DEFAULT_PARAMS", "METHOD_PREFERENCE", "bootstrap_kwargs", "study_params"]

#: When one sample has several maps of one term and source (several methods were computed), the
#: statistics compare the first available in this order: the cascade's own order.
METHOD_PREFERENCE = ("attention", "attention_gated", "gradcam", "activation_norm", "uniform")

#: Defaults of ``params`` (config: ``seed``, ``metrics.bootstrap_samples``, ``metrics.confidence``).
DEFAULT_PARAMS: dict[str, Any] = {
    "seed": 0,
    "bootstrap_samples": 2000,
    "confidence": 0.95,
    "map_source": "answer",
    "reference_strategy": "baseline",
}


def study_params(params: Mapping[str, Any] | None) -> dict[str, Any]:
    """``params`` over :data:`DEFAULT_PARAMS` (``n_boot`` is accepted for ``bootstrap_samples``)."""
    merged = dict(DEFAULT_PARAMS)
    merged.update(params or {})
    if "n_boot" in merged:  # accepted alias
        merged["bootstrap_samples"] = merged.pop("n_boot")
    return merged


def bootstrap_kwargs(params: Mapping[str, Any]) -> dict[str, Any]:
    """The bootstrap keywords (``n_boot, confidence, seed``) of merged study params."""
    return {
        "n_boot": int(params["bootstrap_samples"]),
        "confidence": float(params["confidence"]),
        "seed": int(params["seed"]),
    }
