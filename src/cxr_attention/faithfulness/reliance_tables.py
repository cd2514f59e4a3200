"""Image reliance as tables (torch-free): swap partners, answers kept per condition, and the
paraphrase consistency x image reliance table, each share with a patient-level bootstrap CI."""

from __future__ import annotations

import numpy as np
import pandas as pd

from cxr_attention.metrics.bootstrap import bootstrap_mean

__all__ = [
    "FOUR_WAY_COLUMNS",
    "RELIANCE_COLUMNS",
    "SUMMARY_COLUMNS",
    "against_original",
    "consistency_reliance_table",
    "reliance_summary",
    "swap_partners",
    "write_reliance_summaries",
]

#: The per-sample table the reliance rule writes (one row per sample and condition).
RELIANCE_COLUMNS = [
    "sample_id",
    "dicom_id",
    "subject_id",
    "question_id",
    "baseline_question_id",
    "finding",
    "condition",
    "answer",
    "p_yes",
    "margin",
    "swap_dicom_id",
]
SUMMARY_COLUMNS = [
    "condition",
    "n",
    "n_patients",
    "share_unchanged",
    "share_ci_low",
    "share_ci_high",
    "p_yes_shift",
    "shift_ci_low",
    "shift_ci_high",
    "abs_p_yes_shift",
    "abs_shift_ci_low",
    "abs_shift_ci_high",
]
FOUR_WAY_COLUMNS = [
    "paraphrase_consistent",
    "image_reliant",
    "n_groups",
    "share",
    "ci_low",
    "ci_high",
]


def swap_partners(samples: pd.DataFrame, manifest: pd.DataFrame, *, seed: int) -> pd.Series:
    """Each sample's swap image: another patient's, same view, opposite label for the finding.

    Parameters
    ----------
    samples : DataFrame
        ``sample_id, dicom_id, subject_id, finding`` and ``label`` (1.0 / 0.0; anything else
        gets no partner).
    manifest : DataFrame
        ``dicom_id, subject_id, view_position`` and one column per finding (CheXpert values).
    seed : int
        Partners are drawn with ``default_rng(seed)``, visiting samples in ``sample_id`` order.

    Returns
    -------
    Series of str, indexed like ``samples``: the partner's ``dicom_id`` ("" when none exists).
    """
    views = manifest.set_index("dicom_id")["view_position"].astype(str)
    rng = np.random.default_rng(seed)
    partners = pd.Series("", index=samples.index, dtype=object)
    for index in samples.sort_values("sample_id").index:
        row = samples.loc[index]
        label = pd.to_numeric(row.get("label"), errors="coerce")
        finding = row["finding"]
        if label not in (0.0, 1.0) or finding not in manifest.columns:
            continue
        wanted = pd.to_numeric(manifest[finding], errors="coerce") == 1.0 - label
        same_view = manifest["view_position"].astype(str) == views.get(row["dicom_id"], "")
        other = manifest["subject_id"].astype(str) != str(row["subject_id"])
        candidates = sorted(manifest.loc[wanted & same_view & other, "dicom_id"].astype(str))
        if candidates:
            partners[index] = candidates[int(rng.integers(len(candidates)))]
    return partners


def against_original(rows: pd.DataFrame) -> pd.DataFrame:
    """The rows of the other conditions beside their sample's original image.

    ``rows``: ``sample_id, condition, answer, p_yes`` (and any other columns, kept). Adds
    ``original_answer``, ``original_p_yes``, ``unchanged`` (the same answer as with the original
    image) and ``p_yes_shift`` (P(yes) minus the original's). Only yes / no answers count: a
    condition that could not be built (blank answer) and a sample without an original answer are
    left out.
    """
    original = rows[rows["condition"] == "original"].set_index("sample_id")
    others = rows[(rows["condition"] != "original") & rows["answer"].isin(["yes", "no"])].copy()
    others["original_answer"] = others["sample_id"].map(original["answer"])
    others["original_p_yes"] = others["sample_id"].map(original["p_yes"])
    others = others[others["original_answer"].isin(["yes", "no"])]
    others["unchanged"] = others["answer"] == others["original_answer"]
    others["p_yes_shift"] = others["p_yes"] - others["original_p_yes"]
    return others


