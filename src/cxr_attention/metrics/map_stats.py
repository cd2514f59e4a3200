"""Statistics of the maps: divergence between strategies, correct vs incorrect, paired tests.

Each compares one map per sample, term, source, method and rows, per method (never pooled) and
without the counterfactual maps (:func:`cxr_attention.metrics.selection.statistics_maps`); the
tests run on patient-level values with Holm-corrected p-values (:mod:`~cxr_attention.metrics.
testing`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from cxr_attention.metrics.catalogue import TESTED_METRICS
from cxr_attention.metrics.pairwise import js_band, js_divergence
from cxr_attention.metrics.selection import METHOD_KEYS, statistics_maps
from cxr_attention.metrics.tables import MapStore, group_combinations, join_answers
from cxr_attention.metrics.testing import adjust_families, patient_means

__all__ = ["correct_vs_incorrect_table", "js_pairs_table", "paired_tests_table"]


def _baseline_question(answers: pd.DataFrame, reference_strategy: str) -> pd.Series:
    """Per answer row, the reference question it is compared with (``""``: none).

    A variant names its baseline in ``baseline_question_id``; a question of another strategy
    that names none (``plain``) is compared with the first reference question of its image and
    finding. Reference questions themselves get ``""``.
    """
    reference = answers[answers["strategy"] == reference_strategy]
    first = (
        reference.sort_values("question_id", kind="mergesort")
        .drop_duplicates(["dicom_id", "finding"])
        .set_index(["dicom_id", "finding"])["question_id"]
    )
    named = answers["baseline_question_id"].fillna("").astype(str)
    keys = list(zip(answers["dicom_id"], answers["finding"], strict=True))
    fallback = pd.Series([first.get(key, "") for key in keys], index=answers.index, dtype=object)
    baseline = named.where(named != "", fallback)
    return baseline.where(answers["strategy"] != reference_strategy, "")


def js_pairs_table(
    answers: pd.DataFrame,
    maps: pd.DataFrame,
    arrays: Mapping[str, np.ndarray] | MapStore,
    *,
    reference_strategy: str = "baseline",
    source: str | None = None,
) -> pd.DataFrame:
    """Jensen-Shannon divergence (base 2) between each question's map and its baseline's.

    Each question of another strategy is compared with *its own* baseline question on the same
    image (:func:`_baseline_question`: the ``baseline_question_id`` it names, else the image's
    first reference question of its finding), never with another baseline question's. The two
    maps of a pair have the same term, source, method and rows (``maps.csv`` column ``rows``):
    methods are never mixed. Counterfactual maps are left out
    (:func:`cxr_attention.metrics.selection.statistics_maps`).

    Returns columns ``dicom_id, subject_id, finding, term, source, method, rows, strategy_a,
    strategy_b, variant_kind_b, question_id_a, question_id_b, map_id_a, map_id_b, method_a,
    method_b, js_divergence, band`` (``method_a`` = ``method_b`` = ``method``).
    """
    keep = ["sample_id", "subject_id", "finding", "strategy", "question_id", "variant_kind"]
    keys = ["sample_id", "term", "source", *METHOD_KEYS]
    chosen = statistics_maps(maps if source is None else maps[maps["source"] == source])
    chosen = chosen.sort_values([*keys, "map_id"], kind="mergesort").drop_duplicates(keys)
    keyed = join_answers(chosen, answers, keep)
    keyed = keyed[np.array([map_id in arrays for map_id in keyed["map_id"]], dtype=bool)]
    baseline_of = _baseline_question(answers, reference_strategy)
    keyed = keyed.merge(
        answers.assign(_baseline=baseline_of)[["sample_id", "_baseline"]], on="sample_id"
    )
    pair_keys = ["dicom_id", "term", "source", *METHOD_KEYS]
    references = {
        (*(row[k] for k in pair_keys), row["question_id"]): row
        for row in keyed[keyed["strategy"] == reference_strategy].to_dict("records")
    }
    rows = []
    others = keyed[(keyed["strategy"] != reference_strategy) & (keyed["_baseline"] != "")]
    for other in others.sort_values([*pair_keys, "question_id"]).to_dict("records"):
        key = (*(other[k] for k in pair_keys), other["_baseline"])
        if key not in references:
            continue
        ref = references[key]
        value = js_divergence(arrays[ref["map_id"]], arrays[other["map_id"]], base=2)
        rows.append(
            {
                **{k: other[k] for k in ("dicom_id", "term", "source", *METHOD_KEYS)},
                "subject_id": ref["subject_id"],
                "finding": ref["finding"],
                "strategy_a": reference_strategy,
                "strategy_b": other["strategy"],
                "variant_kind_b": other["variant_kind"],
                "question_id_a": key[-1],
                "question_id_b": other["question_id"],
                "map_id_a": ref["map_id"],
                "map_id_b": other["map_id"],
                "method_a": ref["method"],
                "method_b": other["method"],
                "js_divergence": value,
                "band": js_band(value),
            }
        )
    columns = ["dicom_id", "subject_id", "finding", "term", "source", *METHOD_KEYS]
    columns += ["strategy_a", "strategy_b", "variant_kind_b", "question_id_a", "question_id_b"]
    columns += ["map_id_a", "map_id_b", "method_a", "method_b", "js_divergence", "band"]
    return pd.DataFrame(rows, columns=columns)


def _maps_with_answers(maps: pd.DataFrame, answers: pd.DataFrame) -> pd.DataFrame:
    keep = ["sample_id", "subject_id", "finding", "strategy", "correctness"]
    keys = ["sample_id", "term", "source", *METHOD_KEYS]
    kept = statistics_maps(maps)
    kept = kept.sort_values([*keys, "map_id"], kind="mergesort").drop_duplicates(keys)
    return join_answers(kept, answers, keep)


def _method_parts(frame: pd.DataFrame) -> list[tuple[tuple[str, str], pd.DataFrame]]:
    """One part per method and rows, never pooled (registry order)."""
    from cxr_attention.metrics.method_stats import method_order

    order = {m: i for i, m in enumerate(method_order(frame["method"].astype(str).unique()))}
    parts = [((str(m), str(r)), g) for (m, r), g in frame.groupby(list(METHOD_KEYS), sort=True)]
    return sorted(parts, key=lambda item: (order[item[0][0]], item[0][1]))


def correct_vs_incorrect_table(
    maps: pd.DataFrame, answers: pd.DataFrame, *, metrics: Sequence[str] = TESTED_METRICS
) -> pd.DataFrame:
    """Every map metric compared between maps of correct and of incorrect answers.

    Per method and rows (never pooled), map source and strategy (source and strategy also as
    ``"all"``), each patient's maps are first averaged per side (:func:`patient_means`: a patient
    with correct and incorrect answers has one value on each side), then the two sides' patient
    means are compared with a two-sided Mann-Whitney U test (``scipy.stats.mannwhitneyu``). The
    p-values are Holm-corrected per family: the metrics of one method, rows, source and strategy.
    Returns ``metric, method, rows, source, strategy, n_correct, n_incorrect (patients),
    n_maps_correct, n_maps_incorrect, mean_correct, mean_incorrect, median_correct,
    median_incorrect, u_statistic, p_value, family, p_adjusted``.
    """
    joined = _maps_with_answers(maps, answers)
    joined = joined[joined["correctness"].notna()]
    rows = []
    for (method, row_choice), part in _method_parts(joined):
        present = [m for m in metrics if m in part]
        for values, subset in group_combinations(part, ["source", "strategy"]):
            means = patient_means(subset, present, by=["correctness"])
            for metric in present:
                correct = means.loc[means["correctness"] == 1, metric].dropna().to_numpy(float)
                wrong = means.loc[means["correctness"] == 0, metric].dropna().to_numpy(float)
                u_statistic = p_value = math.nan
                if correct.size and wrong.size:
                    result = stats.mannwhitneyu(correct, wrong, alternative="two-sided")
                    u_statistic, p_value = float(result.statistic), float(result.pvalue)
                finite = subset[metric].notna()
                rows.append(
                    {
                        "metric": metric,
                        "method": method,
                        "rows": row_choice,
                        **values,
                        "n_correct": correct.size,
                        "n_incorrect": wrong.size,
                        "n_maps_correct": int((finite & (subset["correctness"] == 1)).sum()),
                        "n_maps_incorrect": int((finite & (subset["correctness"] == 0)).sum()),
                        "mean_correct": _mean(correct),
                        "mean_incorrect": _mean(wrong),
                        "median_correct": _median(correct),
                        "median_incorrect": _median(wrong),
                        "u_statistic": u_statistic,
                        "p_value": p_value,
                    }
                )
    columns = ["metric", "method", "rows", "source", "strategy", "n_correct", "n_incorrect"]
    columns += ["n_maps_correct", "n_maps_incorrect", "mean_correct", "mean_incorrect"]
    columns += ["median_correct", "median_incorrect", "u_statistic", "p_value"]
    table = pd.DataFrame(rows, columns=columns)
    table = table.sort_values(["method", "rows", "source", "strategy", "metric"], kind="mergesort")
    return adjust_families(table, ["method", "rows", "source", "strategy"]).reset_index(drop=True)


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if values.size else math.nan


def _median(values: np.ndarray) -> float:
    return float(np.median(values)) if values.size else math.nan


def paired_tests_table(
    maps: pd.DataFrame,
    answers: pd.DataFrame,
    *,
    source: str | None = "answer",
    metrics: Sequence[str] = TESTED_METRICS,
) -> pd.DataFrame:
    """Wilcoxon signed-rank tests between strategies on per-patient paired values.

    Per patient and strategy the value is the mean over that patient's questions (accuracy) or
    maps (map metrics, maps of ``source``, per method and rows: never pooled); each pair of
    strategies is compared on the patients that have both (``scipy.stats.wilcoxon``,
    two-sided). P-values are Holm-corrected per family: accuracy is one family, and each method
    and rows one family of all its metrics and strategy pairs. Returns ``quantity, method, rows,
    strategy_a, strategy_b, n_pairs (patients), mean_a, mean_b, mean_difference, statistic,
    p_value, family, p_adjusted`` (NaN test when every difference is zero or fewer than two
    pairs).
    """
    per_patient: list[tuple[str, str, str, pd.DataFrame]] = []
    scored = answers[answers["correctness"].notna()]
    per_patient.append(
        (
            "accuracy",
            "",
            "",
            scored.pivot_table(
                index="subject_id", columns="strategy", values="correctness", aggfunc="mean"
            ),
        )
    )
    chosen = maps if source is None else maps[maps["source"] == source]
    joined = _maps_with_answers(chosen, answers)
    for (method, row_choice), part in _method_parts(joined):
        for metric in metrics:
            if metric not in part or part[metric].isna().all():
                continue
            table = part.pivot_table(
                index="subject_id", columns="strategy", values=metric, aggfunc="mean"
            )
            per_patient.append((metric, method, row_choice, table))
    rows = []
    for quantity, method, row_choice, table in per_patient:
        for strategy_a, strategy_b in itertools.combinations(sorted(table.columns), 2):
            pair = table[[strategy_a, strategy_b]].dropna()
            a = pair[strategy_a].to_numpy(np.float64)
            b = pair[strategy_b].to_numpy(np.float64)
            statistic = p_value = math.nan
            if len(pair) >= 2 and np.any(a != b):
                result = stats.wilcoxon(a, b, alternative="two-sided")
                statistic, p_value = float(result.statistic), float(result.pvalue)
            rows.append(
                {
                    "quantity": quantity,
                    "method": method,
                    "rows": row_choice,
                    "strategy_a": strategy_a,
                    "strategy_b": strategy_b,
                    "n_pairs": len(pair),
                    "mean_a": _mean(a),
                    "mean_b": _mean(b),
                    "mean_difference": _mean(a - b),
                    "statistic": statistic,
                    "p_value": p_value,
                }
            )
    columns = ["quantity", "method", "rows", "strategy_a", "strategy_b", "n_pairs", "mean_a"]
    columns += ["mean_b", "mean_difference", "statistic", "p_value"]
    table = pd.DataFrame(rows, columns=columns)
    table = table.sort_values(
        ["method", "rows", "quantity", "strategy_a", "strategy_b"], kind="mergesort"
    )
    return adjust_families(table, ["method", "rows"]).reset_index(drop=True)
