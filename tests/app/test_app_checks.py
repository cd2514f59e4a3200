"""The app's Checks tab, called over HTTP as a browser would call it (gradio_client).

Oracles: `cxr_attention.explain.explain` run directly on the same image, question, swap image and
boxes (its ``faithfulness.csv``, ``faithfulness_points.csv``, ``reliance.csv``, ``metrics.csv``
and ``overlay.png``); the trapezoid area of the written curve points (numpy); the boxes of a
hand-written annotation file; and, for a run's manifest image, the box the synthetic run recorded,
mapped by hand onto the overlay's pixels and onto the grid cells of explain's maps (box_*).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cxr_attention.app import build_app
from cxr_attention.app_checks import (
    CHECKS_API_NAME,
    CHECKS_MANIFEST_API_NAME,
    CURVE_API_NAME,
    RELIANCE_API_NAME,
    TOGGLED_CONDITIONS,
    annotations_of_image,
    reliance_view,
)
from tests.app.app_helpers import (
    ANNOTATED,
    UNANNOTATED,
    annotated_box,
    explain_directly,
    explain_settings,
    served,
    write_synthetic_run,
)

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
    # float32 maps from two model calls: CPU kernels may round differently (about 1e-5 relative
    # between the page's call and this one, seen on 2 cores); a misplaced box moves it by far more
    np.testing.assert_allclose(
        shown["box_mass"].astype(float), expected["box_mass"].astype(float), rtol=1e-4
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


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory, radiograph):
    """A synthetic run with two manifest images and one recorded box, on ``ANNOTATED``."""
    return write_synthetic_run(tmp_path_factory.mktemp("repo") / "results" / "run", radiograph)


@pytest.fixture(scope="module")
def run_client(loaded, tiny_model_dir, run_folder):
    """The page started with ``--results`` the synthetic run."""
    page = build_app(loaded, str(tiny_model_dir), explain_settings(), results_dir=run_folder)
    with served(page) as page_client:
        yield page_client


def _check_manifest_image(run_client, dicom_id):
    """Pick a manifest image and run the checks on it: no annotation file, no perturbation."""
    from gradio_client import handle_file

    picked = run_client.predict(dicom_id, api_name=CHECKS_MANIFEST_API_NAME)
    outputs = run_client.predict(
        handle_file(picked), QUESTION, [], [], None, None, "ms_cxr", api_name=CHECKS_API_NAME
    )
    return picked, outputs


def _longest_run(flags: np.ndarray) -> tuple[int, int]:
    """[start, stop) of the longest run of True in ``flags``."""
    padded = np.concatenate([[False], flags, [False]]).astype(int)
    edges = np.flatnonzero(np.diff(padded))
    starts, stops = edges[::2], edges[1::2]
    longest = int(np.argmax(stops - starts))
    return int(starts[longest]), int(stops[longest])


@pytest.fixture(scope="module")
def annotated_checked(run_client):
    """The tab's checks of the annotated manifest image: (picked copy, outputs)."""
    return _check_manifest_image(run_client, ANNOTATED)


@pytest.fixture(scope="module")
def annotated_direct(annotated_checked, loaded, tiny_model_dir, tmp_path_factory):
    """explain() of the picked image without annotations: its output folder."""
    direct = tmp_path_factory.mktemp("annotated-direct")
    explain_directly(annotated_checked[0], QUESTION, direct, loaded, tiny_model_dir)
    return direct


def _box_cover(start: float, stop: float, cells: int = 16) -> np.ndarray:
    """Share of each of ``cells`` equal cells of [0, 1] inside [start, stop) (by hand)."""
    edges = np.arange(cells + 1) / cells
    return np.clip(np.minimum(edges[1:], stop) - np.maximum(edges[:-1], start), 0, None) * cells


def test_a_manifest_image_s_box_is_scored_by_explain(
    annotated_checked, annotated_direct, radiograph
):
    """The run's recorded box gives every map its box_* metrics, as an uploaded file's does.
    Oracle: each map of explain's own maps.npz scored by hand against the box's share of each
    grid cell (the box as fractions of its frame: the grid covers the whole image)."""
    metrics = _table(annotated_checked[1][11]).set_index("map_id")
    with Image.open(radiograph) as image:
        width, height = image.size
    x, y, w, h = annotated_box(width, height)
    cover = np.outer(
        _box_cover(y / height, (y + h) / height), _box_cover(x / width, (x + w) / width)
    )
    assert 0 < cover.sum() < 256 and not np.isin(cover, [0, 1]).all()  # a cell partly inside
    shown_maps = pd.read_csv(annotated_direct / "maps.csv", keep_default_na=False)
    # the recorded phrase is a term too, as with explain --boxes: its maps are scored as well
    assert set(shown_maps["map_id"]) < set(metrics.index)
    assert metrics["box_mass"].astype(float).notna().all()
    with np.load(annotated_direct / "maps.npz") as arrays:
        for map_id in shown_maps["map_id"]:
            grid = arrays[map_id].astype(np.float64)
            assert grid.shape == (16, 16)
            shown = metrics.loc[map_id]
            mass = (grid * cover).sum() / grid.sum()
            # float32 maps from two model calls (see test_annotation_boxes_and_metrics)
            assert float(shown["box_mass"]) == pytest.approx(mass, rel=1e-4)
            assert float(shown["box_area"]) == pytest.approx(cover.mean())
            assert float(shown["box_lift"]) == pytest.approx(mass / cover.mean(), rel=1e-4)
            peak = cover[grid == grid.max()].mean()
            assert float(shown["box_pointing_game"]) == pytest.approx(peak)


