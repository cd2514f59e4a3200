"""Method ``activation_norm``: where the vision tower's features are strong, whatever the question.

The L2 norm over channels of one SigLIP encoder layer's output, per patch, average-pooled onto the
token grid as the projector pools patches, normalised to sum 1. It needs no gradient and no
language model, so it survives what breaks the other methods; it is not conditioned on the term.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from cxr_attention.geometry import pool_patches_to_grid
from cxr_attention.maps.grid import normalise_map
from cxr_attention.maps.hooks import VisionEncodings, tokens_per_side

__all__ = ["activation_norm_grid", "activation_norm_map"]


def activation_norm_grid(activations: np.ndarray, grid_side: int = 16) -> np.ndarray:
    """Per-patch L2 norm over channels, pooled onto the token grid (not normalised).

    Parameters
    ----------
    activations : ndarray of shape (patches, channels)
    grid_side : int

    Returns
    -------
    ndarray of shape (grid_side, grid_side), float64
    """
    activations = np.asarray(activations, dtype=np.float64)
    if activations.ndim != 2:
        raise ValueError(f"expected (patches, channels), got {activations.shape}")
    return pool_patches_to_grid(np.linalg.norm(activations, axis=-1), grid_side)


def activation_norm_map(
    model: nn.Module,
    pixel_values: np.ndarray | torch.Tensor,
    *,
    layer: int = -1,
    encodings: VisionEncodings | None = None,
) -> np.ndarray:
    """Method ``activation_norm`` for one image.

    Parameters
    ----------
    model : Gemma3ForConditionalGeneration
    pixel_values : array of shape (1, 3, S, S)
        Exactly what the model saw.
    layer : int
        Index into the vision tower's encoder layers (``-1``: the last).
    encodings : VisionEncodings, optional
        Where the image's layer output may already be (shared with Grad-CAM and the image's
        other samples); without it the tower runs for this call.

    Returns
    -------
    ndarray of shape (16, 16), float32, sums to 1

    Raises
    ------
    MapUnavailable
        Non-finite or all-zero activations.
    """
    encodings = VisionEncodings() if encodings is None else encodings
    activations = encodings.output(model, pixel_values, layer)[0].float().cpu().numpy()
    return normalise_map(activation_norm_grid(activations, tokens_per_side(model)))
