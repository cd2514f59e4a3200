"""The reference study's way of computing maps and metrics (``reference_compat``, never default).

Oracles: hand-built captures whose 1:257 slice and weighted grid are computed by explicit loops
here; the reference's defects checked on maps whose answer is known (a map in one corner cell, a
map inside the token mask); a tiny Gemma 3 whose weights plant an attention sink on prompt
position 1 (a marker in ``<start_of_turn>``'s embedding read by the captured layers' key and query
projections); and real radiographs with hand-drawn lung masks.
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from cxr_attention.maps.attention import attention_map
from cxr_attention.maps.grid import MapUnavailable
from cxr_attention.metrics.per_map import map_metrics
from cxr_attention.reference.attention import (
    reference_attention_grid,
    reference_image_slice,
    reference_layer_weights,
    reference_rows,
)
from cxr_attention.reference.masks import (
    model_view_side,
    reference_body_mask,
    reference_model_view,
)
from cxr_attention.reference.metrics import reference_map_metrics
from cxr_attention.reference.shard import (
    REFERENCE_COMPAT_COLUMNS,
    corrected_answer_metrics,
    run_reference_compat_shard,
)

# --------------------------------------------------------------------------- hand-built captures

PROMPT_LEN = 300
IMAGE_START = 20  # image tokens at 20..275, so positions 1:257 hold 19 text tokens and 237 image


def _synthetic_capture(seed: int = 0, n_layers: int = 3, n_generated: int = 7) -> dict:
    """Random softmax rows over the prompt, split into the capture's two arrays."""
    rng = np.random.default_rng(seed)
    rows = rng.random((n_layers, 8, n_generated, PROMPT_LEN)) ** 4
    rows /= rows.sum(-1, keepdims=True) * 1.25  # the rest would go to generated keys
    positions = np.arange(IMAGE_START, IMAGE_START + 256)
    text = rows.copy()
    text[..., positions] = 0.0
    return {
        "attention": rows[..., positions],
        "text_attention": text,
        "image_token_positions": positions,
        "layers": np.array([10, 11, 12][-n_layers:]),
        "_full": rows,
    }


def test_rows_and_layer_weights_follow_the_reference():
    # Re-run rows prompt_len .. prompt_len + 4 are the queries at generated tokens 0..4.
    assert reference_rows(1) == []
    assert reference_rows(2) == [1]
    assert reference_rows(4) == [1, 2, 3]
    assert reference_rows(20) == [1, 2, 3, 4, 5]
    np.testing.assert_allclose(reference_layer_weights(3), [4 / 7, 2 / 7, 1 / 7])
    np.testing.assert_allclose(reference_layer_weights(1), [1.0])


def test_image_slice_is_positions_1_to_257_with_the_reference_layer_weights():
    capture = _synthetic_capture()
    full = capture["_full"]
    expected = np.zeros((full.shape[2], 256))
    weights = [4 / 7, 2 / 7, 1 / 7]
    for row in range(full.shape[2]):
        for layer in range(3):
            head_mean = full[layer, :, row, 1:257].mean(axis=0)
            expected[row] += weights[layer] * head_mean / head_mean.sum()
    np.testing.assert_allclose(reference_image_slice(capture), expected, rtol=1e-12)


def test_reference_grid_sums_rows_then_normalises_each_layer():
    capture = _synthetic_capture(seed=1)
    full = capture["_full"]
    gate_positions = [3, 4]
    grid = np.zeros(256)
    for layer, weight in zip(range(3), [4 / 7, 2 / 7, 1 / 7], strict=True):
        accumulated = np.zeros(256)
        for row in [1, 2, 3, 4, 5]:
            head_mean = full[layer, :, row].mean(axis=0)
            gate = head_mean[gate_positions].sum() / head_mean[:PROMPT_LEN].sum()
            accumulated += gate * head_mean[1:257]
        grid += weight * accumulated / accumulated.sum()
    result = reference_attention_grid(capture, gate_positions=gate_positions)
    assert result.shape == (16, 16)
    np.testing.assert_allclose(result.ravel(), grid, rtol=1e-12)
    assert result.sum() == pytest.approx(1.0)
    # Without a term the gate is the same constant for every row: a plain sum of rows.
    ungated = np.zeros(256)
    for layer, weight in zip(range(3), [4 / 7, 2 / 7, 1 / 7], strict=True):
        accumulated = full[layer, :, 1:6, 1:257].mean(axis=0).sum(axis=0)
        ungated += weight * accumulated / accumulated.sum()
    np.testing.assert_allclose(reference_attention_grid(capture).ravel(), ungated, rtol=1e-12)


