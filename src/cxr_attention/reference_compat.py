"""The reference study's maps and metrics, recomputed from this project's captures (never default).

The study this project reimplements (public repository UNHSAILLab/lvlm-interpret-medgemma; see
``docs/reference_study.md`` for every file and line cited here) reported attention numbers that
two defects of its code explain. This module reproduces them from the *same* captured run as the
corrected pipeline, so that a report can put both side by side on the same samples:

Image tokens taken as key positions 1:257
    ``medgemma_attention_extraction.py`` (``extract_self_attention``, ``find_image_token_span``)
    takes the 256 keys after position 0 as the image tokens. With Gemma 3's chat template and the
    question before the image, those are ``<start_of_turn>``, the chat and question tokens,
    ``<start_of_image>`` and only then most of the image. Position 1 is an attention sink: in the
    reference's own saved grids (``medgemma4b_results_fixed``) 69-73% of every map sits on grid
    cell 0. :func:`reference_image_slice` and :func:`reference_attention_grid` rebuild those maps
    from a capture (head mean, the reference's row choice, its per-layer normalisation and its
    layer weights 4/7, 2/7, 1/7).

The inverted Otsu "body" mask
    ``tight_body_mask`` (``models/medgemma/medgemma_launch_mimic_fixed.py``) blurs, thresholds
    with Otsu, then *inverts* the result ("Foreground bright on CXR -> invert"), so the mask keeps
    the dark pixels: outside air and aerated lung, not the body. :func:`reference_body_mask`
    reproduces it on the image as the model saw it (:func:`reference_model_view`, 896 x 896).

Its metrics
    :func:`reference_map_metrics` gives the runner's ``AttentionMetrics.compute_metrics`` values
    (entropy of the masked, renormalised grid in nats; focus = largest masked cell *before*
    renormalising; inside-body = masked share of the grid; a border fraction that counts the four
    corner cells twice) and the batch runner's inside-body ratio, which multiplies the grid by a
    token mask and renormalises *before* summing, so that it is 1 - 1e-8 for every map
    (``compute_attention_metrics``): the paper's "99.99% within anatomical boundaries".

What is not reproduced: the reference re-ran a forward pass over the generated sequence without
``token_type_ids`` (image tokens then attend causally instead of bidirectionally) and read its
attention from that pass; here the attention comes from the generation itself.
:func:`run_reference_compat_shard` writes the per-sample table of the workflow's
``reference_compat`` rule.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from cxr_attention.captures import load_capture
from cxr_attention.io import Failure, InputError, read_table, write_csv, write_failures
from cxr_attention.maps.attention import (
    attention_map,
    reassemble_prompt_keys,
    reference_key_slice,
)
from cxr_attention.maps.grid import MapUnavailable
from cxr_attention.metrics.per_map import map_metrics

__all__ = [
    "REFERENCE_COMPAT_COLUMNS",
    "REFERENCE_LAYERS",
    "REFERENCE_MODEL_VIEW_SIDE",
    "REFERENCE_ROWS",
    "corrected_answer_metrics",
    "model_view_side",
    "reference_attention_grid",
    "reference_body_mask",
    "reference_image_slice",
    "reference_layer_weights",
    "reference_map_metrics",
    "reference_model_view",
    "reference_rows",
    "run_reference_compat_shard",
]

#: Side of the square image MedGemma's processor feeds the vision tower; the reference built its
#: body mask on this "model view".
REFERENCE_MODEL_VIEW_SIDE = 896
#: The reference used the last three decoder layers (``num_layers_to_use = min(3, ...)``).
REFERENCE_LAYERS = 3
#: ... and the first five generated positions (``range(prompt_len, prompt_len + 5)``).
REFERENCE_ROWS = 5
#: Its validity check sent maps with entropy above this share of ``log(n_cells)`` to Grad-CAM.
_REFERENCE_MAX_ENTROPY_SHARE = 0.95
#: Added to every cell before scipy's entropy in the reference (``entropy(flat + 1e-10)``).
_REFERENCE_ENTROPY_EPS = 1e-10
#: The reference's guard against division by zero in its normalisations.
_REFERENCE_EPS = 1e-8

#: The :func:`cxr_attention.metrics.per_map.map_metrics` values of the corrected answer map that
#: sit beside the reference's own numbers.
_CORRECTED_METRICS = (
    "entropy",
    "entropy_normalised",
    "focus",
    "focus_max",
    "inside_body",
    "border_fraction",
)

#: Columns of ``results/<run>/reference_compat/shard-<k>.csv``.
REFERENCE_COMPAT_COLUMNS = [
    "sample_id",
    "dicom_id",
    "question_id",
    "ref_rows",
    "ref_valid",
    "ref_entropy",
    "ref_focus",
    "ref_inside_body",
    "ref_inside_body_batch",
    "ref_border_fraction",
    "ref_first_cell_mass",
    "ref_mask_fraction",
    "image_mass",
    "sink_mass",
    *_CORRECTED_METRICS,
    "first_cell_mass",
]


# --------------------------------------------------------------------------- body mask


def model_view_side(model_id: str | os.PathLike | None) -> int:
    """The square image side of a model's processor: from a local model folder, else 896.

    Reads ``processor_config.json`` (``image_processor.size.height``, transformers 5) or
    ``preprocessor_config.json`` (``size.height``, as on the hub) when ``model_id`` is a folder.
    """
    import json

    folder = Path(model_id) if model_id else None
    if folder is None or not folder.is_dir():
        return REFERENCE_MODEL_VIEW_SIDE
    for name, keys in (
        ("processor_config.json", ("image_processor", "size", "height")),
        ("preprocessor_config.json", ("size", "height")),
    ):
        path = folder / name
        if not path.is_file():
            continue
        value = json.loads(path.read_text())
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        if isinstance(value, int) and value > 0:
            return value
    return REFERENCE_MODEL_VIEW_SIDE


def reference_model_view(image: np.ndarray, *, side: int = REFERENCE_MODEL_VIEW_SIDE) -> np.ndarray:
    """The grey image the reference built its mask on: the processor's view, decoded back.

    The reference (``model_view_image``) took ``pixel_values`` from the processor (a bilinear
    resize to ``side x side`` that ignores the aspect ratio, rescaled and normalised), undid the
    normalisation, converted to bytes by truncation and then to grey with the weights
    0.2989 / 0.5870 / 0.1140, truncating again (a grey pixel of value ``v > 0`` comes back as
    ``v - 1`` when the weights sum below 1).

    Parameters
    ----------
    image : ndarray of shape (H, W) or (H, W, 3), uint8
    side : int
        The processor's square input size (896 for MedGemma 4B).

    Returns
    -------
    ndarray of shape (side, side), uint8
    """
    from PIL import Image

    array = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim not in (2, 3):
        raise ValueError(f"expected an 8-bit grey or RGB image, got {array.dtype} {array.shape}")
    rgb = Image.fromarray(array).convert("RGB").resize((side, side), Image.Resampling.BILINEAR)
    # Normalising with mean = std = 0.5 and undoing it is the identity up to float32 rounding,
    # which the truncating byte conversion can turn into one grey level: keep the round trip.
    scaled = np.asarray(rgb, dtype=np.float32) / np.float32(255.0)
    normalised = (scaled - np.float32(0.5)) / np.float32(0.5)
    restored = np.clip(normalised * np.float32(0.5) + np.float32(0.5), 0.0, 1.0)
    as_bytes = (restored * np.float32(255.0)).astype(np.uint8).astype(np.float64)
    grey = 0.2989 * as_bytes[..., 0] + 0.5870 * as_bytes[..., 1] + 0.1140 * as_bytes[..., 2]
    return grey.astype(np.uint8)


def reference_body_mask(image: np.ndarray) -> np.ndarray:
    """The reference's "tight body mask", inverted Otsu threshold included (its defect).

    Recipe of ``tight_body_mask``: Gaussian blur (sigma 2, kernel size from sigma), Otsu
    threshold (bright = 255), inversion, opening with a 7 x 7 square, closing with a 15 x 15
    square, erosion with a 9 x 9 square (OpenCV, default anchors and borders). Because of the
    inversion the mask holds the *dark* pixels: outside air and lung fields.

    Parameters
    ----------
    image : ndarray of shape (H, W), uint8
        The image to threshold. The reference applied it to :func:`reference_model_view`.

    Returns
    -------
    ndarray of shape (H, W), bool
    """
    import cv2

    grey = np.asarray(image)
    if grey.ndim != 2 or grey.dtype != np.uint8:
        raise ValueError(f"expected a 2-D uint8 image, got {grey.dtype} {grey.shape}")
    blurred = cv2.GaussianBlur(grey, (0, 0), 2)
    _, bright = cv2.threshold(blurred, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    mask = 255 - bright
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((7, 7), np.uint8))
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, np.ones((15, 15), np.uint8))
    mask = cv2.erode(mask, np.ones((9, 9), np.uint8))
    return mask > 0


def _runner_token_mask(body_mask: np.ndarray, grid_shape: tuple[int, int]) -> np.ndarray:
    """The runner's mask on the grid: bilinear resize of the 0/1 mask, then ``> 0.5``."""
    import cv2

    rows, cols = grid_shape
    resized = cv2.resize(
        np.asarray(body_mask, dtype=np.float32), (cols, rows), interpolation=cv2.INTER_LINEAR
    )
    return (resized > 0.5).astype(np.float64)


