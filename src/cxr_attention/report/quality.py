"""The quality targets of a run: the study's verdicts, and the same targets per map method.

Both read their targets from the per-map metric catalogue (:mod:`cxr_attention.metrics.catalogue`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pandas as pd

from cxr_attention.figures._style import METHODS
from cxr_attention.metrics.catalogue import BORDER_FRACTION, ENTROPY, INSIDE_BODY, QUALITY_TARGETS
from cxr_attention.report._html import as_float

__all__ = ["method_quality", "quality_targets"]


def quality_targets(study_summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per quality target from the study's ``summary.json``: measured value and verdict.

    Returns
    -------
    list of dict
        ``target``, ``mean``, ``ci_low``, ``ci_high`` (of the metric over the maps), ``share``
        (of maps meeting the target; NaN when not recorded) and ``met`` (True, False or None when
        the summary lacks the verdict).
    """
    quality = study_summary.get("map_quality", {}) or {}
    verdicts = study_summary.get("targets_met", {}) or {}
    rows = []
    for target in QUALITY_TARGETS:
        metric = target.metric.column
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


def method_quality(maps: pd.DataFrame) -> pd.DataFrame:
    """The quality targets per map method, from the gathered maps table with metric columns.

    Returns
    -------
    DataFrame
        One row per method (cascade order, then others): ``method, maps, inside_body_mean,
        inside_body_meeting, border_fraction_mean, border_fraction_meeting, entropy_mean,
        entropy_focused, entropy_diffuse`` (shares of that method's maps with a value).
    """
    needed = {"method", "inside_body", "border_fraction", "entropy"}
    columns = [
        "method",
        "maps",
        "inside_body_mean",
        "inside_body_meeting",
        "border_fraction_mean",
        "border_fraction_meeting",
        "entropy_mean",
        "entropy_focused",
        "entropy_diffuse",
    ]
    if not needed <= set(maps.columns) or maps.empty:
        return pd.DataFrame(columns=columns)
    present = set(maps["method"].astype(str))
    order = [m for m in METHODS if m in present] + sorted(present - set(METHODS))
    focused, _, diffuse = ENTROPY.band_names
    rows = []
    for method in order:
        subset = maps[maps["method"].astype(str) == method]
        inside = pd.to_numeric(subset["inside_body"], errors="coerce").dropna()
        border = pd.to_numeric(subset["border_fraction"], errors="coerce").dropna()
        entropy = pd.to_numeric(subset["entropy"], errors="coerce").dropna()
        rows.append(
            {
                "method": method,
                "maps": len(subset),
                "inside_body_mean": _mean(inside),
                "inside_body_meeting": _mean(inside.map(INSIDE_BODY.meets_target)),
                "border_fraction_mean": _mean(border),
                "border_fraction_meeting": _mean(border.map(BORDER_FRACTION.meets_target)),
                "entropy_mean": _mean(entropy),
                "entropy_focused": _mean(entropy.map(ENTROPY.band_of) == focused),
                "entropy_diffuse": _mean(entropy.map(ENTROPY.band_of) == diffuse),
            }
        )
    return pd.DataFrame(rows, columns=columns)


def _mean(values: pd.Series) -> float:
    return float(values.mean()) if len(values) else math.nan
