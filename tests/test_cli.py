"""The ``cxr-attention`` command's contracts, run as a user runs them (a subprocess)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from transformers import AutoConfig

REPO = Path(__file__).resolve().parents[1]
DEMO_IMAGES = sorted((REPO / "data/demo/mimic-cxr-jpg/files").rglob("*.jpg"))


def cxr_attention(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "cxr_attention.cli", *map(str, args)]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=600)


def test_usage_error_exits_2(tmp_path):
    assert cxr_attention("preprocess", "--out", tmp_path).returncode == 2
    missing = tmp_path / "no-such-image.png"
    explain = (
        "explain",
        missing,
        "--question",
        "Is there?",
        "--model",
        tmp_path,
        "--out",
        tmp_path,
    )
    assert cxr_attention(*explain).returncode == 2
    assert cxr_attention("no-such-command").returncode == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    result = cxr_attention("preprocess", empty, "--out", tmp_path / "out")
    assert result.returncode == 2, result.stderr


def test_preprocess_writes_the_four_files_and_reports_failures(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_text("not an image")
    result = cxr_attention("preprocess", DEMO_IMAGES[0], bad, "--out", tmp_path / "out")
    assert result.returncode == 1, result.stderr
    out = tmp_path / "out"
    stem = DEMO_IMAGES[0].stem
    image = cv2.imread(str(out / f"{stem}.png"), cv2.IMREAD_UNCHANGED)
    body = cv2.imread(str(out / f"{stem}_body.png"), cv2.IMREAD_UNCHANGED)
    lungs = cv2.imread(str(out / f"{stem}_lungs.png"), cv2.IMREAD_UNCHANGED)
    assert image.dtype == np.uint8 and image.ndim == 2
    assert body.shape == lungs.shape == image.shape
    assert set(np.unique(body)) <= {0, 255} and set(np.unique(lungs)) == {0, 1, 2}
    assert json.loads((out / f"{stem}.json").read_text())["width"] == image.shape[1]
    failures = pd.read_csv(out / "failures.csv")
    assert list(failures.columns) == ["stage", "dicom_id", "path", "error_type", "message"]
    assert failures["path"].str.endswith("broken.png").tolist() == [True]


@pytest.fixture(scope="module")
def explained(tiny_model_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("explain")
    result = cxr_attention(
        "explain",
        DEMO_IMAGES[0],
        "--question",
        "Is there a pleural effusion?",
        "--model",
        tiny_model_dir,
        "--out",
        out,
        "--layers",
        "2",
        "--term",
        "heart",
        "--max-new-tokens",
        "6",
    )
    assert result.returncode == 0, result.stderr
    return out


def test_explain_answer_and_attention_contract(explained, tiny_model_dir):
    answer = json.loads((explained / "answer.json").read_text())
    assert {"prompt", "generated_text", "answer", "p_yes"} <= answer.keys()
    assert answer["answer"] in {"yes", "no", "unclear"} and 0.0 <= answer["p_yes"] <= 1.0
    with np.load(explained / "attention.npz") as npz:
        attention = npz["attention"]
        assert attention.dtype == np.float32
        n_layers, n_heads, n_generated, n_image = attention.shape
        assert (n_layers, n_heads, n_image) == (2, 8, 256)
        assert npz["generated_ids"].shape == (n_generated,)
        assert npz["layers"].tolist() == sorted(npz["layers"].tolist())
        assert npz["input_ids"].ndim == 1
        positions = npz["image_token_positions"]
        image_token_id = AutoConfig.from_pretrained(tiny_model_dir).image_token_id
        assert (npz["input_ids"][positions] == image_token_id).all()
        assert npz["pixel_values"].dtype == np.float32
        # Probabilities: the image share of each row cannot exceed 1.
        assert (attention.sum(-1) <= 1 + 1e-5).all() and (attention >= 0).all()


def test_explain_maps_and_metrics_contract(explained):
    maps = pd.read_csv(explained / "maps.csv", keep_default_na=False)
    assert {"map_id", "term", "method", "fallback_reason", "image_mass"} <= set(maps.columns)
    assert "heart" in set(maps["term"])
    with np.load(explained / "maps.npz") as arrays:
        assert sorted(arrays.files) == sorted(maps["map_id"])
        for map_id in arrays.files:
            grid = arrays[map_id]
            assert grid.dtype == np.float32 and grid.shape == (16, 16)
            assert grid.sum() == pytest.approx(1.0, abs=1e-5)
    metrics = pd.read_csv(explained / "metrics.csv")
    assert metrics["map_id"].tolist() == maps["map_id"].tolist()
    assert {
        "inside_body",
        "border_fraction",
        "entropy",
        "entropy_normalised",
        "focus",
        "left_right",
        "apical_basal",
    } <= set(metrics.columns)
    assert cv2.imread(str(explained / "overlay.png")) is not None


def test_explain_forced_method(tiny_model_dir, tmp_path):
    result = cxr_attention(
        "explain",
        DEMO_IMAGES[1],
        "--question",
        "Is the heart enlarged?",
        "--model",
        tiny_model_dir,
        "--out",
        tmp_path,
        "--method",
        "activation_norm",
        "--max-new-tokens",
        "4",
    )
    assert result.returncode == 0, result.stderr
    maps = pd.read_csv(tmp_path / "maps.csv")
    assert set(maps["method"]) == {"activation_norm"}


def test_explain_random_method_writes_a_valid_map(tiny_model_dir, tmp_path):
    """``--method random`` (a method added through the registry alone) end to end."""
    result = cxr_attention(
        "explain",
        DEMO_IMAGES[1],
        "--question",
        "Is the heart enlarged?",
        "--model",
        tiny_model_dir,
        "--out",
        tmp_path,
        "--method",
        "random",
        "--max-new-tokens",
        "4",
    )
    assert result.returncode == 0, result.stderr
    maps = pd.read_csv(tmp_path / "maps.csv", keep_default_na=False)
    assert set(maps["method"]) == {"random"} and (maps["fallback_reason"] == "").all()
    with np.load(tmp_path / "maps.npz") as arrays:
        assert sorted(arrays.files) == sorted(maps["map_id"])
        for map_id in arrays.files:
            grid = arrays[map_id]
            assert grid.shape == (16, 16) and grid.min() >= 0
            np.testing.assert_allclose(grid.sum(), 1.0, rtol=1e-5)
    assert set(pd.read_csv(tmp_path / "metrics.csv")["map_id"]) == set(maps["map_id"])


@pytest.mark.parametrize(
    ("question", "generated_text", "expected"),
    [
        # No Finding: a denied abnormality means the image is normal.
        ("Is the chest X-ray normal?", "There are no acute cardiopulmonary abnormalities.", "yes"),
        # The finding's own names judge the answer: "pleural" alone is not an effusion.
        ("Is there a pleural effusion?", "There is pleural thickening. No effusion is seen.", "no"),
        ("Is there a pleural effusion?", "A small left pleural effusion is present.", "yes"),
    ],
)
def test_explain_parses_the_answer_as_the_inference_stage_does(question, generated_text, expected):
    from cxr_attention.explain import parse_question_answer

    bank = REPO / "config/questions.yaml"
    assert parse_question_answer(question, generated_text, bank) == expected
