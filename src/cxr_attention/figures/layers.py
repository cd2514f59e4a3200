"""One sample's decision map per captured decoder layer (the maps stage's ``per_layer`` maps),
side by side on one colour scale, after the mean over the layers."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from cxr_attention.figures.panels import plot_method_panels

__all__ = ["answer_layer_maps", "plot_answer_map_per_layer"]

ROW = "answer"
MEAN = "mean of layers"


def answer_layer_maps(
    maps: pd.DataFrame, arrays: Mapping[str, np.ndarray], sample_id: str, method: str = "attention"
) -> dict[str, np.ndarray]:
    """The decision maps of one sample: the layers' mean, then one per layer in decoder order.

    Parameters
    ----------
    maps : DataFrame
        A maps table (``map_id, sample_id, source, method, rows, per_layer, layers``; read as
        text or typed).
    arrays : mapping of map_id to ndarray
        The maps' arrays (``maps/shard-<k>.npz``).
    sample_id : str
    method : str

    Returns
    -------
    dict of str to ndarray
        ``"mean of layers"`` (when present), then ``"layer <L>"`` per captured layer.
    """
    chosen = maps[
        (maps["sample_id"] == sample_id)
        & (maps["source"] == "answer")
        & (maps["rows"] == "decision")
        & (maps["method"] == method)
    ]
    per_layer = chosen["per_layer"].astype(str) == "True"
    result = {}
    for map_id in chosen.loc[~per_layer, "map_id"]:
        result[MEAN] = arrays[map_id]  # one mean map per method
    layers = chosen[per_layer].assign(layer_index=lambda t: t["layers"].astype(int))
    for row in layers.sort_values("layer_index").itertuples(index=False):
        result[f"layer {row.layer_index}"] = arrays[row.map_id]
    return result


def plot_answer_map_per_layer(
    image_uint8: np.ndarray,
    layer_maps: Mapping[str, np.ndarray],
    *,
    title: str,
    out_path: str | os.PathLike,
    body_mask: np.ndarray | None = None,
    lung_labels: np.ndarray | None = None,
) -> Path:
    """Write the decision map per layer (:func:`answer_layer_maps`) as one row of overlays.

    Returns
    -------
    Path
        ``out_path``.
    """
    if not layer_maps:
        raise ValueError("no per-layer maps (run the maps stage with maps.per_layer: true)")
    columns = list(layer_maps)
    return plot_method_panels(
        image_uint8,
        {(ROW, column): grid for column, grid in layer_maps.items()},
        title=title,
        out_path=out_path,
        strategies=[ROW],
        methods=columns,
        body_mask=body_mask,
        lung_labels=lung_labels,
    )
