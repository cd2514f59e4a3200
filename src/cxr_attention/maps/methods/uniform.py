"""``uniform``: the same weight on every image token; the cascade's last resort (no signal)."""

from __future__ import annotations

from cxr_attention.maps.grid import uniform_map
from cxr_attention.maps.methods.base import MapInputs, MapResult, PerTargetMethod
from cxr_attention.maps.targets import MapTarget

__all__ = ["Uniform"]


class Uniform(PerTargetMethod):
    name = "uniform"
    label = "uniform (no signal)"
    colour = "#999999"
    description = "the same weight on every image token: the last resort, with no signal"
    needs = "capture"
    term_conditioned = False
    never_unavailable = True
    strip_border = False  # a stripped uniform map would no longer be uniform

    def attribute_one(self, inputs: MapInputs, target: MapTarget) -> MapResult:
        return MapResult(uniform_map(inputs.grid_shape))
