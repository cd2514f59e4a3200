"""The app's Checks tab, called over HTTP as a browser would call it (gradio_client).

Oracles: `cxr_attention.explain.explain` run directly on the same image, question, swap image and
boxes (its ``faithfulness.csv``, ``faithfulness_points.csv``, ``reliance.csv`` and ``metrics.csv``);
the trapezoid area of the written curve points (numpy); and the boxes of a hand-written annotation
file.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cxr_attention.app_checks import (
    CHECKS_API_NAME,
    CURVE_API_NAME,
    RELIANCE_API_NAME,
    TOGGLED_CONDITIONS,
    annotations_of_image,
    reliance_view,
)
from tests.app.app_helpers import explain_directly, explain_settings

QUESTION = "Is there a pleural effusion?"
# The cheapest perturbation: the removed image tokens' embeddings, no pixels re-encoded.
PERTURBATION = "token_mean"
BOX_HEADER = "dicom_id,category_name,label_text,x,y,w,h,image_width,image_height"


@pytest.fixture(scope="module")
def swap_radiograph(real_cxr):
    return sorted((real_cxr / "images").glob("*.jpeg"))[1]


@pytest.fixture(scope="module")
def boxes_csv(radiograph, tmp_path_factory):
    """Two boxes of this image (one phrase) and one of another image, drawn on the image at a
    quarter of its size (the same aspect ratio)."""
    with Image.open(radiograph) as image:
        width, height = (side // 4 for side in image.size)
    path = tmp_path_factory.mktemp("boxes") / "boxes.csv"
    path.write_text(
        f"{BOX_HEADER}\n"
        f"{radiograph.stem},Pleural Effusion,left effusion,600,500,300,200,{width},{height}\n"
        f"{radiograph.stem},Pleural Effusion,left effusion,100,100,50,50,{width},{height}\n"
        f"another-image,Pneumothorax,apical,0,0,10,10,{width},{height}\n",
        encoding="utf-8",
    )
    return path


@pytest.fixture(scope="module")
def direct(loaded, tiny_model_dir, radiograph, swap_radiograph, boxes_csv, tmp_path_factory):
    """explain() of the same inputs outside the app: its output folder."""
    from cxr_attention.faithfulness.explain_outputs import read_swap_image

    out = tmp_path_factory.mktemp("direct")
    explain_directly(
        radiograph,
        QUESTION,
        out,
        loaded,
        tiny_model_dir,
        faithfulness=True,
        faithfulness_perturbations=[PERTURBATION],
        reliance=True,
        swap_image=read_swap_image(str(swap_radiograph), explain_settings().max_side),
        boxes=boxes_csv,
    )
    return out


@pytest.fixture(scope="module")
def checked(client, radiograph, swap_radiograph, boxes_csv):
    """The tab's run on the same inputs, every condition shown."""
    from gradio_client import handle_file

    outputs = client.predict(
        handle_file(str(radiograph)),
        QUESTION,
        [PERTURBATION],
        TOGGLED_CONDITIONS,
        handle_file(str(swap_radiograph)),
        handle_file(str(boxes_csv)),
        "ms_cxr",
        api_name=CHECKS_API_NAME,
    )
    names = ["status", "answer", "p_yes", "curve", "curve_text", "areas", "curve_map"]
    names += ["curve_perturbation", "reliance", "overlay", "annotations", "metrics"]
    return dict(zip(names, outputs, strict=True))


def _table(value) -> pd.DataFrame:
    return pd.DataFrame(value["data"], columns=value["headers"])


def test_answer_and_deletion_curve_are_explains(checked, direct):
    answer = pd.read_json(direct / "answer.json", typ="series")
    assert checked["answer"] == answer["answer"]
    assert checked["p_yes"] == pytest.approx(answer["p_yes"], abs=1e-6)

    expected = pd.read_csv(direct / "faithfulness.csv")
    shown = _table(checked["areas"])
    assert shown["map_id"].tolist() == expected["map_id"].tolist()
    assert set(shown["perturbation"]) == {PERTURBATION}
    for column in ("auc", "random_auc_mean", "random_auc_sd"):
        np.testing.assert_allclose(shown[column].astype(float), expected[column], rtol=1e-6)

    # the points explain wrote are the curve whose area faithfulness.csv gives (trapezoid)
    points = pd.read_csv(direct / "faithfulness_points.csv")
    deletion = expected[expected["curve"] == "deletion"].iloc[0]
    mine = points[(points["map_id"] == deletion["map_id"]) & (points["curve"] == "deletion")]
    mine = mine.sort_values("fraction")
    assert np.trapezoid(mine["margin"], mine["fraction"]) == pytest.approx(deletion["auc"])
    assert mine["margin"].nunique() > 1  # removing cells moved the margin: the check can fail

    # the curve selectors: every answer map, the chosen perturbation, the first map selected
    assert checked["curve_map"]["value"] == deletion["map_id"]
    choices = [value for _, value in checked["curve_map"]["choices"]]
    assert choices == list(dict.fromkeys(expected["map_id"]))
    assert checked["curve_perturbation"]["value"] == PERTURBATION
    assert f"deletion AUC {deletion['auc']:.4f}" in checked["curve_text"]
    assert f"random orders {deletion['random_auc_mean']:.4f}" in checked["curve_text"]
    with Image.open(checked["curve"]) as png:
        assert png.size == (768, 480)


