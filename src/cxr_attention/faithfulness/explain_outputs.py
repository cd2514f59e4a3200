"""``cxr-attention explain --faithfulness`` and ``--reliance``: the single image's tables.

``faithfulness.csv``: `EXPLAIN_FAITHFULNESS_COLUMNS`, one row per answer map, perturbation and
curve (``deletion``, ``insertion``), with the schema's ``faithfulness`` settings (the caller may
choose fewer perturbations); ``faithfulness_points.csv``: every step of those curves
(`deletion.POINT_COLUMNS`), the random orders' too, from which the areas were computed.
``reliance.csv``: `EXPLAIN_RELIANCE_COLUMNS`, one row per condition (``swapped`` blank without
``--swap-image``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from cxr_attention.faithfulness.deletion import AREA_COLUMNS
from cxr_attention.io import write_csv

__all__ = [
    "EXPLAIN_FAITHFULNESS_COLUMNS",
    "EXPLAIN_RELIANCE_COLUMNS",
    "write_explain_faithfulness",
    "write_explain_reliance",
]

#: The first columns of the workflow's areas table (`deletion.AREA_COLUMNS`).
EXPLAIN_FAITHFULNESS_COLUMNS = AREA_COLUMNS[:8]
EXPLAIN_RELIANCE_COLUMNS = ["condition", "answer", "p_yes", "margin"]


def write_explain_faithfulness(
    loaded,
    image: np.ndarray,
    question: str,
    maps,
    out_path: Path,
    *,
    image_first: bool,
    points_path: Path | None = None,
    perturbations: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Deletion and insertion areas of every answer map of ``maps`` (explain's maps list).

    ``points_path``: also write the curves' steps there. ``perturbations``: a subset of the
    schema's to compute (None: the schema's ``faithfulness.perturbations``).
    """
    import dataclasses

    from cxr_attention.faithfulness.deletion import sample_curves
    from cxr_attention.faithfulness.scoring import DecisionScorer
    from cxr_attention.faithfulness.settings import faithfulness_settings
    from cxr_attention.inference.prompting import build_inputs
    from cxr_attention.settings import schema_defaults

    defaults = schema_defaults()
    settings = faithfulness_settings(defaults["faithfulness"])
    curve_settings = settings.curve_settings(defaults["seed"])
    if perturbations is not None:
        curve_settings = dataclasses.replace(curve_settings, perturbations=tuple(perturbations))
    inputs = build_inputs(loaded.processor, image, question, image_first=image_first)
    scorer = DecisionScorer(loaded.model, loaded.tokenizer, inputs, batch_size=settings.batch_size)
    answer_maps = [
        (record.map_id, record.method, grid) for record, grid in maps if record.source == "answer"
    ]
    areas, points = sample_curves(scorer, answer_maps, curve_settings)
    curves = ["deletion", "insertion"]
    table = areas[areas["curve"].isin(curves)][EXPLAIN_FAITHFULNESS_COLUMNS]
    write_csv(table, out_path)
    if points_path is not None:
        write_csv(points[points["curve"].isin(curves)], points_path)
    return table


def write_explain_reliance(
    loaded,
    image: np.ndarray,
    lungs: np.ndarray | None,
    question: str,
    out_path: Path,
    *,
    image_first: bool,
    swap_image: np.ndarray | None = None,
) -> pd.DataFrame:
    """The answer under each condition of `reliance.RELIANCE_CONDITIONS`."""
    from cxr_attention.faithfulness.reliance import reliance_scores

    rows = reliance_scores(
        loaded.model,
        loaded.processor,
        image,
        question,
        image_first=image_first,
        lungs=lungs,
        swap_image=swap_image,
    )
    table = pd.DataFrame(rows, columns=EXPLAIN_RELIANCE_COLUMNS)
    write_csv(table, out_path)
    return table


def read_swap_image(path: str, max_side: int) -> np.ndarray:
    """``--swap-image`` preprocessed as the main image is (in a temporary folder).

    Raises
    ------
    ValueError
        Naming the file and the reason when it cannot be read as a radiograph.
    """
    import tempfile

    from cxr_attention.io import InputError
    from cxr_attention.preprocess.pipeline import preprocess_image
    from cxr_attention.preprocessed import PreprocessedImage

    if not Path(path).is_file():
        raise ValueError(f"--swap-image {path}: no such file")
    with tempfile.TemporaryDirectory() as folder:
        try:
            images = preprocess_image(path, folder, "swap", max_side=max_side)
            return PreprocessedImage("swap", images).image().copy()
        except InputError as error:
            raise ValueError(f"--swap-image {path}: {error}") from error
