"""``cxr-attention explain --faithfulness --reliance`` as a user runs it, on the random demo model:
the tables' contracts (the random model's maps against random orders: in-process, with cheaper
settings, in test_faithfulness_random_model.py). Slow: every method's curves under the schema's
default settings (9 minutes on this loaded CPU)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[2]
DEMO_IMAGES = sorted((REPO / "data/demo/mimic-cxr-jpg/files").rglob("*.jpg"))


def cxr_attention(*args) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "cxr_attention.cli", *map(str, args)]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=1800)


pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def explained(tiny_model_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("explain_faithfulness")
    result = cxr_attention(
        "explain", DEMO_IMAGES[0], "--question", "Is there a pleural effusion?",
        "--model", tiny_model_dir, "--out", out, "--layers", "2", "--method", "all",
        "--faithfulness", "--reliance", "--swap-image", DEMO_IMAGES[1],
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return out


def test_faithfulness_csv_contract(explained):
    table = pd.read_csv(explained / "faithfulness.csv")
    assert list(table.columns) == [
        "map_id", "method", "perturbation", "curve", "auc", "random_auc_mean", "random_auc_sd",
        "n_steps",
    ]  # fmt: skip
    maps = pd.read_csv(explained / "maps.csv")
    answer_maps = maps[maps["source"] == "answer"]
    assert set(table["map_id"]) == set(answer_maps["map_id"])
    assert set(table["curve"]) == {"deletion", "insertion"}
    assert set(table["perturbation"]) == {"blur", "road", "token_mean"}  # the schema's default
    assert (table["n_steps"] == 8).all() and (table["random_auc_sd"] > 0).all()


def test_reliance_csv_contract(explained):
    table = pd.read_csv(explained / "reliance.csv", keep_default_na=False)
    assert list(table.columns) == ["condition", "answer", "p_yes", "margin"]
    assert table["condition"].tolist() == ["original", "blank", "swapped", "occluded", "text_only"]
    assert set(table["answer"]) <= {"yes", "no"}
    p_yes = table["p_yes"].astype(float)
    assert ((p_yes > 0) & (p_yes < 1)).all()
    assert table["margin"].astype(float).nunique() == 5  # each condition changes the input


def test_swap_image_that_is_not_an_image_is_a_usage_error(tiny_model_dir, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_text("no image")
    result = cxr_attention(
        "explain", DEMO_IMAGES[0], "--question", "Is there?", "--model", tiny_model_dir,
        "--out", tmp_path / "out", "--reliance", "--swap-image", bad,
    )  # fmt: skip
    assert result.returncode == 2 and "bad.png" in result.stderr
