"""``rise``: randomised input sampling (Petsiuk et al. 2018, https://arxiv.org/abs/1806.07421) over
the image-token grid, the model-agnostic reference.

Each of ``maps.rise_masks`` masks is a ``rise_cells x rise_cells`` grid of cells kept with
probability ``rise_keep``, upsampled bilinearly to the token grid with a random shift of up to one
cell (RISE's smooth masks). A mask ``M`` keeps each image token's embedding in proportion:
``M x + (1 - M) mean(x)`` (the mean embedding is the same baseline as ``integrated_gradients``).
The map is the score averaged over the masks weighted by each token's kept share,
``sum_k s_k M_k / sum_k M_k``, shifted so that its minimum is zero. The score is the decision
margin for the answer, signed so that it grows with the model's own answer
(`decoder_forward.decision_sign`), and the term's teacher-forced token logits for a term. Masks
are drawn from the run's seed (the same masks for every map); ``maps.perturbation_max_rows``
masks run per pass.
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

__all__ = ["Rise", "rise_masks", "rise_saliency"]


def rise_masks(
    count: int, grid_shape: tuple[int, int], *, cells: int, keep: float, seed: int
) -> np.ndarray:
    """RISE's smooth random masks ``(count, rows, cols)`` in [0, 1], float32, deterministic."""
    import torch

    if count < 1 or cells < 1 or not 0 < keep < 1:
        raise ValueError(f"need count, cells >= 1 and 0 < keep < 1; got {count}, {cells}, {keep}")
    rows, cols = grid_shape
    rng = np.random.default_rng(seed)
    cell_h, cell_w = int(np.ceil(rows / cells)), int(np.ceil(cols / cells))
    coarse = (rng.random((count, 1, cells, cells)) < keep).astype(np.float32)
    upsampled = torch.nn.functional.interpolate(
        torch.from_numpy(coarse),
        size=((cells + 1) * cell_h, (cells + 1) * cell_w),
        mode="bilinear",
        align_corners=False,
    ).numpy()[:, 0]
    shifts = rng.integers(0, [cell_h, cell_w], size=(count, 2))
    return np.stack(
        [upsampled[k, dy : dy + rows, dx : dx + cols] for k, (dy, dx) in enumerate(shifts)]
    ).astype(np.float32)


def rise_saliency(masks: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """``sum_k s_k M_k / sum_k M_k`` minus its minimum (float64, non-negative)."""
    masks = np.asarray(masks, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    coverage = masks.sum(axis=0)
    saliency = np.tensordot(scores, masks, axes=1) / np.where(coverage > 0, coverage, 1.0)
    return saliency - saliency.min()


def masked_scores(model, scored, features, masks: np.ndarray, *, max_rows: int) -> np.ndarray:
    """The score with each mask applied to the image tokens (``(count,)`` float64)."""
    import torch

    inputs = features.detach()
    baseline = inputs.float().mean(dim=1, keepdim=True)
    flat = torch.as_tensor(masks.reshape(masks.shape[0], -1, 1), device=inputs.device)
    scores = []
    with torch.no_grad():
        for start in range(0, flat.shape[0], max_rows):
            chunk = flat[start : start + max_rows]
            mixed = (chunk * inputs.float() + (1 - chunk) * baseline).to(inputs.dtype)
            outputs = run_model(model, scored.ids, mixed, logits_to_keep=scored.logits_to_keep)
            scores.append(scored.score(outputs.logits).float().cpu().numpy())
    return np.concatenate(scores).astype(np.float64)


class Rise(DecoderMethod):
    name = "rise"
    label = "RISE"
    colour = "#DDCC77"
    description = (
        "random smooth masks over the image tokens (RISE), the yes - no margin (the answer) or "
        "the term's token logits averaged over the masks that keep each token"
    )

    def attribute_one(self, inputs: MapInputs, target: MapTarget) -> MapResult:
        params = inputs.params
        scored = scored_target(inputs, target)
        model, _ = inputs.model_and_pixels()
        masks = rise_masks(
            params.rise_masks,
            inputs.grid_shape,
            cells=params.rise_cells,
            keep=params.rise_keep,
            seed=params.seed,
        )
        features = image_features(inputs)
        full = np.ones((1, *inputs.grid_shape), dtype=np.float32)
        scores = masked_scores(
            model,
            scored,
            features,
            np.concatenate([full, masks]),
            max_rows=params.perturbation_max_rows,
        )
        if not np.isfinite(scores).all():
            raise MapUnavailable("non-finite scores")
        return MapResult(rise_saliency(masks, scores[1:]), layers="embeddings")