def test_a_manifest_image_is_outlined_with_the_run_s_own_box(
    annotated_checked, annotated_direct, radiograph
):
    """The picked image's overlay is explain's overlay.png with the recorded box outlined: inside
    the radiograph's axes the two differ exactly along the box's outline, hand-mapped from the
    box's source pixels onto the figure (the axes: the long non-white block of the plain figure)."""
    outputs = annotated_checked[1]
    status, overlay, annotations = outputs[0], outputs[9], _table(outputs[10])
    with Image.open(radiograph) as image:
        width, height = image.size
    x, y, w, h = annotated_box(width, height)
    assert annotations["finding"].tolist() == ["Pleural Effusion"]
    assert annotations["boxes"].tolist() == [f"x {x}, y {y}, w {w}, h {h}"]
    assert annotations["frame"].tolist() == [f"{width} x {height}"]
    assert f"1 annotation(s) of `{ANNOTATED}` outlined" in status

    with Image.open(annotated_direct / "overlay.png") as plain, Image.open(overlay) as outlined:
        plain_pixels = np.asarray(plain.convert("RGB"), dtype=int)
        outlined_pixels = np.asarray(outlined.convert("RGB"), dtype=int)
    assert plain_pixels.shape == outlined_pixels.shape
    # each figure has its own adaptive palette: small colour shifts everywhere, the outline's
    # colour far from any
    changed = np.abs(outlined_pixels - plain_pixels).sum(axis=2) > 150
    drawn = (plain_pixels < 250).any(axis=2)
    left, right = _longest_run(drawn.mean(axis=0) >= 0.5)
    top, bottom = _longest_run(drawn[:, left:right].mean(axis=1) >= 0.9)
    scale_x, scale_y = (right - left) / width, (bottom - top) / height
    box_left, box_right = left + x * scale_x, left + (x + w) * scale_x
    box_top, box_bottom = top + y * scale_y, top + (y + h) * scale_y

    tolerance = 4  # pixels: the outline's 1.6 pt line at 120 dpi, and the mask's rounding
    rows, cols = np.nonzero(changed[top + 2 : bottom - 2, left + 2 : right - 2])
    rows, cols = rows + top + 2, cols + left + 2
    within_x = (cols >= box_left - tolerance) & (cols <= box_right + tolerance)
    within_y = (rows >= box_top - tolerance) & (rows <= box_bottom + tolerance)
    near_side = (np.minimum(abs(cols - box_left), abs(cols - box_right)) <= tolerance) & within_y
    near_top = (np.minimum(abs(rows - box_top), abs(rows - box_bottom)) <= tolerance) & within_x
    assert len(rows) > 0 and (near_side | near_top).all()  # nothing changed off the outline
    for side, along, fixed, lo, hi in (
        ("top", "row", box_top, box_left, box_right),
        ("bottom", "row", box_bottom, box_left, box_right),
        ("left", "col", box_left, box_top, box_bottom),
        ("right", "col", box_right, box_top, box_bottom),
    ):
        span = np.arange(int(np.ceil(lo)) + tolerance, int(hi) - tolerance)
        band = slice(round(fixed) - tolerance, round(fixed) + tolerance + 1)
        hits = (
            changed[band, span].any(axis=0) if along == "row" else changed[span, band].any(axis=1)
        )
        assert hits.all(), f"the box's {side} side is not drawn along its whole length"


def test_a_manifest_image_without_a_box_says_so(run_client, run_folder):
    _, outputs = _check_manifest_image(run_client, UNANNOTATED)
    status, overlay, annotations = outputs[0], outputs[9], _table(outputs[10])
    assert (
        f"No annotation for this image in `{run_folder / 'grounding' / 'annotations.csv'}`"
        in status
    )
    assert annotations.empty and overlay.endswith("overlay.png")  # explain's own, unoutlined
    metrics = _table(outputs[11])
    assert pd.to_numeric(metrics["box_mass"], errors="coerce").isna().all()  # blank: no box
