"""Per-method faithfulness summaries (torch-free): each map's area minus its sample's random-order
mean, averaged per method, perturbation and curve, with a patient-level bootstrap CI.

Signs: a faithful map has a deletion area *below* random (difference < 0), insertion and LeRF
areas above it and a ROAD combined score above random (differences > 0). The randomisation table
judges resemblance on |Spearman| (`similarity.abs_spearman`).
"""

from __future__ import annotations

import pandas as pd

from cxr_attention.faithfulness.similarity import (
    SIMILARITY_COLUMNS,
    abs_spearman,
    question_swap_pairs,
    question_swap_summary,
    similarity_estimates,
)
from cxr_attention.metrics.bootstrap import bootstrap_mean

__all__ = [
    "RANDOMISATION_SUMMARY_COLUMNS",
    "SUMMARY_COLUMNS",
    "paired_differences",
    "randomisation_summary",
    "write_faithfulness_summaries",
]

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


RANDOMISATION_SUMMARY_COLUMNS = [
    "method",
    "part",
    "layers_randomised",
    "n_layers",
    "n_maps",
    "n_patients",
    *SIMILARITY_COLUMNS,
]


def randomisation_summary(
    rows: pd.DataFrame, *, n_boot: int, confidence: float, seed: int
) -> pd.DataFrame:
    """Mean |Spearman| and SSIM to the original map per method and cascade step (patient CIs).

    A map that depends on the model falls towards 0 on ``abs_spearman`` as more layers are
    randomised; a signed rho below 0 (the map reversed) keeps the original's structure, so the
    signed mean (``spearman``, no CI) only says whether the maps reverse (`abs_spearman`).
    """
    rows = rows.assign(abs_spearman=abs_spearman(rows["spearman"]))
    out = []
    keys = ["method", "part", "layers_randomised", "n_layers"]
    for key, group in rows.groupby(keys, sort=True):
        estimates = similarity_estimates(
            group, group["subject_id"].astype(str), n_boot=n_boot, confidence=confidence, seed=seed
        )
        out.append([*key, *estimates])
    return pd.DataFrame(out, columns=RANDOMISATION_SUMMARY_COLUMNS)


def write_faithfulness_summaries(
    *,
    areas_csvs,
    randomisation_csvs,
    maps_csvs,
    maps_npzs,
    questions_csv,
    manifest_csv,
    out_summary,
    out_randomisation,
    out_question_swap,
    n_boot: int,
    confidence: float,
    seed: int,
) -> None:
    """The faithfulness rule's study tables: paired differences, randomisation, question swap."""
    import numpy as np

    from cxr_attention.io import read_table, write_csv

    kwargs = {"n_boot": n_boot, "confidence": confidence, "seed": seed}
    areas = pd.concat([read_table(p) for p in areas_csvs], ignore_index=True)
    write_csv(paired_differences(areas, **kwargs), out_summary)
    randomisation = pd.concat([read_table(p) for p in randomisation_csvs], ignore_index=True)
    write_csv(randomisation_summary(randomisation, **kwargs), out_randomisation)
    maps = pd.concat([read_table(p) for p in maps_csvs], ignore_index=True)
    maps = maps[maps["source"] == "answer"]
    questions = read_table(questions_csv).drop_duplicates("question_id").set_index("question_id")
    subjects = read_table(manifest_csv).set_index("dicom_id")["subject_id"]
    maps = maps.assign(
        finding=maps["question_id"].map(questions["finding"]),
        baseline_question_id=maps["question_id"].map(questions["baseline_question_id"]),
        subject_id=maps["dicom_id"].map(subjects),
    )
    arrays = {}
    for path in maps_npzs:
        with np.load(path) as stored:
            arrays.update({key: stored[key] for key in stored.files if key in set(maps["map_id"])})
    pairs = question_swap_pairs(maps[maps["map_id"].isin(arrays)], arrays)
    write_csv(question_swap_summary(pairs, **kwargs), out_question_swap)
