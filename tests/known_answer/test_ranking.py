"""The known-answer method ranking: every registered method, its values checked independently.

Oracles: the planted lesion's box (pointing game worked out by hand from the map's maximum cell
and the box's overlap with it), scipy's Spearman on the maps the ranking compared, and
hand-ranked tables for the ranking itself.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy.stats import spearmanr

from cxr_attention.known_answer.ranking import (
    CRITERIA,
    SAMPLE_COLUMNS,
    method_ranking,
    randomisation_spearman,
    ranking_settings,
    render_ranking_section,
    sample_method_scores,
)
from cxr_attention.maps.registry import METHODS
from cxr_attention.settings import schema_defaults

REPO = Path(__file__).resolve().parents[2]
COMMITTED = REPO / "models" / "known-answer"


def _box_coverage_of_cell(box: dict, row: int, column: int, side: int = 16) -> float:
    """Share of grid cell (row, column) inside the box: the image squashed onto the grid, so a
    cell spans 1/side of the image's width and height (docs/known_answer.md)."""
    cell_w, cell_h = box["image_width"] / side, box["image_height"] / side
    left, top = column * cell_w, row * cell_h
    overlap_x = max(0.0, min(left + cell_w, box["x"] + box["w"]) - max(left, box["x"]))
    overlap_y = max(0.0, min(top + cell_h, box["y"] + box["h"]) - max(top, box["y"]))
    return overlap_x * overlap_y / (cell_w * cell_h)


@pytest.fixture(scope="module")
def ranked():
    """Two held-out demo films, a lesion planted in each (left, right), scored and ranked."""
    import torch

    from cxr_attention.inference.model import load_model
    from cxr_attention.known_answer.benchmark import LESION_CONTRAST, LESION_STRIPES
    from cxr_attention.known_answer.films import demo_films
    from cxr_attention.known_answer.plant import box_row, plant_lesion
    from cxr_attention.preprocess.decode import decode_image

    torch.set_num_threads(1)  # two threads on two shared cores spin-wait (docs/known_answer.md)
    demo = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    settings = ranking_settings(schema_defaults()["known_answer"]["ranking"])
    loaded = load_model(COMMITTED, device="cpu")
    films, frames = [], []
    for index, (path, side) in enumerate(zip(demo_films()[1][:2], ("left", "right"), strict=True)):
        film = decode_image(path, max_side=1024)[0]
        planted, lesion = plant_lesion(
            film, side=side, seed=3, contrast=LESION_CONTRAST, stripes=LESION_STRIPES
        )
        box = box_row(path.stem, lesion, film.shape)
        scored = sample_method_scores(
            loaded,
            planted,
            box,
            settings=settings,
            maps_params=demo["maps"],
            inference=demo["inference"],
            seed=0,
        )
        films.append((box, scored))
        frame = pd.DataFrame(scored.rows)
        frames.append(frame.assign(dicom_id=path.stem, subject_id=f"patient-{index}", side=side))
    samples = pd.concat(frames, ignore_index=True)[SAMPLE_COLUMNS]
    ranking = method_ranking(samples, n_boot=200, confidence=0.95, seed=0)
    return films, samples, ranking


def test_ranking_has_every_registered_method_and_says_why_one_has_no_map(ranked):
    _, _, ranking = ranked
    assert list(dict.fromkeys(ranking["method"])) == list(METHODS)
    assert set(ranking["criterion"]) == {*CRITERIA, "overall"}
    assert len(ranking) == len(METHODS) * (len(CRITERIA) + 1)
    pointing = ranking[ranking["criterion"] == "pointing_game"].set_index("method")
    without_map = pointing[pointing["n"] == 0]
    assert (without_map["reason"].str.len() > 0).all()
    # no localization heads are chosen for the demo: the reason names the setting
    assert "localization_heads" in pointing.loc["head_selected", "reason"]
    with_map = pointing[pointing["n"] > 0]
    assert {"attention", "gradcam", "uniform", "random", "rise", "rollout"} <= set(with_map.index)
    assert (with_map["n"] == 2).all() and (with_map["n_patients"] == 2).all()
    html = render_ranking_section(ranking)
    assert all(method in html for method in METHODS)


def test_pointing_game_recomputed_from_the_maps_maximum_and_the_box(ranked):
    films, samples, _ = ranked
    for box, scored in films:
        for method in ("gradcam", "rollout", "random"):
            grid = scored.maps[method]
            peaks = np.argwhere(grid == grid.max())
            expected = np.mean([_box_coverage_of_cell(box, r, c) for r, c in peaks])
            of_film = samples[samples["dicom_id"] == box["dicom_id"]]
            stored = of_film[of_film["method"] == method]
            assert stored["pointing_game"].item() == pytest.approx(expected, abs=1e-6)


def test_randomisation_spearman_recomputed_with_scipy(ranked):
    films, samples, _ = ranked
    checked = 0
    for box, scored in films:
        for method, grid in scored.maps.items():
            row = samples[(samples["dicom_id"] == box["dicom_id"]) & (samples["method"] == method)]
            values = []
            for part in ("decoder", "vision"):
                randomised = scored.randomised[(method, part)]
                stored = row[f"spearman_{part}"].item()
                if np.ptp(grid) == 0 or np.ptp(randomised) == 0:
                    assert math.isnan(stored)  # a constant map has no ranking
                    continue
                expected = spearmanr(grid.ravel(), randomised.ravel()).statistic
                assert stored == pytest.approx(expected, abs=1e-9)
                values.append(expected)
                checked += 1
            if values:  # the parts' absolute values: a sign flip keeps the map's structure
                expected_mean = np.mean(np.abs(values))
                assert row["randomisation_spearman"].item() == pytest.approx(expected_mean)
    assert checked >= 2 * 2 * 8


