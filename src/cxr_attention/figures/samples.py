"""The per-sample figures of one shard: overlay, method panels and prompt sensitivity.

For the first ``samples_per_shard`` images of the shard (sorted by ``dicom_id``) that have maps,
and for each finding asked about them (at most ``max_samples`` such samples, the first by image
then finding: ``figures/report_samples.py`` shares the study's ``figures.report_samples`` out
over the shards, so the report's sample figures stay bounded however large the study), this
writes into one folder:

- ``overlay__<dicom_id>__<finding>.png``: the baseline question's map over the radiograph;
- ``panels__<dicom_id>__<finding>.png``: every strategy (rows) and method (columns);
- ``sensitivity__<dicom_id>__<finding>__<strategy>.png``: the baseline's map against each
  other strategy's map of the same term and source;
- ``layers__<dicom_id>__<finding>.png``: the baseline question's attention decision map per
  captured decoder layer, beside their mean (when the maps stage made per-layer maps,
  ``maps.per_layer``).

The file-name prefixes are what ``report/sample_figures.rst`` keys its caption on.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cxr_attention.figures._style import METHODS, STRATEGIES
from cxr_attention.figures.layers import answer_layer_maps, plot_answer_map_per_layer
from cxr_attention.figures.overlay import plot_overlay
from cxr_attention.figures.panels import plot_method_panels
from cxr_attention.figures.report_samples import select_report_samples
from cxr_attention.figures.sensitivity import plot_prompt_sensitivity
from cxr_attention.io import ConfigError, InputError, read_table
from cxr_attention.metrics.selection import select_maps
from cxr_attention.preprocessed import PreprocessedImage

__all__ = ["map_name", "write_sample_figures"]

_LOG = logging.getLogger(__name__)


def write_sample_figures(
    *,
    answers_csv: str | os.PathLike,
    maps_csv: str | os.PathLike,
    maps_npz: str | os.PathLike,
    images_csv: str | os.PathLike,
    out_dir: str | os.PathLike,
    samples_per_shard: int = 2,
    max_samples: int | None = None,
    root: str | os.PathLike = ".",
) -> list[Path]:
    """Write the per-sample figures of one shard into ``out_dir`` (created, possibly empty).

    Parameters
    ----------
    answers_csv, maps_csv, maps_npz, images_csv : path-like
        The shard's answers table, maps table, map arrays and preprocess table
        (docs/architecture.md).
    out_dir : path-like
        Folder for the PNGs.
    samples_per_shard : int
        Images that get figures; 0 writes none.
    max_samples : int or None
        Samples (image and finding) of those images that get figures, the first by image then
        finding (:func:`select_report_samples`); None draws every finding of those images.
    root : path-like
        Folder the preprocess table's paths are relative to (the repository root).

    Returns
    -------
    list of Path
        The figures written, in order.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    answers, maps, images = (read_table(p) for p in (answers_csv, maps_csv, images_csv))
    if samples_per_shard <= 0 or maps.empty or answers.empty:
        return []
    for name, table, columns in (
        ("answers", answers, ("sample_id", "finding", "strategy", "question_id", "answer")),
        ("maps", maps, ("map_id", "sample_id", "dicom_id", "term", "source", "method")),
        ("preprocess", images, ("dicom_id", "image", "body_mask", "lung_mask")),
    ):
        missing = [c for c in columns if c not in table.columns]
        if missing:
            raise ConfigError(f"{name} table lacks columns {missing}")
    # The answer's own map has no term: a blank, not NaN, so that strategies' maps pair up.
    terms = maps["term"].astype(object).where(maps["term"].notna(), "")
    chosen = select_maps(maps.assign(term=terms), one_per="sample_every_method")
    sample_columns = ["finding", "strategy", "question_id", "answer", "question"]
    sample_columns = [c for c in sample_columns if c not in chosen.columns]
    sample_columns = [c for c in sample_columns if c in answers.columns]
    chosen = chosen.merge(answers[["sample_id", *sample_columns]], on="sample_id", how="inner")
    if "question" not in chosen.columns:
        chosen["question"] = ""
    images = images.set_index("dicom_id")
    dicom_ids = sorted(set(chosen["dicom_id"]) & set(images.index))[:samples_per_shard]
    chosen = chosen[chosen["dicom_id"].isin(dicom_ids)]
    if max_samples is not None:
        drawn = select_report_samples(chosen, max_samples)
        keys = pd.MultiIndex.from_frame(chosen[["dicom_id", "finding"]].astype(str))
        chosen = chosen[keys.isin(pd.MultiIndex.from_frame(drawn))]
    written: list[Path] = []
    with np.load(maps_npz) as arrays:
        for dicom_id in sorted(set(chosen["dicom_id"])):
            try:
                image, body, lungs = _read_image(dicom_id, images.loc[dicom_id], Path(root))
            except InputError as error:
                _LOG.warning("no figures for %s: %s", dicom_id, error)
                continue
            of_image = chosen[chosen["dicom_id"] == dicom_id]
            for finding, group in of_image.groupby("finding", sort=True):
                written += _figures_of_finding(
                    dicom_id, str(finding), group, arrays, image, body, lungs, out_dir
                )
                written += _layer_figure(
                    dicom_id, str(finding), group, maps, arrays, image, out_dir
                )
    return written


