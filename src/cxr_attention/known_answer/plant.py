"""Plant a synthetic nodule into a real radiograph, inside a lung found by the project's mask.

The lesion is a round opacity with soft edges: the film is brightened towards white by
``contrast * profile(d)``, where ``d`` is the distance to the lesion's centre and ``profile`` a
logistic step (1 inside ``radius``, falling over ``edge`` pixels) that is shifted and rescaled
to reach exactly 0 at ``radius + 3 * edge``. So the lesion has a finite support: the recorded box
is that support, and every pixel outside it is unchanged. Brightening towards white (rather than
adding a constant) keeps values in range and makes the lesion fainter over bone, as an opacity is.

The centre is drawn, from a seeded generator, among the pixels of the requested lung (label 1 the
patient's right, 2 the patient's left, see `cxr_attention.preprocess.masks.lung_mask`) whose
disc of changed pixels (radius ``radius + 3 * edge``) lies wholly inside that lung; only the
box's corners, which the lesion leaves unchanged, may reach beyond it. On a frontal film the
patient's left is on the image's right.

Boxes are written in MS-CXR's format, in pixels of the original image.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cxr_attention.grounding.annotation_files import MS_CXR_REQUIRED_COLUMNS
from cxr_attention.io import Failure, InputError, write_csv, write_failures, write_png

__all__ = [
    "BOX_COLUMNS",
    "LESION_CATEGORY",
    "LUNG_LABELS",
    "NoRoomForLesion",
    "PlantedLesion",
    "plant",
    "plant_lesion",
    "planted_cases",
]

# MS-CXR's local-alignment columns, less `path` (a planted film has no MIMIC path).
BOX_COLUMNS = list(MS_CXR_REQUIRED_COLUMNS)
# The CheXpert label a nodule falls under.
LESION_CATEGORY = "Lung Lesion"
# Lung labels of `lung_mask`, by the patient's side.
LUNG_LABELS = {"right": 1, "left": 2}
ZONES = ("upper", "middle", "lower")

# Lesion size and contrast: fractions of the film's long side, and of the way to white.
DEFAULT_RADIUS = 0.045
DEFAULT_CONTRAST = 0.35
# The stripes' spatial frequency: cycles across the image's width. At the known-answer model's
# 224 px input (16 patches of 14 px) that is 3 cycles per patch, a frequency the patch embedding
# can tell from anatomy (`cxr_attention.known_answer.detector`).
STRIPE_CYCLES = 48
_EDGE = 0.25  # soft edge width, as a fraction of the radius
_TAIL = 3.0  # the profile reaches 0 this many edge widths outside the radius


class NoRoomForLesion(ValueError):
    """The requested lung (or any lung) has no place that holds the whole lesion: a property of
    the film, not a bad parameter, so callers may skip that side."""


@dataclass(frozen=True)
class PlantedLesion:
    """Where a planted lesion is.

    Attributes
    ----------
    x, y, w, h : int
        Box of the lesion's support (left, top, width, height) in the image's pixels; every pixel
        outside it is unchanged.
    centre_x, centre_y, radius : float
        Centre and radius (where the opacity is half its peak) in pixels.
    side : str
        The patient's side, ``left`` or ``right``.
    zone : str
        ``upper``, ``middle`` or ``lower`` third of that lung's height.
    contrast : float
        Peak brightening, as a fraction of the way to white.
    """

    x: int
    y: int
    w: int
    h: int
    centre_x: float
    centre_y: float
    radius: float
    side: str
    zone: str
    contrast: float

    @property
    def label_text(self) -> str:
        return f"nodule in the {self.side} {self.zone} zone"


def plant_lesion(
    image: np.ndarray,
    *,
    side: str | None = None,
    seed: int = 0,
    radius: float = DEFAULT_RADIUS,
    contrast: float = DEFAULT_CONTRAST,
    stripes: float = 0.0,
    lungs: np.ndarray | None = None,
) -> tuple[np.ndarray, PlantedLesion]:
    """Insert one round, soft-edged opacity inside a lung.

    Parameters
    ----------
    image : numpy.ndarray
        uint8, 2-D frontal radiograph (bone bright, lungs dark).
    side : {"left", "right"} or None
        The patient's side; ``None`` draws one (from the lungs the mask found) with ``seed``.
    seed : int
        Seed of the side (when not given) and of the position.
    radius : float
        Radius where the opacity is half its peak, as a fraction of the image's long side.
    contrast : float
        Peak brightening in (0, 1]: the fraction of the way from the film's grey to white.
    stripes : float
        Peak amplitude, in grey levels, of vertical stripes (`STRIPE_CYCLES` across the width)
        added inside the lesion with the same soft profile; 0 for a plain opacity.
    lungs : numpy.ndarray, optional
        The image's `lung_mask` (computed when omitted).

    Returns
    -------
    planted : numpy.ndarray
        uint8, same shape; equal to ``image`` outside the lesion's box.
    lesion : PlantedLesion

    Raises
    ------
    NoRoomForLesion
        No place in the requested lung (or no lung at all) holds the whole lesion.
    ValueError
        A bad parameter.
    """
    from cxr_attention.preprocess.masks import lung_mask

    if image.ndim != 2 or image.dtype != np.uint8:
        raise ValueError(f"expected a 2-D uint8 image, got {image.dtype} {image.shape}")
    if side is not None and side not in LUNG_LABELS:
        raise ValueError(f"side must be 'left' or 'right' (the patient's), got {side!r}")
    if not 0 < contrast <= 1 or not 0 < radius < 0.5 or stripes < 0:
        raise ValueError(
            f"need 0 < contrast <= 1, 0 < radius < 0.5 and stripes >= 0, got {contrast}, {radius}, "
            f"{stripes}"
        )
    lungs = lung_mask(image) if lungs is None else lungs
    rng = np.random.default_rng(seed)
    if side is None:
        found = [name for name, label in LUNG_LABELS.items() if (lungs == label).any()]
        if not found:
            raise NoRoomForLesion("the lung mask found no lung to plant a lesion in")
        side = found[int(rng.integers(len(found)))]
    lung = lungs == LUNG_LABELS[side]

    radius_px = radius * max(image.shape)
    edge = _EDGE * radius_px
    reach = int(np.ceil(radius_px + _TAIL * edge))
    centres = _inner_points(lung, reach)
    if not centres[0].size:
        raise NoRoomForLesion(
            f"the patient's {side} lung has no place for a lesion of radius {radius_px:.0f} px "
            f"(box {2 * reach + 1} px)"
        )
    pick = int(rng.integers(centres[0].size))
    cy, cx = int(centres[0][pick]), int(centres[1][pick])

    top, left = cy - reach, cx - reach
    rows, cols = np.mgrid[-reach : reach + 1, -reach : reach + 1]
    profile = _profile(np.hypot(rows, cols), radius_px, edge)
    patch = image[top : top + 2 * reach + 1, left : left + 2 * reach + 1].astype(np.float64)
    patch += (255.0 - patch) * contrast * profile
    if stripes:
        period = image.shape[1] / STRIPE_CYCLES
        patch += (
            stripes * profile * np.cos(2 * np.pi * np.arange(left, left + 2 * reach + 1) / period)
        )
    planted = image.copy()
    planted[top : top + 2 * reach + 1, left : left + 2 * reach + 1] = np.clip(
        np.rint(patch), 0, 255
    ).astype(np.uint8)

    lung_rows = np.flatnonzero(lung.any(axis=1))
    share = (cy - lung_rows[0]) / max(lung_rows[-1] - lung_rows[0] + 1, 1)
    zone = ZONES[min(int(share * 3), 2)]
    lesion = PlantedLesion(
        x=left,
        y=top,
        w=2 * reach + 1,
        h=2 * reach + 1,
        centre_x=float(cx),
        centre_y=float(cy),
        radius=float(radius_px),
        side=side,
        zone=zone,
        contrast=float(contrast),
    )
    return planted, lesion


def planted_cases(
    image: np.ndarray, plan: Sequence[tuple[str, int]], **lesion
) -> list[tuple[np.ndarray, PlantedLesion]]:
    """``image`` with one lesion per ``(side, seed)`` of ``plan`` (`plant_lesion`; ``lesion``:
    its keyword arguments), as ``(planted, lesion)`` pairs in plan order; a side whose lung has
    no room for the lesion is left out."""
    cases = []
    for side, seed in plan:
        try:
            cases.append(plant_lesion(image, side=side, seed=seed, **lesion))
        except NoRoomForLesion:
            continue
    return cases


def _profile(distance: np.ndarray, radius: float, edge: float) -> np.ndarray:
    """Logistic step at ``radius``, rescaled to 1 at the centre and 0 from ``radius + 3 edge``."""

    def step(d):
        return 1.0 / (1.0 + np.exp((d - radius) / edge))

    floor, peak = step(radius + _TAIL * edge), step(0.0)
    return np.clip((step(distance) - floor) / (peak - floor), 0.0, 1.0)


def _inner_points(mask: np.ndarray, reach: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixels whose disc of radius ``reach`` lies wholly inside ``mask`` (row, col arrays)."""
    import cv2

    # Distance to the nearest pixel outside the mask; outside the image counts as outside (the
    # padding), so a disc that fits never leaves the image. Linear time, unlike an erosion by a
    # disc of the lesion's size.
    padded = np.pad(mask.astype(np.uint8), 1)
    distance = cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]
    inner = distance > reach
    return np.nonzero(inner)


