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
from cxr_attention.metrics.selection import METHOD_KEYS, select_maps, statistics_maps
from cxr_attention.metrics.tables import MapStore, group_combinations, join_answers

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
