"""Body and lung masks for frontal chest radiographs, by classical image analysis.

On a radiograph bone and soft tissue are bright and air is dark. Three grey levels matter: direct
exposure outside the patient (darkest), aerated lung (dark, textured by ribs and vessels) and
everything else in the patient (bright). The body is what is not outside air, black border or
flat padding; the lungs are the two large dark regions inside the body on either side of the
spine, below the neck and above the diaphragm.

Both functions work on a copy shrunk to :data:`WORK_SIDE` pixels (long side) and scale their
result back to the input's size, so that a 5000-pixel film costs the same as a 512-pixel one.
Every length below is a fraction of the working image's long side. See ``docs/masks.md`` for
the method and its accuracy against hand-drawn masks.
"""

from __future__ import annotations

import numpy as np

__all__ = ["WORK_SIDE", "body_mask", "lung_mask"]

WORK_SIDE = 256

# Body mask.
_FLAT_SPREAD = 6  # grey levels: rows/columns at the edge flatter than this are border/padding
_AIR_MARGIN = 0.5  # outside-air cut: this far from the air seen on the edge to the lung class
_ISLAND_AREA = 0.015  # bright islands smaller than this share of the image are markers/text

# Lung mask.
_RIM = 0.03  # lung lies at least a chest wall's thickness inside the body's edge
_ROW_LEVEL = 0.55  # per-row threshold: this far from the row's lung level to the spine level
_ROW_GATE = 0.35  # rows whose lung/spine contrast is below this share of the best have no lung
_CAP = 0.3  # no lung brighter than the thorax Otsu level plus this share of its bright range
_OPEN = 0.025  # opening that cuts the trachea and thin bridges to soft tissue
_LUNG_EDGE_GROW = 0.01  # given back around each lung hull (the rim margin took it off)
_WEAK_LUNG = 0.3  # a lung scoring below this share of the other is replaced by its mirror


def body_mask(image: np.ndarray) -> np.ndarray:
    """Patient silhouette of a radiograph.

    Parameters
    ----------
    image : numpy.ndarray
        uint8, 2-D, bone bright and air dark (as from :func:`decode.decode_image`).

    Returns
    -------
    numpy.ndarray
        bool, same shape as ``image``; True inside the patient (lungs included).
    """
    _check_image(image)
    work = _shrink(image)
    return _grow(_body_work(work).astype(np.uint8), image.shape).astype(bool)


def lung_mask(image: np.ndarray, body: np.ndarray | None = None) -> np.ndarray:
    """Right and left lung fields, labelled by the patient's side.

    Parameters
    ----------
    image : numpy.ndarray
        uint8, 2-D frontal (PA or AP) radiograph, bone bright and air dark.
    body : numpy.ndarray, optional
        Body mask of the same shape, bool or 0/255 as written to disk (computed when omitted).

    Returns
    -------
    numpy.ndarray
        uint8, same shape as ``image``: 0 background, 1 the patient's right lung (on the image's
        left), 2 the patient's left lung (on the image's right).
    """
    _check_image(image)
    work = _shrink(image)
    if body is None:
        body_work = _body_work(work)
    else:
        if body.shape != image.shape:
            raise ValueError(f"body mask shape {body.shape} differs from image {image.shape}")
        body_work = _shrink((body > 0).astype(np.uint8) * 255) > 127
    return _grow(_lungs_work(work, body_work), image.shape)


# --- body ---------------------------------------------------------------------------------------


