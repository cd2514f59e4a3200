"""The study's statistics settings: the schema's defaults and the analysis's fixed choices.

The statistics themselves: :mod:`~cxr_attention.metrics.bootstrap` (intervals),
:mod:`~cxr_attention.metrics.tables` (reading a run's tables),
:mod:`~cxr_attention.metrics.answer_stats`, :mod:`~cxr_attention.metrics.map_stats` and
:mod:`~cxr_attention.metrics.summary` (``summary.json`` and the workflow entry point).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cxr_attention.settings import schema_defaults

__all__ = ["ANALYSIS_CHOICES", "bootstrap_kwargs", "study_params"]

#: Fixed choices of the analysis, not configuration: the statistics compare answer maps, and
#: paraphrases with the baseline question.
ANALYSIS_CHOICES: dict[str, Any] = {"map_source": "answer", "reference_strategy": "baseline"}


def study_params(params: Mapping[str, Any] | None) -> dict[str, Any]:
    """``params`` over the schema's ``seed`` and ``metrics`` defaults and :data:`ANALYSIS_CHOICES`
    (``n_boot`` is accepted for ``bootstrap_samples``)."""
    defaults = schema_defaults()
    merged = {"seed": defaults["seed"], **defaults["metrics"], **ANALYSIS_CHOICES}
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
