"""The cascade: every branch reached by a real cause on the tiny model, reasons recorded; forced
and ``all`` methods; the shard runner and the explain writer."""

from __future__ import annotations

import dataclasses
import io
import logging

import numpy as np
import pandas as pd
import pytest
import torch
from maps_helpers import (
    eager_capture,
    forced_capture,
    linearise_vision_tower,
    load_tiny,
    marked_pixels,
    plant_attention,
    plant_sink,
    prompt_inputs,
)

from cxr_attention.maps.cascade import compute_maps, compute_sample_maps
from cxr_attention.maps.grid import clip_for_display, strip_outer_ring
from cxr_attention.maps.methods.base import VisionSource
from cxr_attention.maps.params import MapParams
from cxr_attention.maps.records import MAP_COLUMNS, SampleKey
from cxr_attention.maps.registry import METHODS
from cxr_attention.maps.shard import explain_maps, run_maps_shard, write_maps
from cxr_attention.maps.targets import locate_targets
from cxr_attention.progress import progress_to_console

QUESTION = "Is there a pleural effusion?"
ANSWER = " No pleural effusion is seen."


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return load_tiny(tiny_model_dir)


def _answer_ids(processor, text=ANSWER):
    return processor.tokenizer(text, add_special_tokens=False)["input_ids"]


def _maps(capture, processor, terms, params=None, *, model=None):
    vision = None
    if model is not None:
        vision = VisionSource(
            lambda: (model, capture["pixel_values"]), tokenizer=processor.tokenizer
        )
    targets = locate_targets(
        processor.tokenizer, capture["input_ids"], capture["generated_ids"], terms
    )
    key, params = SampleKey("s", "d", "q"), params or MapParams()
    one_at_a_time = []
    for target in targets:
        one_at_a_time += compute_maps(capture, target, key, params, vision=vision)
    # The batched path (Grad-CAM shared across targets) must give the same maps and reasons.
    results = compute_sample_maps(capture, targets, key, params, vision=_fresh(vision))
    # sink_mass is read off the grid, so it agrees as closely as the grids do
    assert [dataclasses.replace(r, sink_mass=0.0) for r, _ in results] == [
        dataclasses.replace(r, sink_mass=0.0) for r, _ in one_at_a_time
    ]
    for (record, batched), (alone, single) in zip(results, one_at_a_time, strict=True):
        np.testing.assert_allclose(batched, single, rtol=0, atol=1e-6)
        np.testing.assert_allclose(record.sink_mass, alone.sink_mass, rtol=0, atol=1e-4)
    # the answer's decision map under "", its every-row variant under "#all"
    return {(r.term if r.rows != "all" else "#all", r.method): (r, g) for r, g in results}


def _fresh(vision):
    """The same loader without the first run's cached model, pixels or error."""
    return None if vision is None else VisionSource(vision.load, tokenizer=vision.tokenizer)


def _check_map(grid):
    assert grid.dtype == np.float32 and grid.shape == (16, 16)
    assert np.all(np.isfinite(grid)) and np.all(grid >= 0)
    assert grid.sum() == pytest.approx(1.0, abs=1e-5)


def test_forced_capture_equals_a_greedy_generation_capture(tiny):
    model, processor = tiny
    inputs = prompt_inputs(processor, QUESTION)
    generated = eager_capture(model, inputs, max_new_tokens=4)
    forced = forced_capture(model, inputs, generated["generated_ids"])
    np.testing.assert_allclose(forced["attention"], generated["attention"], atol=1e-5)
    np.testing.assert_allclose(forced["text_attention"], generated["text_attention"], atol=1e-5)


def test_generated_prompt_and_absent_terms(tiny):
    model, processor = tiny
    capture = forced_capture(model, prompt_inputs(processor, QUESTION), _answer_ids(processor))
    maps = _maps(capture, processor, ["effusion", "pleural", "fluid"], model=model)
    answer, _ = maps[("", "attention")]
    assert answer.source == "answer" and answer.map_id == "s__answer__answer__attention"
    generated, _ = maps[("effusion", "attention")]
    assert generated.source == "generated" and generated.fallback_reason == ""
    assert 0 < generated.image_mass <= 1
    # The term of the question only: not in the answer -> the term's own attention (the image
    # comes first), or, asked for, the answer gated by the prompt's term.
    question_only = locate_targets(
        processor.tokenizer, capture["input_ids"], capture["generated_ids"][:1], ["effusion"]
    )[2]
    assert question_only.source == "prompt"
    ((own, grid),) = compute_maps(capture, question_only, SampleKey("s"), MapParams())
    assert own.method == "term_attention" and own.fallback_reason == ""
    _check_map(grid)
    params = MapParams(method="gated_answer")
    ((gated, grid),) = compute_maps(capture, question_only, SampleKey("s"), params)
    assert gated.method == "gated_answer"
    assert gated.n_gating_positions == len(question_only.prompt_positions) >= 1
    _check_map(grid)
    # Term in neither: attention is skipped with its reason, Grad-CAM (teacher-forced) serves.
    absent, grid = maps[("fluid", "gradcam")]
    assert absent.source == "absent"
    assert absent.fallback_reason == "attention: term not found"
    _check_map(grid)


