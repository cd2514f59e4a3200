"""The tiny model folder: loadable like MedGemma, deterministic, with MedGemma's traits."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from PIL import Image

from cxr_attention.models.gemma3 import medgemma_4b_config
from cxr_attention.models.tiny import CHAT_TEMPLATE, TINY_SLIDING_WINDOW, build_tiny_model


def _hashes(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def loaded(tiny_model_dir):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir, use_safetensors=True)
    return processor, model.eval()


def test_same_bytes_on_every_build(tiny_model_dir, tmp_path):
    again = build_tiny_model(tmp_path / "again", seed=0)
    assert _hashes(again) == _hashes(tiny_model_dir)
    assert "model.safetensors" in _hashes(again)


def test_other_seed_gives_other_weights(tiny_model_dir, tmp_path):
    other = build_tiny_model(tmp_path / "other", seed=1)
    assert _hashes(other)["model.safetensors"] != _hashes(tiny_model_dir)["model.safetensors"]
    assert _hashes(other)["tokenizer.json"] == _hashes(tiny_model_dir)["tokenizer.json"]


def test_architecture_traits(loaded):
    processor, model = loaded
    text = model.config.get_text_config()
    assert type(model).__name__ == "Gemma3ForConditionalGeneration"
    assert (text.num_attention_heads, text.num_key_value_heads) == (8, 4)
    assert set(text.layer_types[-3:]) == {"sliding_attention", "full_attention"}
    assert text.sliding_window == TINY_SLIDING_WINDOW
    assert model.config.mm_tokens_per_image == processor.image_seq_length == 256
    vision = model.config.vision_config
    patches_per_side = vision.image_size // vision.patch_size
    assert patches_per_side == 32  # pooled 2 x 2 into the 16 x 16 token grid
    assert model.config._attn_implementation == "sdpa"
    projector = model.model.multi_modal_projector.mm_input_projection_weight
    assert projector.abs().mean() > 1e-2  # transformers zero-initialises it; the builder must not


def test_tokenizer_specials_and_subwords(loaded):
    processor, model = loaded
    tokenizer = processor.tokenizer
    assert tokenizer.convert_tokens_to_ids(tokenizer.image_token) == model.config.image_token_id
    assert tokenizer.boi_token_id == model.config.boi_token_id
    assert tokenizer.eoi_token_id == model.config.eoi_token_id
    for word in ("effusion", "cardiomegaly", "pneumothorax"):
        assert len(tokenizer(word, add_special_tokens=False).input_ids) > 1, word
    for word in ("yes", "no", "Yes", "No"):
        assert len(tokenizer(word, add_special_tokens=False).input_ids) == 1, word
    # Byte fallback: characters never seen in training still round-trip.
    ids = tokenizer("é ±", add_special_tokens=False).input_ids
    assert tokenizer.unk_token_id not in ids
    assert tokenizer.decode(ids) == "é ±"
    assert processor.chat_template == CHAT_TEMPLATE


def test_chat_template_and_generation(loaded):
    processor, model = loaded
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (120, 90), dtype=np.uint8))
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Is there a pleural effusion?"},
                {"type": "image", "image": image},
            ],
        }
    ]
    inputs = processor.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )
    ids = inputs["input_ids"][0]
    text = processor.tokenizer.decode(ids)
    assert text.startswith("<bos><start_of_turn>user\nIs there a pleural effusion?")
    assert text.endswith("<end_of_image>\n\n<end_of_turn>\n<start_of_turn>model\n")
    assert (ids == processor.tokenizer.bos_token_id).sum() == 1
    image_positions = torch.nonzero(ids == model.config.image_token_id).flatten()
    assert len(image_positions) == 256
    assert torch.equal(image_positions, torch.arange(256) + image_positions[0])
    assert torch.equal(inputs["token_type_ids"][0].nonzero().flatten(), image_positions)
    assert inputs["pixel_values"].shape == (1, 3, 448, 448)
    assert len(ids) < TINY_SLIDING_WINDOW
    first = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    again = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert torch.equal(first[0, : len(ids)], ids)
    assert first.shape[1] > len(ids)
    assert torch.equal(first, again)


def test_medgemma_config_matches_published_architecture():
    config = medgemma_4b_config()
    text, vision = config.text_config, config.vision_config
    assert (text.hidden_size, text.num_hidden_layers, text.intermediate_size) == (2560, 34, 10240)
    assert (text.num_attention_heads, text.num_key_value_heads, text.head_dim) == (8, 4, 256)
    assert (text.vocab_size, text.sliding_window) == (262_208, 1024)
    full = [i for i, kind in enumerate(text.layer_types) if kind == "full_attention"]
    assert full == [5, 11, 17, 23, 29]
    assert text.layer_types[-3:] == ["sliding_attention"] * 3
    assert (vision.image_size, vision.patch_size, vision.hidden_size) == (896, 14, 1152)
    assert (vision.num_hidden_layers, vision.intermediate_size) == (27, 4304)
    assert config.mm_tokens_per_image == 256