def _figures_of_finding(
    dicom_id: str,
    finding: str,
    maps: pd.DataFrame,
    arrays: Mapping[str, np.ndarray],
    image: np.ndarray,
    body: np.ndarray,
    lungs: np.ndarray,
    out_dir: Path,
) -> list[Path]:
    """Overlay, panels and sensitivity figures of one image and finding."""
    maps = maps[[m in arrays for m in maps["map_id"]]]
    # One question per strategy: the first (baseline variant 0, then the lowest question id).
    per_strategy = {
        strategy: group[group["question_id"] == sorted(group["question_id"])[0]]
        for strategy, group in maps.groupby("strategy", sort=True)
    }
    strategies = [s for s in STRATEGIES if s in per_strategy]
    strategies += sorted(set(per_strategy) - set(strategies))
    if not strategies:
        return []
    masks = {"body_mask": body, "lung_labels": lungs}
    stem = f"{dicom_id}__{_slug(finding)}"
    reference = strategies[0]
    first = per_strategy[reference].iloc[0]  # the preferred method (select_maps' order)
    written = [
        plot_overlay(
            image,
            arrays[first["map_id"]],
            title=(
                f"{dicom_id}, {finding.replace('_', ' ')}: {map_name(first)}\n"
                f"{first['method']} map; {reference} question: {_question(first)}\n"
                f"answer: {first['answer']}"
            ),
            value_label=f"{first['method']} share per token",
            out_path=out_dir / f"overlay__{stem}.png",
            **masks,
        )
    ]
    panel_maps = {
        (strategy, row.method): arrays[row.map_id]
        for strategy in strategies
        for row in per_strategy[strategy].itertuples(index=False)
    }
    methods = [m for m in METHODS if any(key[1] == m for key in panel_maps)]
    methods += sorted({key[1] for key in panel_maps} - set(methods))
    written.append(
        plot_method_panels(
            image,
            panel_maps,
            strategies=strategies,
            methods=methods,
            answers={s: str(per_strategy[s].iloc[0]["answer"]) for s in strategies},
            title="\n".join(
                [f"{dicom_id}, {finding.replace('_', ' ')}: {map_name(first)}"]
                + [
                    f"{s.replace('_', ' ')}: {_question(per_strategy[s].iloc[0])}"
                    for s in strategies
                ]
            ),
            out_path=out_dir / f"panels__{stem}.png",
            **masks,
        )
    )
    for strategy in strategies[1:]:
        other = per_strategy[strategy]
        match = other[(other["term"] == first["term"]) & (other["source"] == first["source"])]
        if match.empty:
            continue
        second = match.iloc[0]
        written.append(
            plot_prompt_sensitivity(
                image,
                arrays[first["map_id"]],
                arrays[second["map_id"]],
                label_a=f"{reference} ({first['method']}), answer {first['answer']}",
                label_b=f"{strategy} ({second['method']}), answer {second['answer']}",
                title=(
                    f"{dicom_id}, {finding.replace('_', ' ')}: {map_name(first)}\n"
                    f"A: {_question(first)}\nB: {_question(second)}"
                ),
                out_path=out_dir / f"sensitivity__{stem}__{_slug(strategy)}.png",
                **masks,
            )
        )
    return written


def _layer_figure(
    dicom_id: str,
    finding: str,
    chosen: pd.DataFrame,
    maps: pd.DataFrame,
    arrays: Mapping[str, np.ndarray],
    image: np.ndarray,
    out_dir: Path,
) -> list[Path]:
    """The baseline question's attention decision map per layer, when the shard has them."""
    if not {"rows", "per_layer", "layers"} <= set(maps.columns):
        return []  # a maps table from before per-layer maps
    reference = chosen.sort_values("question_id", kind="stable")
    strategies = [s for s in STRATEGIES if s in set(reference["strategy"])]
    if strategies:
        reference = reference[reference["strategy"] == strategies[0]]
    sample_id = str(reference.iloc[0]["sample_id"])
    layer_maps = answer_layer_maps(maps, arrays, sample_id)
    if len(layer_maps) < 2:  # no per-layer maps (maps.per_layer off), or one layer only
        return []
    row = reference.iloc[0]
    return [
        plot_answer_map_per_layer(
            image,
            layer_maps,
            title=(
                f"{dicom_id}, {finding.replace('_', ' ')}: attention decision map per layer\n"
                f"{row['strategy']} question: {_question(row)}"
            ),
            out_path=out_dir / f"layers__{dicom_id}__{_slug(finding)}.png",
        )
    ]


def map_name(row: pd.Series | Mapping[str, Any]) -> str:
    """What a map shows, for a title: ``answer map`` or ``term 'effusion' (prompt)``."""
    term = str(row["term"] or "")
    if row["source"] == "answer" or not term:
        return "answer map"
    return f"term '{term}' ({row['source']})"


def _question(row: pd.Series | Mapping[str, Any]) -> str:
    question = row.get("question", "")
    return f'"{question}"' if isinstance(question, str) and question else "(question not recorded)"


def _read_image(
    dicom_id: str, row: pd.Series, root: Path
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The preprocessed image, body mask (0/255) and lung labels (0/1/2) of one image."""
    image = PreprocessedImage(dicom_id, row.to_dict(), root)
    return image.image(), image.body_mask(), image.lung_labels()


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in str(text).lower())