def test_gradcam_points_at_the_lesion_and_ranks_above_random(ranked):
    _, samples, ranking = ranked
    by_key = ranking.set_index(["method", "criterion"])
    gradcam, random = by_key.loc["gradcam"], by_key.loc["random"]
    assert gradcam.loc["pointing_game", "rank"] < random.loc["pointing_game", "rank"]
    assert gradcam.loc["pointing_game", "value"] > gradcam.loc["pointing_game", "chance"]
    # the model answers from the lesion: removing Grad-CAM's first cells lowers the margin faster
    # than random removal
    assert gradcam.loc["deletion_vs_random", "value"] < 0
    # uniform ties every cell: its pointing game is the box's area share, the chance reference
    uniform = samples[samples["method"] == "uniform"]
    assert np.allclose(uniform["pointing_game"], uniform["area_share"])


def _sample_rows(values: dict[str, tuple[float, float, float]], reason: dict[str, str]):
    """Two patients' films; a method named in ``reason`` has no map on patient b's film (on
    neither when ``values`` lacks it)."""
    rows = []
    for patient in ("a", "b"):
        for method in METHODS:
            pointing, deletion, spearman = values.get(method, (math.nan,) * 3)
            if patient == "b" and method in reason:
                pointing, deletion, spearman = (math.nan,) * 3
            rows.append(
                {
                    "dicom_id": f"film-{patient}",
                    "subject_id": patient,
                    "side": "left",
                    "method": method,
                    "reason": reason[method] if method in reason and math.isnan(pointing) else "",
                    "pointing_game": pointing,
                    "area_share": 0.04,
                    "deletion_vs_random": deletion,
                    "randomisation_spearman": spearman,
                }
            )
    return pd.DataFrame(rows)


def test_ranks_follow_each_criterions_direction_and_missing_values_rank_last():
    values = {method: (0.5, -1.0, 0.5) for method in METHODS}
    values["gradcam"] = (1.0, -3.0, 0.1)  # best on all three
    values["random"] = (0.0, 0.0, 1.0)  # worst of those with values
    values["rollout"] = (0.5, -1.00001, 0.5)  # as shown (3 digits) a tie with attention's
    del values["head_selected"]
    reasons = {"head_selected": "no heads", "rise": "all-zero map"}
    ranking = method_ranking(_sample_rows(values, reasons), n_boot=50, confidence=0.95, seed=0)
    by_key = ranking.set_index(["method", "criterion"])
    n = len(METHODS)
    for criterion in CRITERIA:
        assert by_key.loc[("gradcam", criterion), "rank"] == 1
        assert by_key.loc[("random", criterion), "rank"] == n - 1
        assert by_key.loc[("head_selected", criterion), "rank"] == n
        assert by_key.loc[("attention", criterion), "rank"] == 2  # ties share the better rank
    assert by_key.loc[("gradcam", "overall"), "rank"] == 1
    assert by_key.loc[("head_selected", "overall"), "rank"] == n
    assert by_key.loc[("head_selected", "overall"), "reason"] == "no heads"
    assert by_key.loc[("gradcam", "pointing_game"), "chance"] == pytest.approx(0.04)
    assert by_key.loc[("gradcam", "pointing_game"), "n_patients"] == 2
    # rise has a map on one film of two: its value is that film's, and the reason says so
    assert by_key.loc[("rise", "pointing_game"), "n"] == 1
    assert by_key.loc[("rise", "overall"), "reason"] == "no map on 1 of 2 films: all-zero map"


def test_randomisation_criterion_is_the_mean_absolute_spearman_so_a_sign_flip_ranks_worse():
    # by hand: parts -0.5 and +0.1 -> (0.5 + 0.1) / 2 = 0.3; parts +0.2 and +0.2 -> 0.2. With the
    # signed mean the first would be -0.2 and rank best, though its decoder part keeps half the
    # original's structure, only reversed
    flipped = randomisation_spearman([-0.5, 0.1])
    steady = randomisation_spearman([0.2, 0.2])
    assert flipped == pytest.approx(0.3)
    assert steady == pytest.approx(0.2)
    assert randomisation_spearman([math.nan, -0.4]) == pytest.approx(0.4)  # constant part: left out
    assert math.isnan(randomisation_spearman([math.nan, math.nan]))
    values = {method: (0.5, -1.0, 0.5) for method in METHODS}
    values["attention"] = (0.5, -1.0, flipped)  # equal on the other two criteria
    values["gradcam"] = (0.5, -1.0, steady)
    ranking = method_ranking(_sample_rows(values, {}), n_boot=50, confidence=0.95, seed=0)
    spearman = ranking[ranking["criterion"] == "randomisation_spearman"].set_index("method")
    assert spearman.loc["gradcam", "value"] == pytest.approx(0.2)
    assert spearman.loc["attention", "value"] == pytest.approx(0.3)
    assert spearman.loc["gradcam", "rank"] == 1
    assert spearman.loc["attention", "rank"] == 2
    assert spearman.loc["gradcam", "chance"] == 0
    html = render_ranking_section(ranking)
    assert "|Spearman| after randomisation (lower is better)" in html
