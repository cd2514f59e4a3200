"""The run summary's statistics sections: split, answers, per-method maps, label policies.

Everything here reads ``metrics/summary.json`` (:func:`cxr_attention.metrics.summary.
study_summary`) and the manifest; :func:`statistics_sections` gives the HTML the run summary page
places after its quality targets. Per-method rows are never pooled: each is one map source, one
method and one row choice (``decision`` | ``all``); the headline is ``answer/attention/decision``.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping
from typing import Any

import pandas as pd

from cxr_attention.metrics.catalogue import MASS_SHARE_METRICS
from cxr_attention.report._html import as_float, format_number, html_table

__all__ = ["split_sentence", "statistics_sections"]

_SPLIT_WHY = (
    "MedGemma's training data include MIMIC-CXR, so only the official test split is free of "
    "images the model may have seen in training."
)


def split_sentence(config: Mapping[str, Any], manifest: pd.DataFrame) -> str:
    """Which split(s) the run studied: the manifest's images per split and the configured ones."""
    selection = config.get("selection", {}) if isinstance(config, Mapping) else {}
    configured = selection.get("splits") if isinstance(selection, Mapping) else None
    counts = {}
    if "split" in manifest.columns and len(manifest):
        values = manifest["split"].fillna("").astype(str).replace("", "(none)")
        counts = values.value_counts().sort_index().to_dict()
    studied = ", ".join(f"{name} ({count} images)" for name, count in counts.items())
    wanted = ", ".join(str(s) for s in configured) if configured else "every split"
    text = f"Split studied: {studied or 'unknown (the manifest has no split column)'}; "
    text += f"selection.splits: {wanted}. {_SPLIT_WHY}"
    if counts and set(counts) != {"test"}:
        text += " This run includes images outside the test split."
    return text


def _percent(value: Any) -> str:
    number = as_float(value)
    return "" if math.isnan(number) else f"{100 * number:.1f}%"


def _interval(low: Any, high: Any) -> str:
    low, high = as_float(low), as_float(high)
    if math.isnan(low) or math.isnan(high):
        return ""
    return f"{format_number(low)} to {format_number(high)}"


def _answers_section(study_summary: Mapping[str, Any]) -> str:
    accuracy = study_summary.get("accuracy", {}) or {}
    consistency = study_summary.get("consistency", {}) or {}
    names = [k for k in accuracy if f"{k}_ci_low" in accuracy]
    rows = []
    for name in names:
        rows.append(
            [
                "all strategies" if name == "overall" else name,
                as_float(accuracy.get(name)),
                _interval(accuracy.get(f"{name}_ci_low"), accuracy.get(f"{name}_ci_high")),
                _percent(accuracy.get(f"{name}_unclear_rate")),
                as_float(accuracy.get(f"{name}_accuracy_answered")),
                "" if accuracy.get(f"{name}_n") is None else str(int(accuracy[f"{name}_n"])),
            ]
        )
    body = "<h2>Answers</h2>\n"
    body += (
        "<p>Accuracy counts an unclear answer as incorrect; the unclear rate and the accuracy "
        "over the yes/no answers alone stand beside it.</p>\n"
    )
    if rows:
        body += html_table(
            ["strategy", "accuracy", "95% CI", "unclear", "accuracy without unclear", "n"],
            rows,
            numeric=[False, True, True, True, True, True],
        )
    consistency_rows = [
        [
            kind,
            as_float(consistency.get(f"{kind}_consistent_share")),
            _interval(consistency.get(f"{kind}_ci_low"), consistency.get(f"{kind}_ci_high")),
            _percent(consistency.get(f"{kind}_unclear_share")),
            str(int(consistency.get(f"{kind}_n_groups") or 0)),
        ]
        for kind in ("variants", "strategies")
    ]
    body += (
        "<p>Consistency: share of question groups whose answers are all the same yes or no "
        "(an unclear answer makes a group inconsistent; variants are the baseline question's "
        "paraphrases, the plain-language question not among them).</p>\n"
    )
    body += html_table(
        ["groups", "consistent", "95% CI", "groups with an unclear answer", "groups"],
        consistency_rows,
        numeric=[False, True, True, True, True],
    )
    agreement = study_summary.get("answers", {}) or {}
    lines = [
        f"P(yes) agrees with the parsed answer (P(yes) >= 0.5 exactly when the answer is yes) in "
        f"{_percent(agreement.get('p_yes_agrees_share'))} of {agreement.get('n_compared', 0)} "
        "yes/no answers."
    ]
    if "n_low_yes_no_mass" in agreement:
        lines.append(
            f"{agreement['n_low_yes_no_mass']} answers have a low yes+no probability mass at "
            "the first answer token (flag low_yes_no_mass): their P(yes) says little."
        )
    body += "".join(f"<p>{html.escape(line)}</p>\n" for line in lines)
    return body


