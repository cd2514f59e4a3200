"""The reference paper's statistics, computed on our run and set beside the paper's numbers.

A *question group* is one baseline question on one image together with its meaning-preserving
variants (the rows of the answers table whose ``baseline_question_id`` is that question; the
``plain`` strategy is not a variant). Per group:

- consistency = share of the variants that give the baseline question's answer (the baseline
  itself is not counted); a group is *perfect* when that share is 1, else *variable*;
- per variant, the flip direction (``correct_to_incorrect``, ``incorrect_to_correct``,
  ``stays_correct``, ``stays_incorrect``, ``unknown`` without an expected answer) and the change of
  the answer map from the baseline's: Jensen-Shannon divergence in base 2 (our unit, [0, 1]), the
  same in natural log (``JS_nat = JS_base2 * ln 2``), the square root of the latter (what
  ``scipy.spatial.distance.jensenshannon`` returns), Pearson correlation and cosine similarity.

``config/paper_reference.yaml`` holds the paper's headline values and, per row, which statistic
and which JS convention reproduce it; :func:`paper_comparison` computes ours with 95% bootstrap
intervals (images resampled for image-level rows, question groups for group- and pair-level rows).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from cxr_attention.io import ConfigError, write_csv
from cxr_attention.metrics.bootstrap import Estimate, bootstrap_mean, bootstrap_sd
from cxr_attention.metrics.pairwise import (
    cosine_similarity,
    js_divergence_natural,
    js_natural_to_base2,
    pearson_correlation,
)
from cxr_attention.metrics.selection import headline_maps
from cxr_attention.metrics.study import bootstrap_kwargs, study_params
from cxr_attention.metrics.tables import MapStore, default_maps_npz, read_answers, read_maps

__all__ = [
    "COMPARISON_COLUMNS",
    "MAP_CHANGE_MEASURES",
    "STATISTICS",
    "agreement_sentence",
    "group_table",
    "load_reference",
    "pairs_table",
    "paper_comparison",
    "run_paper_comparison",
    "variant_accuracy_table",
]

COMPARISON_COLUMNS = ["quantity", "paper_value", "ours", "ci_low", "ci_high", "n"]

#: Map-change columns of :func:`pairs_table` a reference row may name as its ``measure``.
MAP_CHANGE_MEASURES = ("js_base2", "js_natural", "js_distance_natural", "pearson", "cosine")

#: Statistics a reference row may name (see config/paper_reference.yaml and docs/metrics.md).
STATISTICS = (
    "accuracy_baseline",
    "groups_count",
    "variations_count",
    "consistency_mean",
    "consistency_sd",
    "groups_perfect_count",
    "groups_perfect_share",
    "groups_variable_count",
    "groups_variable_share",
    "map_change_mean",
    "map_change_sd",
    "inside_body_mean",
)

FLIP_DIRECTIONS = (
    "correct_to_incorrect",
    "incorrect_to_correct",
    "stays_correct",
    "stays_incorrect",
    "unknown",
)

PAPER_DEFAULTS = {"excluded_variant_strategies": ("plain",)}


def _slug(text: str) -> str:
    """``"Lung Opacity"`` and ``"lung_opacity"`` alike become ``lung_opacity``."""
    return "_".join("".join(c if c.isalnum() else " " for c in str(text).lower()).split())


# --------------------------------------------------------------------------- tables


def _answer_maps(maps: pd.DataFrame, source: str) -> pd.DataFrame:
    """One map per sample: the headline map of ``source`` (``attention``, decision step), the
    first term (:func:`cxr_attention.metrics.selection.headline_maps`)."""
    return headline_maps(maps, source=source, one_per="sample").set_index("sample_id")


def pairs_table(
    answers: pd.DataFrame,
    maps: pd.DataFrame | None = None,
    arrays: Mapping[str, np.ndarray] | MapStore | None = None,
    *,
    params: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """One row per (baseline question, variant) pair on one image, with the map change.

    Parameters
    ----------
    answers : DataFrame
        Answers table as read by :func:`cxr_attention.metrics.tables.read_answers`.
    maps, arrays
        Maps table and arrays by ``map_id`` (optional: without them the map columns are NaN).
    params
        ``reference_strategy`` (the baseline strategy, default ``baseline``), ``map_source``
        (default ``answer``), ``excluded_variant_strategies`` (default ``["plain"]``).

    Returns
    -------
    DataFrame
        ``group_id, dicom_id, subject_id, finding, baseline_question_id, question_id,
        variant_kind, strategy, baseline_answer, answer, same_answer, baseline_correct,
        variant_correct, direction, map_id_baseline, map_id_variant, js_base2, js_natural,
        js_distance_natural, pearson, cosine``.
    """
    params = {**PAPER_DEFAULTS, **study_params(params)}
    excluded = set(params["excluded_variant_strategies"])
    baseline_rows = answers[answers["strategy"] == params["reference_strategy"]]
    chosen_maps = _answer_maps(maps, params["map_source"]) if maps is not None else pd.DataFrame()
    by_image = {k: g for k, g in answers.groupby("dicom_id", sort=True)}
    rows = []
    for base in baseline_rows.sort_values(["dicom_id", "question_id"]).itertuples(index=False):
        image_rows = by_image[base.dicom_id]
        variants = image_rows[
            (image_rows["baseline_question_id"] == base.question_id)
            & (image_rows["question_id"] != base.question_id)
            & ~image_rows["strategy"].isin(excluded)
        ].sort_values("question_id")
        base_map_id = _map_id(chosen_maps, base.sample_id, arrays)
        for variant in variants.itertuples(index=False):
            variant_map_id = _map_id(chosen_maps, variant.sample_id, arrays)
            rows.append(
                {
                    "group_id": f"{base.dicom_id}__{base.question_id}",
                    "dicom_id": base.dicom_id,
                    "subject_id": base.subject_id,
                    "finding": base.finding,
                    "baseline_question_id": base.question_id,
                    "question_id": variant.question_id,
                    "variant_kind": variant.variant_kind,
                    "strategy": variant.strategy,
                    "baseline_answer": str(base.answer).lower(),
                    "answer": str(variant.answer).lower(),
                    "same_answer": str(base.answer).lower() == str(variant.answer).lower(),
                    "baseline_correct": base.correctness,
                    "variant_correct": variant.correctness,
                    "direction": _direction(base.correctness, variant.correctness),
                    "map_id_baseline": base_map_id,
                    "map_id_variant": variant_map_id,
                    **_map_change(arrays, base_map_id, variant_map_id),
                }
            )
    columns = ["group_id", "dicom_id", "subject_id", "finding", "baseline_question_id"]
    columns += ["question_id", "variant_kind", "strategy", "baseline_answer", "answer"]
    columns += ["same_answer", "baseline_correct", "variant_correct", "direction"]
    columns += ["map_id_baseline", "map_id_variant", *MAP_CHANGE_MEASURES]
    return pd.DataFrame(rows, columns=columns)


def _map_id(chosen: pd.DataFrame, sample_id: str, arrays: Any) -> str:
    if arrays is None or chosen.empty or sample_id not in chosen.index:
        return ""
    map_id = chosen.at[sample_id, "map_id"]
    return map_id if map_id in arrays else ""


def _direction(baseline_correct: float, variant_correct: float) -> str:
    if not (np.isfinite(baseline_correct) and np.isfinite(variant_correct)):
        return "unknown"
    if baseline_correct == 1:
        return "stays_correct" if variant_correct == 1 else "correct_to_incorrect"
    return "incorrect_to_correct" if variant_correct == 1 else "stays_incorrect"


def _map_change(arrays: Any, map_a: str, map_b: str) -> dict[str, float]:
    if not map_a or not map_b:
        return dict.fromkeys(MAP_CHANGE_MEASURES, math.nan)
    p, q = arrays[map_a], arrays[map_b]
    natural = js_divergence_natural(p, q)
    return {
        "js_base2": js_natural_to_base2(natural),  # the same divergence, not computed twice
        "js_natural": natural,
        "js_distance_natural": math.sqrt(natural),
        "pearson": pearson_correlation(p, q),
        "cosine": cosine_similarity(p, q),
    }


def group_table(pairs: pd.DataFrame) -> pd.DataFrame:
    """Consistency per question group from :func:`pairs_table`.

    Returns ``group_id, dicom_id, subject_id, finding, baseline_question_id, baseline_answer,
    baseline_correct, n_variants, n_same, consistency, perfect, n_flips_correct_to_incorrect,
    n_flips_incorrect_to_correct``.
    """
    rows = []
    for group_id, group in pairs.groupby("group_id", sort=True):
        first = group.iloc[0]
        n_same = int(group["same_answer"].sum())
        rows.append(
            {
                "group_id": group_id,
                "dicom_id": first["dicom_id"],
                "subject_id": first["subject_id"],
                "finding": first["finding"],
                "baseline_question_id": first["baseline_question_id"],
                "baseline_answer": first["baseline_answer"],
                "baseline_correct": first["baseline_correct"],
                "n_variants": len(group),
                "n_same": n_same,
                "consistency": n_same / len(group),
                "perfect": n_same == len(group),
                "n_flips_correct_to_incorrect": int(
                    (group["direction"] == "correct_to_incorrect").sum()
                ),
                "n_flips_incorrect_to_correct": int(
                    (group["direction"] == "incorrect_to_correct").sum()
                ),
            }
        )
    columns = ["group_id", "dicom_id", "subject_id", "finding", "baseline_question_id"]
    columns += ["baseline_answer", "baseline_correct", "n_variants", "n_same", "consistency"]
    columns += ["perfect", "n_flips_correct_to_incorrect", "n_flips_incorrect_to_correct"]
    return pd.DataFrame(rows, columns=columns)


def variant_accuracy_table(answers: pd.DataFrame, pairs: pd.DataFrame) -> pd.DataFrame:
    """Accuracy per variant strategy (``variant_kind``), the baseline questions as ``baseline``.

    Returns ``variant_kind, accuracy, n, n_correct`` (answers without an expected one left out).
    """
    frames = [pairs[["variant_kind", "variant_correct"]].rename(columns={"variant_correct": "c"})]
    baseline_ids = pairs.drop_duplicates("group_id")
    frames.append(
        pd.DataFrame({"variant_kind": "baseline", "c": baseline_ids["baseline_correct"].to_numpy()})
    )
    scored = pd.concat(frames, ignore_index=True).dropna(subset=["c"])
    rows = [
        {
            "variant_kind": kind or "(none)",
            "accuracy": float(group["c"].mean()),
            "n": len(group),
            "n_correct": int(group["c"].sum()),
        }
        for kind, group in scored.groupby("variant_kind", sort=True)
    ]
    return pd.DataFrame(rows, columns=["variant_kind", "accuracy", "n", "n_correct"])


# --------------------------------------------------------------------------- comparison


def load_reference(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Rows (``quantities``) of ``config/paper_reference.yaml``, checked against STATISTICS."""
    data = yaml.safe_load(Path(path).read_text())
    if not isinstance(data, dict) or not isinstance(data.get("quantities"), list):
        raise ConfigError(f"{path}: expected a mapping with a 'quantities' list")
    rows = data["quantities"]
    for row in rows:
        for key in ("quantity", "statistic"):
            if key not in row:
                raise ConfigError(f"{path}: a quantity lacks '{key}': {row}")
        if row["statistic"] not in STATISTICS:
            raise ConfigError(f"{path}: {row['quantity']}: unknown statistic {row['statistic']}")
        measure = row.get("measure")
        if row["statistic"].startswith("map_change") and measure not in MAP_CHANGE_MEASURES:
            raise ConfigError(
                f"{path}: {row['quantity']}: measure must be in {MAP_CHANGE_MEASURES}"
            )
    return rows


