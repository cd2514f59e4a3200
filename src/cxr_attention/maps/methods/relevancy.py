"""``relevancy``: Chefer et al. 2021's generic attention-model explainability
(https://arxiv.org/abs/2103.15679), the rule for self-attention, through the decoder layers.

Relevancy starts as the identity, ``R = I``; for each chosen decoder layer, first to last, the
gradient-weighted attention ``Ā = mean_h (∇A ⊙ A)^+`` (``∇A``: the target score's gradient with
respect to that layer's attention probabilities) updates it, ``R <- R + Ā R``. The map is ``R``'s
row at the target's query rows, at the image columns. The score is the decision margin at the
decision step for the answer, the sum of the term's teacher-forced token logits for a term
(:mod:`~cxr_attention.maps.methods.decoder_forward`). Attention is recorded in the hook layer's
gradient mode (``AttentionWeights(..., gradients=True)``); ``maps.relevancy_layers`` chooses the
layers (default every decoder layer, as Chefer's rule propagates through all of them).
"""

from __future__ import annotations

import numpy as np

from cxr_attention.maps.grid import MapUnavailable
from cxr_attention.maps.methods.base import MapInputs, MapResult
from cxr_attention.maps.methods.decoder_forward import (
    DecoderMethod,
    image_rows_to_grid,
    recorded_attention,
    scored_target,
)
from cxr_attention.maps.targets import MapTarget

__all__ = ["Relevancy", "relevancy_matrix"]


def relevancy_matrix(attentions, gradients) -> np.ndarray:
    """Chefer's self-attention rule over layers given first to last.

    Parameters
    ----------
    attentions, gradients : sequence of ndarray (heads, length, length)
        Each layer's attention probabilities and the score's gradient with respect to them.

    Returns
    -------
    ndarray (length, length), float64
    """
    length = attentions[0].shape[-1]
    relevancy = np.eye(length)
    for attention, gradient in zip(attentions, gradients, strict=True):
        weighted = np.clip(np.asarray(gradient, np.float64) * attention, 0, None).mean(axis=0)
        relevancy = relevancy + weighted @ relevancy
    return relevancy


class Relevancy(DecoderMethod):
    name = "relevancy"
    label = "relevancy (Chefer)"
    colour = "#332288"
    description = (
        "gradient-weighted attention propagated through the decoder layers (Chefer et al. 2021) "
        "for the yes - no margin (the answer) or the term's token logits"
    )

    def attribute_one(self, inputs: MapInputs, target: MapTarget) -> MapResult:
        scored = scored_target(inputs, target)
        recorder, score, layers = recorded_attention(
            inputs, scored, inputs.params.relevancy_layers, gradients=True
        )
        weights = recorder.weights()
        gradients = recorder.gradients(score)
        attention = [weights[layer][0].detach().cpu().numpy() for layer in layers]
        grads = [gradients[layer][0].cpu().numpy() for layer in layers]
        if not all(np.isfinite(g).all() for g in grads):
            raise MapUnavailable("gradient failure: non-finite gradients")
        relevancy = relevancy_matrix(attention, grads)
        # The identity's 1 is on the diagonal only: image columns keep pure propagated relevancy.
        grid = image_rows_to_grid(inputs, relevancy, scored)
        return MapResult(grid, layers="|".join(str(layer) for layer in layers))
