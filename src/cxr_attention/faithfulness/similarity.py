"""How alike two maps are (torch-free): Spearman rank correlation (scipy) and SSIM
(scikit-image), as Adebayo et al. (2018) compare a map before and after randomisation; and the
question-swap check: maps of questions about different findings should differ more than maps of
paraphrases of one question (the paraphrase null)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
from scipy.stats import spearmanr
from skimage.metrics import structural_similarity

from cxr_attention.metrics.bootstrap import bootstrap_mean

__all__ = [
    "QUESTION_SWAP_COLUMNS",
    "map_similarity",
    "question_swap_pairs",
    "question_swap_summary",
]

QUESTION_SWAP_COLUMNS = [
    "method",
    "pair",
    "n_pairs",
    "n_patients",
    "spearman",
    "spearman_ci_low",
    "spearman_ci_high",
    "ssim",
    "ssim_ci_low",
    "ssim_ci_high",
]


def _unit_range(grid: np.ndarray) -> np.ndarray:
    grid = np.asarray(grid, dtype=np.float64)
    span = grid.max() - grid.min()
    return np.zeros_like(grid) if span == 0 else (grid - grid.min()) / span


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

    A map that follows the question has ``difference`` (``pair`` = ``swap - paraphrase``) below 0:
    swapping the finding changes it more than rewording does. The difference's CI resamples
    patients over the per-image differences.
    """
    rows = []
    for method, group in pairs.groupby("method", sort=True):
        for pair, kind in group.groupby("pair", sort=True):
            clusters = kind["subject_id"].astype(str)
            est = [
                bootstrap_mean(kind[c], clusters, n_boot=n_boot, confidence=confidence, seed=seed)
                for c in ("spearman", "ssim")
            ]
            rows.append(_row(method, pair, est))
        per_image = group.groupby(["dicom_id", "subject_id", "pair"])[["spearman", "ssim"]].mean()
        wide = per_image.unstack("pair")
        if {"swap", "paraphrase"} <= set(wide.columns.get_level_values("pair")):
            clusters = wide.index.get_level_values("subject_id").astype(str)
            est = [
                bootstrap_mean(
                    wide[(c, "swap")] - wide[(c, "paraphrase")],
                    clusters,
                    n_boot=n_boot,
                    confidence=confidence,
                    seed=seed,
                )
                for c in ("spearman", "ssim")
            ]
            rows.append(_row(method, "swap - paraphrase", est))
    return pd.DataFrame(rows, columns=QUESTION_SWAP_COLUMNS)


def _row(method, pair, estimates) -> list:
    rho, ssim = estimates
    return [
        *(method, pair, rho.n, rho.n_clusters),
        *(rho.value, rho.ci_low, rho.ci_high),
        *(ssim.value, ssim.ci_low, ssim.ci_high),
    ]
