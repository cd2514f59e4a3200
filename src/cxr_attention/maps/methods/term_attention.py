"""``term_attention``: the term tokens' own attention to the image, a map of the term itself.

The rows of the prompt positions of the term's tokens in the captured ``prompt_image_attention``
(every occurrence), averaged over the chosen layers and heads like ``attention``'s rows. Attention
is causal, so a token sees the image only when the image comes before it in the prompt
(``inference.image_first: true``, or a template that puts the question after the image);
otherwise, or when the capture kept no row of the term, the map is unavailable with the reason.
"""

from __future__ import annotations

import numpy as np

from cxr_attention.maps.attention import attention_map
from cxr_attention.maps.grid import MapUnavailable
from cxr_attention.maps.methods.attention import AttentionSelection, checked_attention_result
from cxr_attention.maps.methods.base import MapInputs, MapResult, PerTargetMethod
from cxr_attention.maps.targets import MapTarget

__all__ = ["TermAttention"]


class TermAttention(PerTargetMethod):
    name = "term_attention"
    label = "term attention"
    colour = "#661100"
    description = "the term's own tokens' attention to the image (the term after the image)"
    needs = "capture"
    term_conditioned = True
    cascade_sources = frozenset({"prompt"})

    def attribute_one(self, inputs: MapInputs, target: MapTarget) -> MapResult:
        if not target.prompt_positions:
            raise MapUnavailable("term not in the prompt")
        capture = inputs.capture
        if inputs.params.reference_compat:
            raise MapUnavailable("not part of the reference's maps")
        if capture.prompt_image_attention is None or capture.image_token_positions is None:
            raise MapUnavailable("the capture has no prompt rows")
        image_start = int(np.min(capture.image_token_positions))
        before = [p for p in target.prompt_positions if p < image_start]
        if len(before) == len(target.prompt_positions):
            raise MapUnavailable(
                "the term comes before the image in the prompt: causal attention lets it see "
                "no image token (put the image first)"
            )
        positions = capture.prompt_image_positions
        if positions is None:  # a capture of every prompt row
            positions = np.arange(np.asarray(capture.prompt_image_attention).shape[2])
        after = [p for p in target.prompt_positions if p > image_start]
        captured = [int(np.flatnonzero(positions == p)[0]) for p in after if p in positions]
        if not captured:
            raise MapUnavailable("the capture kept no prompt row of the term")
        selection = AttentionSelection(inputs, target)
        grid_map, image_mass = attention_map(
            capture.prompt_image_attention,
            captured,
            layer_index=selection.layer_index,
            head_index=selection.head_index,
            aspect_ratio=inputs.aspect_ratio,
        )
        return checked_attention_result(inputs, selection, grid_map, image_mass)
