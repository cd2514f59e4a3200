"""Dropping finished rows from the batch (``capture_batch``'s compacting decoder) against
transformers' ``generate`` on the whole batch (``compact_finished_rows=False``, the reference): the
same tokens and the same captured attention, with rows that end at very different steps."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch
from inference_helpers import capture_images
from PIL import Image

QUESTIONS = [
    "Is there a pleural effusion?",
    "Is there fluid around the lungs in this chest X-ray, on the left or on the right?",
    "Cardiomegaly?",
    "Is the heart enlarged?",
    "Looking at this radiograph, can you see a pneumothorax?",
]
NEW_TOKENS = 9
# What "the same attention" means here: the rows left in a smaller batch go through matrix
# products of another shape, which may round differently in the last float32 bit.
TOLERANCE = 1e-7


@pytest.fixture(scope="module")
def processor(tiny_model_dir):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    from transformers import AutoModelForImageTextToText

    return AutoModelForImageTextToText.from_pretrained(
        tiny_model_dir, attn_implementation="sdpa", dtype=torch.float32, use_safetensors=True
    ).eval()


@pytest.fixture(scope="module")
def requests():
    """Two images, their questions in one batch of 8 rows."""
    first = Image.fromarray(np.random.default_rng(7).integers(0, 256, (160, 130), dtype=np.uint8))
    second = Image.fromarray(np.random.default_rng(8).integers(0, 256, (90, 120), dtype=np.uint8))
    return [(first, QUESTIONS), (second, QUESTIONS[:3])]


@contextlib.contextmanager
def end_at_positions(model, positions: set[int]):
    """Plant the end of an answer: whenever the token being predicted follows position ``p`` in
    ``positions``, the first end-of-sequence token gets the highest logit. The random model never
    ends by itself; a row whose prompt is ``L`` tokens long ends with its ``k``-th token, the
    first ``k`` with ``L + k - 2`` in ``positions``. Only the logits change, never the attention.
    """
    eos = model.generation_config.eos_token_id
    eos = eos[0] if isinstance(eos, list) else eos
    planted = torch.tensor(sorted(positions), dtype=torch.long)

    def plant(module, args, kwargs, output):
        if kwargs.get("position_ids") is None:  # the image prefix's run: its logits go unread
            return output
        last_position = kwargs["position_ids"][:, -1]
        ending = torch.isin(last_position, planted.to(last_position.device))
        logits = output.logits[:, -1]
        logits[ending, eos] = logits[ending].max(dim=-1).values + 1.0
        return output

    handle = model.register_forward_hook(plant, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


def _capture_both(model, processor, requests, **options):
    options = {"max_new_tokens": NEW_TOKENS, "batch_size": 8, **options}
    reference = capture_images(model, processor, requests, compact_finished_rows=False, **options)
    compacted = capture_images(model, processor, requests, compact_finished_rows=True, **options)
    return reference, compacted


def _assert_same(reference, compacted):
    assert len(reference) == len(compacted)
    for old, new in zip(reference, compacted, strict=True):
        np.testing.assert_array_equal(new.input_ids, old.input_ids)
        np.testing.assert_array_equal(new.generated_ids, old.generated_ids)
        assert new.generated_text == old.generated_text
        assert abs(new.p_yes - old.p_yes) <= TOLERANCE
        assert abs(new.yes_no_mass - old.yes_no_mass) <= TOLERANCE
        for key in ("attention", "text_attention", "prompt_image_attention"):
            got, expected = getattr(new, key), getattr(old, key)
            assert got.shape == expected.shape, key
            assert np.abs(got - expected).max() <= TOLERANCE, key


# The three image paths: the shared image prefix's cache, the shared vision features, the pixels.
IMAGE_PATHS = [(True, True), (False, True), (True, False)]


@pytest.mark.parametrize(("image_first", "share"), IMAGE_PATHS)
def test_compacting_decoder_equals_generate_when_no_row_ends(
    model, processor, requests, image_first, share
):
    reference, compacted = _capture_both(
        model, processor, requests, image_first=image_first, share=share
    )
    assert all(c.n_generated_tokens == NEW_TOKENS for c in reference)  # nothing ends early
    _assert_same(reference, compacted)


@pytest.mark.parametrize(("image_first", "share"), IMAGE_PATHS)
def test_rows_ending_at_very_different_steps_equal_generate(
    model, processor, requests, image_first, share
):
    options = {"image_first": image_first, "share": share}
    (free, _) = _capture_both(model, processor, requests[:1], **options)
    # Aim each row at its own answer length (1 to all of NEW_TOKENS) by planting an end after
    # the position that token would follow; rows whose prompts are as long share a plan.
    aims = [1, 4, 2, 7, NEW_TOKENS]
    prompt_lengths = [len(c.input_ids) for c in free]
    planted = {
        length + aim - 2
        for length, aim in zip(prompt_lengths, aims, strict=True)
        if aim < NEW_TOKENS
    }
    with end_at_positions(model, planted):
        reference, compacted = _capture_both(model, processor, requests, **options)
    # Independently of both decoders: each row ends at its first planted position.
    for capture in reference:
        length = len(capture.input_ids)
        expected = next(
            (k for k in range(1, NEW_TOKENS + 1) if length + k - 2 in planted), NEW_TOKENS
        )
        assert capture.n_generated_tokens == expected
    lengths = {c.n_generated_tokens for c in reference}
    # A row's planted end may also end another row earlier: ask only for a wide spread.
    assert min(lengths) == 1 and max(lengths) >= NEW_TOKENS - 2 and len(lengths) >= 3, lengths
    _assert_same(reference, compacted)
