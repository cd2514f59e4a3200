"""The faithfulness and reliance settings (schema sections ``faithfulness`` and ``reliance``),
frozen dataclasses with no defaults of their own (the schema holds them)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cxr_attention.settings import build_settings

__all__ = ["FaithfulnessSettings", "RelianceSettings", "faithfulness_settings", "reliance_settings"]


@dataclass(frozen=True)
class FaithfulnessSettings:
    """Deletion / insertion curves and randomisation checks (``faithfulness``)."""

    activate: bool
    max_samples: int
    methods: list[str]
    perturbations: list[str]
    steps: list[float]
    n_random: int
    blur_sigma_cells: float
    road_noise: float
    road_side: int
    batch_size: int
    randomisation_samples: int
    cascade_steps: int

    def curve_settings(self, seed: int):
        """The curves' `deletion.CurveSettings`."""
        from cxr_attention.faithfulness.deletion import CurveSettings

        return CurveSettings(
            perturbations=tuple(self.perturbations),
            steps=tuple(float(s) for s in self.steps),
            n_random=int(self.n_random),
            blur_sigma_cells=float(self.blur_sigma_cells),
            road_noise=float(self.road_noise),
            road_side=int(self.road_side),
            seed=int(seed),
        )


@dataclass(frozen=True)
class RelianceSettings:
    """The image-reliance audit (``reliance``)."""

    activate: bool
    max_samples: int | None
    batch_size: int


def faithfulness_settings(values: Mapping[str, Any]) -> FaithfulnessSettings:
    return build_settings(FaithfulnessSettings, "faithfulness", values)


def reliance_settings(values: Mapping[str, Any]) -> RelianceSettings:
    return build_settings(RelianceSettings, "reliance", values)
