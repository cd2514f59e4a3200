"""The headline numbers of a run (``metrics/summary.json``) and the study statistics' entry point.

:func:`run_study_statistics` reads the tidy tables of a run (docs/architecture.md), computes every
table of :mod:`~cxr_attention.metrics.answer_stats` and :mod:`~cxr_attention.metrics.map_stats`
and writes them with the summary. Rows are sorted and floats written with one format, so a rerun
writes byte-identical files.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cxr_attention.io import write_csv, write_json
from cxr_attention.metrics.answer_stats import accuracy_table, auroc_table, consistency_table
from cxr_attention.metrics.bootstrap import bootstrap_mean
from cxr_attention.metrics.catalogue import (
    BORDER_FRACTION,
    ENTROPY,
    INSIDE_BODY,
    MAP_METRICS,
    QUALITY_TARGETS,
)
from cxr_attention.metrics.map_stats import (
    correct_vs_incorrect_table,
    js_pairs_table,
    paired_tests_table,
)
from cxr_attention.metrics.selection import select_maps
from cxr_attention.metrics.study import bootstrap_kwargs, study_params
from cxr_attention.metrics.tables import MapStore, default_maps_npz, read_answers, read_maps

__all__ = ["run_study_statistics", "study_summary"]


def _json_number(value: Any) -> Any:
    """Plain Python numbers for JSON; NaN becomes null (JSON has no NaN)."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return None if not math.isfinite(float(value)) else float(value)
    return value


def study_summary(
    answers: pd.DataFrame,
    maps: pd.DataFrame,
    *,
    accuracy_by_strategy: pd.DataFrame,
    js_pairs: pd.DataFrame,
    consistency: pd.DataFrame,
    params: Mapping | None = None,
) -> dict[str, Any]:
    """Headline numbers of a run for ``metrics/summary.json`` (DVC metrics).

    Keys: counts (``n_images, n_subjects, n_samples, n_scored, n_maps``), ``accuracy`` (overall and
    per strategy, each with ``_ci_low``/``_ci_high``), ``js_divergence`` (mean with CI over
    patients, share per band), ``consistency``, ``map_quality`` (mean per metric, share of maps in
    each entropy band) and ``targets_met`` (booleans on the mean of the maps of the ``map_source``
    source: :data:`cxr_attention.metrics.catalogue.QUALITY_TARGETS`).
    """
    params = study_params(params)
    boot = bootstrap_kwargs(params)
    summary: dict[str, Any] = {
        "n_images": answers["dicom_id"].nunique(),
        "n_subjects": answers["subject_id"].nunique(),
        "n_samples": len(answers),
        "n_scored": int(answers["correctness"].notna().sum()),
        "n_maps": len(maps),
    }
    accuracy: dict[str, Any] = {}
    for row in accuracy_by_strategy.itertuples(index=False):
        name = "overall" if row.strategy == "all" else row.strategy
        accuracy[name] = row.accuracy
        accuracy[f"{name}_ci_low"] = row.ci_low
        accuracy[f"{name}_ci_high"] = row.ci_high
        accuracy[f"{name}_n"] = row.n
    summary["accuracy"] = accuracy

    js_summary: dict[str, Any] = {"n_pairs": len(js_pairs)}
    estimate = bootstrap_mean(js_pairs["js_divergence"], js_pairs["subject_id"], **boot)
    js_summary.update(mean=estimate.value, ci_low=estimate.ci_low, ci_high=estimate.ci_high)
    for band in ("minor", "moderate", "large"):
        share = (js_pairs["band"] == band).mean() if len(js_pairs) else math.nan
        js_summary[f"share_{band}"] = share
    summary["js_divergence"] = js_summary

    consistency_summary: dict[str, Any] = {}
    for kind in ("variants", "strategies"):
        subset = consistency[consistency["kind"] == kind]
        consistent = subset["consistent"].astype(float)
        estimate = bootstrap_mean(consistent, subset["subject_id"], **boot)
        consistency_summary[f"{kind}_consistent_share"] = estimate.value
        consistency_summary[f"{kind}_ci_low"] = estimate.ci_low
        consistency_summary[f"{kind}_ci_high"] = estimate.ci_high
        consistency_summary[f"{kind}_n_groups"] = len(subset)
        consistency_summary[f"{kind}_mean_agreement"] = (
            subset["agreement"].mean() if len(subset) else math.nan
        )
    summary["consistency"] = consistency_summary

    source = params["map_source"]
    quality_maps = select_maps(maps, source=source)
    if quality_maps.empty:  # no map of the headline source: use every map
        quality_maps = select_maps(maps)
    quality: dict[str, Any] = {"source": source, "n_maps": len(quality_maps)}
    clusters = quality_maps.drop(columns="subject_id", errors="ignore").merge(
        answers[["sample_id", "subject_id"]], on="sample_id", how="left"
    )
    for metric in MAP_METRICS:
        estimate = bootstrap_mean(
            clusters[metric], clusters["subject_id"].fillna(clusters["dicom_id"]), **boot
        )
        quality[f"{metric}_mean"] = estimate.value
        quality[f"{metric}_ci_low"] = estimate.ci_low
        quality[f"{metric}_ci_high"] = estimate.ci_high
    entropies = quality_maps["entropy"].dropna()
    for band in ENTROPY.band_names:
        share = entropies.map(ENTROPY.band_of).eq(band).mean() if len(entropies) else math.nan
        quality[f"entropy_share_{band}"] = share
    for target in (INSIDE_BODY, BORDER_FRACTION):
        quality[f"{target.column}_share_meeting_target"] = _share_where(
            quality_maps[target.column], target.meets_target
        )
    summary["map_quality"] = quality

    summary["targets_met"] = {
        target.key: target.met(quality[f"{target.metric.column}_mean"])
        for target in QUALITY_TARGETS
    }
    ent = quality["entropy_mean"]
    summary["entropy_band_of_mean"] = ENTROPY.band_of(ent)
    return _clean_json(summary)