def test_reference_grid_needs_a_generated_position():
    with pytest.raises(MapUnavailable, match="one token"):
        reference_attention_grid(_synthetic_capture(n_generated=1))


# --------------------------------------------------------------------------- reference metrics


def test_reference_inside_body_of_the_batch_runner_is_one_for_any_map():
    # compute_attention_metrics multiplies by the token mask and renormalises before summing.
    rng = np.random.default_rng(3)
    mask = np.ones((896, 896), bool)
    for _ in range(5):
        grid = rng.random((16, 16)) ** 6
        grid /= grid.sum()
        metrics = reference_map_metrics(grid, mask)
        assert metrics["ref_inside_body_batch"] == pytest.approx(1.0, abs=1e-7)
    # Even a map with 99.9% of its mass on the masked-out frame reads 1 (up to the 1e-8 guard:
    # 144 interior cells of 1e-3 / 255 each give 1 - 1.8e-5).
    corner = np.full((16, 16), 1e-3 / 255)
    corner[0, 0] = 1.0 - corner[1:].sum() - corner[0, 1:].sum()
    assert reference_map_metrics(corner, mask)["ref_inside_body_batch"] == pytest.approx(
        1.0, abs=1e-4
    )
    assert reference_map_metrics(corner, mask)["ref_inside_body"] == pytest.approx(1.0)


def test_reference_runner_metrics_known_answers():
    grid = np.zeros((16, 16))
    grid[0, 0] = 0.75  # the sink cell
    grid[8, 8] = 0.25
    everywhere = np.ones((64, 64), bool)
    metrics = reference_map_metrics(grid, everywhere)
    assert metrics["ref_first_cell_mass"] == pytest.approx(0.75)
    assert metrics["ref_inside_body"] == pytest.approx(1.0)
    assert metrics["ref_focus"] == pytest.approx(0.75)
    # The corner cell is in the top row and in the left column: counted twice.
    assert metrics["ref_border_fraction"] == pytest.approx(1.5)
    # Entropy of (0.75, 0.25) in nats (the +1e-10 per cell moves it by < 1e-7).
    expected = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert metrics["ref_entropy"] == pytest.approx(expected, abs=1e-6)
    # A mask without the corner: inside-body is the mass left, focus the unnormalised largest cell.
    no_corner = everywhere.copy()
    no_corner[:16, :16] = False
    metrics = reference_map_metrics(grid, no_corner)
    assert metrics["ref_inside_body"] == pytest.approx(0.25)
    assert metrics["ref_focus"] == pytest.approx(0.25)
    assert metrics["ref_entropy"] == pytest.approx(0.0, abs=1e-6)
    # Its validity check rejected near-uniform maps (entropy > 0.95 log 256).
    assert reference_map_metrics(np.full((16, 16), 1 / 256), everywhere)["ref_valid"] == 0.0
    assert reference_map_metrics(grid, everywhere)["ref_valid"] == 1.0


# --------------------------------------------------------------------------- body mask


def test_model_view_truncates_twice():
    # Bytes by truncation after a float round trip, then grey weights summing to 0.9999.
    for value, seen in [(0, 0), (100, 99), (128, 127), (255, 254)]:
        view = reference_model_view(np.full((30, 40), value, np.uint8), side=64)
        assert view.shape == (64, 64)
        assert np.unique(view).tolist() == [seen]


