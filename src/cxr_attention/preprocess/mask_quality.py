"""Plausibility checks of a lung mask: is it the shape two lungs have on a frontal film?

The classical lung mask (:mod:`.masks`) fails on some films (white-out, large breast shadows, gas
under the diaphragm, AP films of patients lying down). A failed mask gives the lung metrics of
every map on that film a wrong meaning, so each mask is checked against four properties that any
frontal chest film has, and a film that fails one is flagged and kept out of the lung metrics:

- **lung share of the body**: the lungs cover a part of the patient, never most of it, never
  almost none (``lung_share_low`` / ``lung_share_high``);
- **lower border**: lungs end at the diaphragm, above the film's lower edge; a mask whose lungs run
  along the lower edge took in the abdomen (``touches_lower_border``);
- **left/right area ratio**: the smaller lung has at least 40% of the larger one's area
  (``lung_ratio``);
- **components**: two lungs, so two connected regions; one means the lungs merged across the
  mediastinum (or one is missing), three or more a fragmented mask (``components``).

The thresholds were calibrated on the hand-drawn masks of ``real_cxr/lung_masks`` (every one
passes) and on this project's masks of the real films in ``real_cxr/images`` and the demo data
(``docs/masks.md`` lists them).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["MASK_FLAGS", "MaskQuality", "check_lung_mask"]

LUNG_SHARE_RANGE = (0.10, 0.52)  # lung area / body area
LOWER_BORDER_ROWS = 0.02  # the bottom 2% of the rows ...
LOWER_BORDER_COVER = 0.20  # ... may hold lung on at most 20% of their pixels
MIN_LUNG_RATIO = 0.40  # smaller lung area / larger lung area
MIN_COMPONENT_SHARE = 0.01  # components under 1% of the lung area are specks, not counted

MASK_FLAGS = (
    "lung_share_low",
    "lung_share_high",
    "touches_lower_border",
    "lung_ratio",
    "components",
)
"""Every reason a mask can be flagged for, in the order they are reported."""


@dataclass(frozen=True)
class MaskQuality:
    """The measured properties of one lung mask and the flags they raise.

    Attributes
    ----------
    lung_share : float
        Lung area / body area.
    lower_border_cover : float
        Share of the pixels of the bottom :data:`LOWER_BORDER_ROWS` rows that are lung.
    lung_ratio : float
        Smaller lung's area / larger lung's area (0 when a lung is missing).
    components : int
        Connected regions of the lung mask (specks under 1% of the lung area not counted).
    flags : tuple of str
        The reasons (from :data:`MASK_FLAGS`) the mask is implausible; empty when it is not.
    """

    lung_share: float
    lower_border_cover: float
    lung_ratio: float
    components: int
    flags: tuple[str, ...]

    @property
    def ok(self) -> bool:
        """Whether the mask passed every check."""
        return not self.flags

    @property
    def flag_text(self) -> str:
        """The flags as one ``;``-separated string (empty when none), as stored in tables."""
        return ";".join(self.flags)


def check_lung_mask(lungs: np.ndarray, body: np.ndarray) -> MaskQuality:
    """Measure a lung mask and flag it when it cannot be two lungs on a frontal film.

    Parameters
    ----------
    lungs : numpy.ndarray
        2-D lung labels (1 patient's right, 2 patient's left), or a binary mask (bool or 0/255):
        then the two largest connected regions stand for the two lungs.
    body : numpy.ndarray
        Body mask of the same shape (bool or 0/255).

    Returns
    -------
    MaskQuality
    """
    if lungs.shape != body.shape or lungs.ndim != 2:
        raise ValueError(f"lung mask {lungs.shape} and body mask {body.shape}: not one 2-D shape")
    lung = lungs > 0
    lung_area = int(np.count_nonzero(lung))
    body_area = int(np.count_nonzero(body))
    share = lung_area / body_area if body_area else 0.0
    border_rows = max(1, round(LOWER_BORDER_ROWS * lung.shape[0]))
    border_cover = float(lung[-border_rows:].mean())
    sizes = _component_sizes(lung)
    components = int(np.count_nonzero(sizes >= MIN_COMPONENT_SHARE * max(lung_area, 1)))
    ratio = _side_ratio(lungs, sizes)

    flags = []
    if share < LUNG_SHARE_RANGE[0]:
        flags.append("lung_share_low")
    if share > LUNG_SHARE_RANGE[1]:
        flags.append("lung_share_high")
    if border_cover > LOWER_BORDER_COVER:
        flags.append("touches_lower_border")
    if ratio < MIN_LUNG_RATIO:
        flags.append("lung_ratio")
    if components != 2:
        flags.append("components")
    return MaskQuality(
        lung_share=round(share, 4),
        lower_border_cover=round(border_cover, 4),
        lung_ratio=round(ratio, 4),
        components=components,
        flags=tuple(flags),
    )


def _component_sizes(mask: np.ndarray) -> np.ndarray:
    """Areas of the 8-connected regions of a binary mask, largest first."""
    count, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    return np.sort(stats[1:count, cv2.CC_STAT_AREA])[::-1]


def _side_ratio(lungs: np.ndarray, sizes: np.ndarray) -> float:
    """Smaller / larger lung area: per label when labelled, else of the two largest regions."""
    labels = set(np.unique(lungs).tolist()) - {0}
    if lungs.dtype != bool and labels <= {1, 2}:
        areas = [int(np.count_nonzero(lungs == label)) for label in (1, 2)]
    else:
        areas = [int(size) for size in sizes[:2]] + [0] * max(0, 2 - sizes.size)
    return min(areas) / max(areas) if max(areas) else 0.0
