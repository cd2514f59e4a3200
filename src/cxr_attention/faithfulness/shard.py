"""The workflow's faithfulness job: one inference shard (the reliance job: `reliance_shard`).

``run_faithfulness_shard``: for a seeded subsample of the shard's answered samples, every
configured method's answer map (computed here with the maps stage's own code, whatever
``maps.method`` chose), its deletion / insertion / LeRF curves under each perturbation against
random orders, and for the first ``randomisation_samples`` the cascading randomisation check.
A sample whose files are missing or bad is a failures row; the shard goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np
import pandas as pd

from cxr_attention.faithfulness.samples import SAMPLE_KEYS, subsample
from cxr_attention.io import Failure, InputError, read_table, write_csv, write_failures

__all__ = ["capture_inputs", "run_faithfulness_shard"]

logger = logging.getLogger(__name__)

_KEYS = SAMPLE_KEYS


def capture_inputs(loaded, capture, pixels):
    """The processor's inputs of a stored capture: its exact prompt, the image's pixels."""
    import torch

    input_ids = torch.as_tensor(np.asarray(capture.input_ids), dtype=torch.long)[None]
    return {
        "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),
        "token_type_ids": (input_ids == loaded.image_token_id).long(),
        "pixel_values": pixels,
    }


def run_faithfulness_shard(
    *,
    answers_csv,
    captures_dir,
    images_csv,
    model_id: str,
    out_areas,
    out_points,
    out_randomisation,
    failures_csv,
    settings: Mapping,
    maps_params: Mapping,
    inference: Mapping,
    seed: int,
    min_free_gpu_gb: float = 15.0,
) -> None:
    """Faithfulness tables of one shard (see the module docstring)."""
    from cxr_attention.captures import load_capture, locate_capture
    from cxr_attention.faithfulness.deletion import AREA_COLUMNS, POINT_COLUMNS, sample_curves
    from cxr_attention.faithfulness.randomisation import (
        RANDOMISATION_COLUMNS,
        cascading_randomisation,
    )
    from cxr_attention.faithfulness.scoring import DecisionScorer
    from cxr_attention.faithfulness.settings import faithfulness_settings
    from cxr_attention.inference.model import load_model
    from cxr_attention.maps.records import SampleKey
    from cxr_attention.maps.shard import explain_maps
    from cxr_attention.preprocessed import PreprocessTable

    options = faithfulness_settings(settings)
    curve_settings = options.curve_settings(seed)
    maps_params = {**maps_params, "seed": seed}  # as the maps stage runs (the random method)
    answers = read_table(answers_csv, required=[*_KEYS, "question", "capture"], text=True)
    answers = subsample(answers, options.max_samples, seed)
    images = PreprocessTable(images_csv)
    loaded = load_model(model_id, min_free_gpu_gb=min_free_gpu_gb) if len(answers) else None
    areas, points, randomisation, failures = [], [], [], []
    for index, row in enumerate(answers.itertuples(index=False)):
        try:
            capture = load_capture(locate_capture(row.capture, captures_dir))
            image = images[row.dicom_id]
            pixels = image.model_pixels(loaded.processor)
            maps = explain_maps(
                capture,
                terms=[],
                loaded_model=loaded,
                inputs={"pixel_values": pixels},
                method="all",
                params=maps_params,
                key=SampleKey(row.sample_id, row.dicom_id, row.question_id),
            )
        except InputError as error:
            logger.warning("faithfulness: %s", error)
            failures.append(
                Failure.from_exception("faithfulness", row.dicom_id, row.capture, error)
            )
            continue
        answer_maps = [
            (record.map_id, record.method, grid)
            for record, grid in maps
            if record.is_answer_decision_map and record.method in options.methods
        ]
        if not answer_maps:
            continue
        scorer = DecisionScorer(
            loaded.model,
            loaded.tokenizer,
            capture_inputs(loaded, capture, pixels),
            batch_size=options.batch_size,
        )
        sample_areas, sample_points = sample_curves(scorer, answer_maps, curve_settings)
        keys = {key: getattr(row, key) for key in _KEYS}
        areas.append(sample_areas.assign(**keys))
        points.append(sample_points.assign(sample_id=row.sample_id))
        if index < options.randomisation_samples:
            rows = cascading_randomisation(
                loaded,
                image.image(),
                str(row.question),
                {method: grid for _, method, grid in answer_maps},
                layers=int(inference["layers"]),
                max_new_tokens=int(inference["max_new_tokens"]),
                image_first=bool(inference["image_first"]),
                maps_params=maps_params,
                steps=options.cascade_steps,
                seed=seed,
            )
            randomisation.append(pd.DataFrame(rows, columns=RANDOMISATION_COLUMNS).assign(**keys))
    write_csv(_concat(areas, [*AREA_COLUMNS, *_KEYS]), out_areas)
    write_csv(_concat(points, [*POINT_COLUMNS, "sample_id"]), out_points)
    write_csv(_concat(randomisation, [*RANDOMISATION_COLUMNS, *_KEYS]), out_randomisation)
    write_failures(failures, failures_csv)


def _concat(frames: list[pd.DataFrame], columns: list[str]) -> pd.DataFrame:
    if not frames:
        return pd.DataFrame(columns=columns)
    return pd.concat(frames, ignore_index=True)[columns]