def _body_work(work: np.ndarray) -> np.ndarray:
    """Body mask at the working resolution."""
    import cv2
    from scipy import ndimage
    from skimage.filters import threshold_multiotsu, threshold_otsu

    smooth = cv2.medianBlur(work, 5)
    side = max(work.shape)
    content = _content_box(work)
    values = smooth[content]
    if values.size < 0.05 * smooth.size or int(values.max()) - int(values.min()) < 8:
        return np.zeros(work.shape, bool)  # a blank or flat image shows no patient
    # Three grey classes: direct exposure < aerated lung < bone and soft tissue. The patient is
    # everything brighter than the air seen on the film's edge (or, without such air, than the
    # lowest class), so that thin chest walls and most lung count directly.
    try:
        lowest_class = float(threshold_multiotsu(values, classes=3)[0])
    except ValueError:
        lowest_class = float(threshold_otsu(values))
    air_level = _outside_air_level(smooth, content, lowest_class)
    tissue = (smooth > air_level) & content
    # A small opening removes wires; small bright islands are burned-in letters and markers.
    tissue = cv2.morphologyEx(tissue.astype(np.uint8), cv2.MORPH_OPEN, _disk(side * 0.005)) > 0
    tissue = _drop_small(tissue, _ISLAND_AREA * content.sum())
    # Lung as dark as the outside air still lies between tissue on the left and right (chest
    # walls, mediastinum) with tissue below (diaphragm). Not "tissue above": the apices often
    # reach the top edge of the film.
    # Where the film's lower edge cuts through the patient, the patient goes on below it.
    floor = tissue.copy()
    last = np.flatnonzero(content.any(axis=1))[-1]
    edge_tissue = np.flatnonzero(tissue[last])
    if edge_tissue.size:
        floor[last, edge_tissue[0] : edge_tissue[-1] + 1] = True
    below = np.flip(np.maximum.accumulate(np.flip(floor, axis=0), axis=0), axis=0)
    body = (tissue | (_span_fill(tissue, axis=1) & below)) & content
    body = cv2.morphologyEx(body.astype(np.uint8), cv2.MORPH_OPEN, _disk(side * 0.015)) > 0
    body = _largest_components(body, 0.2)
    return ndimage.binary_fill_holes(body)


def _content_box(work: np.ndarray) -> np.ndarray:
    """The image without uniform rows/columns at its edges (black borders, grey padding)."""
    box = np.zeros(work.shape, bool)
    spans = []
    for axis in (1, 0):
        low = np.percentile(work, 1, axis=axis)
        high = np.percentile(work, 99, axis=axis)
        varied = np.flatnonzero(high - low > _FLAT_SPREAD)
        spans.append((varied[0], varied[-1] + 1) if varied.size else (0, low.size))
    (top, bottom), (left, right) = spans
    box[top:bottom, left:right] = True
    return box


def _outside_air_level(smooth: np.ndarray, content: np.ndarray, lowest_class: float) -> float:
    """Grey level that separates the direct exposure seen on the film's edge from the patient.

    Where at least a tenth of the edge is darker than ``lowest_class`` (outside air is in view),
    the cut lies between that air (90th percentile) and ``lowest_class``; otherwise (a film
    cropped to the chest) it is ``lowest_class``.
    """
    rows, cols = np.nonzero(content)
    top, bottom, left, right = rows.min(), rows.max(), cols.min(), cols.max()
    frame = np.concatenate(
        [
            smooth[top, left : right + 1],
            smooth[bottom, left : right + 1],
            smooth[top : bottom + 1, left],
            smooth[top : bottom + 1, right],
        ]
    ).astype(np.float64)
    air = frame[frame <= lowest_class]
    if air.size < 0.1 * frame.size:
        return lowest_class
    floor = float(np.percentile(air, 90))
    return min(lowest_class, floor + _AIR_MARGIN * (lowest_class - floor))


def _span_fill(mask: np.ndarray, axis: int) -> np.ndarray:
    """Pixels with some of ``mask`` on both sides along ``axis`` (or in ``mask`` themselves)."""
    before = np.maximum.accumulate(mask, axis=axis)
    after = np.flip(np.maximum.accumulate(np.flip(mask, axis=axis), axis=axis), axis=axis)
    return before & after


# --- lungs --------------------------------------------------------------------------------------


