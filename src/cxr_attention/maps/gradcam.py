"""Method ``gradcam``: Grad-CAM on the vision tower, mapped onto the image-token grid.

Grad-CAM (Selvaraju et al., 2017, https://arxiv.org/abs/1610.02391) on the output of the SigLIP
tower's last encoder layer, ``A`` of shape ``(patches, channels)``:

1. the score is the logit of the target token(s), read at the position that predicts each one
   (teacher-forced: the prompt, then the generated tokens up to the target, or the term's own
   tokens when the term was not generated);
2. ``dS/dA`` by ``torch.autograd.grad`` on ``A`` alone: parameters are frozen, so no parameter
   gradient is ever computed or stored;
3. channel weights = gradients averaged over the patches (the spatial pooling of the paper);
4. ``cam_p = ReLU(sum_c w_c A_pc)`` per patch, in float32;
5. the patch map is average-pooled onto the 16 x 16 token grid exactly as the projector pools
   patches into image tokens (:func:`cxr_attention.geometry.pool_patches_to_grid`).

Structure after pytorch-grad-cam (``BaseCAM``: a hooks helper as a context manager, target
callables, ``get_cam_weights`` as the one overridable step); the result equals captum's
``LayerGradCam(relu_attributions=True)`` on the same layer (tested).

``generate`` runs under ``torch.no_grad``, so Grad-CAM runs its own forward (``use_cache=False``,
logits kept only for the rows needed).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from cxr_attention.geometry import pool_patches_to_grid
from cxr_attention.maps.grid import MapUnavailable
from cxr_attention.maps.hooks import (
    LayerActivations,
    frozen_parameters,
    model_inputs_from_capture,
    tokens_per_side,
    vision_layers,
)

__all__ = ["TokenLogitsTarget", "VisionGradCAM", "teacher_forcing"]


class TokenLogitsTarget:
    """Target callable: sum of chosen token logits, each at the logit row that predicts it.

    Parameters
    ----------
    token_ids : sequence of int
        Vocabulary ids of the target tokens.
    logit_rows : sequence of int
        For each token, the row of the kept logits ``(B, rows, vocab)`` that predicts it.
    """

    def __init__(self, token_ids: Sequence[int], logit_rows: Sequence[int]):
        if len(token_ids) != len(logit_rows) or not len(token_ids):
            raise ValueError("need one logit row per target token, and at least one")
        self.token_ids = [int(t) for t in token_ids]
        self.logit_rows = [int(r) for r in logit_rows]

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        """``logits (B, rows, vocab)`` -> score ``(B,)`` in float32."""
        rows = torch.as_tensor(self.logit_rows, device=logits.device)
        tokens = torch.as_tensor(self.token_ids, device=logits.device)
        return logits[:, rows, tokens].float().sum(dim=-1)


def teacher_forcing(
    token_ids: Sequence[int], positions: Sequence[int]
) -> tuple[np.ndarray, int, TokenLogitsTarget]:
    """Inputs after the prompt, number of logits to keep and the target for chosen positions.

    ``token_ids`` is what follows the prompt (the generated ids, or a term's tokens forced as
    an answer); ``positions`` index it. The forward sees the prompt and ``token_ids[:max]``, and
    keeps the last ``max + 1`` logits, so kept row ``r`` is the one that predicts
    ``token_ids[r]`` (row ``r`` of the captured attention is the same decoding step).

    Returns
    -------
    continuation_ids : ndarray of int
    logits_to_keep : int
    target : TokenLogitsTarget
    """
    ids = np.asarray(token_ids, dtype=np.int64).reshape(-1)
    positions = sorted({int(p) for p in positions})
    if not positions:
        raise MapUnavailable("no target tokens")
    if positions[0] < 0 or positions[-1] >= ids.size:
        raise MapUnavailable(f"target positions {positions} outside {ids.size} tokens")
    last = positions[-1]
    target = TokenLogitsTarget([ids[p] for p in positions], positions)
    return ids[:last], last + 1, target


class VisionGradCAM:
    """Grad-CAM of a token logit on a vision-tower layer of a Gemma 3 model.

    Parameters
    ----------
    model : Gemma3ForConditionalGeneration
    target_layer : torch.nn.Module, optional
        Default: the vision tower's last encoder layer.
    """

    def __init__(self, model: nn.Module, target_layer: nn.Module | None = None):
        self.model = model
        self.target_layer = vision_layers(model)[-1] if target_layer is None else target_layer
        self.grid_side = tokens_per_side(model)

    @staticmethod
    def get_cam_weights(gradients: torch.Tensor) -> torch.Tensor:
        """Grad-CAM's channel weights: gradients ``(B, patches, C)`` averaged over patches."""
        return gradients.mean(dim=1)

    def patch_cam(
        self,
        model_inputs: dict[str, torch.Tensor],
        target: TokenLogitsTarget,
        *,
        logits_to_keep: int,
    ) -> np.ndarray:
        """Grad-CAM per vision patch, before pooling.

        Returns
        -------
        ndarray of shape (B, patches), float32, non-negative

        Raises
        ------
        MapUnavailable
            ``"gradient failure: ..."`` for non-finite or all-zero gradients.
        """
        with (
            frozen_parameters(self.model),
            torch.enable_grad(),
            LayerActivations(self.target_layer, requires_grad=True) as kept,
        ):
            outputs = self.model(**model_inputs, use_cache=False, logits_to_keep=logits_to_keep)
            score = target(outputs.logits)
            if kept.activations is None:
                raise MapUnavailable("gradient failure: the target layer never ran")
            (gradients,) = torch.autograd.grad(score.sum(), kept.activations)
            activations = kept.activations.detach()
        gradients = gradients.float()
        if not torch.isfinite(gradients).all():
            raise MapUnavailable("gradient failure: non-finite gradients")
        if not gradients.abs().sum() > 0:
            raise MapUnavailable("gradient failure: all-zero gradients")
        weights = self.get_cam_weights(gradients)
        cam = torch.relu(torch.einsum("bc,bpc->bp", weights, activations.float()))
        return cam.cpu().numpy()

    def __call__(
        self,
        input_ids: np.ndarray,
        pixel_values: np.ndarray | torch.Tensor,
        following_ids: Sequence[int],
        positions: Sequence[int],
    ) -> np.ndarray:
        """Grad-CAM grid for the tokens at ``positions`` of ``following_ids`` after the prompt.

        Parameters
        ----------
        input_ids : ndarray of shape (prompt_len,)
        pixel_values : array of shape (1, 3, S, S)
        following_ids : sequence of int
            Generated ids, or a term's ids forced as the start of the answer.
        positions : sequence of int
            Target positions in ``following_ids``.

        Returns
        -------
        ndarray of shape (16, 16), float64, non-negative, not normalised
        """
        continuation, keep, target = teacher_forcing(following_ids, positions)
        inputs = model_inputs_from_capture(self.model, input_ids, pixel_values, continuation)
        cam = self.patch_cam(inputs, target, logits_to_keep=keep)
        return pool_patches_to_grid(cam[0], self.grid_side)
