"""Asking many questions about several images: cut into generation batches, image work shared.

The questions of all the images are answered in order, ``batch_size`` at a time, so that a batch
may hold several images' questions. With the image first, `capture_images` runs each image's
prefix once (``prefix.run_prefix``), gives every row of a batch its image's cache and lays the
questions out as ``[prefix][padding][question]``: padding *between* prefix and question keeps the
prefix at the same positions for every row and aligns the last prompt tokens, and position ids
from the cumulative attention mask give every real token the position it has in an unpadded
prompt. With the question first, prompts differ before the image; the vision tower still runs once
per image and its output is passed to the prompt pass of each of the image's questions.

A batch may hold the questions of several images (every image's prefix has the same tokens and
length, so their caches stack along the batch): a GPU decoding step of 42 rows is bound by kernel
launches, not arithmetic, so more images per batch means more questions per second (on an H100,
2.3x at 4 images per batch; bench/RESULTS.md).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from cxr_attention.attention_hooks import enable_hooks, last_layers
from cxr_attention.inference.capture import Capture, capture_batch, prompt_image_start
from cxr_attention.inference.prefix import common_prefix_length, run_prefix
from cxr_attention.inference.prompting import (
    build_inputs,
    image_token_positions,
    prompt_token_ids,
    render_prompts,
)
from cxr_attention.inference.scoring import yes_no_tokens

__all__ = ["capture_answers", "capture_images", "decoder_layers"]


def decoder_layers(model, layers: int | Sequence[int]) -> list[int]:
    """The decoder layers to capture: the last ``k`` (an int) or the listed indices, sorted.

    A list can reach the last global layer, which on MedGemma 4B is not among the last ones
    (layers 30-33 are sliding-window layers, 29 is global: ``config.layer_types``).

    Raises
    ------
    ValueError
        An index outside the model's layers, a repeated one, or an empty list.
    """
    if isinstance(layers, int):
        return last_layers(model, layers)
    n_layers = model.config.get_text_config().num_hidden_layers
    chosen = [int(layer) for layer in layers]
    if not chosen or len(set(chosen)) != len(chosen):
        raise ValueError(f"inference.layers {chosen}: give distinct layer indices, at least one")
    outside = [layer for layer in chosen if not 0 <= layer < n_layers]
    if outside:
        raise ValueError(
            f"inference.layers {chosen}: {outside} outside the model's layers 0..{n_layers - 1}"
        )
    return sorted(chosen)


def _pad_between(
    suffixes: Sequence[torch.Tensor], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad variable-length suffixes into (ids, mask) of the longest length."""
    width = max(len(s) for s in suffixes)
    ids = torch.full((len(suffixes), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(suffixes), width), dtype=torch.long)
    for row, suffix in enumerate(suffixes):
        ids[row, width - len(suffix) :] = suffix
        mask[row, width - len(suffix) :] = 1
    return ids, mask


def capture_answers(
    model, processor, image, questions: Sequence[str], **options: Any
) -> list[Capture]:
    """Ask every question about one image; capture attention for each.

    `capture_images` with one image; ``options`` are its keyword arguments.
    """
    return capture_images(model, processor, [(image, questions)], **options)


