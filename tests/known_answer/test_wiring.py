"""The set routing: the answer position reads the marked image tokens and the side word."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cxr_attention.known_answer.model import QUESTIONS, build_untrained_model
from cxr_attention.known_answer.wiring import Channel, freeze_wiring, set_wiring


@pytest.fixture(scope="module")
def wired():
    model, processor, _ = build_untrained_model(3)
    set_wiring(model, processor.tokenizer)
    model.set_attn_implementation("eager")
    return model.eval(), processor


def _decision_attention(model, processor, question, features, image_first=False):
    """Layer-0 attention rows (heads, keys) of the answer position, given image features."""
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    from cxr_attention.inference.prompting import build_inputs

    inputs = build_inputs(
        processor, np.zeros((64, 64), np.uint8), question, image_first=image_first
    )
    inputs.pop("pixel_values")
    with torch.no_grad():
        out = model(
            **inputs,
            mm_encoder_outputs={"image": BaseModelOutputWithPooling(pooler_output=features)},
            output_attentions=True,
            use_cache=False,
        )
    ids = inputs["input_ids"][0]
    image = torch.nonzero(ids == model.config.image_token_id).flatten()
    return out.attentions[0][0, :, -1], ids, image


def _features(marked, seed=0):
    """Random image features (1, 256, 64) whose LESION channel is positive on ``marked`` only.

    Unmarked tokens get -0.5 or less: the routing score is the sign only once the channel is
    clear of 0 (the per-head RMSNorm's epsilon makes it a steep tanh of width ~0.004).
    """
    features = torch.randn(1, 256, 64, generator=torch.Generator().manual_seed(seed))
    features[..., Channel.LESION] = -0.5 - features[..., Channel.LESION].abs()
    # The projector writes nothing to the text-only channels (its columns there are zero).
    features[..., [Channel.TEXT, Channel.ASKED_SIDE, Channel.SIDE_WORD]] = 0.0
    for token in marked:
        features[0, token, Channel.LESION] = 0.5
    return features


@pytest.mark.parametrize("image_first", [False, True])
def test_lesion_heads_read_the_marked_tokens(wired, image_first):
    model, processor = wired
    marked = [37, 38, 53]
    rows, _, image = _decision_attention(
        model, processor, QUESTIONS["any"], _features(marked), image_first
    )
    for head in (0, 1):
        assert rows[head, image[marked]].sum() > 0.999
    # Nothing marked: no token dominates (the spread is even within a factor of about e).
    rows, _, _ = _decision_attention(model, processor, QUESTIONS["any"], _features([]))
    assert rows[:2].max() < 0.02


def test_question_heads_read_the_side_word(wired):
    model, processor = wired
    tokenizer = processor.tokenizer
    for key, word in (("left", "eft"), ("right", "▁right")):
        rows, ids, _ = _decision_attention(model, processor, QUESTIONS[key], _features([5]))
        position = int(torch.nonzero(ids == tokenizer.convert_tokens_to_ids(word))[0, 0])
        assert rows[2:4, position].min() > 0.999
    rows, _, image = _decision_attention(model, processor, QUESTIONS["any"], _features([5]))
    assert rows[2:4][:, image].sum(-1).min() > 0.99  # no side word: spread over the image


def test_frozen_entries_get_no_gradient(wired):
    model, _ = wired
    hooks = freeze_wiring(model)
    try:
        embed = model.model.language_model.embed_tokens.weight
        attention = model.model.language_model.layers[0].self_attn
        loss = (embed**2).sum() + (attention.q_proj.weight**2).sum()
        loss = loss + (attention.k_norm.weight**2).sum()
        grads = torch.autograd.grad(loss, [embed, attention.q_proj.weight, attention.k_norm.weight])
    finally:
        for hook in hooks:
            hook.remove()
    reserved = len(Channel)
    assert grads[0][:, :reserved].abs().sum() == 0 and grads[0][:, reserved:].abs().sum() > 0
    assert grads[1][:64].abs().sum() == 0 and grads[1][64:].abs().sum() > 0
    assert grads[2].abs().sum() == 0
