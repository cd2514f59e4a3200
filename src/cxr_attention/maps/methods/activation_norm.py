"""``activation_norm``: the norm of a vision-tower layer's output per image token. Not
conditioned on the term: one map per sample, shared by all its targets."""

from __future__ import annotations

from collections.abc import Sequence

from cxr_attention.maps.grid import MapUnavailable
from cxr_attention.maps.methods.base import MapInputs, MapMethod, MapResult, Unavailable
from cxr_attention.maps.targets import MapTarget

__all__ = ["ActivationNorm"]


class ActivationNorm(MapMethod):
    name = "activation_norm"
    label = "activation norm"
    colour = "#009E73"
    description = "the norm of the vision tower's output per image token (not term-conditioned)"
    needs = "vision"
    term_conditioned = False

    def attribute(
        self, inputs: MapInputs, targets: Sequence[MapTarget]
    ) -> list[MapResult | Unavailable]:
        if self.name not in inputs.shared:  # once per sample, however often the cascade asks
            try:
                inputs.shared[self.name] = self._sample_map(inputs)
            except MapUnavailable as error:
                inputs.shared[self.name] = Unavailable(error.reason)
        return [inputs.shared[self.name] for _ in targets]

    @staticmethod
    def _sample_map(inputs: MapInputs) -> MapResult:
        from cxr_attention.maps.activation import activation_norm_map
        from cxr_attention.maps.hooks import vision_layers

        model, pixel_values = inputs.model_and_pixels()
        layer = inputs.params.activation_layer
        n_layers = len(vision_layers(model))
        grid_map = activation_norm_map(
            model, pixel_values, layer=layer, encodings=inputs.vision.encodings
        )
        return MapResult(grid_map, layers=f"vision:{layer % n_layers}")