def test_reliance_conditions_are_explains_beside_the_real_image(checked, direct):
    """Every condition's row as explain wrote it, with its change from the real image; this
    radiograph's lung mask is flagged, so explain built no occluded image and the page says so."""
    expected = pd.read_csv(direct / "reliance.csv").fillna({"answer": ""})
    shown = _table(checked["reliance"])
    assert shown["condition"].tolist() == expected["condition"].tolist()  # all five shown
    assert shown["answer"].tolist() == expected["answer"].tolist()
    p_yes = pd.to_numeric(shown["p_yes"], errors="coerce")
    np.testing.assert_allclose(p_yes, expected["p_yes"], rtol=1e-6)  # NaN where not built
    original = expected.iloc[0]
    built = expected["answer"].isin(["yes", "no"]) & (expected["condition"] != "original")
    assert expected.loc[~built, "condition"].tolist() == ["original", "occluded"]
    shift = pd.to_numeric(shown.loc[built, "p_yes_shift"], errors="coerce")
    np.testing.assert_allclose(shift, expected.loc[built, "p_yes"] - original["p_yes"], rtol=1e-6)
    assert shown.loc[built, "unchanged"].tolist() == [
        "yes" if answer == original["answer"] else "no" for answer in expected.loc[built, "answer"]
    ]
    occluded = shown.set_index("condition").loc["occluded", "unchanged"]
    assert occluded == "not built: the lung mask was flagged"


def test_annotation_boxes_and_metrics(checked, direct, radiograph):
    annotations = _table(checked["annotations"])
    assert annotations["finding"].tolist() == ["Pleural Effusion"]  # not the other image's
    assert annotations["boxes"].iloc[0] == "x 600, y 500, w 300, h 200; x 100, y 100, w 50, h 50"
    with Image.open(radiograph) as image:
        assert annotations["frame"].iloc[0] == "{} x {}".format(*(s // 4 for s in image.size))

    expected = pd.read_csv(direct / "metrics.csv")
    shown = _table(checked["metrics"])
    assert "box_mass" in shown.columns
    np.testing.assert_allclose(
        shown["box_mass"].astype(float), expected["box_mass"].astype(float), rtol=1e-6
    )
    with Image.open(checked["overlay"]) as annotated, Image.open(direct / "overlay.png") as plain:
        assert not np.array_equal(np.asarray(annotated), np.asarray(plain))


def test_condition_toggles_and_curve_switch(client, checked, direct):
    shown = _table(client.predict(["blank"], api_name=RELIANCE_API_NAME))
    assert shown["condition"].tolist() == ["original", "blank"]

    expected = pd.read_csv(direct / "faithfulness.csv")
    insertion = expected[expected["curve"] == "insertion"].iloc[0]
    figure, text = client.predict(
        insertion["map_id"], PERTURBATION, "insertion", api_name=CURVE_API_NAME
    )
    assert f"insertion AUC {insertion['auc']:.4f}" in text
    assert figure is not None


def test_missing_question_is_refused(client, radiograph):
    from gradio_client import handle_file

    outputs = client.predict(
        handle_file(str(radiograph)),
        " ",
        [PERTURBATION],
        TOGGLED_CONDITIONS,
        None,
        None,
        "ms_cxr",
        api_name=CHECKS_API_NAME,
    )
    assert outputs[0] == "Type a yes/no question first."


def test_a_swap_image_that_is_not_an_image_is_refused(client, radiograph, tmp_path):
    from gradio_client import handle_file

    bad = tmp_path / "swap.png"
    bad.write_text("not an image", encoding="utf-8")
    outputs = client.predict(
        handle_file(str(radiograph)),
        QUESTION,
        [PERTURBATION],
        TOGGLED_CONDITIONS,
        handle_file(str(bad)),
        None,
        "ms_cxr",
        api_name=CHECKS_API_NAME,
    )
    assert outputs[0].startswith("Cannot use the swap image:") and "swap.png" in outputs[0]
    assert outputs[1] is None  # no answer shown


def test_reliance_view_says_why_a_condition_was_not_built(tmp_path):
    path = tmp_path / "reliance.csv"
    path.write_text(
        "condition,answer,p_yes,margin\n"
        "original,yes,0.8,1.386\nblank,no,0.3,-0.847\nswapped,,,\n"
        "occluded,yes,0.9,2.197\ntext_only,no,0.45,-0.2\n",
        encoding="utf-8",
    )
    view = reliance_view(path, ["swapped", "blank"]).set_index("condition")
    assert view.index.tolist() == ["original", "blank", "swapped"]  # the page's order
    assert view.loc["swapped", "unchanged"].startswith("not built: upload a swap image")
    assert view.loc["blank", "unchanged"] == "no"
    assert view.loc["blank", "p_yes_shift"] == pytest.approx(-0.5)


def test_vindr_boxes_take_the_frame_of_the_image(tmp_path):
    """VinDr's CSV gives no image size: the upload's source size is the frame."""
    path = tmp_path / "annotations_test.csv"
    path.write_text(
        "image_id,class_name,x_min,y_min,x_max,y_max\n"
        "img1,Pleural effusion,10,20,30,60\nimg2,Cardiomegaly,0,0,5,5\n",
        encoding="utf-8",
    )
    (annotation,) = annotations_of_image(path, "vindr_cxr", "img1", (200, 100))
    assert (annotation.image_width, annotation.image_height) == (200, 100)
    assert annotation.boxes == ((10, 20, 20, 40),)
    mask = annotation.mask_at((50, 100))  # half size: x 5-15, y 10-30
    assert mask.sum() == 10 * 20 and mask[10:30, 5:15].all()
