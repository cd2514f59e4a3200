"""The known-answer model's set detector marks the striped lesion's tokens and nothing else.

Oracles: the planted lesion (its box and side), the same lesion without stripes, and the patch
statistic computed directly in numpy from the processor's pixels.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cxr_attention.known_answer.benchmark import LESION_CONTRAST, LESION_STRIPES
from cxr_attention.known_answer.dense import token_targets
from cxr_attention.known_answer.detector import (
    FILTER_SIGNS,
    VisionChannel,
    detector_values,
    set_detector,
    stripe_filters,
)
from cxr_attention.known_answer.films import demo_films
from cxr_attention.known_answer.model import build_untrained_model
from cxr_attention.known_answer.plant import plant_lesion

COMMITTED = Path(__file__).resolve().parents[2] / "models" / "known-answer"


@pytest.fixture(scope="module")
def threshold() -> float:
    return json.loads((COMMITTED / "training_log.json").read_text())["threshold"]


@pytest.fixture(scope="module")
def detector(threshold):
    model, processor, _ = build_untrained_model(0)
    set_detector(model, threshold)
    return model.eval(), processor


@pytest.fixture(scope="module")
def held_out_films():
    from cxr_attention.preprocess.decode import decode_image

    return [decode_image(path, max_side=2048)[0] for path in demo_films()[1]]


def _pixels(processor, images) -> torch.Tensor:
    from PIL import Image

    return processor.image_processor(
        images=[Image.fromarray(image).convert("RGB") for image in images], return_tensors="pt"
    )["pixel_values"]


def _last_layer(model, pixels) -> torch.Tensor:
    kept = []
    layer = model.model.vision_tower.encoder.layers[-1]
    handle = layer.register_forward_hook(lambda _m, _i, output: kept.append(output))
    with torch.no_grad():
        model.model.vision_tower(pixel_values=pixels)
    handle.remove()
    output = kept[0]
    return output[0] if isinstance(output, tuple) else output


def _cases(films, stripes):
    """Each held-out film with a lesion in each lung (seeded), and the lesions' records."""
    cases = []
    for index, image in enumerate(films):
        for side in ("left", "right"):
            try:
                cases.append(
                    plant_lesion(
                        image,
                        side=side,
                        seed=100 + index,
                        contrast=LESION_CONTRAST,
                        stripes=stripes,
                    )
                )
            except ValueError:
                continue
    return cases


def test_detector_marks_the_striped_lesion_and_no_anatomy(detector, held_out_films):
    model, processor = detector
    cases = _cases(held_out_films, LESION_STRIPES)
    assert len(cases) >= 5
    pixels = _pixels(processor, [picture for picture, _ in cases] + held_out_films)
    values = detector_values(model, pixels).numpy()
    for (picture, lesion), row in zip(cases, values, strict=False):
        on_lesion = token_targets(lesion, picture.shape) > 0
        assert row[on_lesion].max() > 0, lesion
        assert row[~on_lesion].max() < 0, lesion
    # Clean films: every token negative.
    assert values[len(cases) :].max() < 0


def test_a_plain_opacity_is_not_a_detection(detector, held_out_films):
    # The same lesions, same places, without their stripes: the detector keys on the stripes.
    model, processor = detector
    cases = _cases(held_out_films, 0.0)
    values = detector_values(model, _pixels(processor, [picture for picture, _ in cases]))
    assert values.max() < 0


def test_side_channels_follow_the_patients_side(detector, held_out_films):
    model, processor = detector
    cases = _cases(held_out_films, LESION_STRIPES)
    output = _last_layer(model, _pixels(processor, [picture for picture, _ in cases]))
    for (picture, lesion), tokens in zip(cases, output, strict=True):
        on_lesion = torch.from_numpy(token_targets(lesion, picture.shape) > 0)
        left = tokens[:, VisionChannel.LEFT_DETECT]
        right = tokens[:, VisionChannel.RIGHT_DETECT]
        lesion_side, other_side = (left, right) if lesion.side == "left" else (right, left)
        assert lesion_side[on_lesion].max() > 0
        assert other_side.abs().max() == 0
        assert lesion_side[~on_lesion].abs().max() == 0


def test_detector_value_is_the_patch_statistic(detector, held_out_films, threshold):
    # Oracle: numpy's |on| - |below| - |above| - |down| of each 14 px patch of the processor's
    # pixels (grey: the colour planes' mean), scaled as the network scales its filters.
    from cxr_attention.known_answer.detector import GAIN, NORM_SCALE

    model, processor = detector
    picture, _ = _cases(held_out_films[:1], LESION_STRIPES)[0]
    pixels = _pixels(processor, [picture])
    grey = pixels[0].mean(0).numpy().astype(np.float64)
    patches = grey.reshape(16, 14, 16, 14).transpose(0, 2, 1, 3).reshape(256, 14, 14)
    responses = np.einsum("pij,fij->pf", patches, stripe_filters())
    absolute = np.abs(responses)
    statistic = (absolute * FILTER_SIGNS).sum(1) * GAIN / NORM_SCALE
    expected = statistic - threshold
    values = detector_values(model, pixels)[0].numpy()
    # GELU pairs equal |x| up to about 0.2 per filter near 0: 8 filters.
    np.testing.assert_allclose(values, expected, atol=2.0)
    assert np.corrcoef(values, expected)[0, 1] > 0.999