def _lungs_work(work: np.ndarray, body: np.ndarray) -> np.ndarray:
    """Lung labels at the working resolution (1 image-left, 2 image-right)."""
    import cv2
    from skimage.filters import threshold_otsu

    height, width = work.shape
    side = max(height, width)
    labels = np.zeros(work.shape, np.uint8)
    if body.sum() < 0.05 * body.size:
        return labels
    smooth = cv2.GaussianBlur(work, (0, 0), side / 256.0 * 1.5)
    # Air outside the patient reaches into the body mask's rim (axillae, above the shoulders);
    # lung is always a chest wall's thickness away from it. The image edge is not outside air:
    # tightly cropped films cut through the chest wall.
    # OpenCV's exact Euclidean distance to the nearest non-body pixel; the image border is not
    # a zero pixel for it, as wanted.
    rim_distance = cv2.distanceTransform(body.astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    inner = body & (rim_distance > side * _RIM)
    rows = np.nonzero(body)[0]
    top, bottom = int(rows.min()), int(rows.max())
    if inner.sum() < 100:
        return labels
    # Thorax statistics from the upper 70% of the body, not the bright abdomen.
    thorax = inner.copy()
    thorax[top + int((bottom - top) * 0.7) :] = False
    values = smooth[thorax] if thorax.sum() > 100 else smooth[inner]
    level = threshold_otsu(values)
    midline = _spine_column(smooth, body)
    # Lung bases lie behind more soft tissue than the upper zones, so the threshold follows each
    # row's own lung-to-spine contrast; a cap keeps it from taking in soft tissue where a row has
    # no lung at all.
    cap = level + _CAP * (np.percentile(values, 95) - level)
    threshold = np.minimum(_row_thresholds(smooth, inner, midline), cap)
    dark = (smooth < threshold) & inner
    dark = cv2.morphologyEx(dark.astype(np.uint8), cv2.MORPH_OPEN, _disk(side * _OPEN)) > 0

    chosen = _choose_lungs(dark, body, midline, top, bottom)
    best = max(score for score, _ in chosen.values())
    if best == 0:
        return labels
    halves = {1: np.zeros(work.shape, bool), 2: np.zeros(work.shape, bool)}
    halves[1][:, :midline] = True
    halves[2][:, midline:] = True
    lungs: dict[int, np.ndarray] = {}
    for side_label, (score, region) in chosen.items():
        # A lung far weaker than the other is a white-out (effusion, consolidation, collapse) or
        # a stray dark patch: it gets the mirror image of the other lung below.
        if score < _WEAK_LUNG * best:
            continue
        lungs[side_label] = _lung_shape(region & halves[side_label], body, side)
        lungs[side_label] &= halves[side_label]
    for side_label, other in ((1, 2), (2, 1)):
        if side_label not in lungs and other in lungs:
            lungs[side_label] = _mirror(lungs[other], midline) & body
    for side_label, lung in sorted(lungs.items()):
        labels[lung & (labels == 0)] = side_label
    return labels


def _row_thresholds(smooth: np.ndarray, inner: np.ndarray, midline: int) -> np.ndarray:
    """Per-pixel lung threshold: per row and side of the spine, smoothed along the rows.

    For each row the lung level is the 5th percentile of that side's inner body and the spine
    level the median of a band around the spine column; the threshold lies ``_ROW_LEVEL`` of the
    way between them. Rows with little contrast (below the diaphragm, above the apices) get -inf.
    """
    from scipy import ndimage

    height, width = smooth.shape
    side = max(height, width)
    values = smooth.astype(np.float64)
    band = max(1, int(side * 0.03))
    spine_level = np.median(values[:, max(midline - band, 0) : midline + band], axis=1)
    spine_level = ndimage.gaussian_filter1d(spine_level, side * 0.03)
    threshold = np.full(values.shape, -np.inf)
    index = np.arange(height)
    for columns in (slice(0, midline), slice(midline, width)):
        inside = inner[:, columns]
        counts = np.count_nonzero(inside, axis=1)
        valid = counts > 3
        if valid.sum() < 5:
            continue
        # 5th percentile of each row's inner pixels, vectorised: outside pixels sort last.
        ordered = np.sort(np.where(inside, values[:, columns], np.inf), axis=1)
        rank = np.floor(0.05 * np.maximum(counts - 1, 0)).astype(int)
        row_low = ordered[index, rank]
        lung_level = np.interp(index, index[valid], row_low[valid])
        lung_level = ndimage.gaussian_filter1d(lung_level, side * 0.03)
        contrast = spine_level - lung_level
        row_threshold = lung_level + _ROW_LEVEL * contrast
        row_threshold[contrast <= _ROW_GATE * contrast.max()] = -np.inf
        threshold[:, columns] = row_threshold[:, None]
    return threshold


def _choose_lungs(
    dark: np.ndarray, body: np.ndarray, midline: int, top: int, bottom: int
) -> dict[int, tuple[float, np.ndarray]]:
    """The best dark component on each side of the spine, with its score.

    A lung fills the middle of the thorax (20-65% of the body's height), with its centre about
    half-way between the spine and the body's edge and its medial edge near the mediastinum;
    dark soft tissue above the shoulders or along the arms has neither.
    """
    from scipy import ndimage

    components, count = ndimage.label(dark)
    empty = np.zeros(dark.shape, bool)
    chosen: dict[int, tuple[float, np.ndarray]] = {1: (0.0, empty), 2: (0.0, empty)}
    if count == 0:
        return chosen
    span = max(bottom - top, 1)
    mid_row = body[top + int(span * 0.45)]
    left, right = np.flatnonzero(mid_row)[[0, -1]] if mid_row.any() else (0, dark.shape[1] - 1)
    middle = np.zeros(dark.shape, bool)
    middle[top + int(span * 0.2) : top + int(span * 0.65)] = True
    body_area = body.sum()
    for label, box in enumerate(ndimage.find_objects(components), start=1):
        region = components == label
        ys, xs = np.nonzero(region)
        if ys.size < 0.01 * body_area or (ys.mean() - top) / span > 0.85:
            continue
        side_label = 1 if xs.mean() < midline else 2
        half_width = max((midline - left) if side_label == 1 else (right - midline), 1)
        centre = abs(xs.mean() - midline) / half_width
        medial = np.percentile(np.abs(xs - midline), 5) / half_width
        score = np.count_nonzero(region[box] & middle[box])
        score *= np.exp(-(((centre - 0.45) / 0.25) ** 2))
        score *= np.exp(-((max(0.0, medial - 0.3) / 0.15) ** 2))
        if score > chosen[side_label][0]:
            chosen[side_label] = (float(score), region)
    return chosen


def _lung_shape(region: np.ndarray, body: np.ndarray, side: int) -> np.ndarray:
    """Convex hull of the lung's dark core, grown a little, inside the body.

    The lung field is close to convex: the hull takes in vessels, opacities and the
    costophrenic angle that the threshold misses; the growth gives back the rim margin.
    """
    import cv2

    if not region.any():
        return region
    hull = np.zeros(region.shape, np.uint8)
    cv2.fillConvexPoly(hull, cv2.convexHull(cv2.findNonZero(region.astype(np.uint8))), 1)
    return (cv2.dilate(hull, _disk(side * _LUNG_EDGE_GROW)) > 0) & body


def _mirror(mask: np.ndarray, column: int) -> np.ndarray:
    """Reflect ``mask`` about ``column`` (the spine), clipped to the image."""
    rows, cols = np.nonzero(mask)
    mirrored = 2 * column - cols
    inside = (mirrored >= 0) & (mirrored < mask.shape[1])
    out = np.zeros_like(mask)
    out[rows[inside], mirrored[inside]] = True
    return out


def _spine_column(smooth: np.ndarray, body: np.ndarray) -> int:
    """Column of the mediastinum: the brightest column band in the central 40% of the body."""
    from scipy import ndimage

    rows, cols = np.nonzero(body)
    left, right = cols.min(), cols.max()
    top, bottom = rows.min(), rows.max()
    band = smooth[top + (bottom - top) // 5 : top + (bottom - top) * 3 // 4].astype(np.float64)
    if band.shape[0] == 0:
        return int((left + right) // 2)
    profile = ndimage.gaussian_filter1d(band.mean(axis=0), max(smooth.shape[1] / 40, 1))
    span = right - left
    low, high = left + int(span * 0.3), left + int(span * 0.7) + 1
    return int(low + np.argmax(profile[low:high]))


# --- small helpers ------------------------------------------------------------------------------


def _check_image(image: np.ndarray) -> None:
    if image.ndim != 2 or image.dtype != np.uint8:
        raise ValueError(f"expected a 2-D uint8 image, got {image.dtype} {image.shape}")


def _shrink(image: np.ndarray) -> np.ndarray:
    import cv2

    height, width = image.shape
    factor = min(1.0, WORK_SIDE / max(height, width))
    if factor == 1.0:
        return image
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def _grow(labels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Scale a label image back to ``shape`` with smooth edges (per label, not blocky)."""
    import cv2

    if labels.shape == shape:
        return labels.astype(np.uint8)
    out = np.zeros(shape, np.uint8)
    for value in np.unique(labels):
        if value == 0:
            continue
        plane = (labels == value).astype(np.float32)
        big = cv2.resize(plane, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)
        out[big >= 0.5] = value
    return out


def _disk(radius: float) -> np.ndarray:
    import cv2

    radius = max(1, round(radius))
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def _largest_components(mask: np.ndarray, min_fraction: float) -> np.ndarray:
    """Keep components with at least ``min_fraction`` of the largest one's area."""
    from scipy import ndimage

    components, count = ndimage.label(mask)
    if count <= 1:
        return mask.astype(bool)
    areas = np.bincount(components.ravel())[1:]
    keep = np.flatnonzero(areas >= min_fraction * areas.max()) + 1
    return np.isin(components, keep)


def _drop_small(mask: np.ndarray, min_area: float) -> np.ndarray:
    """Remove connected components smaller than ``min_area`` pixels."""
    from scipy import ndimage

    components, count = ndimage.label(mask)
    if count == 0:
        return mask
    keep = np.bincount(components.ravel()) >= min_area
    keep[0] = False
    return keep[components]
