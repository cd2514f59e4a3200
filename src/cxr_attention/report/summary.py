"""The one-page summary of a run: config, model, data version, counts, failures, quality targets.

:func:`summarise_run` gathers the facts from the run's tables into plain data;
:func:`render_run_summary` turns them into a self-contained HTML page for the Snakemake report;
:func:`write_run_summary` reads the run's files and writes the page.
"""

from __future__ import annotations

import hashlib
import html
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from cxr_attention.io import read_table, write_html
from cxr_attention.report._html import as_float, format_number, html_page, html_table
from cxr_attention.report.quality import quality_targets
from cxr_attention.report.statistics import statistics_sections

__all__ = [
    "fingerprint",
    "render_run_summary",
    "summarise_run",
    "write_run_summary",
]

MAX_ANSWER_ROWS = 20
"""Distinct answers listed on the page at most: sentence answers are nearly all distinct, and the
page is embedded in the report, whose size must not grow with the study (issue 21)."""


def fingerprint(path: str | os.PathLike) -> dict[str, str]:
    """How to tell this version of an input: DVC's recorded md5, else the file's own md5.

    A ``<path>.dvc`` file beside the input (``dvc add``) gives the md5 DVC tracks (for a folder,
    its ``.dir`` listing's md5). Otherwise a file's md5 is computed; a folder without a ``.dvc``
    file is not hashed (a MIMIC-CXR download is hundreds of gigabytes).

    Returns
    -------
    dict
        ``path``, ``md5`` (blank when unknown) and ``source`` (how the md5 was obtained).
    """
    path = Path(path)
    dvc_file = path.with_name(path.name + ".dvc")
    if dvc_file.is_file():
        outs = (yaml.safe_load(dvc_file.read_text()) or {}).get("outs") or [{}]
        md5 = str(outs[0].get("md5", ""))
        return {"path": str(path), "md5": md5, "source": f"DVC ({dvc_file.name})"}
    if path.is_file():
        digest = hashlib.md5(usedforsecurity=False)
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        return {"path": str(path), "md5": digest.hexdigest(), "source": "md5 of the file"}
    if path.is_dir():
        return {"path": str(path), "md5": "", "source": "folder without a .dvc file (not hashed)"}
    return {"path": str(path), "md5": "", "source": "absent"}


