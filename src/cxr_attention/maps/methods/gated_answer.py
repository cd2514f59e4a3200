"""``gated_answer``: the answer's attention to the image, its rows reweighted by how much each
attends to the term's prompt positions (the reference study's token gating).

This is a map of the *answer*, not of the term: on the demo it differs from the every-row answer
map by a Jensen-Shannon divergence of 3e-6, less than two questions about one image differ. It
was called ``attention_gated``; ``term_attention`` is the term's own map.
"""

from __future__ import annotations

from cxr_attention.maps.attention import gated_answer_map
from cxr_attention.maps.grid import MapUnavailable
from cxr_attention.maps.methods.attention import AttentionSelection, checked_attention_result
from cxr_attention.maps.methods.base import MapInputs, MapResult, PerTargetMethod
from cxr_attention.maps.targets import MapTarget

__all__ = ["GatedAnswer"]


class GatedAnswer(PerTargetMethod):
    name = "gated_answer"
    label = "answer gated by term"
    colour = "#56B4E9"
    description = (
        "the answer's attention to the image, its rows reweighted by their attention to the "
        "term in the prompt (a map of the answer)"
    )
    needs = "capture"
    term_conditioned = True
    cascade_sources = frozenset({"prompt"})

    def attribute_one(self, inputs: MapInputs, target: MapTarget) -> MapResult:
        selection = AttentionSelection(inputs, target)
        if not target.prompt_positions:
            raise MapUnavailable("term not in the prompt (nothing to gate on)")
        grid_map, image_mass, n_gating = gated_answer_map(
            selection.attention,
            inputs.capture.text_attention,
            target.prompt_positions,
            layer_index=selection.layer_index,
            head_index=selection.head_index,
            aspect_ratio=inputs.aspect_ratio,
        )
        return checked_attention_result(
            inputs, selection, grid_map, image_mass, n_gating_positions=n_gating
        )