def test_inverted_otsu_keeps_the_dark_background_of_a_bright_body():
    image = np.full((400, 400), 20, np.uint8)  # outside air
    cv2.ellipse(image, (200, 220), (120, 160), 0, 0, 360, 200, -1)  # the patient, bright
    inside = np.zeros_like(image, bool)
    cv2.ellipse(inside.view(np.uint8), (200, 220), (120, 160), 0, 0, 360, 1, -1)
    mask = reference_body_mask(image)
    assert mask.dtype == bool and mask.shape == image.shape
    assert mask[inside].mean() == 0.0  # nothing of the body
    assert mask[~inside].mean() > 0.85  # most of the air (the erosion trims its edges)


LUNG_MASK_CASES = [
    "mcu_MCUCXR_0060_0_512sq",
    "mcu_MCUCXR_0113_1_512sq",
    "mcu_MCUCXR_0251_1_512sq",
    "mcu_MCUCXR_0399_1_512sq",
    "mhh_1d435a4b_2000px",
    "mhh_2168a917_2000px",
    "mhh_2c35005f_2000px",
    "mhh_4d98e1de_2000px",
]


@pytest.mark.parametrize("name", LUNG_MASK_CASES)
def test_reference_mask_on_real_radiographs_is_air_and_lung(real_cxr: Path, name: str):
    """Against hand-drawn lung masks and the project's body mask, on the 896 model view.

    Measured on these eight films (2026-11-26): 82-97% of the reference mask is lung or outside
    air, it holds 95-100% of the outside air, 2-24% of the body outside the lungs and 48-72% of
    the lungs, while the project's body mask holds 89-100% of the lungs.
    """
    from cxr_attention.preprocess.masks import body_mask

    folder = real_cxr / "lung_masks"
    image_path = next((folder / "images").glob(f"{name}.*"))
    image = cv2.imread(str(image_path), cv2.IMREAD_GRAYSCALE)
    lungs = cv2.imread(str(folder / "masks" / f"{name}_lungmask.png"), cv2.IMREAD_GRAYSCALE) > 0
    height, width = image.shape
    reference = reference_body_mask(reference_model_view(image))
    reference = (
        cv2.resize(reference.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST) > 0
    )
    body = body_mask(image)
    outside = ~body

    air_or_lung = (reference & (lungs | outside)).sum() / reference.sum()
    assert air_or_lung > 0.75
    non_lung_body = body & ~lungs
    assert (reference & non_lung_body).sum() / non_lung_body.sum() < 0.35
    if outside.mean() > 0.01:
        assert (reference & outside).sum() / outside.sum() > 0.9
    reference_lung_cover = (reference & lungs).sum() / lungs.sum()
    project_lung_cover = (body & lungs).sum() / lungs.sum()
    assert reference_lung_cover < 0.8
    assert project_lung_cover > 0.85


# --------------------------------------------------------------------------- planted sink

_CONSTANT_DIM, _MARKER_DIM = 0, 1
# The head dimension whose RoPE pair turns slowest, so that q.k barely depends on the distance.
_SINK_ROPE_DIM = 7