def paper_comparison(
    answers: pd.DataFrame,
    maps: pd.DataFrame | None,
    arrays: Mapping[str, np.ndarray] | MapStore | None,
    reference: Sequence[Mapping[str, Any]],
    *,
    params: Mapping[str, Any] | None = None,
    pairs: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Our value of every reference quantity with a 95% bootstrap interval, beside the paper's.

    Parameters
    ----------
    answers, maps, arrays
        As in :func:`pairs_table`; ``maps`` must carry the ``inside_body`` metric for
        ``inside_body_mean`` rows.
    reference
        Rows from :func:`load_reference`: ``quantity, statistic, paper_value`` and, where the
        statistic needs them, ``findings`` (finding names or slugs), ``measure`` (one of
        :data:`MAP_CHANGE_MEASURES`) and ``direction`` (a flip direction, ``changed`` or ``any``).
    params
        ``seed, bootstrap_samples, confidence`` and the :func:`pairs_table` keys.
    pairs
        :func:`pairs_table` of the same inputs and ``params`` when the caller already has it
        (it compares every map pair); None computes it.

    Returns
    -------
    DataFrame
        ``quantity, paper_value, ours, ci_low, ci_high, n`` in the order of ``reference``. Counts
        have no interval; ``n`` counts images, groups or pairs (the bootstrap's units' rows).
    """
    params = {**PAPER_DEFAULTS, **study_params(params)}
    boot = bootstrap_kwargs(params)
    if pairs is None:
        pairs = pairs_table(answers, maps, arrays, params=params)
    groups = group_table(pairs)
    baseline = answers[answers["strategy"] == params["reference_strategy"]]
    rows = []
    for spec in reference:
        estimate = _compute(spec, baseline, pairs, groups, maps, params, boot)
        paper_value = spec.get("paper_value")
        rows.append(
            {
                "quantity": spec["quantity"],
                "paper_value": math.nan if paper_value is None else float(paper_value),
                "ours": estimate.value,
                "ci_low": estimate.ci_low,
                "ci_high": estimate.ci_high,
                "n": estimate.n,
            }
        )
    return pd.DataFrame(rows, columns=COMPARISON_COLUMNS)


def _count(value: int, n: int) -> Estimate:
    return Estimate(float(value), math.nan, math.nan, n, n)


def _compute(
    spec: Mapping[str, Any],
    baseline: pd.DataFrame,
    pairs: pd.DataFrame,
    groups: pd.DataFrame,
    maps: pd.DataFrame | None,
    params: Mapping[str, Any],
    boot: Mapping[str, Any],
) -> Estimate:
    statistic = spec["statistic"]
    if statistic == "accuracy_baseline":
        scored = baseline[baseline["correctness"].notna()]
        if spec.get("findings"):
            wanted = {_slug(f) for f in spec["findings"]}
            scored = scored[scored["finding"].map(_slug).isin(wanted)]
        return bootstrap_mean(scored["correctness"], scored["dicom_id"], **boot)
    if statistic == "groups_count":
        return _count(len(groups), len(groups))
    if statistic == "variations_count":
        # The reference counted every question of a group, its baseline (variant 0) included.
        return _count(len(pairs) + len(groups), len(groups))
    if statistic in ("consistency_mean", "consistency_sd"):
        bootstrap = bootstrap_mean if statistic == "consistency_mean" else bootstrap_sd
        return bootstrap(groups["consistency"], groups["group_id"], **boot)
    if statistic in ("groups_perfect_count", "groups_variable_count"):
        perfect = int(groups["perfect"].sum())
        value = perfect if statistic == "groups_perfect_count" else len(groups) - perfect
        return _count(value, len(groups))
    if statistic in ("groups_perfect_share", "groups_variable_share"):
        perfect = groups["perfect"].astype(float)
        values = perfect if statistic == "groups_perfect_share" else 1.0 - perfect
        return bootstrap_mean(values, groups["group_id"], **boot)
    if statistic in ("map_change_mean", "map_change_sd"):
        direction = spec.get("direction", "any")
        subset = pairs
        if direction == "changed":
            subset = pairs[~pairs["same_answer"].astype(bool)]
        elif direction != "any":
            if direction not in FLIP_DIRECTIONS:
                raise ConfigError(f"{spec['quantity']}: unknown direction {direction}")
            subset = pairs[pairs["direction"] == direction]
        bootstrap = bootstrap_mean if statistic == "map_change_mean" else bootstrap_sd
        return bootstrap(subset[spec["measure"]], subset["group_id"], **boot)
    if statistic == "inside_body_mean":
        if maps is None or "inside_body" not in maps.columns:
            return Estimate(math.nan, math.nan, math.nan, 0, 0)
        chosen = _answer_maps(maps, params["map_source"]).reset_index()
        chosen = chosen[chosen["sample_id"].isin(set(baseline["sample_id"]))]
        return bootstrap_mean(chosen["inside_body"], chosen["dicom_id"], **boot)
    raise ConfigError(f"unknown statistic {statistic}")  # load_reference rules this out


# --------------------------------------------------------------------------- sentences


def _unit(quantity: str) -> str:
    name = quantity.lower()
    if name.endswith("_count") or name.startswith("n_"):
        return "count"
    if any(word in name for word in ("accuracy", "share", "consistency", "inside_body")):
        return "percent"
    return "value"


def _format(value: float, unit: str) -> str:
    if not np.isfinite(value):
        return "n/a"
    if unit == "count":
        return f"{value:.0f}"
    if unit == "percent":
        return f"{100 * value:.1f}%"
    return f"{value:.3f}"


def agreement_sentence(row: Mapping[str, Any] | pd.Series) -> str:
    """One sentence on how our value of a comparison row agrees with the paper's.

    The paper agrees with us when its value lies inside our 95% bootstrap interval; counts, which
    have no interval, agree when equal.
    """
    quantity = str(row["quantity"])
    unit = _unit(quantity)
    paper, ours = float(row["paper_value"]), float(row["ours"])
    low, high, n = float(row["ci_low"]), float(row["ci_high"]), row["n"]
    n_text = f"n = {int(n)}" if pd.notna(n) else "n = 0"
    if not np.isfinite(ours):
        return f"{quantity}: not computable on this run ({n_text}); the paper reports " + (
            f"{_format(paper, unit)}." if np.isfinite(paper) else "no value."
        )
    ours_text = f"ours {_format(ours, unit)}"
    if np.isfinite(low) and np.isfinite(high):
        ours_text += f" (95% CI {_format(low, unit)} to {_format(high, unit)}, {n_text})"
    else:
        ours_text += f" ({n_text})"
    if not np.isfinite(paper):
        return f"{quantity}: {ours_text}; the paper reports no value to compare."
    paper_text = f"the paper's {_format(paper, unit)}"
    if unit == "count" or not (np.isfinite(low) and np.isfinite(high)):
        if math.isclose(ours, paper, rel_tol=0, abs_tol=1e-9):
            return f"{quantity}: {ours_text} equals {paper_text}."
        relation = "above" if paper > ours else "below"
        return f"{quantity}: {ours_text}; {paper_text} lies {relation} ours (no interval)."
    if low <= paper <= high:
        return f"{quantity}: {ours_text}; {paper_text} lies inside our interval: consistent."
    relation = "above" if paper > high else "below"
    return f"{quantity}: {ours_text}; {paper_text} lies {relation} our interval: they differ."


# --------------------------------------------------------------------------- workflow entry


def run_paper_comparison(
    *,
    answers_csv: str | os.PathLike,
    maps_csv: str | os.PathLike,
    reference_yaml: str | os.PathLike,
    out_csv: str | os.PathLike,
    metrics_csv: str | os.PathLike | None = None,
    maps_npz: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
    params: Mapping[str, Any] | None = None,
    tables_dir: str | os.PathLike | None = None,
) -> None:
    """Write ``paper_comparison.csv`` (and, with ``tables_dir``, its supporting tables).

    ``metrics_csv`` may be None when ``maps_csv`` (the gathered ``metrics/maps.csv``) carries the
    metric columns; ``maps_npz`` None finds the run's map arrays as
    :func:`cxr_attention.metrics.tables.default_maps_npz` does.

    ``tables_dir`` receives ``paper_pairs.csv`` (one row per baseline/variant pair),
    ``paper_groups.csv`` (consistency per group) and ``paper_accuracy_by_variant.csv``.
    """
    reference = load_reference(reference_yaml)
    answers = read_answers(answers_csv)
    maps = read_maps(maps_csv, metrics_csv)
    merged = {**PAPER_DEFAULTS, **study_params(params)}
    if maps_npz is None:
        maps_npz = default_maps_npz(maps_csv)
    with MapStore(maps_npz) as arrays:
        pairs = pairs_table(answers, maps, arrays, params=merged)
        comparison = paper_comparison(answers, maps, arrays, reference, params=merged, pairs=pairs)
    write_csv(comparison, out_csv)
    if tables_dir is not None:
        out = Path(tables_dir)
        write_csv(pairs, out / "paper_pairs.csv")
        write_csv(group_table(pairs), out / "paper_groups.csv")
        write_csv(variant_accuracy_table(answers, pairs), out / "paper_accuracy_by_variant.csv")
