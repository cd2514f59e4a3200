"""Study-level statistics: accuracy, AUROC, consistency, map divergence, tests and bootstrap CIs.

Inputs are the tidy tables of a run (docs/architecture.md): the answers table (one row per image
and question), the maps table (one row per map) with the map arrays, and the per-map metrics.
Every confidence interval is a percentile interval from a *cluster* bootstrap that resamples
patients (``subject_id``) with replacement, because images and questions of one patient are not
independent. Seeds are fixed, rows sorted and floats written with one format, so a rerun writes
byte-identical files.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from cxr_attention.io import read_table, write_csv, write_json
from cxr_attention.metrics.pairwise import js_band, js_divergence
from cxr_attention.metrics.per_map import (
    BORDER_TARGET,
    ENTROPY_DIFFUSE,
    ENTROPY_FOCUSED,
    INSIDE_BODY_TARGET,
    METRIC_COLUMNS,
    entropy_band,
)

__all__ = [
    "DEFAULT_PARAMS",
    "MAP_METRICS",
    "METHOD_PREFERENCE",
    "Estimate",
    "MapStore",
    "accuracy_table",
    "answer_correctness",
    "auroc_table",
    "bootstrap_mean",
    "bootstrap_sd",
    "cluster_bootstrap",
    "consistency_table",
    "correct_vs_incorrect_table",
    "default_maps_npz",
    "js_pairs_table",
    "paired_tests_table",
    "read_answers",
    "read_maps",
    "run_study_statistics",
    "select_maps",
    "study_summary",
    "weighted_auroc",
]

#: The per-map metrics compared between groups (every column of the metrics table but the key).
MAP_METRICS = METRIC_COLUMNS[1:]

#: When one sample has several maps of one term and source (several methods were computed), the
#: statistics compare the first available in this order: the cascade's own order.
METHOD_PREFERENCE = ("attention", "attention_gated", "gradcam", "activation_norm", "uniform")

#: Defaults of ``params`` (config: ``seed``, ``metrics.bootstrap_samples``, ``metrics.confidence``).
DEFAULT_PARAMS: dict[str, Any] = {
    "seed": 0,
    "bootstrap_samples": 2000,
    "confidence": 0.95,
    "map_source": "answer",
    "reference_strategy": "baseline",
}

ANSWERS_REQUIRED = ("sample_id", "dicom_id", "subject_id", "question_id", "finding", "strategy")
MAPS_REQUIRED = ("map_id", "sample_id", "dicom_id", "term", "source", "method")


# --------------------------------------------------------------------------- bootstrap


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its bootstrap confidence interval.

    ``n`` counts observations, ``n_clusters`` the resampled units (patients, images or groups).
    """

    value: float
    ci_low: float
    ci_high: float
    n: int
    n_clusters: int


def _cluster_counts(
    clusters: Sequence, n_boot: int, seed: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """Codes of each observation's cluster and the (n_boot, n_clusters) resampling counts."""
    if n_boot < 1:
        raise ValueError(f"n_boot must be positive, got {n_boot}")
    labels = np.asarray([str(c) for c in clusters])
    # Sorted unique labels: the draw does not depend on the order of the rows.
    unique, codes = np.unique(labels, return_inverse=True)
    n_clusters = unique.size
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, max(n_clusters, 1), size=(n_boot, n_clusters))
    counts = np.zeros((n_boot, n_clusters), dtype=np.float64)
    rows = np.repeat(np.arange(n_boot), n_clusters)
    np.add.at(counts, (rows, draws.ravel()), 1.0)
    return codes, counts, n_clusters


def _percentile_interval(replicates: np.ndarray, confidence: float) -> tuple[float, float]:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    finite = replicates[np.isfinite(replicates)]
    if finite.size == 0:
        return math.nan, math.nan
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(finite, [tail, 100 - tail])
    return float(low), float(high)