def box_row(dicom_id: str, lesion: PlantedLesion, shape: tuple[int, int]) -> dict:
    """One MS-CXR row for ``lesion`` in an image of ``shape`` (height, width)."""
    return {
        "dicom_id": dicom_id,
        "category_name": LESION_CATEGORY,
        "label_text": lesion.label_text,
        "x": lesion.x,
        "y": lesion.y,
        "w": lesion.w,
        "h": lesion.h,
        "image_width": shape[1],
        "image_height": shape[0],
    }


def plant(
    images: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    side: str | None = None,
    seed: int = 0,
    *,
    radius: float = DEFAULT_RADIUS,
    contrast: float = DEFAULT_CONTRAST,
    stripes: float = 0.0,
) -> tuple[pd.DataFrame, list[Failure]]:
    """Plant one lesion into each image; write ``<stem>.png``, ``boxes.csv`` and ``failures.csv``.

    Each image gets the seed ``seed + its index``, so a film's lesion does not depend on the other
    films but two films never share one by accident. An image that cannot be read, or whose lung
    has no room for the lesion, gets a failures row (file and reason) and the others are written,
    as the preprocess stage does.

    Parameters
    ----------
    images : sequence of paths
        DICOM, JPEG or PNG radiographs (read with `decode_image`, full size).
    out_dir : path
        Destination folder (created).
    side : {"left", "right"} or None
        The patient's side for every lesion; ``None`` draws one per image.
    seed : int
    radius, contrast, stripes : float
        As in `plant_lesion`.

    Returns
    -------
    boxes : pandas.DataFrame
        The boxes written (MS-CXR columns `BOX_COLUMNS`, ``dicom_id`` the input's stem).
    failures : list of cxr_attention.io.Failure
        One per image left out (stage ``plant``), also written to ``failures.csv`` (header only
        when none failed).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stems = [Path(path).stem for path in images]
    if len(set(stems)) != len(stems):
        raise ValueError(f"two input images share a stem: {stems}")
    rows, failures = [], []
    for index, path in enumerate(images):
        try:
            planted, lesion, shape = _plant_file(
                path, side, seed + index, radius=radius, contrast=contrast, stripes=stripes
            )
        except InputError as error:
            failures.append(Failure.from_exception("plant", Path(path).stem, str(path), error))
            continue
        write_png(planted, out_dir / f"{Path(path).stem}.png")
        rows.append(box_row(Path(path).stem, lesion, shape))
    boxes = pd.DataFrame(rows, columns=BOX_COLUMNS)
    write_csv(boxes, out_dir / "boxes.csv")
    write_failures(failures, out_dir / "failures.csv")
    return boxes, failures


def _plant_file(
    path: str | os.PathLike, side: str | None, seed: int, **lesion
) -> tuple[np.ndarray, PlantedLesion, tuple[int, int]]:
    """Read one film and plant its lesion; `InputError` names the file and the reason."""
    from cxr_attention.preprocess.decode import decode_image

    image, _ = decode_image(path)
    try:
        planted, record = plant_lesion(image, side=side, seed=seed, **lesion)
    except NoRoomForLesion as error:
        raise InputError(path, str(error), error_type="no_room") from error
    return planted, record, image.shape


def lesion_record(lesion: PlantedLesion) -> dict:
    """The lesion as a flat dict (for tables beyond MS-CXR's columns)."""
    return asdict(lesion)