def _plant_sink_at_position_one(model, processor, captured_layers) -> None:
    """Make the captured layers attend to ``<start_of_turn>`` (prompt position 1) by weights alone.

    Every text embedding gets a constant in one hidden dimension and ``<start_of_turn>`` a marker
    in another; no layer writes either dimension (their rows of ``o_proj`` and ``down_proj`` are
    zero, the projector gives image tokens 0 there). In the captured layers one query dimension
    per head reads the constant and one key dimension per KV head reads the marker, so every
    query meets a large key on ``<start_of_turn>`` only (also on the second one, before
    ``model``, which lies after the image and outside positions 1:257).
    """
    import torch

    language_model = model.model.language_model
    start_of_turn = processor.tokenizer.convert_tokens_to_ids("<start_of_turn>")
    config = model.config.get_text_config()
    head_dim = config.head_dim
    with torch.no_grad():
        embeddings = language_model.embed_tokens.weight
        embeddings[:, _CONSTANT_DIM] = 10.0
        embeddings[:, _MARKER_DIM] = 0.0
        embeddings[start_of_turn, _MARKER_DIM] = 10.0
        projector = model.model.multi_modal_projector.mm_input_projection_weight
        projector[:, [_CONSTANT_DIM, _MARKER_DIM]] = 0.0
        for layer in language_model.layers:
            layer.self_attn.o_proj.weight[[_CONSTANT_DIM, _MARKER_DIM], :] = 0.0
            layer.mlp.down_proj.weight[[_CONSTANT_DIM, _MARKER_DIM], :] = 0.0
        for index in captured_layers:
            attention = language_model.layers[index].self_attn
            for head in range(config.num_attention_heads):
                row = head * head_dim + _SINK_ROPE_DIM
                attention.q_proj.weight[row, :] = 0.0
                attention.q_proj.weight[row, _CONSTANT_DIM] = 1.0
            for group in range(config.num_key_value_heads):
                row = group * head_dim + _SINK_ROPE_DIM
                attention.k_proj.weight[row, :] = 0.0
                attention.k_proj.weight[row, _MARKER_DIM] = 1.0
            attention.q_norm.weight[_SINK_ROPE_DIM] = 1.0
            attention.k_norm.weight[_SINK_ROPE_DIM] = 1.0


def _captures(model_dir: Path, *, plant: bool) -> list[dict]:
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from cxr_attention.attention_hooks import last_layers
    from cxr_attention.inference.batching import capture_answers
    from cxr_attention.inference.writing import capture_arrays

    processor = AutoProcessor.from_pretrained(model_dir)
    model = AutoModelForImageTextToText.from_pretrained(model_dir).eval()
    layers = last_layers(model, 3)
    if plant:
        _plant_sink_at_position_one(model, processor, layers)
    image = (np.add.outer(np.arange(300), 2 * np.arange(280)) % 256).astype(np.uint8)
    captures = capture_answers(
        model,
        processor,
        image,
        ["Is there a pleural effusion?", "Is there cardiomegaly?"],
        image_first=False,  # the question before the image, as the reference did
        layers=layers,
        max_new_tokens=6,
        batch_size=2,
        share=True,
        prompt_image_rows="all",
    )
    image_token_id = model.config.image_token_id
    arrays = [capture_arrays(c, dtype=np.float32) for c in captures]
    for capture in arrays:
        capture["image_token_id"] = np.array(image_token_id)
    return arrays


@pytest.fixture(scope="module")
def sink_captures(tiny_model_dir: Path) -> list[dict]:
    return _captures(tiny_model_dir, plant=True)


def test_planted_sink_reproduces_the_reference_symptom(sink_captures):
    for capture in sink_captures:
        n_generated = capture["attention"].shape[2]
        assert n_generated >= 2  # the reference's rows exist
        # The default pipeline's image tokens are where input_ids holds the image token.
        found = np.flatnonzero(capture["input_ids"] == capture["image_token_id"])
        np.testing.assert_array_equal(capture["image_token_positions"], found)
        assert found[0] > 1 and found[-1] > 256  # not positions 1:257
        # The sink is real, in the captured probabilities: position 1 outweighs the whole image.
        corrected = corrected_answer_metrics(
            attention_map(capture["attention"], range(n_generated)), capture, None
        )
        assert corrected["sink_mass"] > 0.3
        assert corrected["sink_mass"] > 5 * corrected["image_mass"]
        # The reference's map: most "image" mass in the first grid cell (its own runs: 69-73%).
        grid = reference_attention_grid(capture)
        assert grid.ravel()[0] > 0.5
        assert grid.ravel()[0] == grid.max()
        # Per row too, from the slice of positions 1:257.
        per_row = reference_image_slice(capture)[reference_rows(n_generated)]
        assert np.all(per_row[:, 0] > 0.5)
        # The corrected answer map does not show it: cell 0 holds about 1/256 of the mass.
        assert corrected["first_cell_mass"] < 0.02
        assert corrected["focus_max"] < 0.05
        # The reference's metrics of that map, with a mask that excludes the sink cell's corner.
        mask = np.ones((896, 896), bool)
        mask[:120, :120] = False
        metrics = reference_map_metrics(grid, mask)
        assert metrics["ref_inside_body"] < 0.5  # the sink's mass is "outside the body"
        assert metrics["ref_inside_body_batch"] == pytest.approx(1.0, abs=1e-6)