def _share_where(values: pd.Series, condition: Callable[[float], bool]) -> float:
    values = values.dropna()
    return float(values.map(condition).mean()) if len(values) else math.nan


def _clean_json(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _clean_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean_json(v) for v in value]
    return _json_number(value)


def run_study_statistics(
    *,
    answers_csv: str | os.PathLike,
    maps_csv: str | os.PathLike,
    out_dir: str | os.PathLike,
    metrics_csv: str | os.PathLike | None = None,
    maps_npz: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
    params: Mapping[str, Any] | None = None,
) -> None:
    """Write ``summary.json`` and the tidy tables of a run's study statistics into ``out_dir``.

    Parameters
    ----------
    answers_csv, maps_csv, metrics_csv
        The gathered answers, maps and per-map metrics tables (``metrics_csv`` may be None when
        ``maps_csv`` already carries the metric columns).
    maps_npz
        The map arrays: one ``maps/shard-<k>.npz`` or a list of them. None: every
        ``maps/shard-*.npz`` of the run that ``maps_csv`` belongs to (``results/<run>/metrics/
        maps.csv`` -> ``results/<run>/maps/``), see :func:`default_maps_npz`.
    out_dir
        Receives ``summary.json, accuracy_by_strategy.csv, accuracy_by_finding.csv, auroc.csv,
        consistency.csv, js_divergence.csv, correct_vs_incorrect.csv, paired_tests.csv``.
    params
        ``seed, bootstrap_samples, confidence, map_source, reference_strategy``
        (the schema's defaults).
    """
    params = study_params(params)
    out = Path(out_dir)
    answers = read_answers(answers_csv)
    maps = read_maps(maps_csv, metrics_csv)
    accuracy_strategy = accuracy_table(answers, by=["strategy"], params=params)
    accuracy_finding = accuracy_table(answers, by=["finding", "strategy"], params=params)
    auroc = auroc_table(answers, params=params)
    consistency = consistency_table(answers)
    if maps_npz is None:
        maps_npz = default_maps_npz(maps_csv)
    with MapStore(maps_npz) as arrays:
        js_pairs = js_pairs_table(
            answers, maps, arrays, reference_strategy=params["reference_strategy"]
        )
    correct_vs_incorrect = correct_vs_incorrect_table(maps, answers)
    paired = paired_tests_table(maps, answers, source=params["map_source"])
    summary = study_summary(
        answers,
        maps,
        accuracy_by_strategy=accuracy_strategy,
        js_pairs=js_pairs,
        consistency=consistency,
        params=params,
    )
    write_csv(accuracy_strategy, out / "accuracy_by_strategy.csv")
    write_csv(accuracy_finding, out / "accuracy_by_finding.csv")
    write_csv(auroc, out / "auroc.csv")
    write_csv(consistency, out / "consistency.csv")
    write_csv(js_pairs, out / "js_divergence.csv")
    write_csv(correct_vs_incorrect, out / "correct_vs_incorrect.csv")
    write_csv(paired, out / "paired_tests.csv")
    write_json(summary, out / "summary.json")
