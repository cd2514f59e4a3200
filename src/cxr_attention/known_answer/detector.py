"""The known-answer model's lesion detector, set by hand in the vision tower.

A trained detector learnt its two dozen training films: on unseen films it marked bright anatomy
(the aortic knob, a marker) as lesions (``docs/known_answer.md``). The planted lesion therefore
carries a pattern that anatomy lacks: vertical stripes of `plant.STRIPE_CYCLES` cycles across the
film, 3 cycles per 14 px patch at the model's 224 px input. The vision tower measures, per patch,
how much of the patch's energy sits at that frequency, and nothing else:

- **Patch embedding**: eight linear filters (cosine and sine pairs) at 3 cycles per patch across
  (``on``), at 2 and 4.5 cycles across (``below``, ``above``) and at 3 cycles down (``down``),
  each also negated so that every token's mean over the channels is 0 (the layer norms subtract
  it); a constant pair (``BIAS``) that keeps the norms' scale nearly independent of the filters;
  and, from the position embedding, a pair ``SIDE`` that is +`SIDE_LEVEL` on the image's right
  half (the patient's left) and -`SIDE_LEVEL` on its left half.
- **Layer 0's MLP** turns the filters into ``DETECT`` = |on| - |below| - |above| - |down| (each
  |.| the sum over its cosine and sine, from a pair of GELUs of large gain) minus a threshold:
  positive only where the stripes are. Stripes are narrow-band and run one way; edges, ribs and
  text markers spread their energy over frequencies and directions, so the subtracted terms
  cancel them.
- **Layer 1's MLP** copies the positive part of ``DETECT`` onto ``LEFT_DETECT`` or
  ``RIGHT_DETECT``, by the token's ``SIDE`` (a gate that shuts the other): side information exists
  only on the lesion's own tokens, so a gradient through it cannot light up half the image.
- **Attention of both layers writes nothing**: the tower is a per-patch function, so a token's
  detector value depends on its own patch's pixels (and its column's side) alone.
- **The post-layer norm and the projector** pass ``DETECT`` to the text model's
  `wiring.Channel.LESION` and ``LEFT_DETECT - RIGHT_DETECT`` to `wiring.Channel.SIDE`; every other
  channel of an image token is 0. The constant pair dominates the vision tower's norms, so
  ``DETECT`` reaches the projector nearly linearly.

The threshold is the one number fitted to data (`calibrate_threshold`): the midpoint between the
largest detector value off the lesions and the smallest lesion maximum on the training films.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import IntEnum

import numpy as np
import torch

from cxr_attention.known_answer.plant import STRIPE_CYCLES

__all__ = [
    "FILTER_SIGNS",
    "VisionChannel",
    "calibrate_threshold",
    "detector_values",
    "set_detector",
    "stripe_filters",
]

PATCH = 14
GRID = 16
CYCLES_PER_PATCH = STRIPE_CYCLES / GRID
# Frequencies (cycles per patch) and direction of each filter pair, and its sign in DETECT.
_FILTER_PAIRS = (
    ("on", CYCLES_PER_PATCH, "across", 1.0),
    ("below", CYCLES_PER_PATCH - 1.0, "across", -1.0),
    ("above", CYCLES_PER_PATCH + 1.5, "across", -1.0),
    ("down", CYCLES_PER_PATCH, "down", -1.0),
)
FILTER_SIGNS = np.repeat([sign for *_, sign in _FILTER_PAIRS], 2)
N_FILTERS = 2 * len(_FILTER_PAIRS)
# The constant pair dominates every layer norm's scale, so that the norms pass DETECT on nearly
# linearly: Grad-CAM then sees the detector, not the norms' coupling of DETECT with SIDE.
BIAS_LEVEL = 64.0
SIDE_LEVEL = 4.0
WIDTH = 64  # the vision tower's width (`model.known_answer_config`)
# The filters' scale after layer 0's second norm (the constant and side pairs set it).
NORM_SCALE = float(np.sqrt((2 * BIAS_LEVEL**2 + 2 * SIDE_LEVEL**2) / WIDTH))
# GELU(g x) + GELU(-g x) is within 1% of g |x| once |g x| > 2.5: the filters of a stripe reach
# 0.05-0.3, those of anatomy 0.01-0.03.
GAIN = 200.0 * NORM_SCALE
GATE = 100.0  # DETECT of a stripe is at most a few hundred: a gate of 100 x 8 shuts it
SIDE_GAIN = 4.0


class VisionChannel(IntEnum):
    """Channels of the vision tower's 64-wide stream that the detector uses."""

    FILTERS = 0  # 0-7 the filters, 8-15 their negatives
    BIAS = 16
    NEG_BIAS = 17
    SIDE = 18
    NEG_SIDE = 19
    DETECT = 20
    NEG_DETECT = 21
    LEFT_DETECT = 22
    RIGHT_DETECT = 23


def stripe_filters() -> np.ndarray:
    """The eight patch filters, ``(8, 14, 14)``, in the order of `FILTER_SIGNS`.

    Each pair is a cosine and a sine over the patch's pixel centres, scaled so that the ``on``
    cosine's absolute weights sum to 1 (the response to a full-patch stripe of amplitude ``a`` in
    the processor's [-1, 1] units is about ``a * pi / 4``).
    """
    centres = (np.arange(PATCH) + 0.5) / PATCH
    filters = []
    for _name, cycles, direction, _sign in _FILTER_PAIRS:
        for wave in (np.cos, np.sin):
            line = wave(2 * np.pi * cycles * centres)
            grid = np.tile(line, (PATCH, 1))
            filters.append(grid if direction == "across" else grid.T)
    scale = np.abs(np.cos(2 * np.pi * CYCLES_PER_PATCH * centres)).sum() * PATCH
    return np.stack(filters) / scale


