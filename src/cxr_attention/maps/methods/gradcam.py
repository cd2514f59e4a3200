"""``gradcam``: Grad-CAM on a vision-tower layer for the answer's (or the term's) tokens, every
target of a sample in batched forward + backward passes (engine:
:class:`cxr_attention.maps.gradcam.VisionGradCAM`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cxr_attention.maps.grid import MapUnavailable, normalise_map
from cxr_attention.maps.methods.base import MapInputs, MapMethod, MapResult, Unavailable
from cxr_attention.maps.targets import MapTarget

__all__ = ["GradCAM"]


class GradCAM(MapMethod):
    name = "gradcam"
    label = "Grad-CAM"
    colour = "#D55E00"
    description = "Grad-CAM on the vision tower for the answer's (or the term's) tokens"
    needs = "vision"
    term_conditioned = True

    def attribute(
        self, inputs: MapInputs, targets: Sequence[MapTarget]
    ) -> list[MapResult | Unavailable]:
        """One pass for a single target; ``maps.gradcam_max_rows`` targets per pass otherwise."""
        try:
            model, pixel_values = inputs.model_and_pixels()
        except MapUnavailable as error:
            return [Unavailable(error.reason) for _ in targets]
        from cxr_attention.maps.gradcam import VisionGradCAM
        from cxr_attention.maps.hooks import vision_layers

        layers = vision_layers(model)
        layer = inputs.params.gradcam_layer
        gradcam = VisionGradCAM(model, layers[layer], encodings=inputs.vision.encodings)
        layer_name = f"vision:{layer % len(layers)}"
        input_ids = inputs.capture.input_ids
        requests = [_request(inputs, target) for target in targets]
        if len(requests) == 1:
            try:
                outcomes = [gradcam(input_ids, pixel_values, *requests[0])]
            except Exception as error:  # any failure of the backward pass is a recorded fallback
                outcomes = [error]
        else:
            outcomes = gradcam.batched(
                input_ids, pixel_values, requests, max_rows=inputs.params.gradcam_max_rows
            )
        return [
            _gradient_failure(outcome)
            if isinstance(outcome, Exception)
            else MapResult(normalise_map(outcome), layers=layer_name)
            for outcome in outcomes
        ]


def _request(inputs: MapInputs, target: MapTarget):
    """``(following_ids, positions)``: generated tokens, or the term's tokens forced."""
    if target.source in ("answer", "generated"):
        following = np.asarray(inputs.capture.generated_ids).reshape(-1)
        return following, target.generated_positions
    following = np.asarray(target.forced_ids, dtype=np.int64)
    return following, range(following.size)


def _gradient_failure(error: Exception) -> Unavailable:
    """A MapUnavailable's reason as is; any other failure as a gradient failure."""
    if isinstance(error, MapUnavailable):
        return Unavailable(error.reason)
    return Unavailable(f"gradient failure: {type(error).__name__}: {error}")
