"""How alike two maps are (torch-free): Spearman rank correlation (scipy) and SSIM
(scikit-image), as Adebayo et al. (2018) compare a map before and after randomisation; and the
question-swap check: maps of questions about different findings should differ more than maps of
paraphrases of one question (the paraphrase null). Resemblance is judged on |Spearman|
(`abs_spearman`); the per-pair tables keep the signed value."""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping

import numpy as np
import pandas as pd
from scipy.stats import spearmanr
from skimage.metrics import structural_similarity

from cxr_attention.metrics.bootstrap import bootstrap_mean

__all__ = [
    "QUESTION_SWAP_COLUMNS",
    "SIMILARITY_COLUMNS",
    "abs_spearman",
    "map_similarity",
    "question_swap_pairs",
    "question_swap_summary",
    "similarity_estimates",
]

#: A summary's similarity columns (`similarity_estimates`), after its count of pairs and patients.
SIMILARITY_COLUMNS = [
    "abs_spearman",
    "abs_spearman_ci_low",
    "abs_spearman_ci_high",
    "spearman",
    "ssim",
    "ssim_ci_low",
    "ssim_ci_high",
]
QUESTION_SWAP_COLUMNS = ["method", "pair", "n_pairs", "n_patients", *SIMILARITY_COLUMNS]


def _unit_range(grid: np.ndarray) -> np.ndarray:
    grid = np.asarray(grid, dtype=np.float64)
    span = grid.max() - grid.min()
    return np.zeros_like(grid) if span == 0 else (grid - grid.min()) / span


def abs_spearman(spearman):
    """How much of one map's ranking another keeps, whichever its direction: |Spearman|.

    A map whose ranking reverses (rho -0.5: high where the other is low) keeps the other's
    structure as much as one with rho +0.5, so a signed rho below 0 must not read as "less alike
    than 0". The randomisation and question-swap summaries and the known-answer ranking judge
    resemblance on this. 0 is none left: two unrelated maps of 256 independent cells average
    sqrt(2 / (pi * 255)), about 0.05, smooth maps more. NaN (a constant map) stays NaN; works on
    a float, an array or a Series.
    """
    return np.abs(spearman)


def map_similarity(first: np.ndarray, second: np.ndarray) -> tuple[float, float]:
    """``(spearman, ssim)`` of two grids; each scaled to [0, 1] for SSIM (Adebayo et al.).

    Spearman is NaN when either map is constant (no ranking to compare).
    """
    a, b = np.asarray(first, dtype=np.float64), np.asarray(second, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"maps of different shapes {a.shape} and {b.shape}")
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        rho = math.nan
    else:
        rho = float(spearmanr(a.ravel(), b.ravel()).statistic)
    side = min(a.shape)
    window = min(7, side if side % 2 else side - 1)
    ssim = float(
        structural_similarity(_unit_range(a), _unit_range(b), data_range=1.0, win_size=window)
    )
    return rho, ssim


def question_swap_pairs(maps: pd.DataFrame, arrays) -> pd.DataFrame:
    """Similarity of answer maps of one image and method between pairs of questions.

    ``paraphrase``: two questions with the same ``baseline_question_id`` (one finding, reworded);
    ``swap``: the baseline questions of two different findings.

    Parameters
    ----------
    maps : DataFrame
        ``map_id, dicom_id, subject_id, method, question_id, baseline_question_id, finding,
        strategy`` of the answer maps.
    arrays : mapping
        ``map_id`` -> grid.
    """
    rows = []
    for (dicom_id, method), group in maps.groupby(["dicom_id", "method"], sort=True):
        subject = str(group["subject_id"].iloc[0])
        records = group.sort_values("question_id").to_dict("records")
        for first, second in itertools.combinations(records, 2):
            if first["baseline_question_id"] == second["baseline_question_id"]:
                pair = "paraphrase"
            elif (
                first["finding"] != second["finding"]
                and first["question_id"] == first["baseline_question_id"]
                and second["question_id"] == second["baseline_question_id"]
            ):
                pair = "swap"
            else:
                continue
            rho, ssim = map_similarity(arrays[first["map_id"]], arrays[second["map_id"]])
            rows.append([dicom_id, subject, method, pair, rho, ssim])
    return pd.DataFrame(
        rows, columns=["dicom_id", "subject_id", "method", "pair", "spearman", "ssim"]
    )


def question_swap_summary(
    pairs: pd.DataFrame, *, n_boot: int, confidence: float, seed: int
) -> pd.DataFrame:
    """Mean similarity per method and pair kind, and the swap - paraphrase difference.

    A map that follows the question has ``abs_spearman`` and ``ssim`` of ``swap - paraphrase``
    below 0: swapping the finding changes it more than rewording does. ``abs_spearman`` (with its
    CI) is the mean |Spearman| (`abs_spearman`); ``spearman``, the signed mean without a CI, only
    says whether the maps reverse. The difference's CI resamples patients over the per-image
    differences.
    """
    boot = {"n_boot": n_boot, "confidence": confidence, "seed": seed}
    pairs = pairs.assign(abs_spearman=abs_spearman(pairs["spearman"]))
    columns = ["abs_spearman", "spearman", "ssim"]
    rows = []
    for method, group in pairs.groupby("method", sort=True):
        for pair, kind in group.groupby("pair", sort=True):
            estimates = similarity_estimates(kind, kind["subject_id"].astype(str), **boot)
            rows.append([method, pair, *estimates])
        per_image = group.groupby(["dicom_id", "subject_id", "pair"])[columns].mean()
        wide = per_image.unstack("pair")
        if {"swap", "paraphrase"} <= set(wide.columns.get_level_values("pair")):
            clusters = wide.index.get_level_values("subject_id").astype(str)
            # |rho| is taken per pair first: the difference is |rho_swap| - |rho_paraphrase|
            differences = {c: wide[(c, "swap")] - wide[(c, "paraphrase")] for c in columns}
            rows.append(
                [method, "swap - paraphrase", *similarity_estimates(differences, clusters, **boot)]
            )
    return pd.DataFrame(rows, columns=QUESTION_SWAP_COLUMNS)


def similarity_estimates(
    values: Mapping[str, pd.Series], clusters, *, n_boot: int, confidence: float, seed: int
) -> list:
    """The number of pairs and patients, then `SIMILARITY_COLUMNS`, of one group of map pairs.

    ``values`` holds the group's ``abs_spearman``, signed ``spearman`` and ``ssim`` per pair;
    the means of |rho| and SSIM get a cluster-bootstrap CI over ``clusters`` (patients), the
    signed mean none (it only says whether the maps reverse). Counts are of pairs with a rho.
    """
    rho, ssim = (
        bootstrap_mean(values[c], clusters, n_boot=n_boot, confidence=confidence, seed=seed)
        for c in ("abs_spearman", "ssim")
    )
    return [
        *(rho.n, rho.n_clusters),
        *(rho.value, rho.ci_low, rho.ci_high),
        float(np.nanmean(values["spearman"])) if rho.n else math.nan,
        *(ssim.value, ssim.ci_low, ssim.ci_high),
    ]