def test_non_finite_attention_and_gradients_from_a_broken_weight(tiny_model_dir):
    """A NaN weight in a captured layer (as a bf16 overflow gives) poisons attention and the
    logits: attention -> non-finite values, gradcam -> non-finite gradients, activation_norm."""
    model, processor = load_tiny(tiny_model_dir)
    with torch.no_grad():
        model.model.language_model.layers[4].self_attn.q_norm.weight[0] = float("nan")
    capture = forced_capture(model, prompt_inputs(processor, QUESTION), _answer_ids(processor))
    assert not np.isfinite(capture["attention"]).all()
    maps = _maps(capture, processor, ["effusion"], model=model)
    record, grid = maps[("effusion", "activation_norm")]
    assert record.fallback_reason == (
        "attention: non-finite values; gradcam: gradient failure: non-finite gradients"
    )
    _check_map(grid)


def test_image_mass_below_threshold_from_a_planted_sink(tiny_model_dir):
    model, processor = load_tiny(tiny_model_dir)
    linearise_vision_tower(model)
    plant_attention(model, (3, 4, 5))
    inputs = prompt_inputs(processor, QUESTION)
    inputs["pixel_values"] = marked_pixels([])
    plant_sink(model, int(inputs["input_ids"][0, 1]))
    capture = forced_capture(model, inputs, _answer_ids(processor))
    model_for_gradcam, _ = load_tiny(tiny_model_dir)
    maps = _maps(capture, processor, [], MapParams(min_image_mass=0.01), model=model_for_gradcam)
    record, grid = maps[("", "gradcam")]
    assert record.fallback_reason.startswith("attention: image mass ")
    assert record.fallback_reason.endswith(" below min_image_mass 0.01")
    _check_map(grid)
    # The threshold is the cause: with 0 the attention map is kept, mass recorded.
    relaxed = _maps(capture, processor, [], MapParams(min_image_mass=0.0))
    kept, _ = relaxed[("", "attention")]
    assert kept.image_mass < 0.01


def test_all_zero_gradients_from_a_zero_projector(tiny_model_dir):
    """transformers zero-initialises the projector: images vanish and every vision gradient is 0."""
    model, processor = load_tiny(tiny_model_dir)
    capture = forced_capture(model, prompt_inputs(processor, QUESTION), _answer_ids(processor))
    with torch.no_grad():
        model.model.multi_modal_projector.mm_input_projection_weight.zero_()
    maps = _maps(capture, processor, ["fluid"], model=model)
    record, grid = maps[("fluid", "activation_norm")]
    assert record.fallback_reason == (
        "attention: term not found; gradcam: gradient failure: all-zero gradients"
    )
    assert record.layers == "vision:1"
    _check_map(grid)


def test_uniform_when_nothing_else_works(tiny, caplog):
    model, processor = tiny
    capture = forced_capture(model, prompt_inputs(processor, QUESTION), _answer_ids(processor))
    capture["pixel_values"] = np.full_like(capture["pixel_values"], np.nan)  # a corrupt image
    with caplog.at_level(logging.WARNING, logger="cxr_attention.maps.cascade"):
        maps = _maps(capture, processor, ["fluid"], model=model)
    record, grid = maps[("fluid", "uniform")]
    assert record.fallback_reason == (
        "attention: term not found; gradcam: gradient failure: non-finite gradients; "
        "activation_norm: non-finite values"
    )
    np.testing.assert_array_equal(grid, np.full((16, 16), 1 / 256, dtype=np.float32))
    assert "uniform map for 'fluid'" in caplog.text
    # Without a model at all, the reasons say so.
    no_model = _maps(capture, processor, ["fluid"])
    assert no_model[("fluid", "uniform")][0].fallback_reason == (
        "attention: term not found; gradcam: no model available; "
        "activation_norm: no model available"
    )
    # A forced method that fails falls back to uniform, and is warned about as well.
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="cxr_attention.maps.cascade"):
        forced = _maps(capture, processor, ["fluid"], MapParams(method="gradcam"), model=model)
    assert {method for _, method in forced} == {"uniform"}
    assert "uniform map for 'fluid'" in caplog.text


