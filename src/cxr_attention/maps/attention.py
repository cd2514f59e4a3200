"""Attention maps from captured attention arrays (``attention``, ``term_attention``,
``gated_answer``).

Inputs are the capture arrays of ``docs/architecture.md``: ``attention`` ``[layers, heads,
generated, 256]`` (row ``i`` is the decoding step that produced ``generated_ids[i]``: its query is
the last prompt token for ``i = 0`` and generated token ``i - 1`` after), ``text_attention``
``[layers, heads, generated, prompt_len]`` (image columns zero) and ``layers`` (decoder indices).

Which row belongs to a token
----------------------------
A generated token at position ``p`` is mapped through row ``p``: the step whose output *is* that
token, i.e. where the model looked while choosing to say it. Grad-CAM differentiates the logit of
the same token at the same step, so the two methods explain the same decision.

Averaging query heads versus KV groups
--------------------------------------
MedGemma has 8 query heads sharing 4 key/value heads (grouped-query attention, 2 query heads per
group). Each query head has its own softmax, so the capture holds 8 distinct rows per token. The
mean over the 8 heads equals the mean over the 4 groups of each group's mean over its 2 heads,
because every group has the same size: ``(1/8) sum_h a_h = (1/4) sum_g (1/2) sum_{h in g} a_h``.
Averaging heads directly is therefore the same as averaging KV groups first; it would differ only
with unequal groups or a weighted mean.

Image mass
----------
Captured rows are softmax probabilities over the whole key axis; the image tokens get part of it
(the rest goes to the BOS/sink and text tokens). The averaged row's sum over the 256 image columns
is the map's ``image_mass``; the map itself is renormalised to sum 1 over the image tokens.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from cxr_attention.maps.grid import MapUnavailable, normalise_map, to_grid

__all__ = [
    "attention_map",
    "gate_weights",
    "gated_answer_map",
    "reassemble_prompt_keys",
    "reference_compat_attention",
    "reference_key_slice",
    "select_layers_heads",
]


def select_layers_heads(
    captured_layers: Sequence[int],
    n_heads: int,
    *,
    layers: Sequence[int] | None = None,
    heads: Sequence[int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Indices into a capture's layer and head axes for the chosen decoder layers and heads.

    Parameters
    ----------
    captured_layers : sequence of int
        The capture's ``layers`` array (absolute decoder layer indices).
    n_heads : int
        Size of the head axis.
    layers : sequence of int, optional
        Decoder layer indices to use (absolute, or negative counting from the last captured
        layer: ``-1`` is the last captured one). Default: every captured layer.
    heads : sequence of int, optional
        Query heads to use. Default: all.

    Returns
    -------
    layer_index, head_index : ndarray of int
        Positions along the capture's layer and head axes.
    """
    captured = [int(v) for v in np.asarray(captured_layers).reshape(-1)]
    if layers is None:
        layer_index = np.arange(len(captured))
    else:
        layer_index = []
        for layer in layers:
            layer = int(layer)
            if layer < 0 and -len(captured) <= layer:
                layer_index.append(len(captured) + layer)
            elif layer in captured:
                layer_index.append(captured.index(layer))
            else:
                raise ValueError(f"layer {layer} was not captured (captured: {captured})")
        layer_index = np.array(layer_index, dtype=np.int64)
    head_index = np.arange(n_heads) if heads is None else np.array([int(h) for h in heads])
    if head_index.size and (head_index.min() < 0 or head_index.max() >= n_heads):
        raise ValueError(f"heads {head_index.tolist()} outside 0..{n_heads - 1}")
    if layer_index.size == 0 or head_index.size == 0:
        raise ValueError("no layer or no head selected")
    return layer_index, head_index


