"""``random``: a seeded random map over the grid, the null the faithfulness and grounding stages
compare every other method against."""

from __future__ import annotations

import hashlib

import numpy as np

from cxr_attention.maps.grid import normalise_map
from cxr_attention.maps.methods.base import MapInputs, MapResult, PerTargetMethod
from cxr_attention.maps.records import map_id
from cxr_attention.maps.targets import MapTarget

__all__ = ["Random"]


class Random(PerTargetMethod):
    name = "random"
    label = "random (null)"
    colour = "#CC79A7"
    description = (
        "independent uniform draws per image token, seeded by the run's seed and the map id"
    )
    needs = "capture"
    term_conditioned = False
    never_unavailable = True

    def attribute_one(self, inputs: MapInputs, target: MapTarget) -> MapResult:
        key = inputs.key
        identity = map_id(key.sample_id, target.slug, target.source, self.name)
        # hashlib, not hash(): the same draw in every process, whatever PYTHONHASHSEED says.
        digest = hashlib.sha256(f"{inputs.params.seed}:{identity}".encode()).digest()
        rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
        return MapResult(normalise_map(rng.random(inputs.grid_shape)))
