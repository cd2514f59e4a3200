"""``attention``: the captured attention of the generated tokens (the answer, or a term's) to
the image tokens, averaged over the chosen decoder layers and heads."""

from __future__ import annotations

import numpy as np

from cxr_attention.maps.attention import (
    attention_map,
    reference_compat_attention,
    select_layers_heads,
)
from cxr_attention.maps.grid import MapUnavailable
from cxr_attention.maps.methods.base import MapInputs, MapResult, PerTargetMethod
from cxr_attention.maps.targets import MapTarget

__all__ = ["Attention", "AttentionSelection", "checked_attention_result"]


class AttentionSelection:
    """The capture's image attention and the layer and head indices ``maps.layers/heads`` pick."""

    def __init__(self, inputs: MapInputs, target: MapTarget):
        if target.source == "absent":
            raise MapUnavailable("term not found")
        capture, params = inputs.capture, inputs.params
        attention = np.asarray(capture.attention)
        if params.reference_compat:
            attention = reference_compat_attention(capture)
        self.attention = attention
        layers = params.layers if target.layer is None else (target.layer,)
        self.layer_index, self.head_index = select_layers_heads(
            capture.layers, attention.shape[1], layers=layers, heads=params.heads
        )


def checked_attention_result(
    inputs: MapInputs,
    selection: AttentionSelection,
    grid_map: np.ndarray,
    image_mass: float,
    **notes: int,
) -> MapResult:
    """The result of an attention map, or MapUnavailable when too little reached the image."""
    min_mass = inputs.params.min_image_mass
    if image_mass < min_mass:
        raise MapUnavailable(f"image mass {image_mass:.3g} below min_image_mass {min_mass:g}")
    captured = np.asarray(inputs.capture.layers)
    return MapResult(
        grid_map,
        image_mass,
        layers="|".join(str(int(captured[i])) for i in selection.layer_index),
        heads="|".join(str(int(h)) for h in selection.head_index),
        notes=notes,
    )


class Attention(PerTargetMethod):
    name = "attention"
    label = "attention"
    colour = "#0072B2"
    description = "attention of the answer's (or the term's) generated tokens to the image"
    needs = "capture"
    term_conditioned = True
    # The cascade starts here for every target with generated tokens (and for an absent term,
    # which records "term not found"); a term only in the prompt starts at term_attention.
    cascade_sources = frozenset({"answer", "generated", "absent"})

    def attribute_one(self, inputs: MapInputs, target: MapTarget) -> MapResult:
        selection = AttentionSelection(inputs, target)
        if target.source == "prompt":
            raise MapUnavailable("term not generated (only in the prompt)")
        grid_map, image_mass = attention_map(
            selection.attention,
            target.generated_positions,
            layer_index=selection.layer_index,
            head_index=selection.head_index,
            aspect_ratio=inputs.aspect_ratio,
        )
        return checked_attention_result(inputs, selection, grid_map, image_mass)