@torch.no_grad()
def capture_images(
    model,
    processor,
    requests: Sequence[tuple[object, Sequence[str]]],
    *,
    image_first: bool,
    layers: int | Sequence[int],
    max_new_tokens: int,
    batch_size: int,
    share: bool,
    prompt_image_rows: str,
    include_pixel_values: bool = False,
    on_batch: Callable[[list[Capture], float], None] | None = None,
    compact_finished_rows: bool = True,
) -> list[Capture]:
    """Ask questions about several images; capture attention for each (image, question).

    The questions of all the images are answered in order, ``batch_size`` at a time, so that a
    batch may hold several images' questions: on a GPU a decoding step costs about the same for
    42 rows as for 84, so several images per batch raise the questions per second.

    Parameters
    ----------
    model : Gemma3ForConditionalGeneration
        ``attention_hooks.enable_hooks`` is applied if needed.
    processor : Gemma3Processor
    requests : sequence of (image, questions)
        Image: PIL.Image or ndarray of uint8; questions: sequence of str (at least one).
    image_first : bool
        Order in the user turn.
    layers : int or sequence of int
        The last ``k`` decoder layers (``inference.layers``), or explicit indices.
    max_new_tokens : int
        ``inference.max_new_tokens``.
    batch_size : int
        (image, question) rows per generation batch (``inference.batch_size``).
    share : bool
        Encode each image once for all its questions (see the module docstring). ``False`` runs
        every row from its own pixels (the reference to compare against; ``inference.share``).
    prompt_image_rows : {"all", "text"}
        Prompt rows of ``prompt_image_attention``: every one, or those after the image (see
        `capture_batch`; with the question first, "text" spares computing and copying 42
        prompts' 256 image rows per batch; ``inference.prompt_image_rows``).
    include_pixel_values : bool
        Keep ``pixel_values`` (float32, what the model saw) in each capture.
    on_batch : callable, optional
        Called after each batch with its captures (in order) and the seconds it took (the shared
        image work is counted in the first batch), so that callers can save results as soon as
        they exist.
    compact_finished_rows : bool
        Drop each row from its batch once it has answered (`capture_batch`); ``False`` decodes
        with transformers' ``generate`` (the reference to compare against).

    Returns
    -------
    list of Capture
        In order: the first image's questions, then the second's, ...
    """
    started = time.perf_counter()
    prompt_image_start([0], prompt_image_rows)  # checks the value before any work
    enable_hooks(model)
    layer_list = decoder_layers(model, layers)
    yes_no = yes_no_tokens(processor.tokenizer)
    if any(not list(questions) for _, questions in requests):
        raise ValueError("every image needs at least one question")
    questions = [q for _, image_questions in requests for q in image_questions]
    row_image = torch.tensor([i for i, (_, qs) in enumerate(requests) for _ in qs])
    prompts = render_prompts(processor, questions, image_first=image_first)
    # Each image is preprocessed once, with its first question; the prompts are tokenized
    # without pixels, after checking on that question that this gives the processor's own ids.
    ids = prompt_token_ids(processor, prompts)
    pixels, first_row = [], 0
    for image, image_questions in requests:
        first = build_inputs(processor, image, image_questions[0], image_first=image_first)
        if not torch.equal(ids[first_row], first["input_ids"][0]):
            for offset, question in enumerate(image_questions):
                inputs = build_inputs(processor, image, question, image_first=image_first)
                ids[first_row + offset] = inputs["input_ids"][0]
        pixels.append(first["pixel_values"])
        first_row += len(image_questions)
    pixel_values = torch.cat(pixels)
    pad_id = processor.tokenizer.pad_token_id

    prefix = None
    features = None
    if share and image_first:
        # The shared prefix ends with the image's closing token, whatever the questions share
        # after it: a prefix that depended on the questions asked together would make one
        # question's floats depend on its company (and a resumed job differ from a whole one).
        image_positions = image_token_positions(ids[0], model.config.image_token_id)
        length = int(image_positions[-1]) + 2
        if common_prefix_length(ids) < length or min(len(i) for i in ids) <= length:
            raise RuntimeError("questions do not share the image prefix; cannot share it")
        prefix_token_types = (ids[0][:length] == model.config.image_token_id).long()
        start = prompt_image_start(image_positions, prompt_image_rows)
        prefix = run_prefix(
            model, ids[0][:length], pixel_values, prefix_token_types, layer_list, start
        )
    elif share:
        features = model.get_image_features(
            pixel_values.to(model.device, model.dtype), return_dict=True
        ).pooler_output

    seen = pixel_values.float().cpu().numpy() if include_pixel_values else None
    captures: list[Capture] = []
    for start in range(0, len(questions), batch_size):
        chunk = list(range(start, min(start + batch_size, len(questions))))
        images = row_image[chunk]
        if prefix is not None:
            batch_ids, batch_mask = _pad_between(
                [ids[i][len(prefix.input_ids) :] for i in chunk], pad_id
            )
            extra = {"prefix": prefix, "prefix_rows": images}
        else:
            batch_ids, batch_mask = _pad_between([ids[i] for i in chunk], pad_id)
            token_types = (batch_ids == model.config.image_token_id).long()
            extra = {"token_type_ids": token_types}
            if features is not None:
                extra["image_features"] = features[images.to(features.device)]
            else:
                extra["pixel_values"] = pixel_values[images]
        batch = capture_batch(
            model,
            processor,
            batch_ids,
            batch_mask,
            questions=[questions[i] for i in chunk],
            prompts=[prompts[i] for i in chunk],
            layers=layer_list,
            max_new_tokens=max_new_tokens,
            yes_no=yes_no,
            prompt_image_rows=prompt_image_rows,
            compact_finished_rows=compact_finished_rows,
            **extra,
        )
        if seen is not None:
            for capture, image in zip(batch, images.tolist(), strict=True):
                capture.pixel_values = seen[image]
        if on_batch is not None:
            now = time.perf_counter()
            on_batch(batch, now - started)
            started = now
        captures += batch
    return captures
