"""Per-method faithfulness summaries (torch-free): each map's area minus its sample's random-order
mean, averaged per method, perturbation and curve, with a patient-level bootstrap CI.

Signs: a faithful map has a deletion area *below* random (difference < 0), insertion and LeRF
areas above it and a ROAD combined score above random (differences > 0).
"""

from __future__ import annotations

import pandas as pd

from cxr_attention.metrics.bootstrap import bootstrap_mean

__all__ = ["SUMMARY_COLUMNS", "paired_differences"]

SUMMARY_COLUMNS = [
    "method",
    "perturbation",
    "curve",
    "n_maps",
    "n_patients",
    "mean_auc",
    "mean_random_auc",
    "difference",
    "ci_low",
    "ci_high",
]


def paired_differences(
    areas: pd.DataFrame, *, n_boot: int, confidence: float, seed: int
) -> pd.DataFrame:
    """Mean (map area - random mean) per method, perturbation and curve, plus ROAD combined.

    Parameters
    ----------
    areas : DataFrame
        The faithfulness shard tables (`deletion.AREA_COLUMNS` with ``subject_id``).

    Returns
    -------
    DataFrame with `SUMMARY_COLUMNS`; ROAD's combined score is the curve ``road_combined``.
    """
    road = areas[areas["curve"] == "deletion"].assign(
        curve="road_combined",
        auc=lambda t: t["road_combined"],
        random_auc_mean=lambda t: t["random_road_combined_mean"],
    )
    rows = []
    for (method, perturbation, curve), group in pd.concat([areas, road]).groupby(
        ["method", "perturbation", "curve"], sort=True
    ):
        estimate = bootstrap_mean(
            group["auc"] - group["random_auc_mean"],
            group["subject_id"].astype(str),
            n_boot=n_boot,
            confidence=confidence,
            seed=seed,
        )
        rows.append(
            [
                *(method, perturbation, curve, estimate.n, estimate.n_clusters),
                *(group["auc"].mean(), group["random_auc_mean"].mean()),
                *(estimate.value, estimate.ci_low, estimate.ci_high),
            ]
        )
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
