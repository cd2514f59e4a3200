"""Statistics per map method: never pooled across methods, with the cascade's fallback rates.

Every map statistic is computed per ``method`` and ``rows`` (``decision`` | ``all``) and per map
source; the headline is the row of :data:`cxr_attention.metrics.selection.HEADLINE_METHOD` at
:data:`~cxr_attention.metrics.selection.HEADLINE_ROWS` for the ``answer`` source. Counterfactual
maps (of terms absent from the answer) are left out (:func:`~cxr_attention.metrics.selection.
statistics_maps`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd

from cxr_attention.maps.registry import METHODS
from cxr_attention.metrics.bootstrap import bootstrap_mean
from cxr_attention.metrics.catalogue import MAP_METRICS
from cxr_attention.metrics.selection import METHOD_KEYS, select_maps, statistics_maps
from cxr_attention.metrics.study import bootstrap_kwargs, study_params

__all__ = ["fallback_table", "js_by_method_table", "map_quality_by_method_table", "method_order"]


def method_order(methods: Sequence[str]) -> list[str]:
    """Methods in the registry's order, unknown names after them (sorted)."""
    present = set(methods)
    return [m for m in METHODS if m in present] + sorted(present - set(METHODS))


def _groups(frame: pd.DataFrame) -> list[tuple[tuple[str, str, str], pd.DataFrame]]:
    """``(source, method, rows)`` groups in a fixed order: source, registry order, rows."""
    rank = {m: i for i, m in enumerate(method_order(frame["method"].astype(str).unique()))}
    keyed = []
    for (source, method, rows), group in frame.groupby(["source", *METHOD_KEYS], sort=True):
        keyed.append(((str(source), rank[str(method)], str(rows)), (source, method, rows), group))
    keyed.sort(key=lambda item: item[0])
    return [(key, group) for _, key, group in keyed]


def map_quality_by_method_table(
    maps: pd.DataFrame,
    answers: pd.DataFrame,
    *,
    metrics: Sequence[str] = MAP_METRICS,
    params: Mapping | None = None,
) -> pd.DataFrame:
    """Mean of every map metric with a patient-bootstrap CI, per source, method and rows.

    One map per sample, term, source, method and rows; counterfactual maps left out. Returns
    ``source, method, rows, n_maps, n_subjects`` and per metric ``<metric>_mean``,
    ``<metric>_ci_low``, ``<metric>_ci_high``.
    """
    params = study_params(params)
    boot = bootstrap_kwargs(params)
    kept = statistics_maps(maps)
    keys = ["sample_id", "term", "source", *METHOD_KEYS]
    kept = kept.sort_values([*keys, "map_id"], kind="mergesort").drop_duplicates(keys)
    kept = kept.drop(columns="subject_id", errors="ignore").merge(
        answers[["sample_id", "subject_id"]], on="sample_id", how="left"
    )
    clusters = kept["subject_id"].fillna(kept["dicom_id"])
    rows = []
    for (source, method, row_choice), group in _groups(kept):
        row = {"source": source, "method": method, "rows": row_choice, "n_maps": len(group)}
        row["n_subjects"] = clusters[group.index].nunique()
        for metric in metrics:
            values = group[metric] if metric in group else pd.Series(dtype=float)
            estimate = bootstrap_mean(values, clusters[group.index], **boot)
            row[f"{metric}_mean"] = estimate.value
            row[f"{metric}_ci_low"] = estimate.ci_low
            row[f"{metric}_ci_high"] = estimate.ci_high
        rows.append(row)
    columns = ["source", "method", "rows", "n_maps", "n_subjects"]
    columns += [f"{m}_{s}" for m in metrics for s in ("mean", "ci_low", "ci_high")]
    return pd.DataFrame(rows, columns=columns)


def js_by_method_table(js_pairs: pd.DataFrame, *, params: Mapping | None = None) -> pd.DataFrame:
    """Mean JS divergence (base 2) with a patient-bootstrap CI per source, method and rows.

    ``js_pairs`` is :func:`cxr_attention.metrics.map_stats.js_pairs_table` (its two maps always
    of one method). Returns ``source, method, rows, n_pairs, n_subjects, mean, ci_low,
    ci_high`` plus the share of pairs in each band column present (``band``,
    ``band_calibrated``).
    """
    params = study_params(params)
    boot = bootstrap_kwargs(params)
    rows = []
    band_columns = [c for c in ("band", "band_calibrated") if c in js_pairs.columns]
    labels = {c: sorted(js_pairs[c].dropna().astype(str).unique()) for c in band_columns}
    for (source, method, row_choice), group in _groups(js_pairs):
        estimate = bootstrap_mean(group["js_divergence"], group["subject_id"], **boot)
        row = {
            "source": source,
            "method": method,
            "rows": row_choice,
            "n_pairs": len(group),
            "n_subjects": estimate.n_clusters,
            "mean": estimate.value,
            "ci_low": estimate.ci_low,
            "ci_high": estimate.ci_high,
        }
        for column in band_columns:
            for label in labels[column]:
                row[f"{column}_share_{label}"] = float((group[column] == label).mean())
        rows.append(row)
    columns = ["source", "method", "rows", "n_pairs", "n_subjects", "mean", "ci_low", "ci_high"]
    columns += [f"{c}_share_{label}" for c in band_columns for label in labels[c]]
    return pd.DataFrame(rows, columns=columns)


def fallback_table(maps: pd.DataFrame) -> pd.DataFrame:
    """How often each method produced a map, and how often as a fallback, per source.

    A map is a fallback when earlier methods were skipped (``fallback_reason`` not blank). One
    map per sample, term and source (the cascade's choice, :func:`select_maps`), counterfactual
    maps included: the rates describe the cascade. Returns ``source, method, n_maps, share,
    n_fallback, fallback_rate`` (``share`` of the source's maps; ``fallback_rate`` of the
    method's), each source also as ``all``.
    """
    chosen = select_maps(maps)
    reason = chosen.get("fallback_reason", pd.Series("", index=chosen.index))
    chosen = chosen.assign(_fallback=reason.fillna("").astype(str).str.strip() != "")
    rows = []
    parts = [("all", chosen)] + [(str(k), g) for k, g in chosen.groupby("source", sort=True)]
    for source, part in parts:
        for method in method_order(part["method"].astype(str).unique()):
            subset = part[part["method"].astype(str) == method]
            rows.append(
                {
                    "source": source,
                    "method": method,
                    "n_maps": len(subset),
                    "share": len(subset) / len(part),
                    "n_fallback": int(subset["_fallback"].sum()),
                    "fallback_rate": float(subset["_fallback"].mean()),
                }
            )
    columns = ["source", "method", "n_maps", "share", "n_fallback", "fallback_rate"]
    return pd.DataFrame(rows, columns=columns)
