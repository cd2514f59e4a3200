"""Statistics of the maps: divergence between strategies, correct vs incorrect, paired tests.

Each compares one map per sample, term and source (:func:`cxr_attention.metrics.selection.
select_maps`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from cxr_attention.metrics.catalogue import MAP_METRICS
from cxr_attention.metrics.pairwise import js_band, js_divergence
from cxr_attention.metrics.selection import select_maps
from cxr_attention.metrics.tables import MapStore, group_combinations, join_answers

__all__ = ["correct_vs_incorrect_table", "js_pairs_table", "paired_tests_table"]


def js_pairs_table(
    answers: pd.DataFrame,
    maps: pd.DataFrame,
    arrays: Mapping[str, np.ndarray] | MapStore,
    *,
    reference_strategy: str = "baseline",
    source: str | None = None,
) -> pd.DataFrame:
    """Jensen-Shannon divergence (base 2) between each strategy's map and the reference's.

    For every image, finding, term and source, the map of each question of another strategy is
    compared with the map of the reference strategy's question (``baseline``, variant 0 first).

    Returns columns ``dicom_id, subject_id, finding, term, source, strategy_a, strategy_b,
    variant_kind_b, question_id_a, question_id_b, map_id_a, map_id_b, method_a, method_b,
    js_divergence, band``.
    """
    keep = ["sample_id", "subject_id", "finding", "strategy", "question_id", "variant_kind"]
    keyed = join_answers(select_maps(maps, source=source), answers, keep)
    keyed = keyed[np.array([map_id in arrays for map_id in keyed["map_id"]], dtype=bool)]
    rows = []
    for (dicom_id, finding, term, map_source), group in keyed.groupby(
        ["dicom_id", "finding", "term", "source"], sort=True
    ):
        reference = group[group["strategy"] == reference_strategy].sort_values("question_id")
        if reference.empty:
            continue
        ref = reference.iloc[0]
        ref_map = arrays[ref["map_id"]]
        others = group[group["map_id"] != ref["map_id"]]
        others = others[others["strategy"] != reference_strategy].sort_values("question_id")
        for other in others.itertuples(index=False):
            value = js_divergence(ref_map, arrays[other.map_id], base=2)
            rows.append(
                {
                    "dicom_id": dicom_id,
                    "subject_id": ref["subject_id"],
                    "finding": finding,
                    "term": term,
                    "source": map_source,
                    "strategy_a": reference_strategy,
                    "strategy_b": other.strategy,
                    "variant_kind_b": other.variant_kind,
                    "question_id_a": ref["question_id"],
                    "question_id_b": other.question_id,
                    "map_id_a": ref["map_id"],
                    "map_id_b": other.map_id,
                    "method_a": ref["method"],
                    "method_b": other.method,
                    "js_divergence": value,
                    "band": js_band(value),
                }
            )
    columns = ["dicom_id", "subject_id", "finding", "term", "source", "strategy_a", "strategy_b"]
    columns += ["variant_kind_b", "question_id_a", "question_id_b", "map_id_a", "map_id_b"]
    columns += ["method_a", "method_b", "js_divergence", "band"]
    return pd.DataFrame(rows, columns=columns)


def _maps_with_answers(maps: pd.DataFrame, answers: pd.DataFrame) -> pd.DataFrame:
    keep = ["sample_id", "subject_id", "finding", "strategy", "correctness"]
    return join_answers(maps, answers, keep)


def correct_vs_incorrect_table(
    maps: pd.DataFrame, answers: pd.DataFrame, *, metrics: Sequence[str] = MAP_METRICS
) -> pd.DataFrame:
    """Every map metric compared between maps of correct and of incorrect answers.

    Two-sided Mann-Whitney U test (``scipy.stats.mannwhitneyu``) per metric, map source and
    strategy (each also as ``"all"``). Returns ``metric, source, strategy, n_correct, n_incorrect,
    mean_correct, mean_incorrect, median_correct, median_incorrect, u_statistic, p_value``.
    """
    joined = _maps_with_answers(select_maps(maps), answers)
    joined = joined[joined["correctness"].notna()]
    rows = []
    for metric in metrics:
        for values, subset in group_combinations(joined, ["source", "strategy"]):
            correct = subset.loc[subset["correctness"] == 1, metric].dropna().to_numpy(np.float64)
            wrong = subset.loc[subset["correctness"] == 0, metric].dropna().to_numpy(np.float64)
            u_statistic = p_value = math.nan
            if correct.size and wrong.size:
                result = stats.mannwhitneyu(correct, wrong, alternative="two-sided")
                u_statistic, p_value = float(result.statistic), float(result.pvalue)
            rows.append(
                {
                    "metric": metric,
                    **values,
                    "n_correct": correct.size,
                    "n_incorrect": wrong.size,
                    "mean_correct": _mean(correct),
                    "mean_incorrect": _mean(wrong),
                    "median_correct": _median(correct),
                    "median_incorrect": _median(wrong),
                    "u_statistic": u_statistic,
                    "p_value": p_value,
                }
            )
    columns = ["metric", "source", "strategy", "n_correct", "n_incorrect", "mean_correct"]
    columns += ["mean_incorrect", "median_correct", "median_incorrect", "u_statistic", "p_value"]
    table = pd.DataFrame(rows, columns=columns)
    return table.sort_values(["metric", "source", "strategy"], kind="mergesort")


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if values.size else math.nan


def _median(values: np.ndarray) -> float:
    return float(np.median(values)) if values.size else math.nan


def paired_tests_table(
    maps: pd.DataFrame,
    answers: pd.DataFrame,
    *,
    source: str | None = "answer",
    metrics: Sequence[str] = MAP_METRICS,
) -> pd.DataFrame:
    """Wilcoxon signed-rank tests between strategies on per-image paired values.

    Per image and strategy the value is the mean over that strategy's questions (accuracy) or maps
    (map metrics, maps of ``source``); each pair of strategies is compared on the images that have
    both (``scipy.stats.wilcoxon``, two-sided). Returns ``quantity, strategy_a, strategy_b,
    n_pairs, mean_a, mean_b, mean_difference, statistic, p_value`` (NaN test when every
    difference is zero or fewer than two pairs).
    """
    per_image = {}
    scored = answers[answers["correctness"].notna()]
    per_image["accuracy"] = scored.pivot_table(
        index="dicom_id", columns="strategy", values="correctness", aggfunc="mean"
    )
    joined = _maps_with_answers(select_maps(maps, source=source), answers)
    for metric in metrics:
        per_image[metric] = joined.pivot_table(
            index="dicom_id", columns="strategy", values=metric, aggfunc="mean"
        )
    rows = []
    for quantity, table in per_image.items():
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
    columns = ["quantity", "strategy_a", "strategy_b", "n_pairs", "mean_a", "mean_b"]
    columns += ["mean_difference", "statistic", "p_value"]
    table = pd.DataFrame(rows, columns=columns)
    return table.sort_values(["quantity", "strategy_a", "strategy_b"], kind="mergesort")
