"""``rollout``: attention rollout (Abnar & Zuidema 2020, https://arxiv.org/abs/2005.00928)
through the decoder layers.

Per layer, the heads' mean attention ``A`` with the residual connection added and rows
renormalised, ``0.5 A + 0.5 I``; the rollout is the product of these from the first chosen layer
to the last (``R = Â_L ... Â_1``), and the map is its row at the target's query rows (the
decision step for the answer, the rows predicting the term's tokens for a term), at the image
columns. The layers are ``maps.rollout_layers`` (default every decoder layer).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cxr_attention.maps.methods.base import MapInputs, MapResult
from cxr_attention.maps.methods.decoder_forward import (
    DecoderMethod,
    image_rows_to_grid,
    recorded_attention,
    scored_target,
)
from cxr_attention.maps.targets import MapTarget

__all__ = ["Rollout", "attention_rollout"]


def attention_rollout(attentions: Sequence[np.ndarray]) -> np.ndarray:
    """Rollout of per-layer attention ``(heads, length, length)``, first layer first.

    Returns
    -------
    ndarray (length, length), float64
        ``prod_l (0.5 mean_h A_l + 0.5 I)`` with rows renormalised, the last layer on the left.
    """
    length = attentions[0].shape[-1]
    rollout = np.eye(length)
    for attention in attentions:
        mixed = 0.5 * np.asarray(attention, dtype=np.float64).mean(axis=0) + 0.5 * np.eye(length)
        mixed /= mixed.sum(axis=-1, keepdims=True)
        rollout = mixed @ rollout
    return rollout


class Rollout(DecoderMethod):
    name = "rollout"
    label = "attention rollout"
    colour = "#117733"
    description = (
        "attention rollout through the decoder layers (Abnar & Zuidema 2020), read at the "
        "decision step (the answer) or at the term's tokens"
    )

    def attribute_one(self, inputs: MapInputs, target: MapTarget) -> MapResult:
        scored = scored_target(inputs, target)
        recorder, _, layers = recorded_attention(
            inputs, scored, inputs.params.rollout_layers, gradients=False
        )
        weights = recorder.weights()
        rollout = attention_rollout([weights[layer][0].cpu().numpy() for layer in layers])
        grid = image_rows_to_grid(inputs, rollout, scored)
        return MapResult(grid, layers="|".join(str(layer) for layer in layers))
