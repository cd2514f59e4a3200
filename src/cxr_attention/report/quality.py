"""The quality targets of a run: the study's verdicts against chance, on the headline maps.

The targets come from the per-map metric catalogue (:mod:`cxr_attention.metrics.catalogue`); the
same metrics per map method are in :mod:`cxr_attention.report.statistics`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from cxr_attention.metrics.catalogue import QUALITY_TARGETS
from cxr_attention.report._html import as_float

__all__ = ["quality_targets"]


def quality_targets(study_summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per quality target from the study's ``summary.json``: measured value and verdict.

    Returns
    -------
    list of dict
        ``target``, ``mean``, ``ci_low``, ``ci_high`` (of the column the verdict reads, e.g. the
        inside-body lift, over the maps), ``share`` (of maps meeting the target; NaN when not
        recorded) and ``met`` (True, False or None when the summary lacks the verdict).
    """
    quality = study_summary.get("map_quality", {}) or {}
    verdicts = study_summary.get("targets_met", {}) or {}
    rows = []
    for target in QUALITY_TARGETS:
        metric = target.value_column
        share = as_float(quality.get(target.share_key, math.nan))
        if target.share_complement:
            share = 1.0 - share
        rows.append(
            {
                "target": target.words,
                "mean": as_float(quality.get(f"{metric}_mean")),
                "ci_low": as_float(quality.get(f"{metric}_ci_low")),
                "ci_high": as_float(quality.get(f"{metric}_ci_high")),
                "share": as_float(share),
                "met": verdicts.get(target.key),
            }
        )
    return rows
