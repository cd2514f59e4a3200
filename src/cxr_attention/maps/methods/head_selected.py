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
- ``head_selected``: the captured attention of the heads in ``maps.localization_heads``
  (``[layer, head]`` pairs, chosen by :func:`select_heads` on a calibration split), averaged.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from cxr_attention.maps.grid import MapUnavailable
from cxr_attention.maps.methods.attention import checked_attention_result
from cxr_attention.maps.methods.base import MapInputs, MapResult, PerTargetMethod
from cxr_attention.maps.targets import MapTarget

__all__ = ["HEAD_COLUMNS", "HeadSelected", "head_statistics", "head_table", "select_heads"]

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


def select_heads(table: pd.DataFrame, k: int = 3, share_quantile: float = 0.75) -> list:
    """The ``k`` localization heads of a head table, as ``(layer, head)`` pairs."""
    if k < 1 or not 0 <= share_quantile <= 1:
        raise ValueError(f"need k >= 1 and share_quantile in [0, 1], got {k}, {share_quantile}")
    picks = []
    for _, sample in table.groupby("sample_id", sort=True):
        threshold = sample["image_share"].quantile(share_quantile)
        candidates = sample[sample["image_share"] >= threshold]
        picks.append(candidates.nsmallest(k, "spatial_entropy")[["layer", "head"]])
    picked = pd.concat(picks).value_counts().rename("count").reset_index()
    entropy = table.groupby(["layer", "head"])["spatial_entropy"].mean().rename("entropy")
    picked = picked.merge(entropy.reset_index(), on=["layer", "head"])
    chosen = picked.sort_values(["count", "entropy"], ascending=[False, True]).head(k)
    return [
        (int(layer), int(head)) for layer, head in zip(chosen["layer"], chosen["head"], strict=True)
    ]


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
            raise MapUnavailable("no localization heads chosen (maps.localization_heads)")
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