def summarise_run(
    *,
    config: Mapping[str, Any],
    study_summary: Mapping[str, Any],
    manifest: pd.DataFrame,
    questions: pd.DataFrame,
    answers: pd.DataFrame,
    maps: pd.DataFrame,
    failures: pd.DataFrame,
    exclusions: pd.DataFrame,
    preprocess: pd.DataFrame,
    changed_settings: Mapping[str, Any],
    provenance: Mapping[str, Any],
    data_version: Sequence[Mapping[str, str]] = (),
) -> dict[str, Any]:
    """Everything the run summary page shows, as plain data (no formatting).

    Parameters
    ----------
    config : mapping
        The run's config (Snakemake's ``config``).
    study_summary : mapping
        ``metrics/summary.json`` (:func:`cxr_attention.metrics.summary.study_summary`).
    manifest, questions, answers, maps, failures : DataFrame
        ``manifest.csv``, ``questions.csv``, the gathered answers and maps tables (the maps table
        with the per-map metric columns) and ``failures.csv``.
    exclusions : DataFrame
        ``exclusions.csv``: images the selection left out or that no answer can score.
    preprocess : DataFrame
        The preprocess shard tables joined (``mask_ok``, ``mask_flags``).
    changed_settings : mapping
        Every config key that differs from the schema's default
        (:func:`cxr_attention.settings.config_differences`).
    provenance : mapping
        ``git_commit`` and ``packages`` (:func:`cxr_attention.settings.run_provenance`).
    data_version : sequence of dict
        :func:`fingerprint` of each input that identifies the data.

    Returns
    -------
    dict
        Keys ``run, model, config, changed_settings, provenance, warnings, data_version,
        counts, exclusions, answers, methods, failures, targets, statistics_html, headline``.
    """
    flagged = _flagged_masks(preprocess)
    scored = _scored_answers(answers)
    counts = {
        "images": len(manifest),
        "subjects": _nunique(manifest, "subject_id"),
        "studies": _nunique(manifest, "study_id"),
        "questions": len(questions),
        "samples (image, question)": len(answers),
        "maps": len(maps),
        "failures": len(failures),
        "excluded images (exclusions.csv)": len(exclusions),
        "images with a flagged lung mask (out of the lung metrics)": flagged,
        "answers that can be scored": scored,
    }
    failure_counts = (
        failures.groupby(["stage", "error_type"], sort=True).size().reset_index(name="count")
        if {"stage", "error_type"} <= set(failures.columns) and len(failures)
        else pd.DataFrame(columns=["stage", "error_type", "count"])
    )
    accuracy = study_summary.get("accuracy", {}) or {}
    js = study_summary.get("js_divergence", {}) or {}
    headline = {
        "accuracy, all strategies": (
            as_float(accuracy.get("overall")),
            as_float(accuracy.get("overall_ci_low")),
            as_float(accuracy.get("overall_ci_high")),
        ),
        "Jensen-Shannon divergence vs baseline (base 2), mean": (
            as_float(js.get("mean")),
            as_float(js.get("ci_low")),
            as_float(js.get("ci_high")),
        ),
    }
    model = config.get("model", {})
    return {
        "run": str(config.get("run", "")),
        "model": model.get("id", "") if isinstance(model, Mapping) else str(model),
        "config": dict(config),
        "changed_settings": dict(changed_settings),
        "provenance": dict(provenance),
        "warnings": _warnings(counts=counts, scored=scored, maps=maps),
        "exclusions": _value_counts(exclusions, "reason"),
        "data_version": [dict(v) for v in data_version],
        "counts": counts,
        "answers": _value_counts(answers, "answer", limit=MAX_ANSWER_ROWS),
        "strategies": _value_counts(answers, "strategy"),
        "methods": _value_counts(maps, "method"),
        "failures": failure_counts,
        "targets": quality_targets(study_summary),
        "statistics_html": statistics_sections(study_summary, config, manifest),
        "headline": headline,
        "quality_source": (study_summary.get("map_quality", {}) or {}).get("source", ""),
    }


