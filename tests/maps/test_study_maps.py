"""The study's maps (issue 15): the decision row as the answer map, the term's own attention, the
decision margin as Grad-CAM's answer score, every listed method on the same samples with the
cascade's pick marked, and one decision map per captured layer.

Oracles: eager ``output_attentions`` (maps_helpers.eager_capture), captum's LayerGradCam scoring a
margin written out by hand, numpy means of the captured rows.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from maps_helpers import eager_capture, forced_capture, load_tiny, prompt_inputs
from test_gradcam import _captum_grid

from cxr_attention.maps.cascade import compute_sample_maps
from cxr_attention.maps.methods.base import VisionSource
from cxr_attention.maps.params import MapParams
from cxr_attention.maps.records import MAP_COLUMNS, SampleKey
from cxr_attention.maps.targets import layer_targets, locate_targets

QUESTION = "Is there a pleural effusion?"
ANSWER = " No pleural effusion is seen."


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return load_tiny(tiny_model_dir)


@pytest.fixture(scope="module")
def capture(tiny):
    model, processor = tiny
    answer = processor.tokenizer(ANSWER, add_special_tokens=False)["input_ids"]
    return forced_capture(model, prompt_inputs(processor, QUESTION), answer)


def _targets(processor, capture, terms=()):
    return locate_targets(
        processor.tokenizer, capture["input_ids"], capture["generated_ids"], list(terms)
    )


def _grid(row: np.ndarray) -> np.ndarray:
    return (row / row.sum()).reshape(16, 16)


def test_the_answer_map_is_the_decision_row_and_the_mean_of_every_row_a_variant(tiny, capture):
    _, processor = tiny
    results = compute_sample_maps(
        capture, _targets(processor, capture), SampleKey("s"), MapParams(method="attention")
    )
    by_id = {record.map_id: (record, grid) for record, grid in results}
    decision, grid = by_id["s__answer__answer__attention"]
    assert decision.rows == "decision" and decision.token_positions == (0,)
    # oracle: row 0 (the step that chose the first answer token), mean over layers and heads
    row0 = capture["attention"][:, :, 0].astype(np.float64).mean(axis=(0, 1))
    np.testing.assert_allclose(grid, _grid(row0), atol=1e-6)
    assert decision.image_mass == pytest.approx(row0.sum(), abs=1e-6)
    every, every_grid = by_id["s__answer_all_rows__answer__attention"]
    assert every.rows == "all" and not every.cascade
    mean = capture["attention"].astype(np.float64).mean(axis=(0, 1, 2))
    np.testing.assert_allclose(every_grid, _grid(mean), atol=1e-6)
    assert np.abs(grid - every_grid).max() > 1e-4  # the two are different maps


def test_term_attention_is_the_terms_own_rows_and_needs_the_image_first(tiny):
    model, processor = tiny
    # eager oracle: every prompt row's attention to the image, image before the question
    oracle = eager_capture(model, prompt_inputs(processor, QUESTION), max_new_tokens=2)
    (term,) = _targets(processor, oracle, ["effusion"])[2:]
    assert term.source == "prompt" and term.counterfactual
    ((record, grid),) = compute_sample_maps(
        oracle, [term], SampleKey("s"), MapParams(method="term_attention")
    )
    rows = oracle["prompt_image_attention"][:, :, list(term.prompt_positions)]
    expected = rows.astype(np.float64).mean(axis=(0, 1, 2))
    assert record.method == "term_attention" and record.rows == "term"
    assert record.counterfactual  # the term is not in the answer
    np.testing.assert_allclose(grid, _grid(expected), atol=1e-6)
    # the gated answer (formerly attention_gated) is a different map: of the answer
    ((gated, gated_grid),) = compute_sample_maps(
        oracle, [term], SampleKey("s"), MapParams(method="gated_answer")
    )
    assert gated.method == "gated_answer" and np.abs(gated_grid - grid).max() > 1e-4
    # question first: causal attention hides the image from the term, and the reason says so
    first = eager_capture(
        model, prompt_inputs(processor, QUESTION, image_first=False), max_new_tokens=2
    )
    (late,) = _targets(processor, first, ["effusion"])[2:]
    ((fallback, _),) = compute_sample_maps(
        first, [late], SampleKey("s"), MapParams(method="term_attention")
    )
    assert fallback.method == "uniform"
    assert fallback.fallback_reason.startswith(
        "term_attention: the term comes before the image in the prompt"
    )
    with pytest.raises(ValueError, match="attention_gated is now gated_answer"):
        MapParams.from_dict({"methods": ["attention", "attention_gated"]})


def test_gradcam_of_the_answer_is_the_decision_margin(tiny_model_dir, capture):
    from cxr_attention.inference.scoring import YesNoTokens, yes_no_tokens

    model, processor = load_tiny(tiny_model_dir, eager=False)
    tokens = yes_no_tokens(processor.tokenizer)
    targets = _targets(processor, capture, ["effusion", "fluid"])
    vision = VisionSource(lambda: (model, capture["pixel_values"]))
    results = compute_sample_maps(
        capture, targets, SampleKey("s"), MapParams(method="gradcam"), vision=vision
    )
    by_id = {record.map_id: (record, grid) for record, grid in results}
    _, grid = by_id["s__answer__answer__gradcam"]

    def raw_margin(logits):  # written out: log P(yes forms) - log P(no forms), decision step
        row = logits[:, 0].float()
        return torch.logsumexp(row[:, list(tokens.yes_ids)], -1) - torch.logsumexp(
            row[:, list(tokens.no_ids)], -1
        )

    # The model's own lean at the decision step, from a plain forward of the prompt: the map
    # explains the answer given, so a "no" is scored as -margin.
    prompt = torch.as_tensor(np.asarray(capture["input_ids"]).reshape(1, -1))
    with torch.no_grad():
        logits = model(
            input_ids=prompt,
            pixel_values=torch.as_tensor(capture["pixel_values"]),
            token_type_ids=(prompt == model.config.image_token_id).long(),
            logits_to_keep=1,
        ).logits
    sign = 1.0 if float(raw_margin(logits)[0]) >= 0 else -1.0

    def margin(logits):
        return sign * raw_margin(logits)

    oracle = _captum_grid(
        model, capture["input_ids"], capture["pixel_values"], [0], [0], score=margin
    )
    np.testing.assert_allclose(grid, oracle / oracle.sum(), rtol=1e-4, atol=1e-7)
    # Calling yes "no" and no "yes" flips the margin and its sign: the same map.
    swapped = YesNoTokens(tokens.no_ids, tokens.yes_ids, tokens.no_strings, tokens.yes_strings)
    flipped = [
        dataclasses.replace(t, yes_no=swapped) if t.source == "answer" else t for t in targets
    ]
    again = compute_sample_maps(
        capture,
        flipped,
        SampleKey("s"),
        MapParams(method="gradcam"),
        vision=VisionSource(lambda: (model, capture["pixel_values"])),
    )
    (swapped_grid,) = [g for r, g in again if r.map_id == "s__answer__answer__gradcam"]
    np.testing.assert_allclose(swapped_grid, grid, rtol=1e-4, atol=1e-7)
    # not the old score: the sum of every generated token's logit
    old = _captum_grid(
        model,
        capture["input_ids"],
        capture["pixel_values"],
        capture["generated_ids"],
        range(len(capture["generated_ids"])),
    )
    assert np.abs(grid - old / old.sum()).max() > 1e-4
    # Grad-CAM has no every-row answer map; counterfactual marks the terms not in the answer
    assert "s__answer_all_rows__answer__gradcam" not in by_id
    flags = {(r.term, r.source): r.counterfactual for r, _ in results}
    assert flags == {
        ("", "answer"): False,
        ("effusion", "generated"): False,
        ("fluid", "absent"): True,
    }


def test_every_listed_method_maps_every_target_and_the_cascades_pick_is_marked(tiny, capture):
    model, processor = tiny
    targets = _targets(processor, capture, ["effusion", "fluid"])
    listed = ("attention", "gradcam", "random")
    params = MapParams(method="methods", methods=listed)
    vision = VisionSource(lambda: (model, capture["pixel_values"]))
    results = compute_sample_maps(capture, targets, SampleKey("s"), params, vision=vision)
    records = [record for record, _ in results if record.rows != "all"]
    methods = {(r.term, r.method) for r in records}
    # every listed method that can make the target's map, on the same targets
    assert {("", m) for m in listed} <= methods
    assert {("effusion", m) for m in listed} <= methods
    assert {("fluid", "gradcam"), ("fluid", "random")} <= methods  # attention: term not found
    # one cascade pick per target, and it is the map the cascade alone makes
    cascade = compute_sample_maps(
        capture, targets, SampleKey("s"), MapParams(), vision=VisionSource(vision.load)
    )
    alone = {r.map_id: (r, g) for r, g in cascade if r.cascade}
    picked = {r.map_id: (r, g) for r, g in results if r.cascade}
    assert sorted(alone) == sorted(picked)
    assert len(picked) == len([t for t in targets if not t.variant])
    for map_id, (record, grid) in picked.items():
        assert record.fallback_reason == alone[map_id][0].fallback_reason
        np.testing.assert_allclose(grid, alone[map_id][1], atol=1e-6)
    assert picked["s__fluid__absent__gradcam"][0].fallback_reason == "attention: term not found"
    # a pick outside the list is added as its own row
    only_random = compute_sample_maps(
        capture,
        targets,
        SampleKey("s"),
        MapParams(method="methods", methods=("random",)),
        vision=VisionSource(vision.load),
    )
    added = sorted(r.map_id for r, _ in only_random if r.cascade)
    assert added == sorted(alone)
    assert all(not r.cascade for r in records if r.method == "random")
    with pytest.raises(ValueError, match=r"maps\.methods"):
        MapParams(methods=("attention", "saliency"))


def test_a_decision_map_per_captured_layer(tiny, capture):
    _, processor = tiny
    targets = _targets(processor, capture)
    targets += layer_targets(targets[0], capture["layers"])
    results = compute_sample_maps(capture, targets, SampleKey("s"), MapParams())
    per_layer = [(r, g) for r, g in results if r.per_layer]
    assert [r.layers for r, _ in per_layer] == [str(layer) for layer in capture["layers"]]
    for index, (record, grid) in enumerate(per_layer):
        assert record.map_id == f"s__answer_layer{capture['layers'][index]}__answer__attention"
        assert record.rows == "decision" and not record.cascade
        row0 = capture["attention"][index, :, 0].astype(np.float64).mean(axis=0)
        np.testing.assert_allclose(grid, _grid(row0), atol=1e-6)
    assert set(MAP_COLUMNS) >= {"rows", "counterfactual", "cascade", "per_layer"}


def test_the_per_layer_figure_reads_the_written_maps(tiny, capture, tmp_path):
    import pandas as pd
    from PIL import Image

    from cxr_attention.figures.layers import answer_layer_maps, plot_answer_map_per_layer
    from cxr_attention.maps.shard import write_maps

    _, processor = tiny
    targets = _targets(processor, capture)
    targets += layer_targets(targets[0], capture["layers"])
    results = compute_sample_maps(capture, targets, SampleKey("s"), MapParams())
    write_maps(results, tmp_path / "maps.csv", tmp_path / "maps.npz")
    table = pd.read_csv(tmp_path / "maps.csv", dtype=str, keep_default_na=False)
    with np.load(tmp_path / "maps.npz") as arrays:
        layer_maps = answer_layer_maps(table, dict(arrays), "s")
    assert list(layer_maps) == ["mean of layers", *[f"layer {i}" for i in capture["layers"]]]
    by_id = {record.map_id: grid for record, grid in results}
    np.testing.assert_array_equal(
        layer_maps["mean of layers"], by_id["s__answer__answer__attention"]
    )
    image = (np.random.default_rng(0).random((64, 48)) * 255).astype(np.uint8)
    out = plot_answer_map_per_layer(
        image, layer_maps, title="answer map per layer", out_path=tmp_path / "layers.png"
    )
    assert Image.open(out).size[0] > Image.open(out).size[1]  # one row of panels
