"""The ``cxr-attention`` command's contracts, run as a user runs them (a subprocess)."""

from __future__ import annotations

import json
import os
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
    assert {"prompt", "generated_text", "answer", "p_yes", "yes_no_mass"} <= answer.keys()
    assert answer["answer"] in {"yes", "no", "unclear"} and 0.0 <= answer["p_yes"] <= 1.0
    assert 0.0 < answer["yes_no_mass"] <= 1.0
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
    # the answer's decision map comes first (the overlay shows it), its every-row variant after
    answer = maps[maps["source"] == "answer"]
    assert answer["rows"].iloc[0] == "decision" and "all" in set(answer["rows"])
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
    # each region metric carries what a uniform map scores (its area share) and the lift over it
    for metric in ("inside_body", "border_fraction"):
        np.testing.assert_allclose(
            metrics[f"{metric}_lift"], metrics[metric] / metrics[f"{metric}_area"], rtol=1e-6
        )
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


def _one_line_error(result: subprocess.CompletedProcess, *words: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith("cxr-attention explain: error: model ")
    for word in words:
        assert word in lines[0], lines[0]


def _explain_with_model(model: str | Path, out: Path, env: dict | None = None):
    command = [sys.executable, "-m", "cxr_attention.cli", "explain", str(DEMO_IMAGES[0])]
    command += ["--question", "Is there a pleural effusion?", "--model", str(model)]
    command += ["--out", str(out)]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=env, timeout=600)


def test_a_wrong_model_is_refused_in_one_line_before_any_work(tmp_path):
    out = tmp_path / "out"
    _one_line_error(_explain_with_model(tmp_path / "no-such-model", out), "no-such-model")
    no_config = tmp_path / "empty-model"
    no_config.mkdir()
    _one_line_error(_explain_with_model(no_config, out), "no config.json")
    _one_line_error(_explain_with_model("not/a/hub/id", out), "not a hub id")
    assert not out.exists()  # refused before preprocessing wrote anything


