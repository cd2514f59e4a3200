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
from cxr_attention.metrics.label_policy import label_policy_table
from cxr_attention.metrics.map_stats import (
    correct_vs_incorrect_table,
    js_pairs_table,
    paired_tests_table,
)
from cxr_attention.metrics.method_stats import (
    fallback_table,
    js_by_method_table,
    map_quality_by_method_table,
)
from cxr_attention.metrics.null_bands import (
    JS_BAND_LABELS,
    calibrate_entropy,
    calibrate_js_bands,
    js_null_table,
)
from cxr_attention.metrics.selection import HEADLINE_METHOD, HEADLINE_ROWS, headline_maps
from cxr_attention.metrics.study import bootstrap_kwargs, study_params
from cxr_attention.metrics.tables import MapStore, default_maps_npz, read_answers, read_maps

__all__ = ["answer_agreement_summary", "run_study_statistics", "study_summary"]


def _json_number(value: Any) -> Any:
    """Plain Python numbers for JSON; NaN becomes null (JSON has no NaN)."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return None if not math.isfinite(float(value)) else float(value)
    return value


def _headline_pairs(js_pairs: pd.DataFrame, source: str) -> pd.DataFrame:
    """The JS pairs of the headline maps: ``source``, :data:`HEADLINE_METHOD`, decision rows."""
    if "method" not in js_pairs.columns:
        return js_pairs
    rows = js_pairs["rows"].fillna("").astype(str) if "rows" in js_pairs else ""
    keep = (js_pairs["method"] == HEADLINE_METHOD) & (js_pairs["source"] == source)
    return js_pairs[keep & pd.Series(rows, index=js_pairs.index).isin(["", HEADLINE_ROWS])]


def _accuracy_summary(accuracy_by_strategy: pd.DataFrame) -> dict[str, Any]:
    accuracy: dict[str, Any] = {}
    for row in accuracy_by_strategy.to_dict("records"):
        name = "overall" if row["strategy"] == "all" else row["strategy"]
        accuracy[name] = row["accuracy"]
        accuracy[f"{name}_ci_low"] = row["ci_low"]
        accuracy[f"{name}_ci_high"] = row["ci_high"]
        accuracy[f"{name}_n"] = row["n"]
        for key in ("unclear_rate", "unclear_ci_low", "unclear_ci_high", "accuracy_answered"):
            if key in row:
                accuracy[f"{name}_{key}"] = row[key]
    return accuracy


def _js_summary(js_pairs: pd.DataFrame, boot: Mapping[str, Any]) -> dict[str, Any]:
    js_summary: dict[str, Any] = {"n_pairs": len(js_pairs)}
    estimate = bootstrap_mean(js_pairs["js_divergence"], js_pairs["subject_id"], **boot)
    js_summary.update(mean=estimate.value, ci_low=estimate.ci_low, ci_high=estimate.ci_high)
    for band in ("minor", "moderate", "large"):
        share = (js_pairs["band"] == band).mean() if len(js_pairs) else math.nan
        js_summary[f"share_{band}"] = share
    if "band_calibrated" in js_pairs.columns:
        for band in JS_BAND_LABELS:
            share = (js_pairs["band_calibrated"] == band).mean() if len(js_pairs) else math.nan
            js_summary[f"share_{band}"] = share
        for column in ("paraphrase_q95", "image_median"):
            values = js_pairs[column].dropna()
            js_summary[f"null_{column}"] = float(values.iloc[0]) if len(values) else math.nan
    return js_summary


def answer_agreement_summary(answers: pd.DataFrame) -> dict[str, Any]:
    """How often P(yes) agrees with the parsed answer, and the yes+no mass (issue 15 item 10).

    ``p_yes_agrees_share``: of the yes/no answers with a P(yes), the share where ``p_yes >=
    0.5`` exactly when the answer is yes; ``n_low_yes_no_mass``: answers flagged
    ``low_yes_no_mass`` (the yes and no tokens held little probability: P(yes) means little).
    """
    answer = answers["answer"].astype(str).str.lower()
    p_yes = pd.to_numeric(answers.get("p_yes", pd.Series(dtype=float)), errors="coerce")
    decided = answer.isin(["yes", "no"]) & p_yes.notna()
    agrees = (p_yes[decided] >= 0.5) == (answer[decided] == "yes")
    summary: dict[str, Any] = {
        "n_compared": int(decided.sum()),
        "p_yes_agrees_share": float(agrees.mean()) if decided.any() else math.nan,
    }
    if "yes_no_mass" in answers.columns:
        mass = pd.to_numeric(answers["yes_no_mass"], errors="coerce")
        summary["yes_no_mass_mean"] = float(mass.mean()) if mass.notna().any() else math.nan
    if "low_yes_no_mass" in answers.columns:
        flag = answers["low_yes_no_mass"].astype(str).str.strip().str.lower()
        summary["n_low_yes_no_mass"] = int(flag.isin(["true", "1", "1.0"]).sum())
    return summary


def study_summary(
    answers: pd.DataFrame,
    maps: pd.DataFrame,
    *,
    accuracy_by_strategy: pd.DataFrame,
    js_pairs: pd.DataFrame,
    consistency: pd.DataFrame,
    params: Mapping | None = None,
    quality_by_method: pd.DataFrame | None = None,
    js_by_method: pd.DataFrame | None = None,
    fallbacks: pd.DataFrame | None = None,
    label_policies: pd.DataFrame | None = None,
) -> dict[str, Any]:
    """Headline numbers of a run for ``metrics/summary.json`` (DVC metrics).

    Keys: counts (``n_images, n_subjects, n_samples, n_scored, n_maps``), ``split`` (the
    manifest split(s) of the answers, when the table records them), ``accuracy`` (overall and
    per strategy, each with ``_ci_low``/``_ci_high``, the unclear rate and the accuracy without
    unclear answers), ``answers`` (:func:`answer_agreement_summary`), ``js_divergence`` (of the
    headline maps: mean with CI over patients, share per band, calibrated bands),
    ``consistency``, ``map_quality`` (the headline maps: answer maps of the decision step made by
    ``attention``; mean per metric with area shares and lifts, share of maps in each entropy
    band), ``targets_met`` (:data:`cxr_attention.metrics.catalogue.QUALITY_TARGETS` on the
    headline maps) and, when the tables are given, ``by_method`` (map quality and JS per
    ``source/method/rows``), ``fallbacks`` (per method) and ``label_policy`` (accuracy per
    uncertain x blank policy).
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
    if "split" in answers.columns:
        splits = sorted(answers["split"].fillna("").astype(str).unique())
        summary["split"] = ", ".join(s for s in splits if s) or "unknown"
    summary["accuracy"] = _accuracy_summary(accuracy_by_strategy)
    summary["answers"] = answer_agreement_summary(answers)
    source = params["map_source"]
    summary["js_divergence"] = _js_summary(_headline_pairs(js_pairs, source), boot)

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
        consistency_summary[f"{kind}_unclear_share"] = (
            float((subset["n_unclear"] > 0).mean()) if len(subset) else math.nan
        )
    summary["consistency"] = consistency_summary

    quality_maps = headline_maps(maps, source=source)
    quality: dict[str, Any] = {
        "source": source,
        "method": HEADLINE_METHOD,
        "rows": HEADLINE_ROWS,
        "n_maps": len(quality_maps),
    }
    clusters = quality_maps.drop(columns="subject_id", errors="ignore").merge(
        answers[["sample_id", "subject_id"]], on="sample_id", how="left"
    )
    for metric in MAP_METRICS:
        values = clusters[metric] if metric in clusters else pd.Series(np.nan, clusters.index)
        estimate = bootstrap_mean(
            values, clusters["subject_id"].fillna(clusters["dicom_id"]), **boot
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
    for target in QUALITY_TARGETS:
        if target.share_key and target.value_column in quality_maps:
            quality[target.share_key] = _share_where(quality_maps[target.value_column], target.test)
    summary["map_quality"] = quality

    summary["targets_met"] = {
        target.key: target.met(quality[f"{target.value_column}_{target.statistic}"])
        for target in QUALITY_TARGETS
    }
    ent = quality["entropy_mean"]
    summary["entropy_band_of_mean"] = ENTROPY.band_of(ent)
    by_method: dict[str, Any] = {}
    for table, prefix in ((quality_by_method, "quality"), (js_by_method, "js")):
        for row in [] if table is None else table.to_dict("records"):
            key = f"{row['source']}/{row['method']}/{row['rows'] or '-'}"
            values = {k: v for k, v in row.items() if k not in ("source", "method", "rows")}
            by_method.setdefault(key, {})[prefix] = values
    if by_method:
        summary["by_method"] = by_method
    if fallbacks is not None:
        summary["fallbacks"] = {
            f"{row['source']}/{row['method']}": {
                k: row[k] for k in ("n_maps", "share", "n_fallback", "fallback_rate")
            }
            for row in fallbacks.to_dict("records")
        }
    if label_policies is not None:
        summary["label_policy"] = {
            f"uncertain={row['uncertain']},blank={row['blank']}": {
                k: v for k, v in row.items() if k not in ("uncertain", "blank", "uncertain_as")
            }
            for row in label_policies.to_dict("records")
        }
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
        consistency.csv, js_divergence.csv, correct_vs_incorrect.csv, paired_tests.csv,
        map_quality_by_method.csv, js_by_method.csv, js_null.csv, entropy_null.csv,
        fallbacks.csv, label_policy.csv``.
    params
        ``seed, bootstrap_samples, confidence, map_source, reference_strategy`` (the schema's
        defaults) and, optionally, ``label_policy`` (the run's ``(uncertain, blank)``).
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
        js_null = js_null_table(answers, maps, arrays)
    js_pairs = calibrate_js_bands(js_pairs, js_null)
    correct_vs_incorrect = correct_vs_incorrect_table(maps, answers)
    paired = paired_tests_table(maps, answers, source=params["map_source"])
    quality_by_method = map_quality_by_method_table(maps, answers, params=params)
    js_by_method = js_by_method_table(js_pairs, params=params)
    fallbacks = fallback_table(maps)
    run_policy = tuple(params.get("label_policy") or ("", ""))
    label_policies = label_policy_table(answers, params=params, run_policy=run_policy)
    summary = study_summary(
        answers,
        maps,
        accuracy_by_strategy=accuracy_strategy,
        js_pairs=js_pairs,
        consistency=consistency,
        params=params,
        quality_by_method=quality_by_method,
        js_by_method=js_by_method,
        fallbacks=fallbacks,
        label_policies=label_policies,
    )
    write_csv(accuracy_strategy, out / "accuracy_by_strategy.csv")
    write_csv(accuracy_finding, out / "accuracy_by_finding.csv")
    write_csv(auroc, out / "auroc.csv")
    write_csv(consistency, out / "consistency.csv")
    write_csv(js_pairs, out / "js_divergence.csv")
    write_csv(correct_vs_incorrect, out / "correct_vs_incorrect.csv")
    write_csv(paired, out / "paired_tests.csv")
    write_csv(quality_by_method, out / "map_quality_by_method.csv")
    write_csv(js_by_method, out / "js_by_method.csv")
    write_csv(js_null, out / "js_null.csv")
    write_csv(calibrate_entropy(maps, answers), out / "entropy_null.csv")
    write_csv(fallbacks, out / "fallbacks.csv")
    write_csv(label_policies, out / "label_policy.csv")
    write_json(summary, out / "summary.json")
