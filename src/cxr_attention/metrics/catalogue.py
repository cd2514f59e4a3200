"""The catalogue of per-map metrics: one place for each metric's column, label, unit and target.

Statistics (``metrics/summary.py``), figures (``figures/summary.py``) and the report
(``report/summary.py``) read the targets and bands from here; docs/metrics.md describes them.
The order of :data:`MAP_METRICS` is the column order of the per-map metrics table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = [
    "BORDER_FRACTION",
    "CATALOGUE",
    "ENTROPY",
    "INSIDE_BODY",
    "LEFT_RIGHT",
    "MAP_METRICS",
    "METRIC_COLUMNS",
    "QUALITY_TARGETS",
    "MapMetric",
    "QualityTarget",
    "metric",
]


@dataclass(frozen=True)
class MapMetric:
    """One per-map metric.

    Attributes
    ----------
    column : str
        Its column in the per-map metrics table.
    label : str
        What it measures, in words (figure panel titles).
    unit : str
        ``"share"`` (of the map's mass), ``"nats"``.
    direction : str
        ``"higher"`` (``target`` is a minimum), ``"lower"`` (``target`` is a maximum), ``"band"``
        (a value within ``band`` is the good one) or ``"none"`` (descriptive, no target).
    target : float or None
        The quality target of ``"higher"`` and ``"lower"`` metrics.
    band : (low, high) or None
        Band limits; with ``band_names`` (below, within, above) it names a value's band.
    band_names : (str, str, str) or None
    reads_lungs : bool
        Computed from the lung mask: blank for an image whose lung mask is flagged as implausible
        (``preprocess.mask_quality``).
    """

    column: str
    label: str
    unit: str
    direction: str = "none"
    target: float | None = None
    band: tuple[float, float] | None = None
    band_names: tuple[str, str, str] | None = None
    reads_lungs: bool = False

    def meets_target(self, value: float) -> bool:
        """Whether ``value`` meets the target (False for NaN and for a metric without one)."""
        if self.target is None or not np.isfinite(value):
            return False
        return value >= self.target if self.direction == "higher" else value <= self.target

    def target_text(self) -> str:
        """``"inside_body >= 0.7"``: the target as the report and figures write it."""
        sign = ">=" if self.direction == "higher" else "<="
        return f"{self.column} {sign} {self.target:g}"

    def band_of(self, value: float) -> str:
        """The name of ``value``'s band: below ``band[0]``, above ``band[1]``, else within.

        ``"undefined"`` for NaN.
        """
        if self.band is None or self.band_names is None:
            raise ValueError(f"{self.column} has no bands")
        if not np.isfinite(value):
            return "undefined"
        below, within, above = self.band_names
        if value < self.band[0]:
            return below
        if value > self.band[1]:
            return above
        return within


INSIDE_BODY = MapMetric(
    "inside_body", "share of mass inside the body", "share", direction="higher", target=0.7
)
BORDER_FRACTION = MapMetric(
    "border_fraction", "share of mass on the border ring", "share", direction="lower", target=0.05
)
# log 256 = 5.545 nats is a uniform map over MedGemma's 16 x 16 tokens.
ENTROPY = MapMetric(
    "entropy",
    "entropy (nats; uniform = 5.55)",
    "nats",
    direction="lower",
    band=(3.0, 4.5),
    band_names=("focused", "intermediate", "diffuse"),
)
LEFT_RIGHT = MapMetric(
    "left_right",
    "share of lung mass in the patient's left lung",
    "share",
    direction="band",
    band=(0.3, 0.7),
    band_names=("right", "balanced", "left"),
    reads_lungs=True,
)

#: Every per-map metric in table order.
CATALOGUE: tuple[MapMetric, ...] = (
    INSIDE_BODY,
    BORDER_FRACTION,
    ENTROPY,
    MapMetric("entropy_normalised", "entropy / log(tokens)", "share of the maximum"),
    MapMetric("focus", "mass of the top 5% of tokens", "share"),
    MapMetric("focus_max", "largest token share", "share"),
    LEFT_RIGHT,
    MapMetric("apical_basal", "share of lung mass in the upper halves", "share", reads_lungs=True),
)

#: Columns of the per-map metrics table, in order (docs/architecture.md, "Per-map metrics").
METRIC_COLUMNS = ["map_id", *(m.column for m in CATALOGUE)]

#: The metrics that read the lung mask (left blank where the mask is flagged).
LUNG_METRIC_COLUMNS = tuple(m.column for m in CATALOGUE if m.reads_lungs)

#: The metric columns alone (what statistics compare between groups).
MAP_METRICS = METRIC_COLUMNS[1:]

_BY_COLUMN = {m.column: m for m in CATALOGUE}


def metric(column: str) -> MapMetric:
    """The catalogue entry of ``column`` (KeyError naming it when there is none)."""
    try:
        return _BY_COLUMN[column]
    except KeyError:
        raise KeyError(f"no per-map metric {column!r} in the catalogue") from None


@dataclass(frozen=True)
class QualityTarget:
    """A verdict the study reports on the mean of a metric over the headline maps.

    ``key`` is its name in ``summary.json``'s ``targets_met``; ``share_key`` names the share of
    maps meeting it in ``map_quality`` (``share_complement``: one minus that share).
    """

    key: str
    words: str
    metric: MapMetric
    test: Callable[[float], bool]
    share_key: str | None = None
    share_complement: bool = False

    def met(self, value: float) -> bool:
        """The verdict on ``value``; False for NaN."""
        return bool(np.isfinite(value) and self.test(value))


_FOCUSED, _DIFFUSE = ENTROPY.band  # type: ignore[misc]

#: The study's quality targets, in the order of ``summary.json``'s ``targets_met``.
QUALITY_TARGETS: tuple[QualityTarget, ...] = (
    QualityTarget(
        f"inside_body_ge_{INSIDE_BODY.target}",
        INSIDE_BODY.target_text(),
        INSIDE_BODY,
        INSIDE_BODY.meets_target,
        "inside_body_share_meeting_target",
    ),
    QualityTarget(
        f"border_fraction_le_{BORDER_FRACTION.target}",
        BORDER_FRACTION.target_text(),
        BORDER_FRACTION,
        BORDER_FRACTION.meets_target,
        "border_fraction_share_meeting_target",
    ),
    QualityTarget(
        f"entropy_not_diffuse_le_{_DIFFUSE}",
        f"entropy <= {_DIFFUSE:g} nats (not diffuse)",
        ENTROPY,
        lambda value: value <= _DIFFUSE,
        "entropy_share_diffuse",
        share_complement=True,
    ),
    QualityTarget(
        f"entropy_focused_lt_{_FOCUSED}",
        f"entropy < {_FOCUSED:g} nats (focused)",
        ENTROPY,
        lambda value: value < _FOCUSED,
        "entropy_share_focused",
    ),
)
