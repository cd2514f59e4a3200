"""Method ``gradcam``: Grad-CAM on the vision tower, mapped onto the image-token grid.

Grad-CAM (Selvaraju et al., 2017, https://arxiv.org/abs/1610.02391) on the output of the SigLIP
tower's last encoder layer, ``A`` of shape ``(patches, channels)``:

1. the score of the answer is the decision margin, log P(yes) - log P(no)
   (:func:`cxr_attention.inference.scoring.yes_no_margin_from_logits`) at the decision step
   (the last prompt position, whose next token is the first answer token): what the yes/no
   decision turns on, not the sum of every generated token's raw logit, which is mostly
   template prose. The score of a term is the logit of its token(s), read at the position that
   predicts each one (teacher-forced: the prompt, then the generated tokens up to the term, or
   the term's own tokens when the term was not generated: a counterfactual map);
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

Several targets of one sample (:meth:`VisionGradCAM.batched`) share one forward and one backward:
one row per target (the prompt, then that target's teacher-forced tokens, right-padded and
masked, so every real token keeps its unpadded position), the vision tower run once and its
target-layer output repeated per row. Rows are independent, so the gradient of the sum of the
rows' scores, read on row ``b``, is row ``b``'s own Grad-CAM gradient (tested against the
one-at-a-time maps).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from cxr_attention.geometry import pool_patches_to_grid
from cxr_attention.maps.grid import MapUnavailable
from cxr_attention.maps.hooks import (
    LayerActivations,
    VisionEncodings,
    frozen_parameters,
    model_pixels,
    tokens_per_side,
    vision_layers,
)

__all__ = ["DecisionMarginTarget", "TokenLogitsTarget", "VisionGradCAM", "teacher_forcing"]

logger = logging.getLogger(__name__)


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


class DecisionMarginTarget:
    """Target callable: the yes/no decision margin at the decision step (kept logit row 0).

    Parameters
    ----------
    tokens : YesNoTokens
        The yes and no tokens (:func:`cxr_attention.inference.scoring.yes_no_tokens`).
    sign : float
        +1 scores the margin for yes, -1 for no (the answer the model gave:
        `cxr_attention.maps.methods.decoder_forward.decision_sign`).
    """

    def __init__(self, tokens, sign: float = 1.0):
        self.tokens = tokens
        self.sign = float(sign)

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        """``logits (B, rows, vocab)`` -> margin ``(B,)`` in float32."""
        from cxr_attention.inference.scoring import yes_no_margin_from_logits

        return self.sign * yes_no_margin_from_logits(logits[:, 0].float(), self.tokens)


def teacher_forcing(
    token_ids: Sequence[int], positions: Sequence[int], score=None
) -> tuple[np.ndarray, int, TokenLogitsTarget]:
    """Inputs after the prompt, number of logits to keep and the target for chosen positions.

    ``token_ids`` is what follows the prompt (the generated ids, or a term's tokens forced as
    an answer); ``positions`` index it. The forward sees the prompt and ``token_ids[:max]``, and
    keeps the last ``max + 1`` logits, so kept row ``r`` is the one that predicts
    ``token_ids[r]`` (row ``r`` of the captured attention is the same decoding step). ``score``
    replaces the default target (the sum of those tokens' logits), e.g. a
    :class:`DecisionMarginTarget` with ``positions`` ``[0]``.

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
    target = TokenLogitsTarget([ids[p] for p in positions], positions) if score is None else score
    return ids[:last], last + 1, target


class VisionGradCAM:
    """Grad-CAM of a token logit on a vision-tower layer of a Gemma 3 model.

    Parameters
    ----------
    model : Gemma3ForConditionalGeneration
    target_layer : torch.nn.Module, optional
        Default: the vision tower's last encoder layer.
    encodings : VisionEncodings, optional
        With the last encoder layer as target, only the post-layernorm and the projector follow
        it: its output is then taken from ``encodings`` (computed once per image) and the
        language model is given the projected features, so the vision tower does not run again
        for every pass. The maps are the same as without (tested).
    """

    def __init__(
        self,
        model: nn.Module,
        target_layer: nn.Module | None = None,
        *,
        encodings: VisionEncodings | None = None,
    ):
        self.model = model
        last = vision_layers(model)[-1]
        self.target_layer = last if target_layer is None else target_layer
        self.grid_side = tokens_per_side(model)
        self.encodings = encodings if self.target_layer is last else None

    @staticmethod
    def get_cam_weights(gradients: torch.Tensor) -> torch.Tensor:
        """Grad-CAM's channel weights: gradients ``(B, patches, C)`` averaged over patches."""
        return gradients.mean(dim=1)

    def _forward(
        self,
        text_inputs: dict[str, torch.Tensor],
        pixel_values: np.ndarray | torch.Tensor,
        rows: int,
        logits_to_keep: int,
    ) -> tuple[object, torch.Tensor]:
        """The model's outputs with the target layer's output as a gradient leaf, one per row.

        The vision tower runs for one image; its target-layer output is repeated along the batch
        as ``rows`` independent leaves (see `LayerActivations`).
        """
        if self.encodings is not None:
            from transformers.modeling_outputs import BaseModelOutputWithPooling

            encoded = self.encodings.output(self.model, pixel_values, -1)
            leaf = encoded.repeat(rows, 1, 1).requires_grad_(True)
            # What Gemma 3's get_image_features does after the last encoder layer.
            tower = self.model.model.vision_tower
            features = self.model.model.multi_modal_projector(tower.post_layernorm(leaf))
            outputs = self.model(
                **text_inputs,
                mm_encoder_outputs={"image": BaseModelOutputWithPooling(pooler_output=features)},
                use_cache=False,
                logits_to_keep=logits_to_keep,
            )
            return outputs, leaf
        with LayerActivations(self.target_layer, requires_grad=True, repeat=rows) as kept:
            outputs = self.model(
                **text_inputs,
                pixel_values=model_pixels(self.model, pixel_values),
                use_cache=False,
                logits_to_keep=logits_to_keep,
            )
        if kept.activations is None:
            raise MapUnavailable("gradient failure: the target layer never ran")
        return outputs, kept.activations

    def __call__(
        self,
        input_ids: np.ndarray,
        pixel_values: np.ndarray | torch.Tensor,
        following_ids: Sequence[int],
        positions: Sequence[int],
        score=None,
    ) -> np.ndarray:
        """Grad-CAM grid for the tokens at ``positions`` of ``following_ids`` after the prompt
        (their logits' sum, or ``score`` of the kept logits).

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
        continuation, _, target = teacher_forcing(following_ids, positions, score)
        (cam,) = self._patch_cams(input_ids, pixel_values, [(continuation, target)])
        if isinstance(cam, MapUnavailable):
            raise cam
        return pool_patches_to_grid(cam, self.grid_side)

    def batched(
        self,
        input_ids: np.ndarray,
        pixel_values: np.ndarray | torch.Tensor,
        requests: Sequence[tuple[Sequence[int], Sequence[int]]],
        *,
        max_rows: int = 8,
    ) -> list[np.ndarray | Exception]:
        """Grad-CAM grids of several targets of one sample, ``max_rows`` per forward + backward.

        Parameters
        ----------
        input_ids : ndarray of shape (prompt_len,)
        pixel_values : array of shape (1, 3, S, S)
        requests : sequence of (following_ids, positions) or (following_ids, positions, score)
            One per target, as the arguments of the single call.
        max_rows : int
            Most targets in one pass (bounds the memory of the backward).

        Returns
        -------
        list of ndarray or Exception
            In request order: the grid the single call gives, or the exception it raises
            (``MapUnavailable`` for an expected failure). Should a batched pass fail as a whole,
            its rows are redone one at a time, so that each records its own reason.
        """
        if max_rows < 1:
            raise ValueError(f"max_rows must be at least 1, got {max_rows}")
        results: list[np.ndarray | Exception | None] = [None] * len(requests)
        prepared = []
        for index, request in enumerate(requests):
            try:
                prepared.append((index, *teacher_forcing(*request)))
            except MapUnavailable as error:
                results[index] = error
        for start in range(0, len(prepared), max_rows):
            chunk = prepared[start : start + max_rows]
            try:
                cams = self._patch_cams(
                    input_ids, pixel_values, [(ids, target) for _, ids, _, target in chunk]
                )
            except Exception as error:  # out of memory, most likely: fewer rows may fit
                logger.warning(
                    "Grad-CAM of %d targets in one pass failed (%s: %s); redoing them one at "
                    "a time",
                    len(chunk),
                    type(error).__name__,
                    error,
                )
                cams = [None] * len(chunk)  # redone one at a time below
            for (index, *_), cam in zip(chunk, cams, strict=True):
                if cam is None:
                    try:
                        results[index] = self(input_ids, pixel_values, *requests[index])
                    except Exception as error:  # the caller records each row's own failure
                        results[index] = error
                elif isinstance(cam, MapUnavailable):
                    results[index] = cam
                else:
                    results[index] = pool_patches_to_grid(cam, self.grid_side)
        return results

    def _patch_cams(
        self,
        input_ids: np.ndarray,
        pixel_values: np.ndarray | torch.Tensor,
        rows: Sequence[tuple[np.ndarray, TokenLogitsTarget | DecisionMarginTarget]],
    ) -> list[np.ndarray | MapUnavailable]:
        """Patch CAMs ``(patches,)`` of teacher-forced rows (one or more) in one forward +
        backward; a row whose gradients are non-finite or all zero gets a ``MapUnavailable``.

        Rows are right-padded: each row's real tokens keep the positions they have alone, and
        with ``logits_to_keep = width + 1`` kept row ``r`` predicts continuation token ``r`` in
        every row, as in :func:`teacher_forcing`.
        """
        prompt = np.asarray(input_ids, dtype=np.int64).reshape(-1)
        width = max(continuation.size for continuation, _ in rows)
        ids = np.zeros((len(rows), prompt.size + width), dtype=np.int64)  # pad id is masked out
        mask = np.zeros_like(ids)
        for row, (continuation, _) in enumerate(rows):
            length = prompt.size + continuation.size
            ids[row, : prompt.size] = prompt
            ids[row, prompt.size : length] = continuation
            mask[row, :length] = 1
        device = next(self.model.parameters()).device
        ids_tensor = torch.as_tensor(ids, device=device)
        inputs = {
            "input_ids": ids_tensor,
            "attention_mask": torch.as_tensor(mask, device=device),
            "token_type_ids": (ids_tensor == self.model.config.image_token_id).long(),
        }
        with frozen_parameters(self.model), torch.enable_grad():
            # one image: the vision tower runs once, its target layer is repeated per row
            outputs, leaf = self._forward(inputs, pixel_values, len(rows), width + 1)
            scores = torch.cat(
                [target(outputs.logits[row : row + 1]) for row, (_, target) in enumerate(rows)]
            )
            (gradients,) = torch.autograd.grad(scores.sum(), leaf)
            activations = leaf.detach()
        gradients = gradients.float()
        weights = self.get_cam_weights(gradients)
        cams = torch.relu(torch.einsum("bc,bpc->bp", weights, activations.float())).cpu().numpy()
        results: list[np.ndarray | MapUnavailable] = []
        for row in range(len(rows)):
            if not torch.isfinite(gradients[row]).all():
                results.append(MapUnavailable("gradient failure: non-finite gradients"))
            elif not gradients[row].abs().sum() > 0:
                results.append(MapUnavailable("gradient failure: all-zero gradients"))
            else:
                results.append(cams[row])
        return results
