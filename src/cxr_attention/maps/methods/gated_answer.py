"""``attention_gated``: for a term only in the prompt, the answer's attention to the image,
weighted by how much each generated row attends to the term's prompt positions."""

from __future__ import annotations

from cxr_attention.maps.attention import attention_gated_map
from cxr_attention.maps.grid import MapUnavailable
from cxr_attention.maps.methods.attention import AttentionSelection, checked_attention_result
from cxr_attention.maps.methods.base import MapInputs, MapResult, PerTargetMethod
from cxr_attention.maps.targets import MapTarget

__all__ = ["AttentionGated"]


class AttentionGated(PerTargetMethod):
    name = "attention_gated"
    label = "gated attention"
    colour = "#56B4E9"
    description = (
        "the answer's attention to the image, gated by its attention to the term in the prompt"
    )
    needs = "capture"
    term_conditioned = True
    cascade_sources = frozenset({"prompt"})

    def attribute_one(self, inputs: MapInputs, target: MapTarget) -> MapResult:
        selection = AttentionSelection(inputs, target)
        if not target.prompt_positions:
            raise MapUnavailable("term not in the prompt (nothing to gate on)")
        grid_map, image_mass, n_gating = attention_gated_map(
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