def render_run_summary(summary: Mapping[str, Any]) -> str:
    """The summary of :func:`summarise_run` as a self-contained HTML page (no scripts)."""
    parts = []
    for warning in summary["warnings"]:
        parts.append(f'<p class="warning"><strong>Warning:</strong> {html.escape(warning)}</p>\n')
    parts.append(summary.get("first_section", ""))  # e.g. the known-answer table
    parts.append("<h2>Quality targets</h2>\n")
    source = summary.get("quality_source") or "all"
    parts.append(
        f"<p>Mean over the answer maps of source <code>{source}</code> made by attention at the "
        "decision step, with its 95% bootstrap interval (patients resampled). Each target asks "
        "for more than a uniform map scores (a lift above or below 1, an entropy below a uniform "
        "map's), and is met when the whole interval does.</p>\n"
    )
    target_rows, target_classes = [], []
    for row in summary["targets"]:
        verdict, css = {True: ("met", "met"), False: ("not met", "unmet")}.get(
            row["met"], ("n/a", "na")
        )
        target_rows.append(
            [
                row["target"],
                row["mean"],
                _interval(row["ci_low"], row["ci_high"]),
                _percent(row["share"]),
                verdict,
            ]
        )
        target_classes.append([None, None, None, None, css])
    parts.append(
        html_table(
            ["target", "mean", "95% CI", "maps meeting it", "verdict"],
            target_rows,
            numeric=[False, True, True, True, False],
            cell_classes=target_classes,
        )
    )
    parts.append(summary["statistics_html"])

    parts.append("<h2>Headline numbers</h2>\n")
    parts.append(
        html_table(
            ["quantity", "value", "95% CI"],
            [
                [name, value, _interval(low, high)]
                for name, (value, low, high) in summary["headline"].items()
            ],
            numeric=[False, True, True],
        )
    )

    parts.append("<h2>Counts</h2>\n")
    parts.append(html_table(["what", "count"], summary["counts"].items(), numeric=[False, True]))
    for title, key, column in (
        ("Excluded images, by reason", "exclusions", "reason"),
        ("Answers", "answers", "answer"),
        ("Samples per strategy", "strategies", "strategy"),
        ("Maps per method", "methods", "method"),
    ):
        if summary[key]:
            parts.append(f"<h3>{title}</h3>\n")
            parts.append(html_table([column, "count"], summary[key].items(), numeric=[False, True]))

    parts.append("<h2>Failures</h2>\n")
    failures = summary["failures"]
    if len(failures):
        parts.append(
            html_table(
                ["stage", "error type", "count"],
                failures[["stage", "error_type", "count"]].itertuples(index=False),
                numeric=[False, False, True],
            )
        )
        parts.append("<p>Each failed input is listed in <code>failures.csv</code>.</p>\n")
    else:
        parts.append("<p>No input failed.</p>\n")

    parts.append("<h2>Data version</h2>\n")
    if summary["data_version"]:
        parts.append(
            html_table(
                ["input", "md5", "from"],
                [[v["path"], v["md5"] or "-", v["source"]] for v in summary["data_version"]],
            )
        )
    else:
        parts.append("<p>No input fingerprints recorded.</p>\n")

    parts.append("<h2>Settings that differ from the defaults</h2>\n")
    changed = summary["changed_settings"]
    if changed:
        parts.append(
            html_table(
                ["key", "value"],
                [[key, json.dumps(value, default=str)] for key, value in changed.items()],
            )
        )
    else:
        parts.append("<p>Every setting has its default (config/config.schema.json).</p>\n")

    parts.append("<h2>Code and packages</h2>\n")
    provenance = summary["provenance"]
    parts.append(
        f"<p>git commit <code>{html.escape(str(provenance.get('git_commit') or 'unknown'))}"
        "</code></p>\n"
    )
    packages = provenance.get("packages") or {}
    if packages:
        parts.append(html_table(["package", "version"], sorted(packages.items())))

    parts.append("<h2>Configuration</h2>\n")
    config_text = yaml.safe_dump(
        json.loads(json.dumps(summary["config"], default=str)), sort_keys=True
    )
    parts.append(f"<pre>{html.escape(config_text)}</pre>\n")

    lead = f"Run {summary['run'] or '(unnamed)'}; model {summary['model'] or '(not set)'}."
    return html_page(f"Run summary: {summary['run']}", "".join(parts), lead=lead)


