"""Attention maps: hand-computed known answers, GQA head averaging, gating, reference_compat, and
the planted-signal test on the tiny model (attention forced through its weights)."""

from __future__ import annotations

import numpy as np
import pytest
from maps_helpers import (
    eager_capture,
    linearise_vision_tower,
    load_tiny,
    marked_pixels,
    plant_attention,
    plant_sink,
    prompt_inputs,
)

from cxr_attention.maps.attention import (
    attention_map,
    gate_weights,
    gated_answer_map,
    reassemble_prompt_keys,
    reference_compat_attention,
    select_layers_heads,
)
from cxr_attention.maps.cascade import compute_maps
from cxr_attention.maps.grid import MapUnavailable
from cxr_attention.maps.params import MapParams
from cxr_attention.maps.records import SampleKey
from cxr_attention.maps.targets import MapTarget

CELLS = [(2, 3), (2, 4), (3, 3), (11, 13), (12, 13)]  # off-centre, asymmetric


def _cell_mask(cells):
    mask = np.zeros((16, 16), dtype=bool)
    for row, col in cells:
        mask[row, col] = True
    return mask


def _random_rows(rng, layers, heads, rows, keys, image_share):
    """Softmax-like rows: ``image_share`` of each row's mass on the first 256 keys."""
    image = rng.random((layers, heads, rows, 256))
    image *= image_share / image.sum(-1, keepdims=True)
    text = rng.random((layers, heads, rows, keys))
    text *= (1 - image_share) / text.sum(-1, keepdims=True)
    return image, text


def test_attention_map_is_the_hand_computed_mean_renormalised():
    rng = np.random.default_rng(0)
    image, _ = _random_rows(rng, 3, 8, 5, 10, image_share=0.3)
    grid, mass = attention_map(image, [1, 3])
    expected = image[:, :, [1, 3]].mean(axis=(0, 1, 2))
    assert mass == pytest.approx(0.3)
    np.testing.assert_allclose(grid.ravel(), expected / expected.sum(), rtol=1e-6)
    assert grid.dtype == np.float32 and grid.shape == (16, 16)
    assert grid.sum() == pytest.approx(1.0, abs=1e-6)


def test_mean_of_query_heads_equals_mean_of_kv_group_means():
    rng = np.random.default_rng(1)
    image, _ = _random_rows(rng, 1, 8, 2, 10, image_share=0.5)
    # GQA in transformers' repeat_kv: query head h uses KV head h // 2 (groups of 2 heads).
    group_means = image.reshape(1, 4, 2, 2, 256).mean(axis=2)
    via_groups = group_means.mean(axis=(0, 1, 2))
    grid, _ = attention_map(image, [0, 1])
    np.testing.assert_allclose(grid.ravel(), via_groups / via_groups.sum(), rtol=1e-6)


def test_layer_and_head_selection():
    captured = np.array([31, 32, 33])
    layer_index, head_index = select_layers_heads(captured, 8, layers=[33, -2], heads=[0, 7])
    assert layer_index.tolist() == [2, 1] and head_index.tolist() == [0, 7]
    with pytest.raises(ValueError, match="not captured"):
        select_layers_heads(captured, 8, layers=[5])
    with pytest.raises(ValueError, match="outside"):
        select_layers_heads(captured, 8, heads=[8])


def test_gate_weights_rows_by_their_attention_to_the_prompt_term():
    # Two rows; row 0 pays 0.3 to the term's two prompt tokens, row 1 pays 0.1: weights 3/4, 1/4.
    text = np.zeros((1, 1, 2, 6))
    text[0, 0, 0, [2, 3]] = [0.1, 0.2]
    text[0, 0, 1, [2, 3]] = [0.05, 0.05]
    image = np.zeros((1, 1, 2, 256))
    image[0, 0, 0, 0] = 0.4  # row 0 looks at cell (0, 0)
    image[0, 0, 1, 255] = 0.2  # row 1 at cell (15, 15)
    np.testing.assert_allclose(gate_weights(text, [2, 3]), [0.75, 0.25])
    grid, mass, n_gating = gated_answer_map(image, text, [2, 3])
    assert n_gating == 2
    assert mass == pytest.approx(0.75 * 0.4 + 0.25 * 0.2)
    assert grid[0, 0] == pytest.approx(0.3 / 0.35, rel=1e-6)
    assert grid[15, 15] == pytest.approx(0.05 / 0.35, rel=1e-6)
    with pytest.raises(MapUnavailable, match="no attention to the term"):
        gate_weights(text, [5])


