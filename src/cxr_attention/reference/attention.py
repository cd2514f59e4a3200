"""The reference's attention maps: keys 1:257 as the image, its rows and layer weights."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from cxr_attention.maps.attention import reassemble_prompt_keys, reference_key_slice
from cxr_attention.maps.grid import MapUnavailable

__all__ = [
    "REFERENCE_LAYERS",
    "REFERENCE_ROWS",
    "reference_attention_grid",
    "reference_image_slice",
    "reference_layer_weights",
    "reference_rows",
]

#: The reference used the last three decoder layers (``num_layers_to_use = min(3, ...)``).
REFERENCE_LAYERS = 3
#: ... and the first five generated positions (``range(prompt_len, prompt_len + 5)``).
REFERENCE_ROWS = 5


def reference_rows(n_generated: int, *, n_rows: int = REFERENCE_ROWS) -> list[int]:
    """Capture rows the reference averaged: queries at the first ``n_rows`` generated tokens.

    The reference re-ran the model on ``sequences[:, :-1]`` and read the rows at positions
    ``prompt_len .. prompt_len + 4``: the queries *at* generated tokens 0..4. In a capture, row
    ``i`` is the query at generated token ``i - 1``, so these are rows ``1 .. 5``, cut at the last
    row that exists in the re-run (``n_generated - 1``). Row 0 (the last prompt token, which chose
    the first answer token) is not among them.
    """
    return list(range(1, min(n_rows + 1, n_generated)))


def reference_layer_weights(n_layers: int) -> np.ndarray:
    """The reference's layer weights, earliest of the last ``n_layers`` first.

    It zipped ``range(-n, 0)`` with ``0.5 ** i`` normalised, so the *earliest* of the three layers
    gets the largest weight: ``[4/7, 2/7, 1/7]`` for layers ``-3, -2, -1``.
    """
    weights = np.array([0.5**i for i in range(n_layers)], dtype=np.float64)
    return weights / weights.sum()


def _layer_order(capture: Mapping[str, np.ndarray], n_layers: int) -> np.ndarray:
    """Indices along the capture's layer axis of its last ``n_layers`` decoder layers, ascending."""
    layers = np.asarray(capture["layers"]).reshape(-1)
    chosen = np.argsort(layers, kind="stable")[-n_layers:]
    return chosen


def reference_image_slice(
    capture: Mapping[str, np.ndarray], *, n_layers: int = REFERENCE_LAYERS
) -> np.ndarray:
    """Key positions 1:257 of the full prompt key axis, per generated row, the reference's way.

    For each row: mean over the query heads (the reference's GQA mean of group means equals the
    plain head mean), each layer's slice normalised to sum 1, then the layers combined with
    :func:`reference_layer_weights`. This is the reference's grid when a single row is used; see
    :func:`reference_attention_grid` for its multi-row map.

    Parameters
    ----------
    capture : mapping
        Capture arrays (docs/architecture.md): ``attention``, ``text_attention``,
        ``image_token_positions``, ``layers``.
    n_layers : int
        Last layers used (3 in the reference; fewer if fewer were captured).

    Returns
    -------
    ndarray of shape (generated, 256), float64
        Rows with no mass on positions 1:257 are all zero.
    """
    sliced = reference_key_slice(_head_mean_prompt_rows(capture, n_layers))  # (layers, gen., 256)
    totals = sliced.sum(axis=-1, keepdims=True)
    per_layer = np.divide(sliced, totals, out=np.zeros_like(sliced), where=totals > 0)
    weights = reference_layer_weights(sliced.shape[0])
    return np.tensordot(weights, per_layer, axes=1)


def _head_mean_prompt_rows(capture: Mapping[str, np.ndarray], n_layers: int) -> np.ndarray:
    """Every row's attention over the whole prompt, mean over heads: ``(layers, rows, prompt)``.

    The last ``n_layers`` captured layers (all, if fewer were captured), earliest first.
    """
    full = reassemble_prompt_keys(capture)  # (layers, heads, generated, prompt), float64
    return full[_layer_order(capture, min(n_layers, full.shape[0]))].mean(axis=1)


def reference_attention_grid(
    capture: Mapping[str, np.ndarray],
    *,
    rows: Sequence[int] | None = None,
    gate_positions: Sequence[int] | None = None,
    n_layers: int = REFERENCE_LAYERS,
    grid_shape: tuple[int, int] = (16, 16),
) -> np.ndarray:
    """The reference's 16 x 16 "image attention" map from a capture (``extract_self_attention``).

    Per layer (the last ``n_layers``, head mean): sum over the chosen rows of each row's slice
    1:257 times its gate, normalise to sum 1; then the weighted sum over layers
    (:func:`reference_layer_weights`). The gate of a row is its attention share on the term's
    prompt tokens (``sum row[gate_positions] / sum row[:prompt_len]``), or ``1 / prompt_len`` for
    every row when no position is given, as the reference did when it found no term.

    Parameters
    ----------
    capture : mapping
        Capture arrays.
    rows : sequence of int, optional
        Capture rows; default :func:`reference_rows`.
    gate_positions : sequence of int, optional
        Prompt positions of the target term's tokens.
    n_layers : int
    grid_shape : (rows, cols)

    Returns
    -------
    ndarray of shape grid_shape, float64
        Sums to 1 (the layer weights sum to 1 and each layer is normalised).

    Raises
    ------
    MapUnavailable
        No rows (a one-token answer leaves the re-run without generated positions), or no mass on
        positions 1:257 in any layer.
    """
    n_generated = np.asarray(capture["attention"]).shape[2]
    row_list = reference_rows(n_generated) if rows is None else [int(r) for r in rows]
    if not row_list:
        raise MapUnavailable("no generated position to average (answer of one token)")
    prompt_rows = _head_mean_prompt_rows(capture, n_layers)[:, row_list]  # (layers, rows, prompt)
    sliced = reference_key_slice(prompt_rows)  # (layers, rows, 256)
    prompt_len = prompt_rows.shape[-1]
    if gate_positions:
        positions = np.asarray(list(gate_positions), dtype=np.int64)
        on_term = prompt_rows[..., positions].sum(axis=-1)
        on_prompt = prompt_rows.sum(axis=-1)
        gates = np.where(
            on_term > 0, on_term / np.where(on_prompt > 0, on_prompt, 1.0), 1.0 / prompt_len
        )
    else:
        gates = np.full(sliced.shape[:2], 1.0 / prompt_len)
    per_layer = np.einsum("lr,lrk->lk", gates, sliced)
    totals = per_layer.sum(axis=-1)
    if not np.all(totals > 0):
        raise MapUnavailable("no attention on positions 1:257")
    per_layer = per_layer / totals[:, None]
    grid = np.tensordot(reference_layer_weights(per_layer.shape[0]), per_layer, axes=1)
    return grid.reshape(grid_shape)
