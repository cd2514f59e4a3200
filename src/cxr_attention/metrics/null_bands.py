"""Bands calibrated against null distributions instead of fixed numbers (JS and entropy).

Two nulls, both from the run itself and per source, method and rows:

``paraphrase``
    JS divergence between two meaning-preserving variants of one baseline question on one image
    (consecutive variants in ``question_id`` order): how much a map moves when only the wording
    changes.
``other_image``
    JS divergence between the maps of the *same* question on two different images (each image
    with the next in ``dicom_id`` order): how much a map moves when the image changes.

A baseline/variant or strategy pair is then ``paraphrase_level`` (JS at or below the paraphrase
null's 95th percentile), ``image_level`` (at or above the other-image null's median) or
``between``; ``uncalibrated`` where a null is empty. A map's entropy is ``focused`` /
``diffuse`` when below the 5th / above the 95th percentile of the entropies the same question
gets on the other images, else ``typical``.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from cxr_attention.metrics.answer_stats import NOT_VARIANTS
from cxr_attention.metrics.pairwise import js_divergence
from cxr_attention.metrics.selection import METHOD_KEYS, statistics_maps
from cxr_attention.metrics.tables import MapStore, join_answers

__all__ = [
    "ENTROPY_NULL_QUANTILES",
    "JS_BAND_LABELS",
    "PARAPHRASE_QUANTILE",
    "calibrate_entropy",
    "calibrate_js_bands",
    "js_null_table",
]

#: The paraphrase null's quantile below which a change is only rewording noise.
PARAPHRASE_QUANTILE = 0.95
#: The other-image null's quantile from which a change is as large as changing the image.
IMAGE_QUANTILE = 0.5
#: Entropy quantiles of the same question on other images: below focused, above diffuse.
ENTROPY_NULL_QUANTILES = (0.05, 0.95)
JS_BAND_LABELS = ("paraphrase_level", "between", "image_level", "uncalibrated")

_KEYS = ["term", "source", *METHOD_KEYS]


def _question_key(answers: pd.DataFrame) -> pd.Series:
    """What makes two questions the same across images: the text, else the question id."""
    if "question" in answers.columns:
        text = answers["question"].fillna("").astype(str).str.strip().str.lower()
        return text.where(~text.isin(["", "?"]), answers["question_id"])
    return answers["question_id"].astype(str)


def _keyed_maps(answers: pd.DataFrame, maps: pd.DataFrame, arrays) -> pd.DataFrame:
    keep = ["sample_id", "subject_id", "finding", "strategy", "question_id"]
    keep += ["baseline_question_id"]
    frame = answers.assign(_question=_question_key(answers))
    chosen = statistics_maps(maps)
    keys = ["sample_id", *_KEYS]
    chosen = chosen.sort_values([*keys, "map_id"], kind="mergesort").drop_duplicates(keys)
    keyed = join_answers(chosen, frame, [*keep, "_question"])
    return keyed[np.array([m in arrays for m in keyed["map_id"]], dtype=bool)]


def _ring_pairs(group: pd.DataFrame, order: str) -> list[tuple[dict, dict]]:
    records = group.sort_values([order, "map_id"], kind="mergesort").to_dict("records")
    if len(records) < 2:
        return []
    if len(records) == 2:
        return [(records[0], records[1])]
    return [(records[i], records[(i + 1) % len(records)]) for i in range(len(records))]


def js_null_table(
    answers: pd.DataFrame,
    maps: pd.DataFrame,
    arrays: Mapping[str, np.ndarray] | MapStore,
    *,
    not_variants: tuple[str, ...] = NOT_VARIANTS,
) -> pd.DataFrame:
    """The two JS null distributions (module docstring), one row per null pair.

    Returns ``null, term, source, method, rows, map_id_a, map_id_b, subject_id, js_divergence``.
    """
    keyed = _keyed_maps(answers, maps, arrays)
    rows = []

    def add(null: str, a: dict, b: dict) -> None:
        rows.append(
            {
                "null": null,
                **{k: a[k] for k in _KEYS},
                "map_id_a": a["map_id"],
                "map_id_b": b["map_id"],
                "subject_id": a["subject_id"],
                "js_divergence": js_divergence(arrays[a["map_id"]], arrays[b["map_id"]], base=2),
            }
        )

    for _, group in keyed.groupby(["_question", *_KEYS], sort=True):
        for a, b in _ring_pairs(group.drop_duplicates("dicom_id"), "dicom_id"):
            add("other_image", a, b)
    variants = keyed[
        (keyed["baseline_question_id"].fillna("").astype(str) != "")
        & ~keyed["strategy"].isin(list(not_variants))
    ]
    for _, group in variants.groupby(["dicom_id", "baseline_question_id", *_KEYS], sort=True):
        for a, b in _ring_pairs(group, "question_id"):
            add("paraphrase", a, b)
    columns = ["null", *_KEYS, "map_id_a", "map_id_b", "subject_id", "js_divergence"]
    return pd.DataFrame(rows, columns=columns)


def _thresholds(nulls: pd.DataFrame) -> dict[tuple, tuple[float, float]]:
    """Per (source, method, rows): the paraphrase null's 95th percentile, the image null's
    median (NaN when that null is empty)."""
    result: dict[tuple, tuple[float, float]] = {}
    for key, group in nulls.groupby(["source", *METHOD_KEYS], sort=True):
        para = group.loc[group["null"] == "paraphrase", "js_divergence"].dropna()
        image = group.loc[group["null"] == "other_image", "js_divergence"].dropna()
        result[key] = (
            float(np.quantile(para, PARAPHRASE_QUANTILE)) if len(para) else np.nan,
            float(np.quantile(image, IMAGE_QUANTILE)) if len(image) else np.nan,
        )
    return result


def calibrate_js_bands(js_pairs: pd.DataFrame, nulls: pd.DataFrame) -> pd.DataFrame:
    """``js_pairs`` with ``paraphrase_q95``, ``image_median`` and ``band_calibrated``."""
    thresholds = _thresholds(nulls)
    keys = zip(*(js_pairs[c] for c in ("source", *METHOD_KEYS)), strict=True)
    levels = [thresholds.get(key, (np.nan, np.nan)) for key in keys]
    paraphrase = np.array([level[0] for level in levels], dtype=np.float64)
    image = np.array([level[1] for level in levels], dtype=np.float64)
    values = js_pairs["js_divergence"].to_numpy(np.float64)
    band = np.full(len(js_pairs), "uncalibrated", dtype=object)
    known = np.isfinite(paraphrase) & np.isfinite(image) & np.isfinite(values)
    band[known] = "between"
    band[known & (values <= paraphrase)] = "paraphrase_level"
    band[known & (values >= image) & (values > paraphrase)] = "image_level"
    return js_pairs.assign(paraphrase_q95=paraphrase, image_median=image, band_calibrated=band)


def calibrate_entropy(maps: pd.DataFrame, answers: pd.DataFrame) -> pd.DataFrame:
    """Per map (metric column ``entropy``), its band against the same question on other images.

    Returns ``map_id, source, method, rows, entropy, null_n, null_low, null_high,
    entropy_band_calibrated`` (``focused`` / ``typical`` / ``diffuse``, ``uncalibrated`` with
    fewer than two other images).
    """
    frame = answers.assign(_question=_question_key(answers))[["sample_id", "_question"]]
    kept = statistics_maps(maps).merge(frame, on="sample_id", how="inner")
    low_q, high_q = ENTROPY_NULL_QUANTILES
    rows = []
    for _, group in kept.groupby(["_question", *_KEYS], sort=True):
        values = pd.to_numeric(group["entropy"], errors="coerce").to_numpy(np.float64)
        images = group["dicom_id"].to_numpy()
        for index, record in enumerate(group.to_dict("records")):
            others = values[(images != images[index]) & np.isfinite(values)]
            low = high = np.nan
            band = "uncalibrated"
            if others.size >= 2 and np.isfinite(values[index]):
                low, high = np.quantile(others, [low_q, high_q])
                band = "typical"
                if values[index] < low:
                    band = "focused"
                elif values[index] > high:
                    band = "diffuse"
            rows.append(
                {
                    "map_id": record["map_id"],
                    **{k: record[k] for k in ("source", *METHOD_KEYS)},
                    "entropy": values[index],
                    "null_n": int(others.size),
                    "null_low": low,
                    "null_high": high,
                    "entropy_band_calibrated": band,
                }
            )
    columns = ["map_id", "source", *METHOD_KEYS, "entropy", "null_n", "null_low", "null_high"]
    return pd.DataFrame(rows, columns=[*columns, "entropy_band_calibrated"])
