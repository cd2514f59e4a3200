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
    description = (
        "Grad-CAM on the vision tower for the answer's yes/no decision margin, signed by the "
        "answer given (or the term's tokens)"
    )
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
        asked = [r for r in requests if not isinstance(r, Unavailable)]
        outcomes = iter(self._cams(gradcam, input_ids, pixel_values, asked, inputs))
        return [
            request if isinstance(request, Unavailable) else _result(next(outcomes), layer_name)
            for request in requests
        ]

    @staticmethod
    def _cams(gradcam, input_ids, pixel_values, requests, inputs) -> list:
        """Grids (or exceptions) of the requests: one pass for one, batched passes for more."""
        if not requests:
            return []
        if len(requests) == 1:
            try:
                outcomes = [gradcam(input_ids, pixel_values, *requests[0])]
            except Exception as error:  # any failure of the backward pass is a recorded fallback
                outcomes = [error]
            return outcomes
        return gradcam.batched(
            input_ids, pixel_values, requests, max_rows=inputs.params.gradcam_max_rows
        )


def _result(outcome, layer_name: str) -> MapResult | Unavailable:
    if isinstance(outcome, Exception):
        return _gradient_failure(outcome)
    try:
        return MapResult(normalise_map(outcome), layers=layer_name)
    except MapUnavailable as error:  # e.g. all-zero: no patch raises the score
        return Unavailable(f"Grad-CAM: {error.reason}")


def _request(inputs: MapInputs, target: MapTarget):
    """``(following_ids, positions[, score])``: the decision margin of the answer, the generated
    tokens of a term, or the term's tokens forced; Unavailable for the every-row answer."""
    if target.source == "answer":
        if target.rows != "decision":
            return Unavailable("Grad-CAM scores the decision margin: see the decision map")
        if target.yes_no is None:
            return Unavailable("the tokenizer has no single-token yes and no")
        from cxr_attention.maps.gradcam import DecisionMarginTarget
        from cxr_attention.maps.methods.decoder_forward import decision_sign

        following = np.asarray(inputs.capture.generated_ids).reshape(-1)
        if not following.size:
            return Unavailable("no generated token (no decision step)")
        try:
            sign = decision_sign(inputs, target.yes_no)
        except MapUnavailable as error:
            return Unavailable(error.reason)
        return following, (0,), DecisionMarginTarget(target.yes_no, sign)
    if target.source == "generated":
        following = np.asarray(inputs.capture.generated_ids).reshape(-1)
        return following, target.generated_positions
    following = np.asarray(target.forced_ids, dtype=np.int64)
    return following, range(following.size)


def _gradient_failure(error: Exception) -> Unavailable:
    """A MapUnavailable's reason as is; any other failure as a gradient failure."""
    if isinstance(error, MapUnavailable):
        return Unavailable(error.reason)
    return Unavailable(f"gradient failure: {type(error).__name__}: {error}")