def test_without_the_sink_the_first_cell_is_not_dominant(tiny_model_dir: Path):
    for capture in _captures(tiny_model_dir, plant=False):
        grid = reference_attention_grid(capture)
        assert grid.ravel()[0] < 0.5


# --------------------------------------------------------------------------- shard


def test_shard_writes_reference_and_corrected_numbers_side_by_side(
    tmp_path: Path, tiny_model_dir: Path, sink_captures
):
    captures_dir = tmp_path / "inference" / "shard-0"
    captures_dir.mkdir(parents=True)
    images_dir = tmp_path / "preprocess"
    images_dir.mkdir()
    image = np.full((300, 280), 30, np.uint8)
    cv2.ellipse(image, (140, 160), (100, 120), 0, 0, 360, 210, -1)
    body = np.zeros_like(image)
    cv2.ellipse(body, (140, 160), (100, 120), 0, 0, 360, 255, -1)
    cv2.imwrite(str(images_dir / "d1.png"), image)
    cv2.imwrite(str(images_dir / "d1_body.png"), body)
    answers = []
    for index, capture in enumerate(sink_captures):
        sample_id = f"d1__q.{index}"
        np.savez_compressed(captures_dir / f"{sample_id}.npz", **capture)
        answers.append({"sample_id": sample_id, "dicom_id": "d1", "question_id": f"q.{index}"})
    # A one-token answer: the reference re-run has no generated position, ours has row 0.
    short = dict(sink_captures[0])
    for key in ("attention", "text_attention"):
        short[key] = short[key][:, :, :1]
    short["generated_ids"] = short["generated_ids"][:1]
    np.savez_compressed(captures_dir / "d1__short.npz", **short)
    answers.append({"sample_id": "d1__short", "dicom_id": "d1", "question_id": "short"})
    answers.append({"sample_id": "d1__missing", "dicom_id": "d1", "question_id": "missing"})
    pd.DataFrame(answers).to_csv(tmp_path / "answers.csv", index=False)
    pd.DataFrame(
        [{"dicom_id": "d1", "image": "preprocess/d1.png", "body_mask": "preprocess/d1_body.png"}]
    ).to_csv(tmp_path / "preprocess.csv", index=False)
    maps_csv, maps_npz = _maps_stage(tmp_path, captures_dir, tiny_model_dir, {})
    out = tmp_path / "reference_compat" / "shard-0.csv"

    run_reference_compat_shard(
        answers_csv=tmp_path / "answers.csv",
        captures_dir=captures_dir,
        preprocess_csv=tmp_path / "preprocess.csv",
        maps_csv=maps_csv,
        maps_npz=maps_npz,
        out_csv=out,
        params={"root": tmp_path, "model_id": str(tiny_model_dir)},
    )

    table = pd.read_csv(out)
    assert list(table.columns) == REFERENCE_COMPAT_COLUMNS
    assert table["sample_id"].tolist() == [a["sample_id"] for a in answers]
    assert model_view_side(tiny_model_dir) == 448  # the tiny processor's side, read from its folder
    assert model_view_side("google/medgemma-4b-it") == 896  # a hub id: MedGemma's 896
    reference_mask = reference_body_mask(reference_model_view(image, side=448))
    for index, capture in enumerate(sink_captures):
        row = table.iloc[index]
        expected = reference_map_metrics(reference_attention_grid(capture), reference_mask)
        for key, value in expected.items():
            assert row[key] == pytest.approx(value, rel=1e-6, abs=1e-9)
        # With the default settings the stored (headline) answer map is the decision step's: the
        # mean over every captured layer and head of generated row 0, computed here independently
        # of the maps stage.
        corrected = corrected_answer_metrics(
            attention_map(capture["attention"], [0]), capture, body > 0
        )
        for key, value in corrected.items():
            assert row[key] == pytest.approx(value, rel=1e-6, abs=1e-9)
        assert row["ref_first_cell_mass"] > 0.5 > row["first_cell_mass"]
    # The inverted mask is the air around the ellipse: it holds none of the body.
    assert not (reference_mask & (cv2.resize(body, (448, 448)) > 0)).any()
    short_row = table.iloc[-2]
    assert np.isnan(short_row["ref_entropy"]) and np.isfinite(short_row["entropy"])
    assert table.iloc[-1][["ref_entropy", "entropy"]].isna().all()
    failures = pd.read_csv(out.with_name("shard-0.failures.csv"))
    assert failures["error_type"].tolist() == ["reference_map_unavailable", "missing_capture"]
    assert failures["stage"].tolist() == ["reference_compat"] * 2