def set_detector(model, threshold: float) -> None:
    """Write the detector (module docstring) into ``model``'s vision tower and projector."""
    from cxr_attention.known_answer.wiring import Channel

    vision = model.model.vision_tower
    if vision.config.hidden_size != WIDTH:
        raise ValueError(f"the detector is set for a vision tower {WIDTH} wide")
    filters = torch.from_numpy(stripe_filters()).float()
    with torch.no_grad():
        for parameter in vision.parameters():
            parameter.zero_()
        embed = vision.embeddings.patch_embedding
        # Grey films: the three colour planes are equal, each carries a third of the filter.
        embed.weight[:N_FILTERS] = filters[:, None] / 3
        embed.weight[N_FILTERS : 2 * N_FILTERS] = -filters[:, None] / 3
        embed.bias[VisionChannel.BIAS] = BIAS_LEVEL
        embed.bias[VisionChannel.NEG_BIAS] = -BIAS_LEVEL
        columns = torch.arange(GRID * GRID) % GRID
        side = torch.where(columns >= GRID // 2, SIDE_LEVEL, -SIDE_LEVEL)
        positions = vision.embeddings.position_embedding.weight
        positions[:, VisionChannel.SIDE] = side
        positions[:, VisionChannel.NEG_SIDE] = -side

        for layer in vision.encoder.layers:
            for norm in (layer.layer_norm1, layer.layer_norm2):
                norm.weight.fill_(1.0)
        first = vision.encoder.layers[0]
        first.layer_norm2.weight.zero_()
        first.layer_norm2.weight[:N_FILTERS] = 1.0
        fc1, fc2 = first.mlp.fc1, first.mlp.fc2
        for k in range(N_FILTERS):
            fc1.weight[2 * k, k] = GAIN
            fc1.weight[2 * k + 1, k] = -GAIN
            sign = float(FILTER_SIGNS[k])
            fc2.weight[VisionChannel.DETECT, 2 * k : 2 * k + 2] = sign
            fc2.weight[VisionChannel.NEG_DETECT, 2 * k : 2 * k + 2] = -sign
        fc2.bias[VisionChannel.DETECT] = -threshold
        fc2.bias[VisionChannel.NEG_DETECT] = threshold
        # Layer 1's MLP: DETECT where positive, on the channel of the token's side (0 elsewhere):
        # relu(DETECT - GATE * (1 -+ side)); both terms scale with the norm, so the gate holds.
        second = vision.encoder.layers[1]
        second.layer_norm2.weight.zero_()
        second.layer_norm2.weight[
            [VisionChannel.DETECT, VisionChannel.SIDE, VisionChannel.BIAS]
        ] = 1
        fc1, fc2 = second.mlp.fc1, second.mlp.fc2
        for unit, (channel, sign) in enumerate(
            ((VisionChannel.LEFT_DETECT, 1.0), (VisionChannel.RIGHT_DETECT, -1.0))
        ):
            fc1.weight[unit, VisionChannel.DETECT] = GAIN
            fc1.weight[unit, VisionChannel.SIDE] = sign * GATE * GAIN
            fc1.weight[unit, VisionChannel.BIAS] = -GATE * GAIN * SIDE_LEVEL / BIAS_LEVEL
            fc2.weight[channel, unit] = 1.0 / GAIN
        kept = [
            VisionChannel.DETECT,
            VisionChannel.BIAS,
            VisionChannel.LEFT_DETECT,
            VisionChannel.RIGHT_DETECT,
        ]
        vision.post_layernorm.weight[kept] = 1.0

        projector = model.model.multi_modal_projector
        projector.mm_soft_emb_norm.weight.zero_()
        weight = projector.mm_input_projection_weight
        weight.zero_()
        weight[VisionChannel.DETECT, Channel.LESION] = 1.0
        weight[VisionChannel.LEFT_DETECT, Channel.SIDE] = SIDE_GAIN
        weight[VisionChannel.RIGHT_DETECT, Channel.SIDE] = -SIDE_GAIN


def detector_values(model, pixel_values: torch.Tensor) -> torch.Tensor:
    """``DETECT`` of every image token, ``(images, 256)``, before the post-layer norm."""
    vision = model.model.vision_tower
    kept: list[torch.Tensor] = []
    handle = vision.encoder.layers[-1].register_forward_hook(
        lambda _module, _inputs, output: kept.append(
            (output[0] if isinstance(output, tuple) else output)[..., VisionChannel.DETECT]
        )
    )
    try:
        with torch.no_grad():
            vision(pixel_values=pixel_values)
    finally:
        handle.remove()
    return kept[0]


def calibrate_threshold(
    model, pixel_values: torch.Tensor, on_lesion: np.ndarray, planted: Sequence[bool]
) -> float:
    """The midpoint between the largest value off the lesions and the smallest lesion maximum.

    ``model`` must carry the detector with threshold 0; ``on_lesion`` marks, per image and token,
    the lesion's tokens (`dense.token_targets` > 0), ``planted`` the images with a lesion.
    """
    values = detector_values(model, pixel_values).numpy()
    off = np.where(on_lesion, -np.inf, values).max()
    on = np.where(on_lesion, values, -np.inf).max(axis=1)[np.asarray(planted)].min()
    return float((off + on) / 2)
