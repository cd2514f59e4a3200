"""Known answers: a model whose decision reads one region (set weights, `region_model`), and the
random demo model, whose maps cannot be faithful beyond chance."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from region_model import RegionModel, lesion_image

from cxr_attention.faithfulness.deletion import CurveSettings, sample_curves
from cxr_attention.faithfulness.reliance import reliance_scores
from cxr_attention.faithfulness.scoring import DecisionScorer
from cxr_attention.geometry import grid_to_image
from cxr_attention.inference.prompting import build_inputs
from cxr_attention.models.tiny import build_tiny_processor

QUESTION = "Is there a pleural effusion?"
SETTINGS = CurveSettings(
    perturbations=("mean", "blur", "road", "token_mean"),
    steps=(0, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0),
    n_random=5,
    blur_sigma_cells=1.0,
    road_noise=0.01,
    road_side=112,
    seed=0,
)


@pytest.fixture(scope="module")
def region_setup():
    processor = build_tiny_processor()
    region = np.zeros((16, 16), bool)
    region[9:13, 3:7] = True  # 16 cells, lower left
    image = lesion_image(grid_to_image(region.astype(float), (400, 360)) > 0.5)
    model = RegionModel(processor.tokenizer, region).eval()
    return processor, region, image, model


def test_region_first_deletion_drops_the_margin_faster_than_random_orders(region_setup):
    processor, region, image, model = region_setup
    inputs = build_inputs(processor, image, QUESTION, image_first=False)
    scorer = DecisionScorer(model, processor.tokenizer, inputs, batch_size=16)
    assert scorer.original() > 0  # the bright region answers "yes"
    oracle_map = region.astype(float) + 0.01 * np.random.default_rng(0).random((16, 16))
    areas, points = sample_curves(scorer, [("oracle", "oracle", oracle_map)], SETTINGS)
    for perturbation, rows in areas.groupby("perturbation"):
        by_curve = rows.set_index("curve")
        random = points[
            (points["method"] == "random_order") & (points["perturbation"] == perturbation)
        ]
        random_deletion = random[random["curve"] == "deletion"]
        worst_random = random_deletion.groupby("map_id")["margin"].sum().min()
        oracle_deletion = points[
            (points["map_id"] == "oracle")
            & (points["perturbation"] == perturbation)
            & (points["curve"] == "deletion")
        ]["margin"].sum()
        assert oracle_deletion < worst_random, perturbation
        deletion, insertion = by_curve.loc["deletion"], by_curve.loc["insertion"]
        assert deletion["auc"] < deletion["random_auc_mean"] - 3 * deletion["random_auc_sd"]
        assert insertion["auc"] > insertion["random_auc_mean"] + 3 * insertion["random_auc_sd"]
        assert deletion["road_combined"] > deletion["random_road_combined_mean"]


def test_blank_image_is_answered_as_the_model_is_built_to(region_setup):
    processor, region, image, model = region_setup
    lungs = (grid_to_image(region.astype(float), image.shape) > 0.5).astype(np.uint8)
    rows = {
        row["condition"]: row
        for row in reliance_scores(
            model, processor, image, QUESTION, image_first=False, lungs=lungs, swap_image=None
        )
    }
    assert rows["original"]["answer"] == "yes"
    assert rows["blank"]["answer"] == "no"  # mid-grey region: below the threshold by design
    assert rows["occluded"]["answer"] == "no"  # the region covered by the "lungs"
    assert rows["text_only"]["answer"] == "no"
    assert rows["swapped"]["answer"] == "" and np.isnan(rows["swapped"]["p_yes"])
    # p_yes is the margin's sigmoid.
    assert rows["original"]["p_yes"] == pytest.approx(1 / (1 + np.exp(-rows["original"]["margin"])))


# The trained known-answer model (the planted-findings issue): its committed weights, or the folder
# CXR_ATTENTION_KNOWN_ANSWER_MODEL names (e.g. a retrained one).
TRAINED_KNOWN_ANSWER_MODEL = os.environ.get(
    "CXR_ATTENTION_KNOWN_ANSWER_MODEL",
    str(Path(__file__).resolve().parents[2] / "models" / "known-answer"),
)


@pytest.mark.skipif(
    not Path(TRAINED_KNOWN_ANSWER_MODEL, "config.json").is_file(),
    reason="the trained known-answer model is not available (CXR_ATTENTION_KNOWN_ANSWER_MODEL)",
)
def test_trained_known_answer_model_gradcam_deletion_beats_random(tmp_path):
    import cv2

    from cxr_attention.explain import explain
    from cxr_attention.known_answer.benchmark import LESION_CONTRAST, LESION_STRIPES, QUESTIONS
    from cxr_attention.known_answer.films import demo_films, load_films
    from cxr_attention.known_answer.plant import plant_lesion

    film = load_films(demo_films()[1][:1])[0]
    planted, _ = plant_lesion(
        film.image, seed=0, contrast=LESION_CONTRAST, stripes=LESION_STRIPES, lungs=film.lungs
    )
    image_path = tmp_path / "planted.png"
    cv2.imwrite(str(image_path), planted)
    explain(
        image_path,
        question=QUESTIONS["any"],
        model_id=TRAINED_KNOWN_ANSWER_MODEL,
        out_dir=tmp_path / "out",
        layers=1,
        method="gradcam",
        max_new_tokens=4,
        image_first=False,
        max_side=1024,
        faithfulness=True,
    )
    table = pd.read_csv(tmp_path / "out" / "faithfulness.csv")
    deletion = table[(table["method"] == "gradcam") & (table["curve"] == "deletion")]
    assert len(deletion) and (deletion["auc"] < deletion["random_auc_mean"]).all()


@pytest.fixture(scope="module")
def trained_known_answer():
    """The trained model, and a held-out demo film with the benchmark's lesion planted."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from cxr_attention.known_answer.benchmark import LESION_CONTRAST, LESION_STRIPES
    from cxr_attention.known_answer.films import demo_films
    from cxr_attention.known_answer.plant import plant_lesion
    from cxr_attention.preprocess.decode import decode_image

    if not Path(TRAINED_KNOWN_ANSWER_MODEL, "config.json").is_file():
        pytest.skip("the trained known-answer model is not available")
    processor = AutoProcessor.from_pretrained(TRAINED_KNOWN_ANSWER_MODEL)
    model = AutoModelForImageTextToText.from_pretrained(TRAINED_KNOWN_ANSWER_MODEL).eval()
    film = decode_image(demo_films()[1][0], max_side=1024)[0]
    planted, lesion = plant_lesion(
        film, side="left", seed=3, contrast=LESION_CONTRAST, stripes=LESION_STRIPES
    )
    return model, processor, film, planted, lesion