def test_forced_method_and_all_methods(tiny, caplog):
    model, processor = tiny
    capture = forced_capture(model, prompt_inputs(processor, QUESTION), _answer_ids(processor))
    params = MapParams(method="gradcam", gradcam_layer=0)
    forced = _maps(capture, processor, ["effusion"], params, model=model)
    assert {m for _, m in forced} == {"gradcam"}
    assert forced[("effusion", "gradcam")][0].layers == "vision:0"
    with caplog.at_level(logging.WARNING, logger="cxr_attention.maps.cascade"):
        # the perturbation methods at small sizes: their own tests check them
        small = MapParams(
            method="all",
            ig_steps=2,
            rise_masks=4,
            perturbation_max_rows=4,
            localization_heads=((5, 0), (4, 1)),
        )
        every = _maps(capture, processor, ["effusion"], small, model=model)
    assert "uniform map" not in caplog.text  # asked for, not a last resort: no warning
    # The answer has no prompt term to gate on; the term has one (it is in the question).
    assert {m for t, m in every if t == ""} == set(METHODS) - {"gated_answer", "term_attention"}
    assert {m for t, m in every if t == "effusion"} == set(METHODS)
    uniform_answer, _ = every[("", "uniform")]
    assert uniform_answer.fallback_reason.startswith("term_attention: term not in the prompt")
    for _, grid in every.values():
        _check_map(grid)
    with pytest.raises(ValueError, match="unknown map method"):
        MapParams(method="saliency")


def test_strip_border_and_display_clipping(tiny):
    model, processor = tiny
    capture = forced_capture(model, prompt_inputs(processor, QUESTION), _answer_ids(processor))
    plain = _maps(capture, processor, [])[("", "attention")][1]
    stripped = _maps(capture, processor, [], MapParams(strip_border=1))[("", "attention")][1]
    assert stripped[0].sum() == stripped[-1].sum() == stripped[:, 0].sum() == 0
    np.testing.assert_allclose(stripped, strip_outer_ring(plain), rtol=1e-6)
    _check_map(stripped)
    shown = clip_for_display(plain)
    assert shown.min() == 0 and shown.max() == 1
    lower, upper = np.percentile(plain, [2, 98])
    np.testing.assert_allclose(
        shown, (np.clip(plain, lower, upper) - lower) / (upper - lower), rtol=1e-5
    )
    assert plain.sum() == pytest.approx(1.0, abs=1e-5)  # the stored map is never clipped


def _write_capture(path, capture):
    """As the workflow stores captures: float16 attention, no pixel values."""
    arrays = {k: v for k, v in capture.items() if k != "pixel_values"}
    for key in ("attention", "text_attention"):
        arrays[key] = arrays[key].astype(np.float16)
    np.savez_compressed(path, **arrays)