def _all_if_unset(
    array: np.ndarray, layer_index: np.ndarray | None, head_index: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """The given layer and head indices, or every layer / head of ``array`` where not given."""
    layer_index = np.arange(array.shape[0]) if layer_index is None else layer_index
    head_index = np.arange(array.shape[1]) if head_index is None else head_index
    return layer_index, head_index


def _mean_over_layers_heads(
    array: np.ndarray, layer_index: np.ndarray, head_index: np.ndarray
) -> np.ndarray:
    """Mean of ``array[layers, heads, rows, keys]`` over the chosen layers and heads.

    Accumulates in float64 (float16 captures included); returns ``[rows, keys]``.
    """
    selected = np.asarray(array)[np.ix_(layer_index, head_index)]
    return selected.astype(np.float64).mean(axis=(0, 1))


def attention_map(
    attention: np.ndarray,
    rows: Sequence[int],
    *,
    layer_index: np.ndarray | None = None,
    head_index: np.ndarray | None = None,
    aspect_ratio: float = 1.0,
) -> tuple[np.ndarray, float]:
    """Method ``attention``: mean attention of the target rows to the image tokens.

    Parameters
    ----------
    attention : ndarray of shape (layers, heads, generated, n_image_tokens)
    rows : sequence of int
        Rows to average (the term's generated positions, or every row for the answer map).
    layer_index, head_index : ndarray of int, optional
        From :func:`select_layers_heads`; default all.
    aspect_ratio : float
        Image width / height, used only for a non-square token count.

    Returns
    -------
    grid_map : ndarray of shape (rows, cols), float32, sums to 1
    image_mass : float
        Sum over the image tokens of the averaged row, before renormalisation.

    Raises
    ------
    MapUnavailable
        No rows, rows outside the capture, non-finite values or no mass on the image.
    """
    attention = np.asarray(attention)
    layer_index, head_index = _all_if_unset(attention, layer_index, head_index)
    rows = np.asarray(list(rows), dtype=np.int64)
    if rows.size == 0:
        raise MapUnavailable("no target rows")
    if rows.min() < 0 or rows.max() >= attention.shape[2]:
        raise MapUnavailable(f"rows {rows.tolist()} outside the {attention.shape[2]} captured rows")
    per_row = _mean_over_layers_heads(attention[:, :, rows], layer_index, head_index)
    mean_row = per_row.mean(axis=0)
    return _finish(mean_row, aspect_ratio)


def gate_weights(
    text_attention: np.ndarray,
    prompt_positions: Sequence[int],
    *,
    layer_index: np.ndarray | None = None,
    head_index: np.ndarray | None = None,
) -> np.ndarray:
    """The reference's token gate: how much each generated row attends to the term in the prompt.

    Parameters
    ----------
    text_attention : ndarray of shape (layers, heads, generated, prompt_len)
    prompt_positions : sequence of int
        Positions of the term's tokens in the prompt (``input_ids`` indices).

    Returns
    -------
    ndarray of shape (generated,), float64
        Attention mass of each row on those positions (mean over the chosen layers and heads),
        normalised to sum 1 over the rows.

    Raises
    ------
    MapUnavailable
        No positions, non-finite values, or no row attends to the term at all.
    """
    text_attention = np.asarray(text_attention)
    layer_index, head_index = _all_if_unset(text_attention, layer_index, head_index)
    positions = np.asarray(list(prompt_positions), dtype=np.int64)
    if positions.size == 0:
        raise MapUnavailable("no gating positions")
    if positions.min() < 0 or positions.max() >= text_attention.shape[-1]:
        raise MapUnavailable(f"gating positions {positions.tolist()} outside the prompt")
    on_term = _mean_over_layers_heads(text_attention[..., positions], layer_index, head_index)
    gate = on_term.sum(axis=-1)
    if not np.all(np.isfinite(gate)):
        raise MapUnavailable("non-finite values")
    total = gate.sum()
    if not total > 0:
        raise MapUnavailable("generated tokens pay no attention to the term")
    return gate / total


def gated_answer_map(
    attention: np.ndarray,
    text_attention: np.ndarray,
    prompt_positions: Sequence[int],
    *,
    layer_index: np.ndarray | None = None,
    head_index: np.ndarray | None = None,
    aspect_ratio: float = 1.0,
) -> tuple[np.ndarray, float, int]:
    """Method ``gated_answer``: the answer's rows weighted by their attention to a prompt term.

    The map of a term only asked about ("Is there a pleural effusion?" answered "No.") is the
    mean image attention of the generated rows, each weighted by its gate (:func:`gate_weights`).

    Returns
    -------
    grid_map : ndarray, float32, sums to 1
    image_mass : float
        Gate-weighted image mass of the rows, before renormalisation.
    n_gating_positions : int
        Number of prompt tokens the gate was read from.
    """
    attention = np.asarray(attention)
    layer_index, head_index = _all_if_unset(attention, layer_index, head_index)
    weights = gate_weights(
        text_attention, prompt_positions, layer_index=layer_index, head_index=head_index
    )
    per_row = _mean_over_layers_heads(attention, layer_index, head_index)
    weighted_row = weights @ per_row
    grid_map, image_mass = _finish(weighted_row, aspect_ratio)
    return grid_map, image_mass, len(list(prompt_positions))


def reassemble_prompt_keys(capture: Mapping[str, np.ndarray]) -> np.ndarray:
    """Rebuild every generated row's attention over the full prompt key axis.

    ``text_attention`` holds the non-image prompt columns (image columns zero); ``attention``
    holds the image columns in grid order; ``image_token_positions`` says where they go.

    Returns
    -------
    ndarray of shape (layers, heads, generated, prompt_len), float64
    """
    full = np.asarray(capture["text_attention"], dtype=np.float64).copy()
    positions = np.asarray(capture["image_token_positions"], dtype=np.int64)
    full[..., positions] = np.asarray(capture["attention"], dtype=np.float64)
    return full


def reference_compat_attention(
    capture: Mapping[str, np.ndarray], *, start: int = 1, n_tokens: int = 256
) -> np.ndarray:
    """The reference study's "image attention": key positions ``1:257`` of the prompt.

    The reference took the 256 keys after position 0 as the image tokens. With Gemma 3's chat
    template those are the BOS-adjacent chat and question tokens, ``<start_of_image>`` and the
    first image tokens: the image tokens are shifted, and its first "cell" is a text or sink token.
    Use with ``reference_compat: true`` only, to reproduce its numbers; never by default.

    Returns
    -------
    ndarray of shape (layers, heads, generated, n_tokens), float64
        Drop-in replacement for ``capture["attention"]``.
    """
    return reference_key_slice(reassemble_prompt_keys(capture), start=start, n_tokens=n_tokens)


def reference_key_slice(
    prompt_keys: np.ndarray, *, start: int = 1, n_tokens: int = 256
) -> np.ndarray:
    """Key positions ``start:start + n_tokens`` of rows over the full prompt key axis (last axis).

    Raises
    ------
    MapUnavailable
        The prompt ends before the slice does.
    """
    prompt_len = prompt_keys.shape[-1]
    if prompt_len < start + n_tokens:
        raise MapUnavailable(
            f"prompt of {prompt_len} tokens ends before position {start + n_tokens}"
        )
    return prompt_keys[..., start : start + n_tokens]


def _finish(row: np.ndarray, aspect_ratio: float) -> tuple[np.ndarray, float]:
    """Image mass of an averaged row, then the row as a normalised grid."""
    if not np.all(np.isfinite(row)):
        raise MapUnavailable("non-finite values")
    image_mass = float(row.sum())
    grid_map = normalise_map(to_grid(row, aspect_ratio=aspect_ratio))
    return grid_map, image_mass
