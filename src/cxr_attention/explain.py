"""``cxr-attention explain``: one image, one question, every stage of the study.

The reference platform's single-image analysis, over the workflow's own library code: the image
is preprocessed as the workflow does, the model answers with attention capture, the maps go
through the same cascade, and the metrics and the overlay are the workflow's.

Files written to ``DIR``: ``answer.json``, ``attention.npz``, ``maps.csv``, ``maps.npz``,
``metrics.csv``, ``overlay.png``, the preprocessed image with its masks (``<stem>.png``,
``<stem>.json``, ``<stem>_body.png``, ``<stem>_lungs.png``) and ``failures.csv``; with
``faithfulness`` also ``faithfulness.csv`` and ``faithfulness_points.csv``, with ``reliance``
``reliance.csv`` (`cxr_attention.faithfulness.explain_outputs`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from cxr_attention.captures import write_capture
from cxr_attention.io import Failure, InputError, write_csv, write_failures, write_json
from cxr_attention.preprocessed import PreprocessedImage

if TYPE_CHECKING:
    from cxr_attention.grounding.datasets import Annotation

__all__ = [
    "DEFAULT_QUESTION_BANK",
    "ExplainResult",
    "explain",
    "map_metrics_table",
    "parse_question_answer",
    "question_terms",
]

logger = logging.getLogger(__name__)

#: The question bank whose terms are added to ``--term`` when the question names a finding.
DEFAULT_QUESTION_BANK = Path("config/questions.yaml")


def question_terms(
    question: str, bank_path: str | os.PathLike = DEFAULT_QUESTION_BANK
) -> list[str]:
    """The target terms of the finding the question is about, from the question bank.

    Empty when the bank is absent (the command runs outside a checkout) or no finding matches.
    """
    finding = _question_finding(question, bank_path)
    return list(finding.target_terms) if finding else []


def parse_question_answer(
    question: str, generated_text: str, bank_path: str | os.PathLike = DEFAULT_QUESTION_BANK
) -> str:
    """``yes`` / ``no`` / ``unclear``, parsed as the inference stage parses the same answer.

    The finding's own names judge the answer (not the broader words the maps look for: "pleural"
    would count "pleural thickening" as a pleural effusion), and a question about a normal image
    (No Finding) reads a denied abnormality as "yes".
    """
    from cxr_attention.questions.answers import parse_answer
    from cxr_attention.questions.bank import NO_FINDING

    finding = _question_finding(question, bank_path)
    if finding is None:
        return parse_answer(generated_text)
    return parse_answer(generated_text, terms=finding.terms, asks_normal=finding.name == NO_FINDING)


def _question_finding(question: str, bank_path: str | os.PathLike):
    """The bank's ``FindingQuestions`` the question is about, or None (no bank, no match)."""
    from cxr_attention.questions.bank import load_question_bank
    from cxr_attention.questions.vqa import infer_finding

    if not Path(bank_path).is_file():
        return None
    bank = load_question_bank(bank_path)
    name = infer_finding(question, bank)
    return bank.finding(name) if name else None


@dataclass(frozen=True)
class ExplainResult:
    """What :func:`explain` found: the answer, or why the image could not be used.

    Attributes
    ----------
    answer : str
        ``yes`` / ``no`` / ``unclear`` (empty when the image failed).
    p_yes : float
        The model's probability of "yes" for the first answer token (NaN when the image failed).
    generated_text : str
    mask_flags : str
        The lung-mask quality flags (``;``-separated; empty when the masks look plausible).
    failure : str or None
        The failure's message when the image could not be used (its row is in ``failures.csv``).
    """

    answer: str = ""
    p_yes: float = float("nan")
    generated_text: str = ""
    mask_flags: str = ""
    failure: str | None = None


