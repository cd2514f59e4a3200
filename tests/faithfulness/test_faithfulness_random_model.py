"""Known answer: the random demo model's attention-side maps delete no better than random orders
(its weights are random: attention and activations carry no knowledge of which cells its answer
depends on).

The methods that measure the score's own sensitivity (Grad-CAM, decoder Grad-CAM, relevancy,
integrated gradients, RISE) are left out on purpose: a random model still has a decision margin,
and they read which tokens move it, so their curves may rightly differ from random orders (RISE is
a perturbation of exactly that kind). Measured on this test's sample: RISE deletes faster than
random (z = -3.2), Grad-CAM slower (z = 5.6: it scores the yes - no margin, and this model answers
no).
"""

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
# Methods whose map does not read the answer's score.
SCORE_BLIND_METHODS = ("attention", "activation_norm", "rollout", "relative_attention", "random")


def test_score_blind_methods_delete_within_the_random_orders_spread(tiny_model_dir, tmp_path):
    maps = []
    for method in SCORE_BLIND_METHODS:
        explain(
            DEMO_IMAGE,
            question=QUESTION,
            model_id=str(tiny_model_dir),
            out_dir=tmp_path / method,
            layers=2,
            method=method,
            max_new_tokens=4,
            image_first=False,
            max_side=1024,
        )
        table = pd.read_csv(tmp_path / method / "maps.csv")
        answer_maps = table[(table["source"] == "answer") & (table["method"] == method)]
        with np.load(tmp_path / method / "maps.npz") as stored:
            maps += [
                (f"{method}:{row.map_id}", method, stored[row.map_id])
                for row in answer_maps.itertuples()
            ]
    assert {method for _, method, _ in maps} == set(SCORE_BLIND_METHODS)
    loaded = load_model(tiny_model_dir, device="cpu")
    image = read_grey(tmp_path / SCORE_BLIND_METHODS[0] / f"{DEMO_IMAGE.stem}.png")
    inputs = build_inputs(loaded.processor, image, QUESTION, image_first=False)
    scorer = DecisionScorer(loaded.model, loaded.tokenizer, inputs, batch_size=16)
    settings = CurveSettings(("token_mean",), (0, 0.05, 0.2, 0.5, 1.0), 6, 1.0, 0.01, 112, 0)
    areas, _ = sample_curves(scorer, maps, settings)
    deletion = areas[areas["curve"] == "deletion"]
    z = (deletion["auc"] - deletion["random_auc_mean"]) / deletion["random_auc_sd"]
    assert (z.abs() < 3).all(), deletion.assign(z=z).to_string()