def _batch_token_mask(body_mask: np.ndarray, grid_shape: tuple[int, int]) -> np.ndarray:
    """The batch runner's ``token_mask_from_body``: area resize, ``/ max > 0.15``, frame zeroed."""
    import cv2

    rows, cols = grid_shape
    resized = cv2.resize(
        np.asarray(body_mask, dtype=np.float32) * 255.0, (cols, rows), interpolation=cv2.INTER_AREA
    )
    token_mask = (resized / (resized.max() + _REFERENCE_EPS) > 0.15).astype(np.float64)
    token_mask[:2, :] = 0
    token_mask[-2:, :] = 0
    token_mask[:, :2] = 0
    token_mask[:, -2:] = 0
    return token_mask


# --------------------------------------------------------------------------- image slice


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


# --------------------------------------------------------------------------- metrics


def _scipy_style_entropy(values: np.ndarray) -> float:
    """``scipy.stats.entropy(values + 1e-10)`` in nats: the input is renormalised first."""
    shifted = np.asarray(values, dtype=np.float64).ravel() + _REFERENCE_ENTROPY_EPS
    p = shifted / shifted.sum()
    return float(-np.sum(p * np.log(p)))


def reference_map_metrics(grid: np.ndarray, body_mask: np.ndarray) -> dict[str, float]:
    """The reference's metrics of one map, with its own definitions.

    Parameters
    ----------
    grid : ndarray of shape (rows, cols)
        The reference map (:func:`reference_attention_grid`).
    body_mask : ndarray of shape (H, W)
        Non-zero inside the "body" (:func:`reference_body_mask` for the reference's numbers).

    Returns
    -------
    dict
        ``ref_entropy`` (nats, of the masked grid renormalised, +1e-10 per cell),
        ``ref_focus`` (largest masked cell, *not* renormalised), ``ref_inside_body`` (masked
        share: ``sum(grid * mask) / sum(grid)``), ``ref_border_fraction`` (outer ring of the
        masked grid over its sum, corner cells counted twice, so it can exceed 1),
        ``ref_inside_body_batch`` (the batch runner's ratio: grid times its token mask,
        renormalised, then summed: 1 - 1e-8 whatever the map), ``ref_valid`` (1.0 when the
        reference kept the attention map, 0.0 when its entropy check sent it to Grad-CAM),
        ``ref_first_cell_mass`` (mass of grid cell 0, the sink position 1) and
        ``ref_mask_fraction`` (share of pixels in the mask).
    """
    grid = np.asarray(grid, dtype=np.float64)
    if grid.ndim != 2 or not np.all(np.isfinite(grid)):
        raise ValueError(f"expected a finite 2-D map, got shape {grid.shape}")
    mask = np.asarray(body_mask) > 0
    token_mask = _runner_token_mask(mask, grid.shape)
    masked = grid * token_mask
    masked_total = masked.sum()
    border = masked[0, :].sum() + masked[-1, :].sum() + masked[:, 0].sum() + masked[:, -1].sum()
    batch_masked = grid * _batch_token_mask(mask, grid.shape)
    batch_masked = batch_masked / (batch_masked.sum() + _REFERENCE_EPS)
    unmasked_entropy = _scipy_style_entropy(grid / (grid.sum() + _REFERENCE_EPS))
    return {
        "ref_valid": float(unmasked_entropy <= _REFERENCE_MAX_ENTROPY_SHARE * math.log(grid.size)),
        "ref_entropy": _scipy_style_entropy(masked / (masked_total + _REFERENCE_EPS)),
        "ref_focus": float(masked.max()),
        "ref_inside_body": float(masked_total / (grid.sum() + _REFERENCE_EPS)),
        "ref_inside_body_batch": float(batch_masked.sum()),
        "ref_border_fraction": float(border / (masked_total + _REFERENCE_EPS)),
        "ref_first_cell_mass": float(grid.ravel()[0] / grid.sum()),
        "ref_mask_fraction": float(mask.mean()),
    }