def reliance_summary(
    rows: pd.DataFrame, *, n_boot: int, confidence: float, seed: int
) -> pd.DataFrame:
    """Per condition: share of answers unchanged and the P(yes) shift (signed, absolute).

    ``rows``: the per-sample table (`RELIANCE_COLUMNS`). CIs resample patients.
    """
    others = against_original(rows)
    out = []
    for condition, group in others.groupby("condition", sort=False):
        clusters = group["subject_id"].astype(str)
        shift = group["p_yes_shift"]
        kept = bootstrap_mean(
            group["unchanged"].astype(float),
            clusters,
            n_boot=n_boot,
            confidence=confidence,
            seed=seed,
        )
        signed = bootstrap_mean(shift, clusters, n_boot=n_boot, confidence=confidence, seed=seed)
        absolute = bootstrap_mean(
            shift.abs(), clusters, n_boot=n_boot, confidence=confidence, seed=seed
        )
        out.append(
            [
                condition,
                kept.n,
                kept.n_clusters,
                *(kept.value, kept.ci_low, kept.ci_high),
                *(signed.value, signed.ci_low, signed.ci_high),
                *(absolute.value, absolute.ci_low, absolute.ci_high),
            ]
        )
    return pd.DataFrame(out, columns=SUMMARY_COLUMNS)


def consistency_reliance_table(
    rows: pd.DataFrame, *, n_boot: int, confidence: float, seed: int
) -> pd.DataFrame:
    """The four-way table: paraphrase consistency x image reliance, over (image, question) groups.

    A group is one image and one baseline question with its paraphrases
    (``baseline_question_id``). It is *paraphrase consistent* when all its questions get the same
    answer on the original image, and *image reliant* when at least half of its questions change
    answer under at least one other condition (grey, swapped, occluded, no image). Shares are of
    all groups, with patient-level CIs.
    """
    others = against_original(rows)
    original = rows[(rows["condition"] == "original") & rows["answer"].isin(["yes", "no"])]
    changed = others.assign(changed=~others["unchanged"]).groupby("sample_id")["changed"].any()
    samples = original.assign(changed=original["sample_id"].map(changed).fillna(False))
    groups = samples.groupby(["dicom_id", "baseline_question_id"], sort=True).agg(
        subject_id=("subject_id", "first"),
        consistent=("answer", lambda answers: answers.nunique() == 1),
        reliant=("changed", lambda flags: flags.astype(float).mean() >= 0.5),
    )
    out = []
    for consistent in (True, False):
        for reliant in (True, False):
            cell = ((groups["consistent"] == consistent) & (groups["reliant"] == reliant)).astype(
                float
            )
            estimate = bootstrap_mean(
                cell,
                groups["subject_id"].astype(str),
                n_boot=n_boot,
                confidence=confidence,
                seed=seed,
            )
            out.append(
                [
                    consistent,
                    reliant,
                    int(cell.sum()),
                    estimate.value,
                    estimate.ci_low,
                    estimate.ci_high,
                ]
            )
    return pd.DataFrame(out, columns=FOUR_WAY_COLUMNS)


def write_reliance_summaries(
    reliance_csvs, out_summary, out_four_way, *, n_boot: int, confidence: float, seed: int
) -> None:
    """The reliance rule's study tables from every shard's per-sample table."""
    from cxr_attention.io import read_table, write_csv

    frames = [read_table(path) for path in reliance_csvs]
    rows = (
        pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=RELIANCE_COLUMNS)
    )
    rows["answer"] = rows["answer"].fillna("")
    kwargs = {"n_boot": n_boot, "confidence": confidence, "seed": seed}
    write_csv(reliance_summary(rows, **kwargs), out_summary)
    write_csv(consistency_reliance_table(rows, **kwargs), out_four_way)
