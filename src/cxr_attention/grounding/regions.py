"""Regions on the token grid from radiologists' boxes and masks, and the grounding metrics.

A region is where an annotation marks a finding. It reaches the model's grid exactly as the image
did: Gemma 3 squashes the whole image to a square (see :mod:`cxr_attention.geometry`), so a pixel
at fraction ``(x / W, y / H)`` of the original image lands at the same fraction of the grid, and
the preprocessing's aspect-keeping resize (``resize_long_side``) keeps those fractions too. A
region is therefore built at the annotation's own pixel resolution and pooled with
:func:`cxr_attention.geometry.image_to_grid`, which gives each cell the fraction of its area inside
the region (its *coverage*).

Every metric reads a map as its value spread evenly over each cell's footprint (the nearest-cell
picture of :func:`cxr_attention.geometry.grid_to_image`), so areas, means and ranks are those of
that pixel picture, computed exactly from the coverage without building it. Maps need not sum to 1
(they are rescaled where a share is meant) but must be finite and non-negative.

All functions are pure (arrays in, numbers out) and torch-free.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from cxr_attention.geometry import grid_to_image, image_to_grid

__all__ = [
    "MEDFOCUS_MAX_BOXES",
    "MEDFOCUS_MIN_AREA",
    "MEDFOCUS_QUANTILE",
    "Region",
    "area_share",
    "auprc",
    "box_iou_q90",
    "box_metrics",
    "box_pixel_weights",
    "boxes_pixel_mask",
    "cnr",
    "iou_at_otsu",
    "iou_at_threshold",
    "lift",
    "mass_inside",
    "medfocus_boxes",
    "medfocus_scores",
    "pointing_game",
    "region_from_boxes",
    "region_from_mask",
]

# MedFocus's defaults, gzxiong/medfocus medfocus/attribution/eval.py lines 18-26
# (heatmap_to_bboxes_quantile: q=0.9, min_area=16, max_boxes=10, connectivity=8).
MEDFOCUS_QUANTILE = 0.9
MEDFOCUS_MIN_AREA = 16
MEDFOCUS_MAX_BOXES = 10


@dataclass(frozen=True)
class Region:
    """An annotated region on the token grid.

    Attributes
    ----------
    coverage : ndarray of shape grid_shape, float64
        Fraction of each cell's area inside the region, in [0, 1].
    cells : ndarray of shape grid_shape, bool
        Cells at least half inside the region (``coverage >= 0.5``): the region as a set of cells.
    """

    coverage: np.ndarray

    @property
    def cells(self) -> np.ndarray:
        # The tolerance absorbs image_to_grid's float64 rounding (~1e-16) on half-covered cells.
        return self.coverage >= 0.5 - 1e-9

    @property
    def area(self) -> float:
        """Share of the image's area inside the region (what a uniform map puts there)."""
        return float(self.coverage.mean())


# --------------------------------------------------------------------------- regions


def _axis_overlap(start: float, stop: float, n_pixels: int) -> np.ndarray:
    """Overlap of ``[start, stop)`` with each pixel ``[i, i + 1)`` along one axis, in [0, 1]."""
    pixel = np.arange(n_pixels, dtype=np.float64)
    return np.clip(np.minimum(pixel + 1, stop) - np.maximum(pixel, start), 0.0, 1.0)


def _check_boxes(boxes, image_width: int, image_height: int) -> np.ndarray:
    array = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if image_width <= 0 or image_height <= 0:
        raise ValueError(f"image size must be positive, got {image_width} x {image_height}")
    if not np.all(np.isfinite(array)):
        raise ValueError("a box has non-finite coordinates")
    if np.any(array[:, 2:] <= 0):
        raise ValueError(f"a box has non-positive width or height: {array.tolist()}")
    return array


def box_pixel_weights(boxes, image_width: int, image_height: int) -> np.ndarray:
    """Share of each pixel inside the union of ``boxes`` (x, y, w, h in pixels), shape (H, W).

    Box edges may fall inside a pixel (VinDr and NIH give fractional coordinates): such a pixel
    gets the share of its area inside. Boxes are clipped to the image.
    """
    array = _check_boxes(boxes, image_width, image_height)
    weights = np.zeros((image_height, image_width), dtype=np.float64)
    for x, y, w, h in array:
        rows = _axis_overlap(y, y + h, image_height)
        inside = np.outer(rows, _axis_overlap(x, x + w, image_width))
        np.maximum(weights, inside, out=weights)
    return weights


