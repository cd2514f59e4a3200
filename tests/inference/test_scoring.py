"""P(yes) from the first answer token against a manual softmax of the model's logits."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from inference_helpers import capture_answers
from PIL import Image

from cxr_attention.inference.prompting import build_inputs
from cxr_attention.inference.scoring import (
    YesNoTokens,
    p_yes_from_logits,
    score_p_yes,
    yes_no_margin_from_logits,
    yes_no_mass_from_logits,
    yes_no_tokens,
)

QUESTIONS = ["Is there a pleural effusion?", "Is the heart enlarged in this chest X-ray?"]


@pytest.fixture(scope="module")
def loaded(tiny_model_dir):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir, use_safetensors=True)
    return model.eval(), processor


@pytest.fixture(scope="module")
def image():
    return Image.fromarray(np.random.default_rng(3).integers(0, 256, (96, 128), dtype=np.uint8))


def test_single_token_variants_only(loaded):
    _, processor = loaded
    tokenizer = processor.tokenizer
    tokens = yes_no_tokens(tokenizer)
    assert {"yes", "Yes"} <= set(tokens.yes_strings)
    assert {"no", "No"} <= set(tokens.no_strings)
    assert " yes" not in tokens.yes_strings  # "▁" + "yes": two tokens in the tiny vocabulary
    # " no" is one token there, but without its " yes" it would tilt P(yes): same forms only
    assert [s.replace("yes", "no").replace("Yes", "No") for s in tokens.yes_strings] == list(
        tokens.no_strings
    )
    assert len(tokenizer(" no", add_special_tokens=False)["input_ids"]) == 1
    for text, token_id in zip(
        tokens.yes_strings + tokens.no_strings, tokens.yes_ids + tokens.no_ids, strict=True
    ):
        assert tokenizer(text, add_special_tokens=False)["input_ids"] == [token_id]
    assert not set(tokens.yes_ids) & set(tokens.no_ids)


def test_p_yes_from_logits_is_the_normalised_sum():
    tokens = YesNoTokens(yes_ids=(1, 3), no_ids=(4,), yes_strings=("a", "b"), no_strings=("c",))
    logits = torch.tensor([[0.0, 1.0, -2.0, 0.5, 3.0, 9.0]], dtype=torch.bfloat16)
    probs = torch.softmax(logits.double(), -1)[0]
    expected = (probs[1] + probs[3]) / (probs[1] + probs[3] + probs[4])
    got = p_yes_from_logits(logits, tokens)
    assert got.dtype == torch.float32
    assert abs(float(got[0]) - float(expected)) < 1e-6


def test_margin_is_the_logit_difference_and_mass_the_yes_no_share():
    tokens = YesNoTokens(yes_ids=(1,), no_ids=(4,), yes_strings=("a",), no_strings=("c",))
    logits = torch.tensor([[0.0, 1.0, -2.0, 0.5, 3.0, 9.0], [2.0, -1.0, 0.0, 0.0, 0.5, 0.0]])
    margin = yes_no_margin_from_logits(logits, tokens)
    assert torch.allclose(margin, logits[:, 1] - logits[:, 4])
    probs = torch.softmax(logits.double(), -1)
    mass = yes_no_mass_from_logits(logits, tokens)
    assert torch.allclose(mass.double(), probs[:, 1] + probs[:, 4], atol=1e-7)
    several = YesNoTokens(yes_ids=(1, 3), no_ids=(4,), yes_strings=("a", "b"), no_strings=("c",))
    p_yes = (probs[:, 1] + probs[:, 3]) / (probs[:, 1] + probs[:, 3] + probs[:, 4])
    got = torch.sigmoid(yes_no_margin_from_logits(logits, several).double())
    assert torch.allclose(got, p_yes, atol=1e-6)
    logits.requires_grad_(True)
    yes_no_margin_from_logits(logits, tokens).sum().backward()
    assert logits.grad[0, 1] == 1 and logits.grad[0, 4] == -1 and logits.grad[0, 0] == 0


def test_scoring_equals_manual_softmax_of_the_last_prompt_logits(loaded, image):
    model, processor = loaded
    tokens = yes_no_tokens(processor.tokenizer)
    inputs = build_inputs(processor, image, QUESTIONS, image_first=False)  # left-padded batch
    scored = score_p_yes(model, inputs, tokens)
    for row, question in enumerate(QUESTIONS):
        alone = build_inputs(processor, image, question, image_first=False)
        with torch.no_grad():
            logits = model(**alone).logits[0, -1].double()
        probs = torch.softmax(logits, -1)
        yes = probs[list(tokens.yes_ids)].sum()
        no = probs[list(tokens.no_ids)].sum()
        assert abs(float(scored[row]) - float(yes / (yes + no))) < 1e-5


def test_generation_reads_the_same_p_yes(loaded, image):
    model, processor = loaded
    tokens = yes_no_tokens(processor.tokenizer)
    captures = capture_answers(
        model, processor, image, QUESTIONS, image_first=True, max_new_tokens=2, batch_size=2
    )
    for capture, question in zip(captures, QUESTIONS, strict=True):
        alone = build_inputs(processor, image, question, image_first=True)
        assert abs(capture.p_yes - float(score_p_yes(model, alone, tokens)[0])) < 1e-5
        assert 0.0 < capture.p_yes < 1.0
        # the yes + no mass of the same step, against a manual softmax of the prompt's logits
        with torch.no_grad():
            probs = torch.softmax(model(**alone).logits[0, -1].double(), -1)
        mass = probs[list(tokens.yes_ids) + list(tokens.no_ids)].sum()
        assert abs(capture.yes_no_mass - float(mass)) < 1e-5
        assert 0.0 < capture.yes_no_mass < 1.0
