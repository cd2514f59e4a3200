"""``cxr-attention explain ... --method all`` writes a valid map of every registered method, the
decoder-side ones included (the tiny model, run as a user runs it)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from cxr_attention.maps.registry import METHODS, REGISTRY

REPO = Path(__file__).resolve().parents[2]
DEMO_IMAGE = sorted((REPO / "data/demo/mimic-cxr-jpg/files").rglob("*.jpg"))[0]


def test_method_all_writes_a_valid_map_of_every_registered_method(tiny_model_dir, tmp_path):
    command = [
        sys.executable,
        "-m",
        "cxr_attention.cli",
        "explain",
        str(DEMO_IMAGE),
        "--question",
        "Is there a pleural effusion?",
        "--model",
        str(tiny_model_dir),
        "--out",
        str(tmp_path),
        "--method",
        "all",
        "--max-new-tokens",
        "3",
    ]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stderr
    maps = pd.read_csv(tmp_path / "maps.csv", keep_default_na=False)
    answer = maps[maps["source"] == "answer"].set_index("method")
    # Every method but the gating one (the answer has no prompt term to gate on) maps the answer.
    gated = {name for name, m in REGISTRY.items() if m.cascade_sources == frozenset({"prompt"})}
    # head_selected needs heads chosen on a calibration split (maps.localization_heads): none here
    assert set(answer.index) == set(METHODS) - gated - {"head_selected"}
    decoder = [
        "rollout",
        "relevancy",
        "decoder_gradcam",
        "integrated_gradients",
        "rise",
        "relative_attention",
    ]
    assert (answer.loc[decoder, "fallback_reason"] == "").all()
    with np.load(tmp_path / "maps.npz") as arrays:
        assert sorted(arrays.files) == sorted(maps["map_id"])
        for map_id in arrays.files:
            grid = arrays[map_id]
            assert grid.dtype == np.float32 and grid.shape == (16, 16) and grid.min() >= 0
            np.testing.assert_allclose(grid.sum(), 1.0, rtol=1e-5)
    assert set(pd.read_csv(tmp_path / "metrics.csv")["map_id"]) == set(maps["map_id"])