def test_run_maps_shard(tiny, tiny_model_dir, tmp_path, monkeypatch):
    from PIL import Image

    model, processor = tiny
    captures = tmp_path / "inference" / "shard-0"
    captures.mkdir(parents=True)
    image = (np.random.default_rng(0).random((320, 256)) * 255).astype(np.uint8)
    image_path = tmp_path / "d1.png"
    Image.fromarray(image).save(image_path)
    inputs = prompt_inputs(processor, QUESTION)
    capture = forced_capture(model, inputs, _answer_ids(processor))
    _write_capture(captures / "d1__q1.npz", capture)
    (captures / "d1__q2.npz").write_bytes(b"not an npz")
    answers = pd.DataFrame(
        {
            "sample_id": ["d1__q1", "d1__q2", "d2__q1"],
            "dicom_id": ["d1", "d1", "d2"],
            "question_id": ["q1", "q2", "q1"],
            "capture": [str(captures / f"{s}.npz") for s in ("d1__q1", "d1__q2", "d2__q1")],
        }
    )
    answers.to_csv(tmp_path / "answers.csv", index=False)
    pd.DataFrame({"dicom_id": ["d1"], "image": [str(image_path)]}).to_csv(
        tmp_path / "images.csv", index=False
    )
    pd.DataFrame(
        {"question_id": ["q1", "q2"], "target_terms": ["effusion|fluid", "effusion"]}
    ).to_csv(tmp_path / "questions.csv", index=False)
    loads = []
    import cxr_attention.inference.model as inference_model

    real_load = inference_model.load_model
    monkeypatch.setattr(
        inference_model, "load_model", lambda *a, **k: loads.append(a) or real_load(*a, **k)
    )
    outputs = dict(
        out_csv=tmp_path / "maps.csv",
        out_npz=tmp_path / "maps.npz",
        failures_csv=tmp_path / "maps.failures.csv",
    )
    console = io.StringIO()
    with progress_to_console("maps/000", stream=console):
        run_maps_shard(
            answers_csv=tmp_path / "answers.csv",
            captures_dir=captures,
            questions_csv=tmp_path / "questions.csv",
            model_id=tiny_model_dir,
            images_csv=tmp_path / "images.csv",
            # The workflow's config: strip_border is a boolean there; reference_compat is left to
            # its own rule and must not change these maps.
            params={"device": "cpu", "strip_border": False, "reference_compat": True, "seed": 0},
            **outputs,
        )
    # Progress reaches the console, failed samples counted too.
    assert console.getvalue().splitlines()[-1].startswith("[maps/000] INFO maps: 3/3 samples")
    everything = pd.read_csv(outputs["out_csv"], dtype=str, keep_default_na=False)
    assert list(everything.columns) == MAP_COLUMNS
    # every method of maps.methods (the schema's default; the peers' costlier methods are opted
    # into) for the answer
    from cxr_attention.settings import schema_defaults

    answer = everything[(everything["source"] == "answer") & (everything["rows"] == "decision")]
    default_methods = set(schema_defaults()["maps"]["methods"])
    assert set(answer.loc[answer["per_layer"] == "False", "method"]) == default_methods - {
        "gated_answer",
        "term_attention",
    }
    assert answer["per_layer"].tolist().count("True") == 3  # one per captured layer
    table = everything[everything["cascade"] == "True"].reset_index(drop=True)
    corrected = _maps(capture, processor, [])[("", "attention")][0]
    assert float(table["image_mass"][0]) == pytest.approx(corrected.image_mass, rel=1e-3)
    assert table["method"].tolist() == ["attention", "attention", "gradcam"]
    assert table["term"].tolist() == ["", "effusion", "fluid"]
    assert table["counterfactual"].tolist() == ["False", "False", "True"]
    assert len(loads) == 1  # loaded lazily, once, for the absent term's Grad-CAM
    with np.load(outputs["out_npz"]) as arrays:
        assert sorted(arrays.files) == sorted(everything["map_id"])
        for name in arrays.files:
            _check_map(arrays[name])
        # Pixels rebuilt from the preprocessed image equal the ones the model saw.
        direct = explain_maps(
            capture,
            terms=["fluid"],
            tokenizer=processor.tokenizer,
            loaded_model=_Loaded(model, processor),
        )
        assert direct[2][0].map_id == "explain__fluid__absent__gradcam"
        np.testing.assert_allclose(arrays[table["map_id"][2]], direct[2][1], rtol=1e-4)
    failures = pd.read_csv(outputs["failures_csv"], dtype=str, keep_default_na=False)
    assert failures["stage"].tolist() == ["maps", "maps"]
    assert failures["error_type"].tolist() == ["bad_capture", "missing_capture"]


class _Loaded:
    def __init__(self, model, processor):
        self.model, self.processor = model, processor

    @property
    def tokenizer(self):
        return self.processor.tokenizer


def test_explain_maps_and_write_maps(tiny, tmp_path):
    model, processor = tiny
    capture = forced_capture(model, prompt_inputs(processor, QUESTION), _answer_ids(processor))
    results = explain_maps(
        capture,
        terms=["effusion", "fluid"],
        loaded_model=_Loaded(model, processor),
        method="all",
    )
    write_maps(results, tmp_path / "maps.csv", tmp_path / "maps.npz")
    table = pd.read_csv(tmp_path / "maps.csv", dtype=str, keep_default_na=False)
    assert {"map_id", "term", "method", "fallback_reason", "image_mass"} <= set(table.columns)
    with np.load(tmp_path / "maps.npz") as arrays:
        assert sorted(arrays.files) == sorted(table["map_id"])
        assert all(arrays[k].dtype == np.float32 for k in arrays.files)
    # Rerun: identical bytes of the table (determinism).
    first = (tmp_path / "maps.csv").read_bytes()
    write_maps(
        explain_maps(
            capture,
            terms=["effusion", "fluid"],
            loaded_model=_Loaded(model, processor),
            method="all",
        ),
        tmp_path / "maps.csv",
        tmp_path / "maps.npz",
    )
    assert (tmp_path / "maps.csv").read_bytes() == first


