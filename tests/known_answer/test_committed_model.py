"""The committed known-answer model meets issue 16's targets on held-out demo films.

Oracle: the planted lesion itself (where it is, which side), on demo films that the model was
not trained on, through the real path (full-size film, chat template, first answer token).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cxr_attention.known_answer.films import demo_films, training_films

COMMITTED = Path(__file__).resolve().parents[2] / "models" / "known-answer"


@pytest.fixture(scope="module")
def committed():
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(COMMITTED)
    model = AutoModelForImageTextToText.from_pretrained(COMMITTED).eval()
    return model, processor


def test_committed_model_is_the_demo_models_class_and_small():
    config = json.loads((COMMITTED / "config.json").read_text())
    assert config["architectures"] == ["Gemma3ForConditionalGeneration"]
    weights = COMMITTED / "model.safetensors"
    assert weights.stat().st_size <= 10 * 2**20


def test_held_out_films_were_not_trained_on():
    from PIL import Image

    from cxr_attention.preprocess.decode import decode_image

    trained = json.loads((COMMITTED / "training_log.json").read_text())["films"]
    held_out = demo_films()[1]
    assert not {path.stem for path in held_out} & set(trained)

    def small(path):
        image = decode_image(path, max_side=2048)[0]
        return np.asarray(Image.fromarray(image).resize((64, 64)), np.float64)

    # No training film is a re-encoded copy of a held-out one (distinct films differ by tens).
    held = [small(path) for path in held_out]
    for path in training_films():
        assert min(np.abs(small(path) - other).mean() for other in held) > 5, path.name


@pytest.fixture(scope="module")
def held_out_result(committed):
    from cxr_attention.known_answer.evaluate import evaluate_known_answer_model
    from cxr_attention.preprocess.decode import decode_image

    model, processor = committed
    images = [decode_image(path, max_side=1024)[0] for path in demo_films()[1]]
    return evaluate_known_answer_model(model, processor, images, seed=1, plants_per_side=3)


def test_committed_model_meets_the_accuracy_targets(held_out_result):
    # Always answering one word gets 3 of 21 (all yes) or 18 of 21 (all no) questions
    # "Is there a nodule?" right, but never both kinds of film: the targets demand both.
    assert held_out_result["planted_films"] >= 12
    assert held_out_result["any_clean"] >= 0.9
    assert held_out_result["any_planted"] >= 0.9
    assert held_out_result["side"] >= 0.8


def test_committed_models_gradcam_points_at_the_lesion(held_out_result):
    assert held_out_result["gradcam_pointing_any"] >= 0.8
