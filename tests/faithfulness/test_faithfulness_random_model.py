"""Known answer: the random demo model's maps, of every method, delete no better than random
orders (its weights are random: no map can know which cells its answer depends on)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cxr_attention.explain import explain
from cxr_attention.faithfulness.deletion import CurveSettings, sample_curves
from cxr_attention.faithfulness.scoring import DecisionScorer
from cxr_attention.inference.model import load_model
from cxr_attention.inference.prompting import build_inputs
from cxr_attention.preprocessed import read_grey

REPO = Path(__file__).resolve().parents[2]
DEMO_IMAGE = sorted((REPO / "data/demo/mimic-cxr-jpg/files").rglob("*.jpg"))[0]
QUESTION = "Is there a pleural effusion?"


def test_every_methods_deletion_is_within_the_random_orders_spread(tiny_model_dir, tmp_path):
    explain(
        DEMO_IMAGE,
        question=QUESTION,
        model_id=str(tiny_model_dir),
        out_dir=tmp_path,
        layers=2,
        method="all",
        max_new_tokens=4,
        image_first=False,
        max_side=1024,
    )
    table = pd.read_csv(tmp_path / "maps.csv")
    answer_maps = table[table["source"] == "answer"]
    with np.load(tmp_path / "maps.npz") as stored:
        maps = [(row.map_id, row.method, stored[row.map_id]) for row in answer_maps.itertuples()]
    assert len({method for _, method, _ in maps}) >= 4
    loaded = load_model(tiny_model_dir, device="cpu")
    image = read_grey(tmp_path / f"{DEMO_IMAGE.stem}.png")
    inputs = build_inputs(loaded.processor, image, QUESTION, image_first=False)
    scorer = DecisionScorer(loaded.model, loaded.tokenizer, inputs, batch_size=16)
    settings = CurveSettings(("token_mean",), (0, 0.05, 0.2, 0.5, 1.0), 6, 1.0, 0.01, 112, 0)
    areas, _ = sample_curves(scorer, maps, settings)
    deletion = areas[areas["curve"] == "deletion"]
    z = (deletion["auc"] - deletion["random_auc_mean"]) / deletion["random_auc_sd"]
    assert (z.abs() < 3).all(), deletion.assign(z=z).to_string()