def corrected_answer_metrics(
    capture: Mapping[str, np.ndarray], body_mask: np.ndarray | None
) -> dict[str, float]:
    """The corrected pipeline's answer map and metrics from the same capture, for comparison.

    The map is the mean over every captured layer, head and generated row of ``attention`` (the
    columns of the tokens with ``input_ids == image_token_id``), renormalised to sum 1
    (:func:`cxr_attention.maps.attention.attention_map`); its metrics are the project's
    (:func:`cxr_attention.metrics.per_map.map_metrics`).

    Returns
    -------
    dict
        ``image_mass`` (share of the averaged row on the image tokens), ``sink_mass`` (share on
        prompt position 1), ``first_cell_mass`` and the per-map metrics ``entropy,
        entropy_normalised, focus, focus_max, inside_body, border_fraction``.
    """
    attention = np.asarray(capture["attention"])
    rows = range(attention.shape[2])
    grid, image_mass = attention_map(attention, rows)
    text = np.asarray(capture["text_attention"])
    sink_mass = float(text[..., 1].astype(np.float64).mean()) if text.shape[-1] > 1 else math.nan
    metrics = map_metrics(grid, body_mask=body_mask, lung_labels=None)
    return {
        "image_mass": image_mass,
        "sink_mass": sink_mass,
        "first_cell_mass": float(np.asarray(grid, dtype=np.float64).ravel()[0]),
        **{key: metrics[key] for key in _CORRECTED_METRICS},
    }