def test_reference_compat_slices_positions_1_to_257_of_the_prompt_keys():
    rng = np.random.default_rng(2)
    prompt_len, start = 300, 20
    image, text = _random_rows(rng, 2, 8, 3, prompt_len, image_share=0.4)
    positions = np.arange(start, start + 256)
    text[..., positions] = 0
    capture = {"attention": image, "text_attention": text, "image_token_positions": positions}
    full = reassemble_prompt_keys(capture)
    np.testing.assert_array_equal(full[..., positions], image)
    compat = reference_compat_attention(capture)
    np.testing.assert_array_equal(compat[..., : start - 1], text[..., 1:start])
    np.testing.assert_array_equal(compat[..., start - 1 :], image[..., : 256 - start + 1])


@pytest.fixture(scope="module")
def planted(tiny_model_dir):
    """Tiny model whose captured layers attend to CELLS through their weights, and its capture."""
    model, processor = load_tiny(tiny_model_dir)
    linearise_vision_tower(model)
    plant_attention(model, (3, 4, 5))
    inputs = prompt_inputs(processor, "Is there a pleural effusion?")
    inputs["pixel_values"] = marked_pixels(CELLS)
    return eager_capture(model, inputs)


def test_planted_attention_puts_its_mass_on_the_planted_tokens(planted, tiny_model_dir):
    mask = _cell_mask(CELLS)
    rows = range(planted["attention"].shape[2])
    grid, mass = attention_map(planted["attention"], rows)
    assert grid[mask].sum() >= 0.9
    assert mass >= 0.9
    # Control: the same prompt and image on the unplanted model does not look there.
    model, processor = load_tiny(tiny_model_dir)
    linearise_vision_tower(model)
    inputs = prompt_inputs(processor, "Is there a pleural effusion?")
    inputs["pixel_values"] = marked_pixels(CELLS)
    control = eager_capture(model, inputs)
    control_grid, _ = attention_map(control["attention"], rows)
    assert control_grid[mask].sum() < 0.5


def test_planted_attention_through_the_cascade(planted):
    target = MapTarget("", "answer", generated_positions=tuple(range(6)))
    ((record, grid),) = compute_maps(planted, target, SampleKey("s"), MapParams())
    assert record.method == "attention" and record.fallback_reason == ""
    assert grid[_cell_mask(CELLS)].sum() >= 0.9
    assert record.layers == "3|4|5" and record.heads == "|".join(map(str, range(8)))


def test_reference_compat_reproduces_a_sink_in_the_first_cell(tiny_model_dir):
    """Issue 9: a sink at prompt position 1 fills the reference's first "image" cell."""
    model, processor = load_tiny(tiny_model_dir)
    linearise_vision_tower(model)  # with a blank image, no image token carries the marker
    plant_attention(model, (3, 4, 5))
    inputs = prompt_inputs(processor, "Is there a pleural effusion?")
    inputs["pixel_values"] = marked_pixels([])
    sink_id = int(inputs["input_ids"][0, 1])
    assert processor.tokenizer.convert_ids_to_tokens(sink_id) == "<start_of_turn>"
    plant_sink(model, sink_id)
    capture = eager_capture(model, inputs)
    rows = range(capture["attention"].shape[2])
    compat_grid, compat_mass = attention_map(reference_compat_attention(capture), rows)
    assert compat_grid[0, 0] > 0.5
    default_grid, default_mass = attention_map(capture["attention"], rows)
    assert default_grid[0, 0] < 0.1
    assert default_mass < 0.01 < compat_mass