def explain(
    image_path: str | os.PathLike,
    *,
    question: str,
    model_id: str,
    out_dir: str | os.PathLike,
    layers: int,
    terms: Sequence[str] = (),
    method: str,
    max_new_tokens: int,
    image_first: bool,
    max_side: int,
    boxes: str | os.PathLike | None = None,
    annotations: Sequence[Annotation] | None = None,
    faithfulness: bool = False,
    faithfulness_perturbations: Sequence[str] | None = None,
    reliance: bool = False,
    swap_image: np.ndarray | None = None,
    loaded_model=None,
) -> ExplainResult:
    """Answer ``question`` about ``image_path`` and write the study's outputs for it to ``out_dir``.

    ``boxes``, an MS-CXR-format CSV, adds the ``box_*`` grounding columns to ``metrics.csv``
    (:mod:`cxr_attention.grounding.single`), and the phrases of the image's rows as terms: each
    gets its term maps (from the question's or the answer's tokens where it occurs there, else
    the counterfactual map of the phrase's tokens). ``annotations``, instead of ``boxes``, are
    this image's annotations already read (the app's: an uploaded file's in any released format,
    or a run's recorded ones); those of unknown frame (VinDr's) take the image's own size.
    ``loaded_model``, the `cxr_attention.inference.model.LoadedModel` of ``model_id`` already in
    memory, saves loading it again (the app answers many questions with one model); without it
    the model is loaded here.
    ``faithfulness_perturbations`` computes the curves for those perturbations only (None: the
    schema's ``faithfulness.perturbations``).

    Returns
    -------
    ExplainResult
        The answer, or the failure when the image could not be used (its row is then in
        ``failures.csv``).

    Raises
    ------
    cxr_attention.model_source.ModelSourceError
        ``model_id`` is neither a model folder nor a hub id that resolves; raised before any
        work.
    """
    from cxr_attention.model_source import check_model_source
    from cxr_attention.preprocess.pipeline import preprocess_image

    if boxes is not None and annotations is not None:
        raise ValueError("give the boxes file or the annotations, not both")
    check_model_source(model_id)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    failures_csv = out_dir / "failures.csv"
    try:
        images = preprocess_image(image_path, out_dir, Path(image_path).stem, max_side=max_side)
    except InputError as error:
        failure = Failure.from_exception("preprocess", Path(image_path).stem, image_path, error)
        write_failures([failure], failures_csv)
        logger.error("%s", error)
        return ExplainResult(failure=str(error))
    write_failures([], failures_csv)

    preprocessed = PreprocessedImage(Path(image_path).stem, images)
    image = preprocessed.image()
    body = preprocessed.body_mask() > 0
    lungs = preprocessed.lung_labels()

    from cxr_attention.inference.model import load_model
    from cxr_attention.inference.runner import answer_one
    from cxr_attention.inference.writing import capture_arrays
    from cxr_attention.maps.shard import explain_maps, write_maps

    loaded = loaded_model if loaded_model is not None else load_model(model_id)
    capture = answer_one(
        loaded,
        image,
        question,
        layers=layers,
        max_new_tokens=max_new_tokens,
        image_first=image_first,
        include_pixel_values=True,
    )
    arrays = capture_arrays(capture, dtype=np.float32, include_pixel_values=True)
    write_capture(out_dir / "attention.npz", arrays)
    answer = parse_question_answer(question, capture.generated_text)
    write_json(
        {
            "question": question,
            "prompt": capture.prompt,
            "generated_text": capture.generated_text,
            "answer": answer,
            "p_yes": capture.p_yes,
            "yes_no_mass": capture.yes_no_mass,
            "model": model_id,
            "layers": [int(layer) for layer in capture.layers],
        },
        out_dir / "answer.json",
    )

    phrases = []
    if boxes is not None or annotations is not None:
        from cxr_attention.grounding.single import annotation_phrases, read_image_boxes

        source_size = (images["source_width"], images["source_height"])
        if boxes is not None:
            annotations = read_image_boxes(boxes, Path(image_path).stem)
        annotations = [a.sized_as(*source_size) for a in annotations]
        phrases = annotation_phrases(annotations)
    maps = explain_maps(
        arrays,
        terms=list(dict.fromkeys([*terms, *question_terms(question), *phrases])),
        loaded_model=loaded,
        method=method,
    )
    write_maps(maps, out_dir / "maps.csv", out_dir / "maps.npz")
    metrics = map_metrics_table(
        [(record.map_id, grid) for record, grid in maps],
        body,
        lungs,
        mask_flags=images["mask_flags"],
    )
    if annotations is not None:
        from cxr_attention.grounding.single import image_box_metrics

        grounding = image_box_metrics(maps, annotations, source_size=source_size)
        metrics = metrics.merge(grounding, on="map_id", how="left")
    write_csv(metrics, out_dir / "metrics.csv")
    _overlay(image, body, lungs, maps, question, answer, out_dir / "overlay.png")
    if faithfulness or reliance:
        from cxr_attention.faithfulness import explain_outputs

        if faithfulness:
            explain_outputs.write_explain_faithfulness(
                loaded,
                image,
                question,
                maps,
                out_dir / "faithfulness.csv",
                image_first=image_first,
                points_path=out_dir / "faithfulness_points.csv",
                perturbations=faithfulness_perturbations,
            )
        if reliance:
            explain_outputs.write_explain_reliance(
                loaded,
                image,
                None if images["mask_flags"] else lungs,
                question,
                out_dir / "reliance.csv",
                image_first=image_first,
                swap_image=swap_image,
            )
    return ExplainResult(
        answer=answer,
        p_yes=float(capture.p_yes),
        generated_text=capture.generated_text,
        mask_flags=images["mask_flags"],
    )


def map_metrics_table(
    maps: Iterable[tuple[str, np.ndarray]],
    body: np.ndarray,
    lungs: np.ndarray,
    *,
    mask_flags: str = "",
) -> pd.DataFrame:
    """The per-map metrics table (``metrics.csv``) of ``(map_id, grid)`` pairs on one image.

    With ``mask_flags`` (the lung mask is implausible) the lung metrics are left blank: they
    have no meaning then (docs/masks.md).
    """
    from cxr_attention.metrics.catalogue import LUNG_METRIC_COLUMNS, METRIC_COLUMNS
    from cxr_attention.metrics.per_map import map_metrics

    rows = [
        {"map_id": map_id, **map_metrics(grid, body_mask=body, lung_labels=lungs)}
        for map_id, grid in maps
    ]
    metrics = pd.DataFrame(rows, columns=METRIC_COLUMNS)
    if mask_flags:
        metrics[list(LUNG_METRIC_COLUMNS)] = np.nan
    return metrics


def _overlay(image, body, lungs, maps, question: str, answer: str, out_path: Path) -> None:
    """The answer's map (the first one) over the radiograph, with the body and lung contours."""
    from cxr_attention.figures.overlay import plot_overlay

    record, grid = maps[0]
    plot_overlay(
        image,
        grid,
        body_mask=body,
        lung_labels=lungs,
        title=f"{question} -> {answer} ({record.method} map of the answer)",
        out_path=out_path,
    )