# --------------------------------------------------------------------------- shard


def _read_grey(path: Path) -> np.ndarray:
    import cv2

    if not path.is_file():
        raise InputError(path, "file not found", error_type="missing_file")
    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise InputError(path, "cannot be decoded", error_type="bad_image")
    return image


def _resolve(path_text: str, root: Path) -> Path:
    path = Path(path_text)
    return path if path.is_absolute() else root / path


def run_reference_compat_shard(
    *,
    answers_csv: str | os.PathLike,
    captures_dir: str | os.PathLike,
    preprocess_csv: str | os.PathLike,
    out_csv: str | os.PathLike,
    params: Mapping | None = None,
) -> None:
    """Write the reference's and the corrected pipeline's numbers for every sample of a shard.

    Parameters
    ----------
    answers_csv : path
        Answers table of the shard (``sample_id, dicom_id, question_id``).
    captures_dir : path
        Folder of ``<sample_id>.npz`` captures.
    preprocess_csv : path
        Preprocess table (``dicom_id, image, body_mask``; paths relative to ``params["root"]``).
    out_csv : path
        One row per answers row, columns :data:`REFERENCE_COMPAT_COLUMNS`. Failures (unreadable
        capture, image or mask; a map the reference could not form) are written beside it as
        ``<out>.failures.csv`` and leave NaN in the row.
    params : mapping, optional
        ``root`` (folder of relative paths; default the working directory), ``model_view_side``
        (the processor's image side; default read from ``model_id`` when it is a local model
        folder, else 896), ``model_id``, ``layers`` (reference layers, default 3).
    """
    params = dict(params or {})
    root = Path(params.get("root") or Path.cwd())
    side = int(params.get("model_view_side") or model_view_side(params.get("model_id")))
    n_layers = int(params.get("layers", REFERENCE_LAYERS))
    answers = read_table(answers_csv, required=("sample_id", "dicom_id"), text=True)
    preprocess = read_table(preprocess_csv, required=("dicom_id", "image", "body_mask"), text=True)
    images = preprocess.drop_duplicates("dicom_id").set_index("dicom_id")
    failures: list[Failure] = []
    masks: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    rows = []
    for record in answers.itertuples(index=False):
        row: dict = dict.fromkeys(REFERENCE_COMPAT_COLUMNS, math.nan)
        row.update(
            sample_id=record.sample_id,
            dicom_id=record.dicom_id,
            question_id=getattr(record, "question_id", ""),
            ref_rows="",
        )
        capture_path = Path(captures_dir) / f"{record.sample_id}.npz"
        try:
            capture = load_capture(capture_path)
            if record.dicom_id not in masks:
                masks[record.dicom_id] = _image_masks(record.dicom_id, images, root, side)
            reference_mask, project_mask = masks[record.dicom_id]
            # The two sides fail independently: a one-token answer has no reference map but a
            # corrected one, and the other way round for a map with no image mass.
            try:
                row.update(corrected_answer_metrics(capture, project_mask))
            except MapUnavailable as error:
                failures.append(
                    _map_failure(record.dicom_id, capture_path, "corrected", error.reason)
                )
            n_generated = np.asarray(capture["attention"]).shape[2]
            row["ref_rows"] = "|".join(str(r) for r in reference_rows(n_generated))
            try:
                grid = reference_attention_grid(capture, n_layers=n_layers)
                row.update(reference_map_metrics(grid, reference_mask))
            except MapUnavailable as error:
                failures.append(
                    _map_failure(record.dicom_id, capture_path, "reference", error.reason)
                )
        except InputError as error:
            failures.append(
                Failure.from_exception("reference_compat", record.dicom_id, error.path, error)
            )
        rows.append(row)
    write_csv(pd.DataFrame(rows, columns=REFERENCE_COMPAT_COLUMNS), out_csv)
    write_failures(failures, _failures_path(out_csv))


def _map_failure(dicom_id: str, path: Path, side: str, reason: str) -> Failure:
    error = InputError(path, f"{side} map: {reason}", error_type=f"{side}_map_unavailable")
    return Failure.from_exception("reference_compat", dicom_id, error.path, error)


def _failures_path(out_csv: str | os.PathLike) -> Path:
    out = Path(out_csv)
    return out.with_name(out.name.removesuffix(".csv") + ".failures.csv")


def _image_masks(
    dicom_id: str, images: pd.DataFrame, root: Path, side: int
) -> tuple[np.ndarray, np.ndarray]:
    """The reference's mask (on the model view) and the project's body mask of one image."""
    if dicom_id not in images.index:
        raise InputError(
            f"<image of {dicom_id}>", "not in the preprocess table", error_type="missing_image"
        )
    image = _read_grey(_resolve(images.at[dicom_id, "image"], root))
    project_mask = _read_grey(_resolve(images.at[dicom_id, "body_mask"], root)) > 0
    return reference_body_mask(reference_model_view(image, side=side)), project_mask