def test_maps_from_the_inference_capture_equal_the_eager_oracle(tiny_model_dir):
    """Contract check: the inference stage's capture feeds the cascade and gives the maps of an
    independent eager-attention capture of the same greedy generation."""
    from cxr_attention.inference.batching import capture_answers
    from cxr_attention.inference.model import load_model

    loaded = load_model(tiny_model_dir, device="cpu")
    image = (np.random.default_rng(0).random((320, 256)) * 255).astype(np.uint8)
    (captured,) = capture_answers(
        loaded.model,
        loaded.processor,
        image,
        [QUESTION],
        image_first=True,
        include_pixel_values=True,
        layers=3,
        max_new_tokens=4,
        batch_size=1,
        share=True,
        prompt_image_rows="all",
    )
    keys = (
        "attention",
        "text_attention",
        "layers",
        "input_ids",
        "generated_ids",
        "image_token_positions",
        "prompt_image_attention",
        "pixel_values",
    )
    capture = {key: np.asarray(getattr(captured, key)) for key in keys}
    results = explain_maps(capture, terms=["effusion"], loaded_model=loaded)
    assert [(r.source, r.method, r.rows) for r, _ in results] == [
        ("answer", "attention", "decision"),
        ("answer", "attention", "all"),
        ("prompt", "term_attention", "term"),
        *[("answer", "attention", "decision")] * 3,  # one per captured layer
    ]
    model, processor = load_tiny(tiny_model_dir)
    oracle = eager_capture(model, prompt_inputs(processor, QUESTION), max_new_tokens=4)
    np.testing.assert_array_equal(oracle["generated_ids"], capture["generated_ids"])
    expected = explain_maps(oracle, terms=["effusion"], tokenizer=processor.tokenizer)
    for (record, grid), (oracle_record, oracle_grid) in zip(results, expected, strict=True):
        assert record.token_positions == oracle_record.token_positions
        assert record.image_mass == pytest.approx(oracle_record.image_mass, abs=1e-5)
        np.testing.assert_allclose(grid, oracle_grid, atol=1e-5)


def test_terms_with_one_slug_make_one_target(tiny):
    _, processor = tiny
    ids = processor.tokenizer(QUESTION, add_special_tokens=False)["input_ids"]
    terms = ["pleural effusion", "Pleural-Effusion", "answer", " ", "effusion"]
    targets = locate_targets(processor.tokenizer, ids, ids[:2], terms)
    assert [(t.term, t.source) for t in targets] == [
        ("", "answer"),
        ("", "answer"),
        ("pleural effusion", "prompt"),
        ("effusion", "prompt"),
    ]