def test_shard_records_a_truncated_capture_and_goes_on(tmp_path: Path):
    # A capture cut short by a crash is a zip with no central directory: numpy raises
    # zipfile.BadZipFile, which must become a failures row, not end the shard.
    captures_dir = tmp_path / "captures"
    captures_dir.mkdir()
    buffer = tmp_path / "whole.npz"
    np.savez_compressed(buffer, **_synthetic_capture())
    (captures_dir / "d1__cut.npz").write_bytes(buffer.read_bytes()[:200])
    image = np.full((64, 64), 30, np.uint8)
    cv2.imwrite(str(tmp_path / "d1.png"), image)
    cv2.imwrite(str(tmp_path / "d1_body.png"), np.full_like(image, 255))
    pd.DataFrame([{"sample_id": "d1__cut", "dicom_id": "d1", "question_id": "cut"}]).to_csv(
        tmp_path / "answers.csv", index=False
    )
    pd.DataFrame([{"dicom_id": "d1", "image": "d1.png", "body_mask": "d1_body.png"}]).to_csv(
        tmp_path / "preprocess.csv", index=False
    )
    out = tmp_path / "shard-0.csv"
    maps_csv, maps_npz = tmp_path / "maps.csv", tmp_path / "maps.npz"
    maps_csv.write_text("")  # the maps stage wrote no map of a truncated capture
    np.savez(maps_npz)

    run_reference_compat_shard(
        answers_csv=tmp_path / "answers.csv",
        captures_dir=captures_dir,
        preprocess_csv=tmp_path / "preprocess.csv",
        maps_csv=maps_csv,
        maps_npz=maps_npz,
        out_csv=out,
        params={"root": tmp_path, "model_view_side": 64},
    )

    table = pd.read_csv(out)
    assert table["sample_id"].tolist() == ["d1__cut"]
    assert table[["ref_entropy", "entropy"]].isna().all(axis=None)
    failures = pd.read_csv(tmp_path / "shard-0.failures.csv")
    assert failures["error_type"].tolist() == ["bad_capture"]


def _maps_stage(tmp_path: Path, captures_dir: Path, model_dir: Path, settings: dict):
    """Run the maps stage over the answers of ``tmp_path/answers.csv`` (answer maps only)."""
    from cxr_attention.maps.shard import run_maps_shard

    answers = pd.read_csv(tmp_path / "answers.csv", dtype=str)
    answers["capture"] = [str(captures_dir / f"{s}.npz") for s in answers["sample_id"]]
    answers.to_csv(tmp_path / "maps_answers.csv", index=False)
    questions = pd.DataFrame({"question_id": answers["question_id"], "target_terms": ""})
    questions.to_csv(tmp_path / "questions.csv", index=False)
    maps_csv, maps_npz = tmp_path / "maps" / "shard-0.csv", tmp_path / "maps" / "shard-0.npz"
    run_maps_shard(
        answers_csv=tmp_path / "maps_answers.csv",
        captures_dir=captures_dir,
        questions_csv=tmp_path / "questions.csv",
        model_id=model_dir,
        out_csv=maps_csv,
        out_npz=maps_npz,
        failures_csv=tmp_path / "maps" / "shard-0.failures.csv",
        # The planted sink leaves the image little mass: keep the attention map regardless.
        params={"device": "cpu", "seed": 0, "methods": ["attention"], "min_image_mass": 0.0}
        | settings,
    )
    return maps_csv, maps_npz


