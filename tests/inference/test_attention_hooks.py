"""The attention hook layer against transformers' eager attention (the oracle).

Gradient mode must give the probabilities of eager ``output_attentions`` and, for a backward pass
from a logit, the gradients that eager attention tensors receive (``retain_grad``).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from cxr_attention.attention_hooks import (
    AttentionWeights,
    attention_probabilities,
    enable_hooks,
    last_layers,
    recording,
)
from cxr_attention.inference.prompting import build_inputs

QUESTIONS = ["Is there a pleural effusion?", "Is the heart enlarged in this chest X-ray?"]


def _load(folder, implementation):
    from transformers import AutoModelForImageTextToText

    return AutoModelForImageTextToText.from_pretrained(
        folder, attn_implementation=implementation, use_safetensors=True
    ).eval()


@pytest.fixture(scope="module")
def processor(tiny_model_dir):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def hooked(tiny_model_dir):
    model = _load(tiny_model_dir, "sdpa")
    enable_hooks(model)
    return model


@pytest.fixture(scope="module")
def eager(tiny_model_dir):
    return _load(tiny_model_dir, "eager")


@pytest.fixture(scope="module")
def inputs(processor):
    """Two left-padded prompts, image first (bidirectional image block, padding)."""
    image = Image.fromarray(np.random.default_rng(3).integers(0, 256, (120, 100), dtype=np.uint8))
    return build_inputs(processor, image, QUESTIONS, image_first=True)


def _score(logits, processor):
    """A decision-like score: the 'yes' logit minus the 'no' logit at the last position."""
    yes = processor.tokenizer.convert_tokens_to_ids("yes")
    no = processor.tokenizer.convert_tokens_to_ids("No")
    return logits[:, -1, yes] - logits[:, -1, no]


def _eager_oracle(eager, inputs, processor, layers):
    output = eager(**inputs, use_cache=False, output_attentions=True)
    attentions = [output.attentions[layer] for layer in layers]
    assert all(a.numel() for a in attentions), "eager attentions came back empty"
    for attention in attentions:
        attention.retain_grad()
    _score(output.logits, processor).sum().backward()
    return output.logits.detach(), [a.detach() for a in attentions], [a.grad for a in attentions]


def test_gradient_mode_weights_and_gradients_equal_eager(hooked, eager, processor, inputs):
    layers = last_layers(hooked, 3)  # sliding, sliding, full
    logits, attentions, gradients = _eager_oracle(eager, inputs, processor, layers)

    recorder = AttentionWeights(hooked, layers, gradients=True)
    with recording(recorder):
        hooked_logits = hooked(**inputs, use_cache=False).logits
    weights = recorder.weights()
    grads = recorder.gradients(_score(hooked_logits, processor))

    # Compared on the real tokens: a padding token sees no key, which eager and sdpa (on the
    # layers not recorded) treat differently, and no real token reads it (its probability is 0;
    # the gradient there is its value, which depends on that difference).
    real = inputs["attention_mask"].bool()
    pairs = (real[:, None, :, None] & real[:, None, None, :]).expand_as(attentions[0])
    # The outputs computed from the recorded probabilities are the model's own.
    assert torch.abs(hooked_logits.detach() - logits)[real].max() <= 1e-4
    for layer, attention, gradient in zip(layers, attentions, gradients, strict=True):
        assert weights[layer].shape == attention.shape
        difference = (weights[layer].detach() - attention).abs().transpose(1, 2)[real]
        assert difference.max() <= 1e-6, layer
        scale = gradient.abs().max()
        assert scale > 0, "the oracle's gradient vanished: the test could not fail"
        assert torch.abs(grads[layer] - gradient)[pairs].max() <= 1e-5 * scale, layer


def test_chosen_rows_and_keys_select_from_the_whole_layer(hooked, eager, processor, inputs):
    layers = [last_layers(hooked, 1)[0]]
    _, (attention,), (gradient,) = _eager_oracle(eager, inputs, processor, layers)
    image = torch.nonzero(inputs["input_ids"][0] == hooked.config.image_token_id).flatten()
    rows = [-1, -2]
    recorder = AttentionWeights(
        hooked, layers, gradients=True, query_rows=rows, key_positions=image.tolist()
    )
    with recording(recorder):
        logits = hooked(**inputs, use_cache=False).logits
    (weights,) = recorder.weights().values()
    (grads,) = recorder.gradients(_score(logits, processor)).values()
    assert weights.shape == (2, 8, 2, 256)
    expected = attention[:, :, rows][..., image]
    assert torch.abs(weights.detach() - expected).max() <= 1e-6
    expected_grad = gradient[:, :, rows][..., image]
    assert torch.abs(grads - expected_grad).max() <= 1e-5 * gradient.abs().max()


def test_without_gradient_mode_weights_equal_eager_and_outputs_stay_sdpa(
    hooked, eager, processor, inputs
):
    layers = last_layers(hooked, 2)
    with torch.no_grad():
        output = eager(**inputs, use_cache=False, output_attentions=True)
        plain = hooked(**inputs, use_cache=False).logits  # no recorder: sdpa everywhere
        recorder = AttentionWeights(hooked, layers, gradients=False)
        with recording(recorder):
            recorded = hooked(**inputs, use_cache=False).logits
    torch.testing.assert_close(recorded, plain, rtol=0, atol=0)
    real = inputs["attention_mask"].bool()  # padding queries: see the gradient-mode test
    for layer, weights in recorder.weights().items():
        assert not weights.requires_grad
        difference = (weights - output.attentions[layer]).abs().transpose(1, 2)[real]
        assert difference.max() <= 1e-6
    with pytest.raises(RuntimeError, match="gradients=True"):
        recorder.gradients(recorded.sum())


def test_one_forward_per_recorder(hooked, inputs):
    recorder = AttentionWeights(hooked, [5], gradients=False)
    with pytest.raises(RuntimeError, match="were not recorded"):
        recorder.weights()
    with torch.no_grad(), recording(recorder):
        hooked(**inputs, use_cache=False)
        with pytest.raises(RuntimeError, match="already recorded"):
            hooked(**inputs, use_cache=False)


def test_attention_probabilities_match_softmax_with_gqa():
    generator = torch.Generator().manual_seed(0)
    query = torch.randn(2, 8, 3, 16, generator=generator)
    key = torch.randn(2, 4, 5, 16, generator=generator)
    mask = torch.ones(2, 1, 3, 5, dtype=torch.bool)
    mask[0, :, :, 0] = False  # a left pad in row 0
    probs = attention_probabilities(query, key, mask, scaling=0.25)
    for head in range(8):
        logits = query[:, head] @ key[:, head // 2].transpose(1, 2) * 0.25
        logits = logits.masked_fill(~mask[:, 0], float("-inf"))
        torch.testing.assert_close(probs[:, head], torch.softmax(logits, -1))
    causal = attention_probabilities(query, key, None, scaling=0.25)
    assert torch.all(causal[:, :, 0, 3:] == 0) and torch.all(causal[:, :, 2] > 0)
