"""The workflow's reliance job: one inference shard's sampled questions under every condition.

Kept apart from the faithfulness job so that it depends on the answers, not on the maps code.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import pandas as pd

from cxr_attention.faithfulness.samples import SAMPLE_KEYS, subsample
from cxr_attention.io import Failure, InputError, read_table, write_csv, write_failures

__all__ = ["run_reliance_shard"]

logger = logging.getLogger(__name__)

_KEYS = SAMPLE_KEYS


def run_reliance_shard(
    *,
    answers_csv,
    manifest_csv,
    images_csvs,
    model_id: str,
    out_csv,
    failures_csv,
    settings: Mapping,
    image_first: bool,
    seed: int,
    min_free_gpu_gb: float = 15.0,
) -> None:
    """Each sampled question of the shard under every reliance condition (one row each).

    The swapped image may belong to any shard: ``images_csvs`` lists every shard's preprocess
    table. The question is asked as the inference stage asked it (its ``prompt`` column holds the
    rendered chat prompt; the ``question`` column the text that went into it).
    """
    from cxr_attention.faithfulness.reliance import reliance_scores
    from cxr_attention.faithfulness.reliance_tables import RELIANCE_COLUMNS, swap_partners
    from cxr_attention.faithfulness.settings import reliance_settings
    from cxr_attention.inference.model import load_model
    from cxr_attention.preprocessed import PreprocessTable

    options = reliance_settings(settings)
    answers = read_table(
        answers_csv,
        required=[*_KEYS, "question", "finding", "baseline_question_id", "label"],
        text=True,
    )
    answers = subsample(answers, options.max_samples, seed)
    manifest = read_table(manifest_csv, required=["dicom_id", "subject_id", "view_position"])
    answers["swap_dicom_id"] = swap_partners(answers, manifest, seed=seed)
    tables = [PreprocessTable(path) for path in images_csvs]

    def preprocessed(dicom_id: str):
        for table in tables:
            if dicom_id in table:
                return table[dicom_id]
        raise InputError(f"<{dicom_id}>", "not in any preprocess table", error_type="missing_image")

    loaded = load_model(model_id, min_free_gpu_gb=min_free_gpu_gb) if len(answers) else None
    rows, failures = [], []
    for row in answers.itertuples(index=False):
        try:
            image = preprocessed(row.dicom_id)
            lungs = None if image.mask_flags else image.lung_labels()
            swap = preprocessed(row.swap_dicom_id).image() if row.swap_dicom_id else None
            scores = reliance_scores(
                loaded.model,
                loaded.processor,
                image.image(),
                row.question,
                image_first=image_first,
                lungs=lungs,
                swap_image=swap,
                batch_size=options.batch_size,
            )
        except InputError as error:
            logger.warning("reliance: %s", error)
            failures.append(
                Failure.from_exception("reliance", row.dicom_id, str(error.path), error)
            )
            continue
        for score in scores:
            rows.append({**row._asdict(), **score})
    table = pd.DataFrame(rows, columns=[*RELIANCE_COLUMNS, "label"])
    write_csv(table, out_csv)
    write_failures(failures, failures_csv)
