"""The map-method contract, in the style of captum's ``Attribution`` and pytorch-grad-cam's
``BaseCAM``: a class with a few descriptive attributes and one batched ``attribute``.

``attribute(inputs, targets)`` gets one sample (:class:`MapInputs`: its capture, the lazily loaded
model and pixels, the settings) and every target of that sample the cascade wants this method
for, and returns one :class:`MapResult` or :class:`Unavailable` per target, in order. Batching
across targets (Grad-CAM's one forward + backward) or sharing one map among them
(``activation_norm``) is each method's own business. The cascade policy
(:mod:`cxr_attention.maps.cascade`) turns the results into table rows and fallbacks.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from cxr_attention.captures import Capture
from cxr_attention.geometry import factor_to_grid
from cxr_attention.maps.grid import MapUnavailable
from cxr_attention.maps.records import SampleKey
from cxr_attention.maps.targets import SOURCES, MapTarget

if TYPE_CHECKING:
    from cxr_attention.maps.hooks import VisionEncodings  # torch: figures import the registry
    from cxr_attention.maps.params import MapParams

__all__ = [
    "MapInputs",
    "MapMethod",
    "MapResult",
    "PerTargetMethod",
    "Unavailable",
    "VisionSource",
]


@dataclass(frozen=True)
class MapResult:
    """One method's map of one target, before the cascade's border strip and renormalisation.

    Attributes
    ----------
    grid : ndarray, 2-D
        Non-negative values over the image-token grid.
    image_mass : float
        Share of the attention on the image before renormalising (NaN: not an attention map).
    layers, heads : str
        What the map averaged, ``"|"``-joined (``vision:<index>`` for the vision tower).
    notes : mapping
        Values of the maps table's note columns (:data:`~cxr_attention.maps.records.NOTE_COLUMNS`,
        e.g. ``n_gating_positions``).
    """

    grid: np.ndarray
    image_mass: float = math.nan
    layers: str = ""
    heads: str = ""
    notes: Mapping[str, int | float | str] = field(default_factory=dict)


@dataclass(frozen=True)
class Unavailable:
    """Why a method gave no map for a target (recorded in ``fallback_reason``)."""

    reason: str


@dataclass
class VisionSource:
    """Lazy access to the model and pixels the vision-side methods need.

    ``load`` is called at most once, on first use, and returns ``(model, pixel_values)``; it may
    raise :class:`MapUnavailable` (no model configured, image missing) and the reason is then
    recorded for every vision method of the sample.
    """

    load: Callable[[], tuple[object, object]]
    # Shared by the sources of one job: an image's vision encoding, reused across its samples.
    encodings: VisionEncodings | None = None
    # The model's tokenizer: the decision margin's yes/no tokens (None: no margin-scored maps).
    tokenizer: object | None = None
    _loaded: tuple | None = field(default=None, init=False)
    _error: MapUnavailable | None = field(default=None, init=False)

    def get(self) -> tuple[object, object]:
        if self._error is not None:
            raise self._error
        if self._loaded is None:
            try:
                self._loaded = self.load()
            except MapUnavailable as error:
                self._error = error
                raise
        return self._loaded


@dataclass
class MapInputs:
    """Everything a method may read about one sample.

    Attributes
    ----------
    capture : Capture
    params : MapParams
    key : SampleKey
    vision : VisionSource or None
        Model and pixels; None: the methods that need them are unavailable.
    aspect_ratio : float
        Image width / height (for a non-square token count).
    shared : dict
        Scratch space of this sample, for a method that computes something once per sample.
    """

    capture: Capture
    params: MapParams
    key: SampleKey
    vision: VisionSource | None = None
    aspect_ratio: float = 1.0
    shared: dict = field(default_factory=dict)

    @property
    def grid_shape(self) -> tuple[int, int]:
        """``(rows, cols)`` of the image-token grid."""
        if self.capture.grid is not None:
            return self.capture.grid
        return factor_to_grid(np.asarray(self.capture.attention).shape[-1], self.aspect_ratio)

    def model_and_pixels(self) -> tuple[object, object]:
        """``(model, pixel_values)``; raises MapUnavailable when there are none."""
        if self.vision is None:
            raise MapUnavailable("no model available")
        return self.vision.get()


class MapMethod:
    """One way of making a map over the image-token grid.

    Class attributes
    ----------------
    name : str
        The ``method`` column of the maps table, the config's and CLI's name.
    label : str
        Its name in figures.
    colour : str
        Its colour in figures (hex).
    description : str
        One sentence for report captions and docs.
    needs : {"capture", "vision"}
        ``capture``: the capture file alone; ``vision``: also the model and the pixels.
    term_conditioned : bool
        Whether the map depends on the target (False: the same map for every target).
    cascade_sources : frozenset of str
        The target sources (:data:`~cxr_attention.maps.targets.SOURCES`) the cascade tries it
        for; it skips it silently for the others. A forced method and ``all`` try every target.
    never_unavailable : bool
        Always gives a map: a valid last step of ``maps.cascade``.
    strip_border : bool
        Whether ``maps.strip_border`` applies to its maps.
    """

    name: ClassVar[str]
    label: ClassVar[str]
    colour: ClassVar[str]
    description: ClassVar[str]
    needs: ClassVar[str] = "capture"
    term_conditioned: ClassVar[bool] = True
    cascade_sources: ClassVar[frozenset[str]] = frozenset(SOURCES)
    never_unavailable: ClassVar[bool] = False
    strip_border: ClassVar[bool] = True

    def attribute(
        self, inputs: MapInputs, targets: Sequence[MapTarget]
    ) -> list[MapResult | Unavailable]:
        """One result per target, in order (never raises MapUnavailable)."""
        raise NotImplementedError


class PerTargetMethod(MapMethod):
    """A method computed one target at a time: implement :meth:`attribute_one`."""

    def attribute(
        self, inputs: MapInputs, targets: Sequence[MapTarget]
    ) -> list[MapResult | Unavailable]:
        results: list[MapResult | Unavailable] = []
        for target in targets:
            try:
                results.append(self.attribute_one(inputs, target))
            except MapUnavailable as error:
                results.append(Unavailable(error.reason))
        return results

    def attribute_one(self, inputs: MapInputs, target: MapTarget) -> MapResult:
        """The map of one target; raises MapUnavailable with the reason when there is none."""
        raise NotImplementedError
