"""The map of each generated token, the cascade's pick marked in ``all``, and reading a
``fallback_reason`` back into its steps (the app's token-conditioned tab reads all three)."""

from __future__ import annotations

import numpy as np
import pytest
from maps_helpers import forced_capture, load_tiny, prompt_inputs

from cxr_attention.maps.cascade import compute_sample_maps, fallback_steps
from cxr_attention.maps.methods.base import VisionSource
from cxr_attention.maps.params import MapParams
from cxr_attention.maps.records import SampleKey
from cxr_attention.maps.registry import LAST_RESORT, METHODS
from cxr_attention.maps.shard import generated_token_maps
from cxr_attention.maps.targets import locate_targets

QUESTION = "Is there a pleural effusion?"
ANSWER = " No pleural effusion is seen."


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    model, processor = load_tiny(tiny_model_dir)
    answer_ids = processor.tokenizer(ANSWER, add_special_tokens=False)["input_ids"]
    capture = forced_capture(model, prompt_inputs(processor, QUESTION), answer_ids)
    return model, processor, capture


def _row_maps(capture) -> tuple[np.ndarray, np.ndarray]:
    """The oracle, by hand: each row's attention to the image tokens averaged over every
    captured layer and head, its sum (the image mass) and the row renormalised on the grid."""
    rows = np.asarray(capture["attention"], dtype=np.float64).mean(axis=(0, 1))
    masses = rows.sum(axis=1)
    return (rows / masses[:, None]).reshape(len(rows), 16, 16), masses


def test_each_generated_token_gets_its_own_rows_attention(tiny):
    _, processor, capture = tiny
    expected, masses = _row_maps(capture)
    maps = generated_token_maps(
        capture, tokenizer=processor.tokenizer, params=MapParams(min_image_mass=0.0)
    )
    assert len(maps) == len(capture["generated_ids"]) == len(expected)
    for index, (record, grid) in enumerate(maps):
        assert record.token_positions == (index,) and record.source == "generated"
        assert record.method == "attention" and record.fallback_reason == ""
        assert record.image_mass == pytest.approx(masses[index], rel=1e-5)
        np.testing.assert_allclose(grid, expected[index], rtol=1e-5, atol=1e-7)
    # the tokens' texts are the answer's text cut at the tokens
    assert "".join(record.term for record, _ in maps) == ANSWER
    assert len({record.map_id for record, _ in maps}) == len(maps)


def test_token_zero_is_the_answers_decision_map(tiny):
    _, processor, capture = tiny
    tokenizer = processor.tokenizer
    (first, grid), *_ = generated_token_maps(capture, tokenizer=tokenizer)
    targets = locate_targets(tokenizer, capture["input_ids"], capture["generated_ids"], [])
    decision, decision_grid = compute_sample_maps(
        capture, targets[:1], SampleKey("s"), MapParams(method="attention")
    )[0]
    assert decision.rows == "decision" and first.method == decision.method == "attention"
    np.testing.assert_array_equal(grid, decision_grid)


def test_a_token_below_min_image_mass_gets_the_uniform_map_with_the_reason(tiny):
    _, processor, capture = tiny
    _, masses = _row_maps(capture)
    threshold = float(np.median(masses))
    assert masses.min() < threshold < masses.max()  # some tokens on each side
    maps = generated_token_maps(
        capture, tokenizer=processor.tokenizer, params={"min_image_mass": threshold}
    )
    for index, (record, grid) in enumerate(maps):
        if masses[index] < threshold:
            assert record.method == LAST_RESORT
            assert record.fallback_reason == (
                f"attention: image mass {masses[index]:.3g} below min_image_mass {threshold:g}"
            )
            np.testing.assert_allclose(grid, np.full((16, 16), 1 / 256), rtol=1e-6)
        else:
            assert record.method == "attention" and record.fallback_reason == ""


def test_all_marks_the_cascades_pick_with_the_cascades_reasons(tiny):
    """The oracle: the cascade mode's own pick of each target, computed apart."""
    model, processor, capture = tiny
    tokenizer = processor.tokenizer
    # effusion generated, pleural too, "lung" in neither (attention skipped: term not found)
    targets = locate_targets(
        tokenizer, capture["input_ids"], capture["generated_ids"], ["effusion", "lung"]
    )
    small = {"ig_steps": 2, "rise_masks": 4, "perturbation_max_rows": 4}

    def maps(method):
        vision = VisionSource(lambda: (model, capture["pixel_values"]), tokenizer=tokenizer)
        params = MapParams(method=method, **small)
        return compute_sample_maps(capture, targets, SampleKey("s"), params, vision=vision)

    picks = {(r.term, r.rows): (r, g) for r, g in maps("cascade") if r.cascade}
    every = maps("all")
    marked = {(r.term, r.rows): (r, g) for r, g in every if r.cascade}
    assert set(marked) == set(picks) == {("", "decision"), ("effusion", "term"), ("lung", "term")}
    for key, (pick, grid) in picks.items():
        record, marked_grid = marked[key]
        assert (record.method, record.fallback_reason) == (pick.method, pick.fallback_reason)
        np.testing.assert_allclose(marked_grid, grid, atol=1e-6)
    lung, _ = marked[("lung", "term")]
    assert lung.method == "gradcam" and lung.fallback_reason == "attention: term not found"
    # the others are unmarked and carry no reason, but the last resort's lists every failure
    for record, _ in every:
        if not record.cascade and record.method != LAST_RESORT:
            assert record.fallback_reason == ""
    (uniform,) = [r for r, _ in every if r.term == "lung" and r.method == LAST_RESORT]
    failed = dict(fallback_steps(uniform.fallback_reason))
    made = {r.method for r, _ in every if r.term == "lung"}
    assert set(failed) == set(METHODS) - made and failed["attention"] == "term not found"


def test_fallback_steps_reads_back_what_the_cascade_joined():
    text = "attention: image mass 0.003 below min_image_mass 0.05; gradcam: model failure: a; b"
    assert fallback_steps(text) == [
        ("attention", "image mass 0.003 below min_image_mass 0.05"),
        ("gradcam", "model failure: a; b"),  # a "; " inside a reason keeps it whole
    ]
    # a name that begins another's (attention, attention_nosink) is read in full
    assert fallback_steps("attention_nosink: term not found; attention: x") == [
        ("attention_nosink", "term not found"),
        ("attention", "x"),
    ]
    assert fallback_steps("") == []
    with pytest.raises(ValueError, match="does not start with 'method: reason'"):
        fallback_steps("something went wrong")
