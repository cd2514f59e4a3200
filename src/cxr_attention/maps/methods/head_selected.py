"""Localization heads (Kang et al., CVPR 2025, "Your large vision-language model only needs a
few attention heads for visual grounding"): per head its image-attention share and spatial
entropy, the heads chosen from them, and ``head_selected``, the map of the chosen heads alone.

- :func:`head_statistics`: one row per captured (layer, head) of a sample: ``image_share``, the
  attention its target rows give the image tokens (mean over rows), and ``spatial_entropy``, the
  entropy of that attention renormalised over the image, divided by ``log(image tokens)``
  (1: uniform, 0: one token). :func:`head_table` stacks samples into a table.
- :func:`select_heads`: in each sample, the heads whose share is at least that sample's
  ``share_quantile`` are candidates and the ``k`` of lowest entropy among them are its picks;
  the ``k`` heads picked in most samples are chosen (ties: lower mean entropy).
  :func:`head_picks` is every head in that order, with its picks and mean statistics.
- :func:`write_head_selection`: the workflow's calibration (rules/heads.smk): the head table
  of the captures of the calibration split (``maps.head_calibration``) and the heads chosen
  from it, read back by :func:`read_head_selection` and :func:`read_localization_heads`.
- ``head_selected``: the captured attention of the chosen heads, averaged: those of
  ``maps.localization_heads`` when set by hand, else those chosen on the calibration split.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from cxr_attention.captures import load_capture, locate_capture
from cxr_attention.io import ConfigError, read_table, write_csv, write_json
from cxr_attention.maps.grid import MapUnavailable
from cxr_attention.maps.methods.attention import checked_attention_result
from cxr_attention.maps.methods.base import MapInputs, MapResult, PerTargetMethod
from cxr_attention.maps.targets import MapTarget

__all__ = [
    "HEAD_COLUMNS",
    "HeadSelected",
    "head_picks",
    "head_statistics",
    "head_table",
    "read_head_selection",
    "read_localization_heads",
    "select_heads",
    "with_localization_heads",
    "write_head_selection",
]

logger = logging.getLogger(__name__)

HEAD_COLUMNS = ["sample_id", "layer", "head", "image_share", "spatial_entropy"]


def head_statistics(attention: np.ndarray, layers, rows) -> pd.DataFrame:
    """Image share and normalised spatial entropy of every head (columns of :data:`HEAD_COLUMNS`
    but ``sample_id``).

    Parameters
    ----------
    attention : ndarray (layers, heads, rows, image tokens)
        A capture's image attention.
    layers : sequence of int
        The captured layers' indices.
    rows : sequence of int
        The target rows to average.
    """
    attention = np.asarray(attention, dtype=np.float64)[:, :, list(rows)].mean(axis=2)
    share = attention.sum(axis=-1)
    spread = attention / np.where(share > 0, share, 1.0)[..., None]
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(spread > 0, -spread * np.log(spread), 0.0)
    entropy = terms.sum(axis=-1) / np.log(attention.shape[-1])
    n_layers, n_heads = share.shape
    return pd.DataFrame(
        {
            "layer": np.repeat(np.asarray(layers, dtype=np.int64), n_heads),
            "head": np.tile(np.arange(n_heads), n_layers),
            "image_share": share.ravel(),
            "spatial_entropy": entropy.ravel(),
        }
    )


def head_table(samples) -> pd.DataFrame:
    """The head table of ``(sample_id, capture)`` pairs (every generated row of each)."""
    frames = []
    for sample_id, capture in samples:
        attention = np.asarray(capture.attention)
        frame = head_statistics(attention, capture.layers, range(attention.shape[2]))
        frames.append(frame.assign(sample_id=sample_id))
    return pd.concat(frames, ignore_index=True)[HEAD_COLUMNS]


def head_picks(table: pd.DataFrame, *, k: int, share_quantile: float) -> pd.DataFrame:
    """Every head of a head table in the order :func:`select_heads` chooses from.

    Returns
    -------
    pandas.DataFrame
        One row per (layer, head): ``picks``, the samples whose ``k`` picks include it (see the
        module docstring), and its mean ``image_share`` and ``spatial_entropy`` over the samples;
        most picks first, ties by lower mean entropy.
    """
    if table.empty:
        raise ValueError("no head statistics to choose localization heads from")
    if k < 1 or not 0 <= share_quantile <= 1:
        raise ValueError(f"need k >= 1 and share_quantile in [0, 1], got {k}, {share_quantile}")
    picks = []
    for _, sample in table.groupby("sample_id", sort=True):
        threshold = sample["image_share"].quantile(share_quantile)
        candidates = sample[sample["image_share"] >= threshold]
        picks.append(candidates.nsmallest(k, "spatial_entropy")[["layer", "head"]])
    counts = pd.concat(picks).value_counts().rename("picks")
    heads = table.groupby(["layer", "head"])[["image_share", "spatial_entropy"]].mean()
    heads = heads.join(counts).fillna({"picks": 0}).astype({"picks": int}).reset_index()
    ordered = heads.sort_values(
        ["picks", "spatial_entropy"], ascending=[False, True], kind="stable"
    )
    columns = ["layer", "head", "picks", "image_share", "spatial_entropy"]
    return ordered[columns].reset_index(drop=True)


def select_heads(table: pd.DataFrame, *, k: int, share_quantile: float) -> list:
    """The ``k`` localization heads of a head table, as ``(layer, head)`` pairs (fewer when
    fewer heads were ever picked)."""
    heads = head_picks(table, k=k, share_quantile=share_quantile)
    chosen = heads[heads["picks"] > 0].head(k)
    return [
        (int(layer), int(head)) for layer, head in zip(chosen["layer"], chosen["head"], strict=True)
    ]


def write_head_selection(
    *,
    answers_csv: str | os.PathLike,
    captures_dir: str | os.PathLike,
    out_table: str | os.PathLike,
    out_heads: str | os.PathLike,
    calibration: Mapping,
) -> list:
    """Choose the localization heads on the calibration split's captures and write them.

    Parameters
    ----------
    answers_csv, captures_dir : path
        The calibration inference's answers table and captures (the study's inference code on
        the calibration images).
    out_table : path
        The head table (:data:`HEAD_COLUMNS`, one row per sample, captured layer and head).
    out_heads : path
        JSON: ``localization_heads`` (the chosen ``[layer, head]`` pairs, best first), with the
        ``split``, ``k``, ``share_quantile`` and the counts of ``images`` and ``samples``.
    calibration : mapping
        ``maps.head_calibration`` (``split``, ``k``, ``share_quantile``).

    Raises
    ------
    ConfigError
        The calibration gave no capture (no question could be asked about its images).
    """
    answers = read_table(answers_csv, required=("sample_id", "dicom_id", "capture"), text=True)
    if answers.empty:
        raise ConfigError(
            f"{answers_csv}: no calibration sample (no question about the images of "
            f"maps.head_calibration.split {calibration['split']!r}): no heads can be chosen"
        )
    table = head_table(
        (row.sample_id, load_capture(locate_capture(row.capture, captures_dir)))
        for row in answers.itertuples(index=False)
    )
    heads = select_heads(
        table, k=int(calibration["k"]), share_quantile=float(calibration["share_quantile"])
    )
    logger.info(
        "localization heads %s: chosen on %d sample(s) of %d image(s) of split %s",
        heads,
        len(answers),
        answers["dicom_id"].nunique(),
        calibration["split"],
    )
    write_csv(table, out_table)
    write_json(
        {
            "localization_heads": [list(pair) for pair in heads],
            "split": calibration["split"],
            "k": int(calibration["k"]),
            "share_quantile": float(calibration["share_quantile"]),
            "images": int(answers["dicom_id"].nunique()),
            "samples": len(answers),
        },
        out_heads,
    )
    return heads


def read_head_selection(path: str | os.PathLike) -> dict:
    """A :func:`write_head_selection` file: its keys, ``localization_heads`` as
    ``(layer, head)`` tuples."""
    try:
        selection = json.loads(Path(path).read_text())
        pairs = selection["localization_heads"]
        selection["localization_heads"] = tuple((int(layer), int(head)) for layer, head in pairs)
        return selection
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ConfigError(f"{path}: not a localization heads file ({error})") from error


def read_localization_heads(path: str | os.PathLike) -> tuple[tuple[int, int], ...]:
    """The ``(layer, head)`` pairs of a :func:`write_head_selection` file."""
    return read_head_selection(path)["localization_heads"]


def with_localization_heads(params: Mapping, path: str | os.PathLike | None) -> dict:
    """The ``maps`` settings with the heads chosen on the calibration split (``path``, from
    :func:`write_head_selection`) as ``localization_heads``, unless those are set by hand (they
    win) or there is no file."""
    params = dict(params)
    if path and params.get("localization_heads") is None:
        params["localization_heads"] = read_localization_heads(path)
    elif path:
        logger.info("maps.localization_heads set by hand: %s is not used", path)
    return params


class HeadSelected(PerTargetMethod):
    name = "head_selected"
    label = "localization heads"
    colour = "#999933"
    description = (
        "attention of the few localization heads chosen on the calibration split (image share "
        "and spatial entropy)"
    )
    needs = "capture"
    term_conditioned = True
    cascade_sources = frozenset({"answer", "generated"})

    def attribute_one(self, inputs: MapInputs, target: MapTarget) -> MapResult:
        from cxr_attention.maps.attention import attention_map
        from cxr_attention.maps.methods.attention import AttentionSelection

        heads = inputs.params.localization_heads
        if not heads:
            raise MapUnavailable(
                "no localization heads chosen (maps.localization_heads, maps.head_calibration)"
            )
        if target.source not in ("answer", "generated"):
            raise MapUnavailable("term not generated")
        selection = AttentionSelection(inputs, target)
        captured = [int(layer) for layer in np.asarray(inputs.capture.layers)]
        missing = [pair for pair in heads if pair[0] not in captured]
        if missing:
            raise MapUnavailable(f"localization heads {missing} in layers not captured")
        attention = np.stack(
            [selection.attention[captured.index(layer), head] for layer, head in heads]
        )[:, None]  # each chosen head as its own "layer" of one head
        grid_map, image_mass = attention_map(
            attention, target.generated_positions, aspect_ratio=inputs.aspect_ratio
        )
        selection.layer_index = np.array([captured.index(layer) for layer, _ in heads])
        result = checked_attention_result(inputs, selection, grid_map, image_mass)
        return MapResult(
            result.grid,
            result.image_mass,
            layers=result.layers,
            heads="|".join(str(head) for _, head in heads),
        )