def region_from_boxes(
    boxes, image_width: int, image_height: int, grid_shape: tuple[int, int] = (16, 16)
) -> Region:
    """Region of the union of ``boxes`` (rows of x, y, w, h in original-image pixels).

    Parameters
    ----------
    boxes : array-like of shape (4,) or (n, 4)
        Top-left corner, width and height, in pixels of the image of size ``image_width`` x
        ``image_height`` (MS-CXR's ``x, y, w, h``).
    image_width, image_height : int
        Size of the image the boxes were drawn on.
    grid_shape : (rows, cols)
    """
    weights = box_pixel_weights(boxes, image_width, image_height)
    return Region(np.clip(image_to_grid(weights, grid_shape), 0.0, 1.0))


def region_from_mask(mask: np.ndarray, grid_shape: tuple[int, int] = (16, 16)) -> Region:
    """Region of a full-resolution mask (non-zero pixels are inside)."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"expected a 2-D mask, got shape {mask.shape}")
    return Region(np.clip(image_to_grid(mask != 0, grid_shape), 0.0, 1.0))


# --------------------------------------------------------------------------- validation


def _as_map(attention_map: np.ndarray, region: Region) -> np.ndarray:
    values = np.asarray(attention_map)
    if values.shape != region.coverage.shape:
        raise ValueError(f"map has shape {values.shape}, the region {region.coverage.shape}")
    values = values.astype(np.float64)
    if not np.all(np.isfinite(values)):
        raise ValueError("the map has non-finite values")
    if np.any(values < 0):
        raise ValueError("the map has negative values")
    return values


def _as_distribution(attention_map: np.ndarray, region: Region) -> np.ndarray:
    values = _as_map(attention_map, region)
    total = values.sum()
    if total <= 0:
        raise ValueError("the map has no mass (sums to 0)")
    return values / total


# --------------------------------------------------------------------------- metrics


def pointing_game(attention_map: np.ndarray, region: Region) -> float:
    """Share of the map's maximum that falls inside the region, in [0, 1].

    The maximum is a cell's footprint; when several cells tie at the maximum, the point is taken
    uniformly over all their footprints. The score is the mean coverage of the maximal cells: 1
    when every maximal cell lies wholly inside, 0 when none touches the region.
    """
    values = _as_map(attention_map, region)
    at_max = values == values.max()
    return float(region.coverage[at_max].mean())


def mass_inside(attention_map: np.ndarray, region: Region) -> float:
    """Share of the map's mass inside the region (each cell's value spread evenly over it)."""
    return float((_as_distribution(attention_map, region) * region.coverage).sum())


def area_share(region: Region) -> float:
    """Share of the image inside the region: the mass a uniform map puts there."""
    return region.area


def lift(attention_map: np.ndarray, region: Region) -> float:
    """Mass inside over the area share: 1 for a uniform map, above 1 when the map concentrates."""
    area = region.area
    if area <= 0:
        raise ValueError("the region is empty")
    return mass_inside(attention_map, region) / area


def cnr(attention_map: np.ndarray, region: Region) -> float:
    """Contrast-to-noise ratio ``(mean_in - mean_out) / sqrt(var_in + var_out)``.

    Means and (population) variances are over the pixels of the nearest-cell picture, i.e. cells
    weighted by their area inside (``coverage``) and outside (``1 - coverage``). NaN when the
    region or its complement is empty or both variances are 0.
    """
    values = _as_map(attention_map, region)
    inside = region.coverage
    outside = 1.0 - inside
    if inside.sum() <= 0 or outside.sum() <= 0:
        return math.nan
    mean_in = float((values * inside).sum() / inside.sum())
    mean_out = float((values * outside).sum() / outside.sum())
    var_in = float((inside * (values - mean_in) ** 2).sum() / inside.sum())
    var_out = float((outside * (values - mean_out) ** 2).sum() / outside.sum())
    spread = math.sqrt(var_in + var_out)
    if spread == 0:
        return math.nan
    return (mean_in - mean_out) / spread


def _cells_iou(selected: np.ndarray, region: Region) -> float:
    """Area IoU of the footprint of ``selected`` cells with the region (in cell units)."""
    intersection = float(region.coverage[selected].sum())
    union = float(selected.sum()) + float(region.coverage.sum()) - intersection
    return intersection / union if union > 0 else math.nan


def iou_at_threshold(attention_map: np.ndarray, region: Region, threshold: float) -> float:
    """IoU of the cells where the min-max-normalised map is ``>= threshold`` with the region.

    The map is rescaled to [0, 1] (minimum 0, maximum 1) before the cut; a constant map selects
    every cell. Areas are exact: a selected cell counts its whole area, the region its coverage.
    """
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must lie in [0, 1], got {threshold}")
    values = _as_map(attention_map, region)
    spread = values.max() - values.min()
    scaled = (values - values.min()) / spread if spread > 0 else np.ones_like(values)
    return _cells_iou(scaled >= threshold, region)


def iou_at_otsu(attention_map: np.ndarray, region: Region) -> float:
    """IoU of the cells above Otsu's threshold of the map's cell values with the region.

    ``skimage.filters.threshold_otsu`` on the cell values (cells have equal areas); cells
    ``> threshold`` are selected, skimage's convention. A constant map selects every cell.
    """
    from skimage.filters import threshold_otsu

    values = _as_map(attention_map, region)
    if values.max() == values.min():
        return _cells_iou(np.ones_like(values, dtype=bool), region)
    return _cells_iou(values > threshold_otsu(values), region)


def box_iou_q90(attention_map: np.ndarray, region: Region) -> float:
    """IoU with the region of the cells at or above the map's 0.9 quantile (``np.quantile``)."""
    values = _as_map(attention_map, region)
    return _cells_iou(values >= np.quantile(values, 0.9), region)