def test_trained_known_answer_model_answers_blank_and_clean_images_no(trained_known_answer):
    from cxr_attention.known_answer.benchmark import QUESTIONS

    model, processor, film, planted, _ = trained_known_answer
    rows = {
        row["condition"]: row
        for row in reliance_scores(
            model,
            processor,
            planted,
            QUESTIONS["any"],
            image_first=False,
            lungs=None,
            swap_image=film,
        )
    }
    assert rows["original"]["answer"] == "yes"
    assert rows["blank"]["answer"] == "no"
    assert rows["swapped"]["answer"] == "no"  # the same film without its lesion
    assert rows["text_only"]["answer"] == "no"


def test_randomising_the_trained_model_destroys_its_gradcam_map(trained_known_answer):
    # Adebayo et al.'s check, with scipy's Spearman as the oracle: the original map points at the
    # lesion; with the vision tower's or the decoder's weights redrawn it no longer resembles it,
    # in either direction (|rho|: a reversed map keeps the original's structure, as the stage's
    # randomisation table reads it).
    from scipy.stats import spearmanr

    from cxr_attention.faithfulness.randomisation import decoder_layers, randomised
    from cxr_attention.known_answer.benchmark import QUESTIONS
    from cxr_attention.known_answer.evaluate import box_cells, margin_gradcam
    from cxr_attention.maps.grid import MapUnavailable
    from cxr_attention.maps.hooks import vision_layers

    model, processor, film, planted, lesion = trained_known_answer
    inputs = build_inputs(processor, planted, QUESTIONS["any"], image_first=False)
    original = margin_gradcam(model, processor, inputs).reshape(-1)
    cells = box_cells(lesion.x, lesion.y, lesion.w, lesion.h, film.shape).reshape(-1)
    assert cells[int(np.argmax(original))]
    for part in (vision_layers(model), decoder_layers(model)):
        with randomised(list(part), seed=0):
            try:
                randomised_map = margin_gradcam(model, processor, inputs).reshape(-1)
            except MapUnavailable:  # an all-zero map resembles nothing
                continue
        if np.ptp(randomised_map) == 0:  # a constant map resembles nothing either
            continue
        assert abs(spearmanr(original, randomised_map).statistic) < 0.3
