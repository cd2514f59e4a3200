"""End to end: one planted film through preprocess, inference, maps and metrics (`explain`, the
workflow's library path for one image), scored against the planted box as the known-answer table
scores it (`known_answer.scores.lesion_map_scores`).

The model's evidence is known because it is set by weights, not trained (this test must not
depend on a training run): the tiny Gemma 3's vision tower is made a lesion detector (each patch's
``MARK`` channel is the sign of its mean brightness minus `THRESHOLD`, which only the planted
opacity exceeds on this film: `maps_helpers.linearise_vision_tower` plus a bias), and every
decoder layer's queries attend to marked image tokens (`maps_helpers.plant_attention`). So the
answer's attention rows look at the lesion's tokens and nowhere else, and the answer's attention
map must put its maximum and nearly all its mass in the box, on the lesion's side.

The check must fail when the geometry between pixels and tokens is wrong; each break is made on
purpose in its own fixture and the same check is asserted to fail:

- ``transposed``: the attention map's tokens folded column-major (`maps.attention.to_grid`);
- ``mirrored``: the map flipped left-right;
- ``letterboxed``: pixels reach the grid as if the image were padded to a square, not squashed
  (`geometry.image_to_grid` as the box regions and the lung metrics use it).

The film is a demo film on a plate twice as wide (black on its left), and the lesion sits low in
the patient's left lung, near the grid's right edge: there a transposed or mirrored map and a
letterboxed box are several cells apart (on a near-square film a letterbox moves a box by less
than a cell and would go unnoticed).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from cxr_attention.known_answer.plant import box_row, plant_lesion
from cxr_attention.known_answer.scores import lesion_map_scores

FILM = (
    Path(__file__).resolve().parents[2]
    / "data/demo/mimic-cxr-jpg/files/p10/p10000011/s51497918"
    / "b3e43731-60ddcfa4-ad955344-63444011-63c22875.jpg"
)
# Mean patch value (the processor's [-1, 1] scale) above which a patch is marked: the planted
# opacity's core patches (contrast 1: white at its centre) reach 0.66-0.91 on this film, every
# other patch at most 0.50.
THRESHOLD = 0.65
LESION_SEED = 7  # the first seed that puts the lesion in the lower zone of the patient's left lung


@pytest.fixture(scope="module")
def known_evidence_model(tmp_path_factory) -> Path:
    from maps_helpers import MARK, linearise_vision_tower, plant_attention
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from cxr_attention.models.tiny import build_tiny_model

    folder = tmp_path_factory.mktemp("known_evidence")
    build_tiny_model(folder / "random", seed=0)
    model = AutoModelForImageTextToText.from_pretrained(folder / "random", dtype=torch.float32)
    linearise_vision_tower(model)
    tower = model.model.vision_tower
    with torch.no_grad():
        tower.embeddings.patch_embedding.bias[MARK] = -THRESHOLD
        # The post-layernorm gives MARK = +-gain * sqrt(width - 1) by the sign alone; shifting it
        # by 3/4 of that keeps a token positive when any of its 2 x 2 pooled patches is marked
        # (the lesion is narrower than a token pair on this squashed film).
        norm = tower.post_layernorm
        width = model.config.vision_config.hidden_size
        norm.bias[MARK] = 0.75 * norm.weight[MARK] * (width - 1) ** 0.5
    plant_attention(model, range(model.config.text_config.num_hidden_layers))
    model.save_pretrained(folder / "model")
    AutoProcessor.from_pretrained(folder / "random").save_pretrained(folder / "model")
    return folder / "model"


@pytest.fixture(scope="module")
def planted_film(tmp_path_factory) -> tuple[Path, dict]:
    from cxr_attention.io import write_png
    from cxr_attention.preprocess.decode import decode_image

    film, _ = decode_image(FILM)
    wide = np.pad(film, ((0, 0), (2 * film.shape[0] - film.shape[1], 0)))
    planted, lesion = plant_lesion(wide, side="left", seed=LESION_SEED, contrast=1.0, radius=0.03)
    assert lesion.zone == "lower"
    path = tmp_path_factory.mktemp("film") / "planted.png"
    write_png(planted, path)
    return path, box_row(path.stem, lesion, planted.shape)


def lesion_scores(model_dir: Path, film: Path, box: dict, out_dir: Path) -> dict[str, float]:
    """Explain ``Is there a nodule?`` and score the answer's attention map against the box."""
    from cxr_attention.explain import explain

    explain(
        film,
        question="Is there a nodule?",
        model_id=str(model_dir),
        out_dir=out_dir,
        layers=3,
        method="attention",
        max_new_tokens=1,
        image_first=True,
        max_side=1024,
    )
    maps = pd.read_csv(out_dir / "maps.csv").merge(pd.read_csv(out_dir / "metrics.csv"))
    answer = maps[(maps["source"] == "answer") & (maps["method"] == "attention")].iloc[0]
    grid = np.load(out_dir / "maps.npz")[answer["map_id"]]
    # The lesion is in the patient's left lung: the correct side's share of the in-lung mass.
    return {**lesion_map_scores(grid, box), "correct_side_mass": float(answer["left_right"])}


def finds_the_lesion(scores: dict[str, float]) -> bool:
    return (
        scores["pointing_game"] >= 0.5
        and scores["lift"] >= 0.5 / scores["area_share"]
        and scores["correct_side_mass"] >= 0.9
    )


def test_the_answer_map_finds_the_planted_lesion(known_evidence_model, planted_film, tmp_path):
    film, box = planted_film
    scores = lesion_scores(known_evidence_model, film, box, tmp_path)
    assert finds_the_lesion(scores), scores
    assert scores["mass_inside"] > 0.8, scores


def _transposed(to_grid):
    return lambda values, aspect_ratio=1.0: to_grid(values, aspect_ratio=aspect_ratio).T


def _mirrored(to_grid):
    return lambda values, aspect_ratio=1.0: to_grid(values, aspect_ratio=aspect_ratio)[:, ::-1]


def _letterboxed(image_to_grid):
    def pooled(values, grid_shape=(16, 16)):
        values = np.asarray(values, dtype=np.float64)
        height, width = values.shape
        side = max(height, width)
        top, left = (side - height) // 2, (side - width) // 2
        square = np.pad(values, ((top, side - height - top), (left, side - width - left)))
        return image_to_grid(square, grid_shape)

    return pooled


@pytest.fixture(params=["transposed", "mirrored", "letterboxed"])
def broken_geometry(request, monkeypatch) -> str:
    from cxr_attention.grounding import regions
    from cxr_attention.maps import attention
    from cxr_attention.metrics import per_map

    if request.param == "letterboxed":
        for module in (regions, per_map):
            monkeypatch.setattr(module, "image_to_grid", _letterboxed(module.image_to_grid))
    else:
        breaks = {"transposed": _transposed, "mirrored": _mirrored}
        monkeypatch.setattr(attention, "to_grid", breaks[request.param](attention.to_grid))
    return request.param


def test_a_broken_geometry_loses_the_lesion(
    known_evidence_model, planted_film, broken_geometry, tmp_path
):
    film, box = planted_film
    scores = lesion_scores(known_evidence_model, film, box, tmp_path)
    assert not finds_the_lesion(scores), (broken_geometry, scores)
    assert scores["pointing_game"] < 0.5, (broken_geometry, scores)
