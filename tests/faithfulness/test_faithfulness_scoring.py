"""The batched margin against the study's own P(yes) and against unbatched passes (tiny model)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cxr_attention.faithfulness.randomisation import decoder_layers, randomised
from cxr_attention.faithfulness.scoring import DecisionScorer
from cxr_attention.inference.model import load_model
from cxr_attention.inference.prompting import build_inputs
from cxr_attention.inference.scoring import score_p_yes, yes_no_tokens

QUESTION = "Is there a pleural effusion?"


@pytest.fixture(scope="module")
def setup(tiny_model_dir):
    loaded = load_model(tiny_model_dir, device="cpu")
    image = (np.random.default_rng(0).random((300, 260)) * 255).astype(np.uint8)
    inputs = build_inputs(loaded.processor, image, QUESTION, image_first=False)
    return loaded, inputs, DecisionScorer(loaded.model, loaded.tokenizer, inputs, batch_size=3)


def test_original_margin_is_the_logit_of_the_studys_p_yes(setup):
    loaded, inputs, scorer = setup
    p_yes = float(score_p_yes(loaded.model, inputs, yes_no_tokens(loaded.tokenizer))[0])
    assert scorer.original() == pytest.approx(np.log(p_yes / (1 - p_yes)), abs=1e-4)


def test_batches_equal_single_passes(setup):
    _, inputs, scorer = setup
    pixels = inputs["pixel_values"]
    batch = torch.cat([pixels, -pixels, pixels * 0.5, pixels.flip(-1)])  # 4 rows, batches of 3
    together = scorer.pixel_margins(batch)
    alone = [scorer.pixel_margins(row[None])[0] for row in batch]
    np.testing.assert_allclose(together, alone, atol=1e-4)
    assert together[0] == pytest.approx(scorer.original(), abs=1e-4)


def test_token_removal_none_is_the_original_and_all_is_the_mean_image(setup):
    loaded, inputs, scorer = setup
    none, everything = scorer.token_margins(np.array([[False] * 256, [True] * 256]))
    assert none == pytest.approx(scorer.original(), abs=1e-4)
    # Oracle: every image token replaced by the mean through the model's own inputs_embeds.
    model = loaded.model
    with torch.no_grad():
        features = model.model.get_image_features(inputs["pixel_values"]).pooler_output
        embeds = model.get_input_embeddings()(inputs["input_ids"])
        is_image = inputs["input_ids"] == loaded.image_token_id
        embeds[is_image] = features.mean(dim=1).expand(int(is_image.sum()), -1)
        logits = model(
            inputs_embeds=embeds,
            attention_mask=inputs["attention_mask"],
            token_type_ids=inputs["token_type_ids"],
            use_cache=False,
            logits_to_keep=1,
        ).logits[:, -1]
    tokens = yes_no_tokens(loaded.tokenizer)
    expected = torch.logsumexp(logits[:, list(tokens.yes_ids)], -1) - torch.logsumexp(
        logits[:, list(tokens.no_ids)], -1
    )
    assert everything == pytest.approx(float(expected[0]), abs=1e-4)


def test_randomised_layers_change_the_margin_and_are_restored(setup):
    loaded, _, scorer = setup
    before = scorer.original()
    with randomised(list(decoder_layers(loaded.model))[-2:], seed=0):
        during = scorer.original()
    assert during != pytest.approx(before, abs=1e-3)
    assert scorer.original() == pytest.approx(before, abs=1e-6)
