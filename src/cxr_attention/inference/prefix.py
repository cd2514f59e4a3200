"""Sharing the image prefix between the questions about one image.

With the image first, every question shares the tokens up to the end of the image (chat prefix,
``<start_of_image>``, 256 soft tokens, ``<end_of_image>``). Image tokens attend only to each other
and to earlier tokens, never to later text, so the prefix's keys and values are the same for every
question: `run_prefix` runs the vision tower and the prefix once per image (the images of a call
as one batch) into a cache that every question's generation starts from (``capture_batch``), and
keeps the prefix's prompt rows and its image tokens' hidden-state norms once for all the image's
captures.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from cxr_attention.attention_hooks import (
    GenerationRecorder,
    ImageHiddenNorms,
    attention_modules,
    recording,
)
from cxr_attention.inference.prompting import image_token_positions

__all__ = ["ImagePrefix", "common_prefix_length", "run_prefix"]


@dataclass
class ImagePrefix:
    """The image prefix of one or several images, already run through the model (batch: images).

    The prefix's token ids are the same for every image (image tokens are placeholders); its keys,
    values and prompt rows are not.
    """

    input_ids: torch.Tensor  # (P,)
    cache: object  # one row per image
    # Per image, (layers, heads, rows, n_image) on the host for the prefix's last rows (those
    # kept, see ``capture.prompt_image_start``): one array shared by the image's captures.
    prompt_image_rows: list[np.ndarray]
    # Per image, (layers, n_image) float32: the hidden-state norms entering each captured layer
    # at the image tokens (every question's: the image precedes the question).
    image_hidden_norms: list[np.ndarray]


@torch.no_grad()
def run_prefix(model, prefix_ids, pixel_values, token_type_ids, layers, start) -> ImagePrefix:
    """Run the prefix of every image in ``pixel_values`` (images, 3, S, S) as one batch, keeping
    the prompt rows of positions ``start`` onwards."""
    from transformers import DynamicCache

    device = model.device
    n_images = pixel_values.shape[0]
    prefix_ids = prefix_ids.to(device)
    image_columns = image_token_positions(prefix_ids, model.config.image_token_id)
    cache = DynamicCache(config=model.config.get_text_config())
    recorder = GenerationRecorder(
        attention_modules(model, layers),
        image_columns[None].expand(n_images, -1),
        prompt_rows=len(prefix_ids) - start,
    )
    hidden_norms = ImageHiddenNorms(model, layers, image_columns[None].expand(n_images, -1))
    with recording(recorder), hidden_norms.recording():
        model(
            input_ids=prefix_ids[None].expand(n_images, -1),
            pixel_values=pixel_values.to(device, model.dtype),
            token_type_ids=token_type_ids[None].expand(n_images, -1).to(device),
            attention_mask=torch.ones(n_images, len(prefix_ids), dtype=torch.long, device=device),
            cache=cache,
            use_cache=True,
            logits_to_keep=1,
        )
    if layers:
        rows = torch.stack([recorder.prompt_image_rows[layer] for layer in layers]).cpu()
        per_image = [np.ascontiguousarray(rows[:, image].numpy()) for image in range(n_images)]
    else:  # nothing captured
        rows = len(prefix_ids) - start
        per_image = [np.zeros((0, 0, rows, len(image_columns)), np.float32)] * n_images
    return ImagePrefix(prefix_ids, cache, per_image, list(hidden_norms.norms()))


def common_prefix_length(sequences: Sequence[torch.Tensor]) -> int:
    shortest = min(len(s) for s in sequences)
    first = sequences[0][:shortest]
    same = torch.ones(shortest, dtype=torch.bool)
    for other in sequences[1:]:
        same &= other[:shortest] == first
    different = torch.nonzero(~same).flatten()
    return int(different[0]) if len(different) else shortest