def auprc(attention_map: np.ndarray, region: Region) -> float:
    """Average precision of the map's values ranking pixels inside the region above those outside.

    The pixels of the nearest-cell picture: each cell is a positive of weight ``coverage`` and a
    negative of weight ``1 - coverage`` at its value. Ties are one threshold step (scikit-learn's
    ``average_precision_score``: ``sum_n (R_n - R_{n-1}) P_n``). NaN for an empty region.
    """
    values = _as_map(attention_map, region).ravel()
    positive = region.coverage.ravel()
    if positive.sum() <= 0:
        return math.nan
    order = np.argsort(-values, kind="stable")
    sorted_values = values[order]
    true_positives = np.cumsum(positive[order])
    false_positives = np.cumsum(1.0 - positive[order])
    # Keep only the last index of each run of tied values: one threshold per distinct value.
    last_of_tie = np.r_[np.diff(sorted_values) != 0, True]
    true_positives = true_positives[last_of_tie]
    false_positives = false_positives[last_of_tie]
    precision = true_positives / (true_positives + false_positives)
    recall = true_positives / positive.sum()
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


# --------------------------------------------------------------------------- MedFocus's protocol


def medfocus_boxes(
    attention_map: np.ndarray,
    image_shape: tuple[int, int],
    *,
    quantile: float = MEDFOCUS_QUANTILE,
    min_area: int = MEDFOCUS_MIN_AREA,
    max_boxes: int = MEDFOCUS_MAX_BOXES,
) -> list[tuple[int, int, int, int]]:
    """MedFocus's boxes of a map: its cut at the 0.9 quantile, split into connected components.

    Follows gzxiong/medfocus: the patch map is upsampled bilinearly to the image
    (medfocus/attribution/baselines.py lines 48-53, ``F.interpolate(..., mode="bilinear",
    align_corners=False)``, the same sampling as OpenCV's ``INTER_LINEAR`` here), then
    ``heatmap_to_bboxes_quantile`` (medfocus/attribution/eval.py lines 18-76): min-max normalise,
    threshold at the ``quantile`` of the values above 0, keep pixels ``>=`` it, 8-connected
    components of at least ``min_area`` pixels, each as ``(x1, y1, x2, y2)`` with the inclusive
    last pixel indices, the ``max_boxes`` of highest mean value first.

    Parameters
    ----------
    attention_map : ndarray of shape (rows, cols)
    image_shape : (height, width)
        The pixel canvas (the image the annotation boxes are drawn on).
    """
    values = np.asarray(attention_map, dtype=np.float64)
    heat = grid_to_image(values, image_shape, smooth=True).astype(np.float32)
    heat = heat - heat.min()
    heat = heat / (heat.max() + 1e-8)
    positive = heat[heat > 0]
    threshold = float(np.quantile(positive, quantile)) if positive.size else 0.0
    labels, _ = ndimage.label(heat >= threshold, structure=np.ones((3, 3), dtype=bool))
    components = []
    for index, where in enumerate(ndimage.find_objects(labels), start=1):
        in_component = labels[where] == index
        n_pixels = int(in_component.sum())
        if n_pixels < min_area:
            continue
        mean_heat = float(heat[where][in_component].astype(np.float64).mean())
        rows, cols = where
        box = (cols.start, rows.start, cols.stop - 1, rows.stop - 1)
        components.append((mean_heat, box))
    components.sort(key=lambda item: item[0], reverse=True)
    return [box for _, box in components[:max_boxes]]


