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
    "CHANCE_COLUMNS",
    "ENTROPY",
    "INSIDE_BODY",
    "LEFT_RIGHT",
    "LUNG_METRIC_COLUMNS",
    "MAP_METRICS",
    "MASS_SHARE_METRICS",
    "METRIC_COLUMNS",
    "QUALITY_TARGETS",
    "TESTED_METRICS",
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
    mass_share : bool
        A share of the map's mass on a region: it has a chance baseline, its *area share* (what a
        uniform map scores on that image's masks, column ``<column>_area``) and its *lift* (share
        / area share, ``<column>_lift``; 1 = no better than a uniform map).
    """

    column: str
    label: str
    unit: str
    direction: str = "none"
    target: float | None = None
    band: tuple[float, float] | None = None
    band_names: tuple[str, str, str] | None = None
    reads_lungs: bool = False
    mass_share: bool = False

    @property
    def area_column(self) -> str:
        """``<column>_area``: the share a uniform map scores on the same image's masks."""
        return f"{self.column}_area"

    @property
    def lift_column(self) -> str:
        """``<column>_lift``: the share over its area share (1 = chance)."""
        return f"{self.column}_lift"

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
    "inside_body",
    "share of mass inside the body",
    "share",
    direction="higher",
    target=0.7,
    mass_share=True,
)
BORDER_FRACTION = MapMetric(
    "border_fraction",
    "share of mass on the border ring",
    "share",
    direction="lower",
    target=0.05,
    mass_share=True,
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
    mass_share=True,
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
    MapMetric(
        "apical_basal",
        "share of lung mass in the upper halves",
        "share",
        reads_lungs=True,
        mass_share=True,
    ),
)

#: The mass-share metrics: each has an area share and a lift (chance baselines).
MASS_SHARE_METRICS: tuple[MapMetric, ...] = tuple(m for m in CATALOGUE if m.mass_share)

#: The chance-baseline columns, in table order: per mass-share metric its area share and lift.
CHANCE_COLUMNS = [c for m in MASS_SHARE_METRICS for c in (m.area_column, m.lift_column)]

#: Columns of the per-map metrics table, in order (docs/architecture.md, "Per-map metrics").
METRIC_COLUMNS = ["map_id", *(m.column for m in CATALOGUE), *CHANCE_COLUMNS]

#: The columns that read the lung mask (left blank where the mask is flagged).
LUNG_METRIC_COLUMNS = tuple(
    c
    for m in CATALOGUE
    if m.reads_lungs
    for c in ((m.column, m.area_column, m.lift_column) if m.mass_share else (m.column,))
)

#: The metric columns alone (summarised per method: mean, CI).
MAP_METRICS = METRIC_COLUMNS[1:]

#: The columns tested between groups: the metrics and the lifts (an area share is the image's,
#: not the map's).
TESTED_METRICS = [*(m.column for m in CATALOGUE), *(m.lift_column for m in MASS_SHARE_METRICS)]

_BY_COLUMN = {m.column: m for m in CATALOGUE}


def metric(column: str) -> MapMetric:
    """The catalogue entry of ``column`` (KeyError naming it when there is none)."""
    try:
        return _BY_COLUMN[column]
    except KeyError:
        raise KeyError(f"no per-map metric {column!r} in the catalogue") from None


@dataclass(frozen=True)
class QualityTarget:
    """A verdict the study reports on the headline maps, against chance (a uniform map).

    The verdict reads ``map_quality[f"{column}_{statistic}"]`` of ``summary.json``: with
    ``statistic`` ``"ci_low"`` (or ``"ci_high"``) the whole 95% interval of the mean must pass
    ``test``. ``key`` is its name in ``summary.json``'s ``targets_met``; ``share_key`` names the
    share of maps meeting it in ``map_quality`` (``share_complement``: one minus that share).
    """

    key: str
    words: str
    metric: MapMetric
    test: Callable[[float], bool]
    share_key: str | None = None
    share_complement: bool = False
    column: str | None = None
    statistic: str = "mean"

    @property
    def value_column(self) -> str:
        """The ``map_quality`` column the verdict reads (the metric's own by default)."""
        return self.column or self.metric.column

    def met(self, value: float) -> bool:
        """The verdict on ``value``; False for NaN."""
        return bool(np.isfinite(value) and self.test(value))


#: The study's quality targets, in the order of ``summary.json``'s ``targets_met``. A uniform map
#: meets "inside_body >= 0.7" on most films (the body fills most of a radiograph), so the
#: verdicts ask for more than chance: a lift above 1 (inside the body) or below 1 (on the border
#: ring), and an entropy below a uniform map's, each over the whole 95% interval of the mean.
#: The fixed thresholds of the catalogue stay as descriptive shares (``*_share_meeting_target``).
QUALITY_TARGETS: tuple[QualityTarget, ...] = (
    QualityTarget(
        "inside_body_lift_gt_1",
        "inside_body above a uniform map's (lift > 1)",
        INSIDE_BODY,
        lambda value: value > 1.0,
        "inside_body_lift_share_above_1",
        column=INSIDE_BODY.lift_column,
        statistic="ci_low",
    ),
    QualityTarget(
        "border_fraction_lift_lt_1",
        "border_fraction below a uniform map's (lift < 1)",
        BORDER_FRACTION,
        lambda value: value < 1.0,
        "border_fraction_lift_share_below_1",
        column=BORDER_FRACTION.lift_column,
        statistic="ci_high",
    ),
    QualityTarget(
        "entropy_below_uniform",
        "entropy below a uniform map's (normalised entropy < 1)",
        ENTROPY,
        lambda value: value < 1.0,
        column="entropy_normalised",
        statistic="ci_high",
    ),
)