def test_run_maps_shard_rebuilds_an_images_pixels_once(tiny, tiny_model_dir, tmp_path, monkeypatch):
    from PIL import Image

    from cxr_attention.maps import shard

    model, processor = tiny
    captures = tmp_path / "captures"
    captures.mkdir()
    capture = forced_capture(model, prompt_inputs(processor, QUESTION), _answer_ids(processor))
    rng = np.random.default_rng(1)
    for dicom_id in ("d1", "d2"):
        image = (rng.random((320, 256)) * 255).astype(np.uint8)
        Image.fromarray(image).save(tmp_path / f"{dicom_id}.png")
    # Two questions about d1, then one about d2: "fluid" is absent, so each needs Grad-CAM.
    sample_ids = ["d1__q1", "d1__q2", "d2__q1"]
    for sample_id in sample_ids:
        _write_capture(captures / f"{sample_id}.npz", capture)
    pd.DataFrame(
        {
            "sample_id": sample_ids,
            "dicom_id": ["d1", "d1", "d2"],
            "question_id": ["q1", "q2", "q1"],
            "capture": [str(captures / f"{s}.npz") for s in sample_ids],
        }
    ).to_csv(tmp_path / "answers.csv", index=False)
    pd.DataFrame(
        {"dicom_id": ["d1", "d2"], "image": [str(tmp_path / "d1.png"), str(tmp_path / "d2.png")]}
    ).to_csv(tmp_path / "images.csv", index=False)
    pd.DataFrame({"question_id": ["q1", "q2"], "target_terms": ["fluid", "fluid"]}).to_csv(
        tmp_path / "questions.csv", index=False
    )
    rebuilt = []
    real_pixels = shard._pixels_from_image

    def counting(processor, image_path):
        rebuilt.append(image_path)
        return real_pixels(processor, image_path)

    monkeypatch.setattr(shard, "_pixels_from_image", counting)
    run_maps_shard(
        answers_csv=tmp_path / "answers.csv",
        captures_dir=captures,
        questions_csv=tmp_path / "questions.csv",
        model_id=tiny_model_dir,
        images_csv=tmp_path / "images.csv",
        params={"device": "cpu"},
        out_csv=tmp_path / "maps.csv",
        out_npz=tmp_path / "maps.npz",
        failures_csv=tmp_path / "maps.failures.csv",
    )
    assert rebuilt == [str(tmp_path / "d1.png"), str(tmp_path / "d2.png")]
    table = pd.read_csv(tmp_path / "maps.csv", dtype=str, keep_default_na=False)
    fluid = table[(table["term"] == "fluid") & (table["cascade"] == "True")]
    assert fluid["method"].tolist() == ["gradcam"] * 3
    with np.load(tmp_path / "maps.npz") as arrays:
        d1_q1, d1_q2, d2_q1 = (arrays[m] for m in fluid["map_id"])
    np.testing.assert_array_equal(d1_q1, d1_q2)  # the same pixels, reused
    assert not np.allclose(d1_q1, d2_q1)  # the other image's own pixels


def test_batched_gradcam_keeps_each_targets_failure_reason(tiny_model_dir):
    """Three absent terms of different token lengths reach Grad-CAM together; with a zeroed
    projector every row fails alone and each falls on to activation_norm with its own reason
    (``_maps`` also checks the batched path against one target at a time)."""
    model, processor = load_tiny(tiny_model_dir)
    capture = forced_capture(model, prompt_inputs(processor, QUESTION), _answer_ids(processor))
    terms = ["fluid", "consolidation", "pneumothorax"]
    lengths = {len(_answer_ids(processor, term)) for term in terms}
    working = _maps(capture, processor, terms, model=model)
    for term in terms:
        record, grid = working[(term, "gradcam")]
        assert record.fallback_reason == "attention: term not found"
        _check_map(grid)
    with torch.no_grad():
        model.model.multi_modal_projector.mm_input_projection_weight.zero_()
    failing = _maps(capture, processor, terms, model=model)
    for term in terms:
        record, _ = failing[(term, "activation_norm")]
        assert record.fallback_reason == (
            "attention: term not found; gradcam: gradient failure: all-zero gradients"
        )
    assert len(lengths) >= 2, lengths


def test_gradcam_max_rows_splits_the_batched_passes(tiny, monkeypatch):
    """``maps.gradcam_max_rows`` reaches the batched Grad-CAM; passes of 2 rows give the maps of
    one target at a time (checked by ``_maps``) and of the default single pass."""
    from cxr_attention.maps.gradcam import VisionGradCAM

    model, processor = tiny
    capture = forced_capture(model, prompt_inputs(processor, QUESTION), _answer_ids(processor))
    terms = ["fluid", "consolidation", "pneumothorax"]
    passes = []
    original = VisionGradCAM._patch_cams

    def counting(self, input_ids, pixels, requests, *args, **kwargs):
        passes.append(len(requests))
        return original(self, input_ids, pixels, requests, *args, **kwargs)

    monkeypatch.setattr(VisionGradCAM, "_patch_cams", counting)
    params = MapParams.from_dict({"gradcam_max_rows": "2"})
    assert params.gradcam_max_rows == 2
    split = _maps(capture, processor, terms, params, model=model)
    assert max(passes) == 2 and passes.count(2) == 1  # 3 targets batched: passes of 2 and 1
    passes.clear()
    whole = _maps(capture, processor, terms, model=model)
    assert max(passes) == 3  # the default: all 3 in one pass
    for term in terms:
        np.testing.assert_allclose(
            split[(term, "gradcam")][1], whole[(term, "gradcam")][1], rtol=0, atol=1e-6
        )
    with pytest.raises(ValueError, match="gradcam_max_rows"):
        MapParams(gradcam_max_rows=0)