def cluster_bootstrap(
    statistic: Callable[[np.ndarray], float],
    clusters: Sequence,
    *,
    n_boot: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Estimate:
    """Percentile bootstrap interval of any statistic, resampling clusters with replacement.

    Parameters
    ----------
    statistic : callable
        ``statistic(weights) -> float`` where ``weights`` (one per observation, float) counts how
        often each observation occurs in a resample; all ones gives the point estimate.
    clusters : sequence
        Cluster label of each observation (e.g. ``subject_id``): clusters are drawn, and every
        observation of a drawn cluster comes along.
    n_boot, confidence, seed
        Resamples, interval level, seed of ``numpy.random.default_rng``.

    Returns
    -------
    Estimate
        NaN interval with fewer than two clusters (nothing to resample).
    """
    n_obs = len(clusters)
    point = float(statistic(np.ones(n_obs))) if n_obs else math.nan

    def replicates(codes: np.ndarray, counts: np.ndarray, n_clusters: int) -> np.ndarray:
        return np.array([statistic(counts[b, codes]) for b in range(n_boot)], dtype=np.float64)

    return _resampled_estimate(
        point, clusters, n_obs, replicates, n_boot=n_boot, confidence=confidence, seed=seed
    )


def _resampled_estimate(
    point: float,
    clusters: Sequence,
    n_obs: int,
    replicates: Callable[[np.ndarray, np.ndarray, int], np.ndarray],
    *,
    n_boot: int,
    confidence: float,
    seed: int,
) -> Estimate:
    """``point`` with the percentile interval of a statistic's cluster-bootstrap replicates.

    ``replicates(codes, counts, n_clusters)`` gives the statistic of each resample from the
    observations' cluster codes and the (n_boot, n_clusters) counts of :func:`_cluster_counts`.
    The interval is NaN with fewer than two clusters (nothing to resample).
    """
    codes, counts, n_clusters = _cluster_counts(clusters, n_boot, seed)
    if n_clusters < 2:
        return Estimate(point, math.nan, math.nan, n_obs, n_clusters)
    low, high = _percentile_interval(replicates(codes, counts, n_clusters), confidence)
    return Estimate(point, low, high, n_obs, n_clusters)


def _finite(values: Iterable, clusters: Sequence) -> tuple[np.ndarray, np.ndarray]:
    values = np.asarray(values, dtype=np.float64)
    clusters = np.asarray([str(c) for c in clusters])
    if values.shape != clusters.shape:
        raise ValueError("values and clusters differ in length")
    keep = np.isfinite(values)
    return values[keep], clusters[keep]


def bootstrap_mean(
    values: Iterable,
    clusters: Sequence,
    *,
    n_boot: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Estimate:
    """Mean of ``values`` (NaN dropped) with a cluster-bootstrap interval (vectorised)."""
    values, clusters = _finite(values, clusters)
    if values.size == 0:
        return Estimate(math.nan, math.nan, math.nan, 0, 0)

    def replicates(codes: np.ndarray, counts: np.ndarray, n_clusters: int) -> np.ndarray:
        sums = np.bincount(codes, weights=values, minlength=n_clusters)
        sizes = np.bincount(codes, minlength=n_clusters).astype(np.float64)
        return (counts @ sums) / (counts @ sizes)

    point = float(values.mean())
    return _resampled_estimate(
        point, clusters, values.size, replicates, n_boot=n_boot, confidence=confidence, seed=seed
    )


def bootstrap_sd(
    values: Iterable,
    clusters: Sequence,
    *,
    n_boot: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Estimate:
    """Sample standard deviation (ddof 1, NaN dropped) with a cluster-bootstrap interval."""
    values, clusters = _finite(values, clusters)
    if values.size < 2:
        return Estimate(math.nan, math.nan, math.nan, values.size, len(set(clusters)))

    def replicates(codes: np.ndarray, counts: np.ndarray, n_clusters: int) -> np.ndarray:
        centred = values - values.mean()  # centring first keeps the sums of squares accurate
        s1 = counts @ np.bincount(codes, weights=centred, minlength=n_clusters)
        s2 = counts @ np.bincount(codes, weights=centred**2, minlength=n_clusters)
        n = counts @ np.bincount(codes, minlength=n_clusters).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            variance = (s2 - s1**2 / n) / (n - 1)
        sds = np.sqrt(np.clip(variance, 0.0, None))
        sds[n < 2] = np.nan
        return sds

    point = float(values.std(ddof=1))
    return _resampled_estimate(
        point, clusters, values.size, replicates, n_boot=n_boot, confidence=confidence, seed=seed
    )


def weighted_auroc(
    scores: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None
) -> float:
    """Area under the ROC curve with observation weights (ties count one half).

    The probability that a random positive scores above a random negative, each drawn with
    probability proportional to its weight; with integer weights equal to replicating rows.
    NaN when either class has no weight.
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels).astype(bool)
    weights = np.ones(scores.size) if weights is None else np.asarray(weights, dtype=np.float64)
    unique_scores, codes = np.unique(scores, return_inverse=True)
    positive = np.bincount(codes, weights=weights * labels, minlength=unique_scores.size)
    negative = np.bincount(codes, weights=weights * ~labels, minlength=unique_scores.size)
    total_positive, total_negative = positive.sum(), negative.sum()
    if total_positive <= 0 or total_negative <= 0:
        return math.nan
    negatives_below = np.cumsum(negative) - negative
    wins = np.sum(positive * (negatives_below + 0.5 * negative))
    return float(wins / (total_positive * total_negative))


# --------------------------------------------------------------------------- reading tables


def read_answers(path: str | os.PathLike) -> pd.DataFrame:
    """Read an answers table: identifiers as strings, ``p_yes`` as float, ``correct`` as 1/0/NaN."""
    answers = read_table(path, required=ANSWERS_REQUIRED, text=True)
    for column in ("answer", "expected", "correct", "baseline_question_id", "variant_kind"):
        if column not in answers.columns:
            answers[column] = ""
    answers["p_yes"] = pd.to_numeric(answers.get("p_yes", ""), errors="coerce")
    answers["correctness"] = answer_correctness(answers)
    return answers


def read_maps(
    maps_csv: str | os.PathLike, metrics_csv: str | os.PathLike | None = None
) -> pd.DataFrame:
    """Read the maps table and join the per-map metrics on ``map_id`` (metrics win on overlap)."""
    maps = read_table(maps_csv, required=MAPS_REQUIRED, text=True)
    if metrics_csv is not None:
        metrics = read_table(metrics_csv, required=["map_id"], text=True)
        overlap = [c for c in metrics.columns if c in maps.columns and c != "map_id"]
        maps = maps.drop(columns=overlap).merge(metrics, on="map_id", how="left")
    for column in MAP_METRICS:
        maps[column] = pd.to_numeric(maps[column], errors="coerce") if column in maps else np.nan
    return maps


def answer_correctness(answers: pd.DataFrame) -> pd.Series:
    """1.0 / 0.0 per answer, NaN when there is no expected answer.

    Where ``expected`` is yes or no, an answer is correct when it equals it (``unclear`` counts as
    incorrect); otherwise the table's own ``correct`` value (True/False) is used when present.
    """
    expected = answers.get("expected", pd.Series("", index=answers.index)).astype(str).str.lower()
    answer = answers.get("answer", pd.Series("", index=answers.index)).astype(str).str.lower()
    given = answers.get("correct", pd.Series("", index=answers.index)).astype(str).str.lower()
    result = pd.Series(np.nan, index=answers.index, dtype=np.float64)
    from_given = given.map({"true": 1.0, "false": 0.0, "1": 1.0, "0": 0.0, "1.0": 1.0, "0.0": 0.0})
    result = result.where(from_given.isna(), from_given)
    known = expected.isin(["yes", "no"])
    result[known] = (answer[known] == expected[known]).astype(np.float64)
    return result


# --------------------------------------------------------------------------- tables


def _params(params: Mapping[str, Any] | None) -> dict[str, Any]:
    merged = dict(DEFAULT_PARAMS)
    merged.update(params or {})
    if "n_boot" in merged:  # accepted alias
        merged["bootstrap_samples"] = merged.pop("n_boot")
    return merged


def _boot_kwargs(params: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "n_boot": int(params["bootstrap_samples"]),
        "confidence": float(params["confidence"]),
        "seed": int(params["seed"]),
    }


def _with_all(frame: pd.DataFrame, column: str) -> list[tuple[str, pd.DataFrame]]:
    """``("all", frame)`` then one ``(value, subset)`` per sorted value of ``column``."""
    parts = [("all", frame)]
    parts += [(str(k), g) for k, g in sorted(frame.groupby(column, sort=True), key=lambda x: x[0])]
    return parts


def accuracy_table(
    answers: pd.DataFrame, *, by: Sequence[str] = ("strategy",), params: Mapping | None = None
) -> pd.DataFrame:
    """Accuracy with a patient-bootstrap CI per group of ``by`` (each also as ``"all"``).

    Returns columns ``*by, accuracy, ci_low, ci_high, n, n_correct, n_subjects``; answers with no
    expected answer are left out.
    """
    params = _params(params)
    scored = answers[answers["correctness"].notna()]
    rows = []
    keys = list(by)
    for combo in _group_combinations(scored, keys):
        values, subset = combo
        estimate = bootstrap_mean(
            subset["correctness"], subset["subject_id"], **_boot_kwargs(params)
        )
        rows.append(
            {
                **values,
                "accuracy": estimate.value,
                "ci_low": estimate.ci_low,
                "ci_high": estimate.ci_high,
                "n": estimate.n,
                "n_correct": int(subset["correctness"].sum()),
                "n_subjects": estimate.n_clusters,
            }
        )
    columns = [*keys, "accuracy", "ci_low", "ci_high", "n", "n_correct", "n_subjects"]
    return pd.DataFrame(rows, columns=columns).sort_values(keys, kind="mergesort")


def _group_combinations(
    frame: pd.DataFrame, keys: Sequence[str]
) -> list[tuple[dict[str, str], pd.DataFrame]]:
    """Every combination of each key's values plus ``"all"``, where data exist."""
    combos: list[tuple[dict[str, str], pd.DataFrame]] = [({}, frame)]
    for key in keys:
        expanded = []
        for values, subset in combos:
            for value, part in _with_all(subset, key):
                expanded.append(({**values, key: value}, part))
        combos = expanded
    return [(values, subset) for values, subset in combos if len(subset)]


def auroc_table(answers: pd.DataFrame, *, params: Mapping | None = None) -> pd.DataFrame:
    """AUROC of ``p_yes`` against the expected answer per finding and strategy (and ``"all"``).

    Returns columns ``finding, strategy, auroc, ci_low, ci_high, n, n_positive, n_negative,
    n_subjects``; AUROC is NaN when one class is absent.
    """
    params = _params(params)
    expected = answers["expected"].astype(str).str.lower()
    scored = answers[expected.isin(["yes", "no"]) & answers["p_yes"].notna()].copy()
    scored["positive"] = scored["expected"].str.lower() == "yes"
    rows = []
    for values, subset in _group_combinations(scored, ["finding", "strategy"]):
        scores = subset["p_yes"].to_numpy(np.float64)
        labels = subset["positive"].to_numpy(bool)
        estimate = cluster_bootstrap(
            lambda w, s=scores, y=labels: weighted_auroc(s, y, w),
            subset["subject_id"].tolist(),
            **_boot_kwargs(params),
        )
        rows.append(
            {
                **values,
                "auroc": estimate.value,
                "ci_low": estimate.ci_low,
                "ci_high": estimate.ci_high,
                "n": estimate.n,
                "n_positive": int(labels.sum()),
                "n_negative": int((~labels).sum()),
                "n_subjects": estimate.n_clusters,
            }
        )
    columns = ["finding", "strategy", "auroc", "ci_low", "ci_high", "n"]
    columns += ["n_positive", "n_negative", "n_subjects"]
    return pd.DataFrame(rows, columns=columns).sort_values(
        ["finding", "strategy"], kind="mergesort"
    )


def _group_key(answers: pd.DataFrame) -> pd.Series:
    """Baseline question of each row: its ``baseline_question_id``, else its own question."""
    baseline = answers["baseline_question_id"].astype(str)
    return baseline.where(baseline != "", answers["question_id"])


def consistency_table(answers: pd.DataFrame) -> pd.DataFrame:
    """Answer consistency of question groups, two kinds.

    - ``variants``: one baseline question on one image with all its variants (the rows whose
      ``baseline_question_id`` is that question, and the question itself);
    - ``strategies``: every question of every strategy about one finding on one image.

    A group is ``consistent`` when all its answers are the same. ``agreement`` is the share of
    answers equal to the most common one. Groups of a single question are left out.
    """
    frame = answers.copy()
    frame["group"] = _group_key(frame)
    rows = []
    kinds = {"variants": ["dicom_id", "group"], "strategies": ["dicom_id", "finding"]}
    for kind, keys in kinds.items():
        for key, subset in frame.groupby(keys, sort=True):
            if len(subset) < 2:
                continue
            answer = subset["answer"].astype(str).str.lower()
            counts = answer.value_counts()
            rows.append(
                {
                    "kind": kind,
                    "dicom_id": key[0],
                    "subject_id": subset["subject_id"].iloc[0],
                    "finding": subset["finding"].iloc[0],
                    "group": key[1] if kind == "variants" else f"{key[1]}.*",
                    "n_questions": len(subset),
                    "n_yes": int((answer == "yes").sum()),
                    "n_no": int((answer == "no").sum()),
                    "n_unclear": int((~answer.isin(["yes", "no"])).sum()),
                    "agreement": float(counts.iloc[0] / len(subset)),
                    "consistent": bool(counts.size == 1),
                }
            )
    columns = ["kind", "dicom_id", "subject_id", "finding", "group", "n_questions"]
    columns += ["n_yes", "n_no", "n_unclear", "agreement", "consistent"]
    table = pd.DataFrame(rows, columns=columns)
    return table.sort_values(["kind", "dicom_id", "group"], kind="mergesort").reset_index(drop=True)


def select_maps(maps: pd.DataFrame, *, source: str | None = None) -> pd.DataFrame:
    """One map per sample, term and source (of ``source`` only, if given).

    Where several methods were computed for the same sample, term and source, the first in
    :data:`METHOD_PREFERENCE` is kept (then the smallest ``map_id``).
    """
    chosen = maps if source is None else maps[maps["source"] == source]
    rank = {m: i for i, m in enumerate(METHOD_PREFERENCE)}
    chosen = chosen.assign(_rank=chosen["method"].map(rank).fillna(len(rank)))
    chosen = chosen.sort_values(
        ["sample_id", "term", "source", "_rank", "map_id"], kind="mergesort"
    )
    chosen = chosen.drop_duplicates(["sample_id", "term", "source"], keep="first")
    return chosen.drop(columns="_rank").reset_index(drop=True)


def default_maps_npz(maps_csv: str | os.PathLike) -> list[Path]:
    """The map arrays of the run whose gathered maps table is ``maps_csv``.

    ``results/<run>/metrics/maps.csv`` -> sorted ``results/<run>/maps/shard-*.npz``; a maps table
    elsewhere (a shard's own ``maps/shard-<k>.csv``, explain's ``maps.csv``) -> the ``.npz``
    files beside it.
    """
    folder = Path(maps_csv).parent
    candidates = sorted((folder.parent / "maps").glob("shard-*.npz"))
    return candidates or sorted(folder.glob("*.npz"))


class MapStore:
    """Lazy access to map arrays spread over several ``maps/shard-<k>.npz`` files."""

    def __init__(self, paths: str | os.PathLike | Sequence[str | os.PathLike]):
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        self._files = [np.load(Path(p)) for p in paths]
        self._where = {key: f for f in self._files for key in f.files}

    def __contains__(self, map_id: str) -> bool:
        return map_id in self._where

    def __getitem__(self, map_id: str) -> np.ndarray:
        return np.asarray(self._where[map_id][map_id], dtype=np.float64)

    def close(self) -> None:
        for handle in self._files:
            handle.close()

    def __enter__(self) -> MapStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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
    keyed = _join_answers(select_maps(maps, source=source), answers, keep)
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


def _join_answers(maps: pd.DataFrame, answers: pd.DataFrame, keep: Sequence[str]) -> pd.DataFrame:
    """Maps joined with answer columns ``keep`` on ``sample_id`` (the answers' columns win)."""
    overlap = [c for c in keep if c in maps.columns and c != "sample_id"]
    return maps.drop(columns=overlap).merge(answers[list(keep)], on="sample_id", how="inner")


def _maps_with_answers(maps: pd.DataFrame, answers: pd.DataFrame) -> pd.DataFrame:
    keep = ["sample_id", "subject_id", "finding", "strategy", "correctness"]
    return _join_answers(maps, answers, keep)


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
        for values, subset in _group_combinations(joined, ["source", "strategy"]):
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


# --------------------------------------------------------------------------- summary


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
    source: inside_body >= 0.7, border_fraction <= 0.05, entropy not diffuse, entropy focused).
    """
    params = _params(params)
    boot = _boot_kwargs(params)
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
    for band in ("focused", "intermediate", "diffuse"):
        share = entropies.map(entropy_band).eq(band).mean() if len(entropies) else math.nan
        quality[f"entropy_share_{band}"] = share
    quality["inside_body_share_meeting_target"] = _share_where(
        quality_maps["inside_body"], lambda v: v >= INSIDE_BODY_TARGET
    )
    quality["border_fraction_share_meeting_target"] = _share_where(
        quality_maps["border_fraction"], lambda v: v <= BORDER_TARGET
    )
    summary["map_quality"] = quality

    inside, border, ent = (
        quality[f"{m}_mean"] for m in ("inside_body", "border_fraction", "entropy")
    )
    summary["targets_met"] = {
        "inside_body_ge_0.7": bool(np.isfinite(inside) and inside >= INSIDE_BODY_TARGET),
        "border_fraction_le_0.05": bool(np.isfinite(border) and border <= BORDER_TARGET),
        "entropy_not_diffuse_le_4.5": bool(np.isfinite(ent) and ent <= ENTROPY_DIFFUSE),
        "entropy_focused_lt_3.0": bool(np.isfinite(ent) and ent < ENTROPY_FOCUSED),
    }
    summary["entropy_band_of_mean"] = entropy_band(ent)
    return _clean_json(summary)


def _share_where(values: pd.Series, condition: Callable[[pd.Series], pd.Series]) -> float:
    values = values.dropna()
    return float(condition(values).mean()) if len(values) else math.nan


def _clean_json(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _clean_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean_json(v) for v in value]
    return _json_number(value)


# --------------------------------------------------------------------------- workflow entry


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
        (:data:`DEFAULT_PARAMS`).
    """
    params = _params(params)
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
