"""A model built for the tests whose answer depends on one region of the image, by design.

Gemma 3's interface as the faithfulness code uses it (``forward(input_ids, pixel_values, ...)``
returning next-token ``logits``, the image-token embeddings from ``model.multi_modal_projector``)
with set weights: each image token's embedding is its cell's mean pixel value, and the decision
margin is ``gain * (mean embedding of the region's tokens - threshold)`` (plus the constant the
unequal numbers of yes and no variants add). A bright region answers "yes"; a mid-grey image
(normalised value ~0) answers "no".
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch
from torch import nn

from cxr_attention.inference.scoring import yes_no_tokens

GRID = 16


class CellMeans(nn.Module):
    """The projector: ``(B, 3, S, S)`` pixels -> ``(B, 256, 1)`` mean value of each grid cell."""

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        pooled = nn.functional.adaptive_avg_pool2d(pixel_values.mean(dim=1, keepdim=True), GRID)
        return pooled.flatten(2).transpose(1, 2)


class RegionModel(nn.Module):
    def __init__(self, tokenizer, region: np.ndarray, *, gain: float = 8.0, threshold: float = 0.5):
        super().__init__()
        self.model = nn.Module()
        self.model.multi_modal_projector = CellMeans()
        weights = torch.as_tensor(np.asarray(region, dtype=np.float32).ravel())
        self.register_buffer("readout", weights / weights.sum())
        self.gain = nn.Parameter(torch.tensor(float(gain)))
        self.threshold = threshold
        self.tokens = yes_no_tokens(tokenizer)
        self.vocab_size = len(tokenizer)

    def forward(self, input_ids, pixel_values=None, logits_to_keep=1, **_):
        rows = input_ids.shape[0]
        if pixel_values is None:
            decision = torch.full((rows,), -self.gain.item() * self.threshold)
        else:
            features = self.model.multi_modal_projector(pixel_values)[..., 0]
            if features.shape[0] != rows:
                raise ValueError(f"{features.shape[0]} images for {rows} prompts")
            decision = self.gain * (features @ self.readout - self.threshold)
        logits = torch.zeros(rows, 1, self.vocab_size)
        logits[:, 0, list(self.tokens.yes_ids)] = decision[:, None] / 2
        logits[:, 0, list(self.tokens.no_ids)] = -decision[:, None] / 2
        return SimpleNamespace(logits=logits)


def lesion_image(region_pixels: np.ndarray, *, lesion: int = 255, background: int = 60):
    """A grey image, bright where ``region_pixels`` is True."""
    return np.where(region_pixels, np.uint8(lesion), np.uint8(background)).astype(np.uint8)