def _method_section(study_summary: Mapping[str, Any]) -> str:
    by_method = study_summary.get("by_method", {}) or {}
    if not by_method:
        return ""
    headers = ["source / method / rows", "maps"]
    for entry in MASS_SHARE_METRICS:
        headers += [f"{entry.column}", "area share", "lift"]
    headers += ["entropy", "JS vs baseline (base 2)", "pairs"]
    rows = []
    for key, values in by_method.items():
        quality = values.get("quality", {}) or {}
        js = values.get("js", {}) or {}
        row = [key, str(int(quality.get("n_maps") or 0))]
        for entry in MASS_SHARE_METRICS:
            row += [
                as_float(quality.get(f"{entry.column}_mean")),
                as_float(quality.get(f"{entry.area_column}_mean")),
                as_float(quality.get(f"{entry.lift_column}_mean")),
            ]
        row += [
            as_float(quality.get("entropy_mean")),
            as_float(js.get("mean")),
            str(int(js.get("n_pairs") or 0)),
        ]
        rows.append(row)
    body = "<h3>Per map method (never pooled)</h3>\n"
    body += (
        "<p>Means over the maps of one source, method and row choice (counterfactual maps left "
        "out). The area share is what a uniform map scores on the same masks; the lift is the "
        "share over it (1 = chance). The headline is answer / attention / decision.</p>\n"
    )
    body += html_table(headers, rows, numeric=[False] + [True] * (len(headers) - 1))
    fallbacks = study_summary.get("fallbacks", {}) or {}
    if fallbacks:
        body += "<p>The cascade's choice per map (single-image use): fallback rates.</p>\n"
        body += html_table(
            ["source / method", "maps", "share", "fallbacks", "fallback rate"],
            [
                [
                    key,
                    str(int(v.get("n_maps") or 0)),
                    _percent(v.get("share")),
                    str(int(v.get("n_fallback") or 0)),
                    _percent(v.get("fallback_rate")),
                ]
                for key, v in fallbacks.items()
            ],
            numeric=[False, True, True, True, True],
        )
    return body


def _label_policy_section(study_summary: Mapping[str, Any]) -> str:
    policies = study_summary.get("label_policy", {}) or {}
    if not policies:
        return ""
    rows = []
    for key, values in policies.items():
        uncertain, blank = (part.split("=", 1)[1] for part in key.split(","))
        rows.append(
            [
                uncertain,
                blank,
                "yes" if values.get("run_policy") else "",
                str(int(values.get("n") or 0)),
                as_float(values.get("accuracy")),
                _interval(values.get("ci_low"), values.get("ci_high")),
                as_float(values.get("accuracy_answered")),
            ]
        )
    body = "<h2>Label policies</h2>\n<p>The same answers scored under every policy for "
    body += "uncertain (-1) and blank labels; a blank No Finding is a negative under all.</p>\n"
    return body + html_table(
        ["uncertain as", "blank as", "this run", "n", "accuracy", "95% CI", "without unclear"],
        rows,
        numeric=[False, False, False, True, True, True, True],
    )


def statistics_sections(
    study_summary: Mapping[str, Any], config: Mapping[str, Any], manifest: pd.DataFrame
) -> str:
    """The HTML of the split sentence, answers, per-method maps and label-policy sections."""
    body = f"<p>{html.escape(split_sentence(config, manifest))}</p>\n"
    body += _method_section(study_summary)
    body += _answers_section(study_summary)
    body += _label_policy_section(study_summary)
    return body