@pytest.mark.parametrize(
    "settings", [{"strip_border": 1}, {"layers": "last"}], ids=["strip_border", "layers"]
)
def test_corrected_columns_are_the_study_map_metrics(
    tmp_path: Path, tiny_model_dir: Path, sink_captures, settings
):
    from cxr_attention.metrics.shard import run_metrics_shard

    if settings.get("layers") == "last":  # the last captured decoder layer only
        settings = {"layers": [int(sink_captures[0]["layers"][-1])]}
    captures_dir = tmp_path / "captures"
    captures_dir.mkdir()
    image = np.full((120, 100), 40, np.uint8)
    cv2.ellipse(image, (50, 60), (40, 50), 0, 0, 360, 200, -1)
    body = np.where(image > 100, 255, 0).astype(np.uint8)
    lungs = np.zeros_like(image)
    lungs[30:90, 20:48], lungs[30:90, 52:80] = 1, 2
    for name, array in (("d1.png", image), ("d1_body.png", body), ("d1_lungs.png", lungs)):
        cv2.imwrite(str(tmp_path / name), array)
    pd.DataFrame(
        [{"dicom_id": "d1", "image": "d1.png", "body_mask": "d1_body.png",
          "lung_mask": "d1_lungs.png"}]
    ).to_csv(tmp_path / "preprocess.csv", index=False)  # fmt: skip
    answers = []
    for index, capture in enumerate(sink_captures):
        sample_id = f"d1__q.{index}"
        np.savez_compressed(captures_dir / f"{sample_id}.npz", **capture)
        answers.append({"sample_id": sample_id, "dicom_id": "d1", "question_id": f"q.{index}"})
    pd.DataFrame(answers).to_csv(tmp_path / "answers.csv", index=False)
    maps_csv, maps_npz = _maps_stage(tmp_path, captures_dir, tiny_model_dir, settings)
    metrics_csv = tmp_path / "metrics.csv"
    run_metrics_shard(
        maps_csv=maps_csv, maps_npz=maps_npz, preprocess_csv=tmp_path / "preprocess.csv",
        out_csv=metrics_csv, root=tmp_path,
    )  # fmt: skip
    out = tmp_path / "reference_compat.csv"
    run_reference_compat_shard(
        answers_csv=tmp_path / "answers.csv",
        captures_dir=captures_dir,
        preprocess_csv=tmp_path / "preprocess.csv",
        maps_csv=maps_csv,
        maps_npz=maps_npz,
        out_csv=out,
        params={"root": tmp_path, "model_view_side": 64},
    )

    study = pd.read_csv(maps_csv).merge(pd.read_csv(metrics_csv), on="map_id")
    # The headline answer map: the decision step's over every captured layer (its siblings are
    # the every-row map and the per-layer maps).
    headline = (study["source"] == "answer") & (study["rows"] == "decision") & ~study["per_layer"]
    study = study[headline]
    study = study.set_index("sample_id")
    table = pd.read_csv(out).set_index("sample_id")
    assert len(study) == len(table) == len(sink_captures)
    for sample_id, row in table.iterrows():
        for column in ("entropy", "entropy_normalised", "focus", "focus_max", "inside_body"):
            assert row[column] == pytest.approx(study.at[sample_id, column], rel=1e-6, abs=1e-9)
        assert row["border_fraction"] == pytest.approx(
            study.at[sample_id, "border_fraction"], abs=1e-9
        )
    # The setting mattered: the default map (every layer, no border stripped) scores otherwise,
    # so a corrected column recomputed from the capture would not match the study.
    for index, capture in enumerate(sink_captures):
        grid, _ = attention_map(capture["attention"], [0])
        default = map_metrics(grid, body_mask=body, lung_labels=None)
        assert abs(default["entropy"] - table.at[f"d1__q.{index}", "entropy"]) > 1e-4
