"""``integrated_gradients``: integrated gradients (Sundararajan et al. 2017,
https://arxiv.org/abs/1703.01365) on the image tokens' embeddings, the language model's input.

The baseline replaces every image token's embedding (the projector's output) by their mean over
the image, so the path removes the spatial information only. With ``m = maps.ig_steps`` midpoint
steps ``alpha_k = (k + 0.5) / m``, the attribution of token ``t`` is
``sum_c (x - b)_tc * mean_k dS/dx_tc (b + alpha_k (x - b))`` (captum's ``IntegratedGradients``
with ``method="riemann_middle"``; the test compares the two and checks completeness: the
attributions sum to ``S(x) - S(b)``). The map is the absolute token attribution (evidence for and
against the score both locate). The score is the decision margin for the answer and the term's
teacher-forced token logits for a term. Steps run ``maps.perturbation_max_rows`` per pass.
"""

from __future__ import annotations

import numpy as np

from cxr_attention.maps.grid import MapUnavailable
from cxr_attention.maps.methods.base import MapInputs, MapResult
from cxr_attention.maps.methods.decoder_forward import (
    DecoderMethod,
    image_features,
    run_model,
    scored_target,
)
from cxr_attention.maps.targets import MapTarget

__all__ = ["IntegratedGradients", "integrated_gradients"]


def integrated_gradients(model, scored, features, *, steps: int, max_rows: int):
    """Token-by-channel attributions ``(image tokens, hidden)`` of ``scored`` on ``features``.

    Parameters
    ----------
    model : Gemma3ForConditionalGeneration
    scored : ScoredTarget
    features : Tensor (1, image tokens, hidden)
    steps, max_rows : int

    Returns
    -------
    Tensor (image tokens, hidden), float32
    """
    import torch

    from cxr_attention.maps.hooks import frozen_parameters

    if steps < 1 or max_rows < 1:
        raise ValueError(f"steps and max_rows must be at least 1, got {steps}, {max_rows}")
    inputs = features.detach().float()
    baseline = inputs.mean(dim=1, keepdim=True).expand_as(inputs)
    alphas = (torch.arange(steps, dtype=torch.float32) + 0.5) / steps
    total = torch.zeros_like(inputs[0])
    with frozen_parameters(model), torch.enable_grad():
        for start in range(0, steps, max_rows):
            chunk = alphas[start : start + max_rows].to(inputs.device)[:, None, None]
            path = (baseline + chunk * (inputs - baseline)).to(features.dtype)
            path.requires_grad_(True)
            outputs = run_model(model, scored.ids, path, logits_to_keep=scored.logits_to_keep)
            (gradient,) = torch.autograd.grad(scored.score(outputs.logits).sum(), path)
            total += gradient.float().sum(dim=0)
    return (inputs[0] - baseline[0]) * total / steps


class IntegratedGradients(DecoderMethod):
    name = "integrated_gradients"
    label = "integrated gradients"
    colour = "#44AA99"
    description = (
        "integrated gradients on the image tokens' embeddings from their mean, for the yes - no "
        "margin (the answer) or the term's token logits"
    )

    def attribute_one(self, inputs: MapInputs, target: MapTarget) -> MapResult:
        scored = scored_target(inputs, target)
        model, _ = inputs.model_and_pixels()
        attributions = integrated_gradients(
            model,
            scored,
            image_features(inputs),
            steps=inputs.params.ig_steps,
            max_rows=inputs.params.perturbation_max_rows,
        )
        per_token = attributions.sum(dim=-1).cpu().numpy().astype(np.float64)
        if not np.isfinite(per_token).all():
            raise MapUnavailable("gradient failure: non-finite gradients")
        return MapResult(np.abs(per_token).reshape(inputs.grid_shape), layers="embeddings")