def write_run_summary(
    *,
    out_html: str | os.PathLike,
    config: Mapping[str, Any],
    manifest_csv: str | os.PathLike,
    questions_csv: str | os.PathLike,
    answers_csv: str | os.PathLike,
    maps_csv: str | os.PathLike,
    failures_csv: str | os.PathLike,
    summary_json: str | os.PathLike,
    exclusions_csv: str | os.PathLike,
    preprocess_csvs: Sequence[str | os.PathLike],
    changed_settings: Mapping[str, Any],
    provenance: Mapping[str, Any],
    fingerprint_paths: Sequence[str | os.PathLike] = (),
    first_section: str = "",
) -> Path:
    """Read a run's tables and write its summary page (atomically).

    Parameters
    ----------
    out_html : path-like
        Page to write, e.g. ``results/<run>/report/summary.html``.
    config : mapping
        The run's config.
    manifest_csv, questions_csv, answers_csv, maps_csv, failures_csv, summary_json : path-like
        The run's tables (docs/architecture.md); ``maps_csv`` is the gathered maps table with the
        per-map metric columns.
    exclusions_csv : path-like
        ``exclusions.csv`` beside the manifest.
    preprocess_csvs : sequence of path-like
        The preprocess shard tables (lung-mask flags).
    changed_settings, provenance : mapping
        See :func:`summarise_run`.
    fingerprint_paths : sequence of path-like
        Inputs identifying the data version; default the manifest and the questions table.
    first_section : str
        An HTML fragment shown before any other number (the known-answer table).

    Returns
    -------
    Path
        ``out_html``.
    """
    tables = {
        name: read_table(path)
        for name, path in {
            "manifest": manifest_csv,
            "questions": questions_csv,
            "answers": answers_csv,
            "maps": maps_csv,
            "failures": failures_csv,
        }.items()
    }
    study_summary = json.loads(Path(summary_json).read_text())
    paths = list(fingerprint_paths) or [manifest_csv, questions_csv]
    preprocess = [read_table(path) for path in preprocess_csvs]
    summary = summarise_run(
        config=config,
        study_summary=study_summary,
        exclusions=read_table(exclusions_csv),
        preprocess=pd.concat(preprocess, ignore_index=True) if preprocess else pd.DataFrame(),
        changed_settings=changed_settings,
        provenance=provenance,
        data_version=[fingerprint(p) for p in paths],
        **tables,
    )
    summary["first_section"] = first_section
    out_html = Path(out_html)
    write_html(render_run_summary(summary), out_html)
    return out_html


def _flagged_masks(preprocess: pd.DataFrame) -> int:
    """Images whose lung mask failed a quality check (``mask_flags`` not blank)."""
    if "mask_flags" not in preprocess.columns:
        return 0
    flags = preprocess["mask_flags"].fillna("").astype(str).str.strip()
    return int((flags != "").sum())


def _scored_answers(answers: pd.DataFrame) -> int:
    """Answers with an expected answer (``correct`` not blank): what accuracy is computed on."""
    if "correct" not in answers.columns:
        return 0
    correct = answers["correct"]
    return int((correct.notna() & (correct.astype(str).str.strip() != "")).sum())


def _warnings(*, counts: Mapping[str, int], scored: int, maps: pd.DataFrame) -> list[str]:
    """What a reader must see before any number: steps that left nothing to measure."""
    warnings = []
    if counts["images"] == 0:
        warnings.append("the manifest is empty: no image passed the selection (exclusions.csv).")
    if counts["samples (image, question)"] and scored == 0:
        warnings.append(
            "no answer can be scored: no sample has an expected answer (check the labels and "
            "questions.uncertain / questions.blank); accuracy and AUROC are empty."
        )
    if counts["samples (image, question)"] and maps.empty:
        warnings.append("no map was made: every map statistic is empty (failures.csv).")
    return warnings


def _nunique(frame: pd.DataFrame, column: str) -> int:
    return int(frame[column].nunique()) if column in frame.columns else 0


def _value_counts(frame: pd.DataFrame, column: str, limit: int | None = None) -> dict[str, int]:
    """Rows per value of ``column``, by value; past ``limit`` values, the ``limit`` most frequent
    (ties by value) and one row counting the rest."""
    if column not in frame.columns:
        return {}
    counts = frame[column].fillna("(blank)").astype(str).value_counts()
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    if limit is None or len(ranked) <= limit:
        return {str(k): int(v) for k, v in sorted(counts.items())}
    kept = {str(k): int(v) for k, v in sorted(ranked[:limit])}
    rest = ranked[limit:]
    kept[f"(other: {len(rest)} distinct values)"] = int(sum(v for _, v in rest))
    return kept


def _interval(low: float, high: float) -> str:
    if math.isnan(low) or math.isnan(high):
        return ""
    return f"{format_number(low)} to {format_number(high)}"


def _percent(value: float) -> str:
    return "" if value is None or math.isnan(value) else f"{100 * value:.1f}%"