def boxes_pixel_mask(boxes, image_shape: tuple[int, int]) -> np.ndarray:
    """Union of ``(x1, y1, x2, y2)`` boxes as a pixel mask, ``x2``/``y2`` exclusive.

    MedFocus's ``eval_union_boxes`` reads boxes as exclusive at their far edge by default
    (``inclusive_xyxy=False``, medfocus/attribution/eval.py lines 106-121), predicted boxes
    included, though ``heatmap_to_bboxes_quantile`` gives inclusive ones; we keep that reading so
    numbers compare with their table. Coordinates are rounded as their VinDr loader does
    (medfocus/data/vindr_cxr.py line 25).
    """
    height, width = image_shape
    mask = np.zeros((height, width), dtype=bool)
    for x1, y1, x2, y2 in boxes:
        x1, y1, x2, y2 = (round(float(v)) for v in (x1, y1, x2, y2))
        mask[max(y1, 0) : max(y2, 0), max(x1, 0) : max(x2, 0)] = True
    return mask


def medfocus_scores(predicted_boxes, truth_mask: np.ndarray) -> dict[str, float]:
    """Union-region IoU, precision, recall and F1 of predicted boxes against a truth mask.

    MedFocus's ``eval_union_boxes`` (medfocus/attribution/eval.py lines 142-156): areas of the
    union of predicted boxes and of the truth, with IoU 1 when both are empty and precision and
    recall 1 when both are empty, 0 when only one is. For box annotations pass
    :func:`boxes_pixel_mask` of the truth boxes; for a segmentation its mask.
    """
    truth = np.asarray(truth_mask, dtype=bool)
    predicted = boxes_pixel_mask(predicted_boxes, truth.shape)
    area_predicted = float(predicted.sum())
    area_truth = float(truth.sum())
    intersection = float((predicted & truth).sum())
    union = area_predicted + area_truth - intersection
    both_empty = area_predicted == 0 and area_truth == 0
    iou = 1.0 if union == 0 else intersection / union
    if both_empty:
        precision = recall = 1.0
    else:
        precision = 0.0 if area_predicted == 0 else intersection / area_predicted
        recall = 0.0 if area_truth == 0 else intersection / area_truth
    f1 = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    return {"iou": iou, "precision": precision, "recall": recall, "f1": f1}


# --------------------------------------------------------------------------- one table row


def box_metrics(attention_map: np.ndarray, region: Region) -> dict[str, float]:
    """The single-image grounding columns of ``explain --boxes``: ``box_*`` for one map."""
    return {
        "box_pointing_game": pointing_game(attention_map, region),
        "box_mass": mass_inside(attention_map, region),
        "box_area": area_share(region),
        "box_lift": lift(attention_map, region),
        "box_cnr": cnr(attention_map, region),
        "box_iou_q90": box_iou_q90(attention_map, region),
    }