def test_a_hub_id_must_be_in_the_cache_when_offline(tmp_path, tiny_model_dir):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    result = _explain_with_model("google/medgemma-4b-it", tmp_path / "out", env)
    _one_line_error(result, "not in the Hugging Face cache", "HF_HUB_OFFLINE")
    # The same id with its config.json in the cache (the hub cache's layout) passes the check.
    snapshot = tmp_path / "hf/hub/models--google--medgemma-4b-it/snapshots/0123abcd"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text((Path(tiny_model_dir) / "config.json").read_text())
    refs = tmp_path / "hf/hub/models--google--medgemma-4b-it/refs"
    refs.mkdir()
    (refs / "main").write_text("0123abcd")
    check = subprocess.run(
        [
            sys.executable,
            "-c",
            "from cxr_attention.model_source import check_model_source;"
            "print(check_model_source('google/medgemma-4b-it'))",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert check.returncode == 0 and check.stdout.strip() == "hub", check.stderr


def test_version_and_help_with_defaults():
    from cxr_attention import __version__

    version = cxr_attention("--version")
    assert version.returncode == 0 and version.stdout.strip() == f"cxr-attention {__version__}"
    help_text = cxr_attention("preprocess", "--help").stdout
    assert "(default: 1024)" in " ".join(help_text.split())
    help_text = " ".join(cxr_attention("explain", "--help").stdout.split())
    assert "(default: 3)" in help_text and "(default: cascade)" in help_text
    assert "(default: None)" not in help_text  # required options have no default to show


def test_preprocess_prints_a_one_line_summary(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_text("not an image")
    result = cxr_attention("preprocess", DEMO_IMAGES[0], bad, "--out", tmp_path / "out")
    assert result.returncode == 1
    assert result.stdout.count("\n") == 1
    assert result.stdout.startswith("2 images: 1 written, 1 failed, ")
    good = cxr_attention("preprocess", DEMO_IMAGES[1], "--out", tmp_path / "good")
    assert good.returncode == 0 and good.stdout.startswith("1 images: 1 written, 0 failed, ")
    table = pd.read_csv(tmp_path / "good" / "preprocess.csv", keep_default_na=False)
    assert {"mask_ok", "mask_flags"} <= set(table.columns)


def test_explain_prints_the_answer_p_yes_and_the_outputs(tiny_model_dir, tmp_path):
    result = _explain_with_model(tiny_model_dir, tmp_path / "out")
    assert result.returncode == 0, result.stderr
    answer = json.loads((tmp_path / "out" / "answer.json").read_text())
    assert f"answer: {answer['answer']} (P(yes) = {answer['p_yes']:.3f})" in result.stdout
    assert f"outputs in {tmp_path / 'out'}" in result.stdout


def test_an_unusable_image_exits_1(tiny_model_dir, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_text("not an image")
    result = cxr_attention(
        "explain", bad, "--question", "Is there?", "--model", tiny_model_dir, "--out", tmp_path
    )
    assert result.returncode == 1 and "failed:" in result.stdout
    failures = pd.read_csv(tmp_path / "failures.csv")
    assert failures["error_type"].tolist() == ["not_an_image"]


def test_summary_reads_the_run_tables(tmp_path):
    run = tmp_path / "results" / "study"
    (run / "preprocess").mkdir(parents=True)
    pd.DataFrame({"dicom_id": ["a", "b", "c"]}).to_csv(run / "manifest.csv", index=False)
    failures = {"stage": ["preprocess", "maps", "maps"], "dicom_id": ["a", "b", "c"]}
    pd.DataFrame(failures).to_csv(run / "failures.csv", index=False)
    exclusions = {"dicom_id": ["d", "e"], "reason": ["view", "view"]}
    pd.DataFrame(exclusions).to_csv(run / "exclusions.csv", index=False)
    shard = {"dicom_id": ["b", "c"], "mask_ok": [True, False]}
    pd.DataFrame(shard).to_csv(run / "preprocess" / "shard-000.csv", index=False)
    (run / "report.html").write_text("<html></html>")
    result = cxr_attention("summary", run)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"report: {run / 'report.html'}",
        "images: 3; failures: 3 (2 maps, 1 preprocess); exclusions: 2 (2 view); "
        "flagged lung masks: 1",
    ]
    assert cxr_attention("summary", tmp_path).returncode == 2


def test_explain_leaves_the_lung_metrics_of_a_flagged_mask_blank(tiny_model_dir, tmp_path):
    # The AP demo film whose lung masks run to the lower edge (docs/masks.md).
    flagged = next(p for p in DEMO_IMAGES if p.stem.startswith("01ee40b2"))
    result = cxr_attention(
        "explain",
        flagged,
        "--question",
        "Is the heart enlarged?",
        "--model",
        tiny_model_dir,
        "--out",
        tmp_path,
        "--max-new-tokens",
        "4",
    )
    assert result.returncode == 0, result.stderr
    assert "lung masks flagged (lung_share_high;touches_lower_border)" in result.stdout
    metrics = pd.read_csv(tmp_path / "metrics.csv")
    assert metrics[["left_right", "apical_basal"]].isna().all().all()
    assert metrics["inside_body"].notna().all()


def test_app_refuses_a_wrong_model_and_a_missing_run_folder(tmp_path, tiny_model_dir):
    result = cxr_attention("app", "--model", tmp_path / "no-model")
    assert result.returncode == 2 and "no-model" in result.stderr
    result = cxr_attention("app", "--model", tiny_model_dir, "--results", tmp_path / "no-run")
    assert result.returncode == 2 and "no-run: no such run folder" in result.stderr


def test_app_binds_loopback_and_prints_its_url(tiny_model_dir):
    import socket
    import urllib.request

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "cxr_attention.cli", "app", "--model", str(tiny_model_dir)]
    server = subprocess.Popen(
        [*command, "--port", str(port)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        lines = iter(server.stdout.readline, "")
        url_line = next(line for line in lines if line.startswith("cxr-attention app: "))
        url = url_line.split()[2]
        assert url.rstrip("/") == f"http://127.0.0.1:{port}"
        with urllib.request.urlopen(url, timeout=30) as page:
            assert page.status == 200
    finally:
        server.terminate()
        server.wait(timeout=60)
