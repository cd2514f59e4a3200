"""The question-analysis tab's pickers and its layer / head view, over HTTP (gradio_client).

Oracles, each outside the page: the capture explain writes for the same image and question,
averaged by hand with numpy for one layer and head; the question bank's YAML read with yaml; the
manifest image's own file uploaded directly.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import yaml
from gradio_client import handle_file
from PIL import Image

from cxr_attention.app import QUESTION_API_NAME, build_app
from cxr_attention.app_question import (
    BANK_QUESTION_API_NAME,
    MANIFEST_IMAGE_API_NAME,
    QUESTION_VIEW_API_NAME,
)
from cxr_attention.explain import DEFAULT_QUESTION_BANK
from cxr_attention.metrics.catalogue import METRIC_COLUMNS
from tests.app.app_helpers import explain_directly, explain_settings, served

# Names no finding of the bank: explain maps the answer alone (fast on the tiny model).
QUESTION = "Does this radiograph look unusual?"
PICKED, UNPROCESSED = "d-picked", "d-failed"


def _table(value) -> pd.DataFrame:
    return pd.DataFrame(value["data"], columns=value["headers"])


def _pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=int)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, radiograph):
    """A run folder ``<root>/results/run`` whose manifest lists two images, one preprocessed
    (the test radiograph, its path relative to ``<root>`` as the workflow writes it)."""
    root = tmp_path_factory.mktemp("repo")
    run = root / "results" / "run"
    (run / "preprocess" / "shard-0").mkdir(parents=True)
    image = run / "preprocess" / "shard-0" / f"{PICKED}{radiograph.suffix}"
    shutil.copyfile(radiograph, image)
    pd.DataFrame(
        {
            "dicom_id": [PICKED, UNPROCESSED],
            "view_position": ["PA", "AP"],
            "shard": [0, 0],
            "Edema": [1.0, 0.0],
            "Pneumothorax": [0.0, np.nan],
        }
    ).to_csv(run / "manifest.csv", index=False)
    pd.DataFrame(
        {"dicom_id": [PICKED], "image": [str(image.relative_to(root))], "mask_flags": [""]}
    ).to_csv(run / "preprocess" / "shard-0.csv", index=False)
    return run


@pytest.fixture(scope="module")
def page(loaded, tiny_model_dir, run_dir):
    return build_app(loaded, str(tiny_model_dir), explain_settings(), results_dir=run_dir)


@pytest.fixture(scope="module")
def client(page):
    with served(page) as page_client:
        yield page_client


@pytest.fixture(scope="module")
def asked(client, radiograph):
    """The page's answer to QUESTION about the radiograph (the session's latest capture)."""
    return client.predict(handle_file(str(radiograph)), QUESTION, api_name=QUESTION_API_NAME)


@pytest.fixture(scope="module")
def direct(loaded, tiny_model_dir, radiograph, tmp_path_factory):
    """explain() of the same image and question outside the app, and its folder."""
    out = tmp_path_factory.mktemp("direct")
    return explain_directly(radiograph, QUESTION, out, loaded, tiny_model_dir), out


@pytest.fixture(scope="module")
def capture(direct):
    with np.load(direct[1] / "attention.npz") as arrays:
        return {key: arrays[key] for key in ("attention", "layers")}


def _view(client, layer="all", head="all", strip=False, clip=True):
    status, overlay, grid, metrics = client.predict(
        layer, head, strip, clip, api_name=QUESTION_VIEW_API_NAME
    )
    return status, overlay, _table(grid).to_numpy(float), _table(metrics)


def _by_hand(capture, layers, heads) -> np.ndarray:
    """The decision step's row (row 0) averaged over the layer and head positions, normalised,
    folded into its square grid."""
    rows = capture["attention"][np.ix_(layers, heads)][:, :, 0, :].astype(np.float64)
    row = rows.mean(axis=(0, 1))
    side = round(np.sqrt(row.size))
    assert side * side == row.size
    return (row / row.sum()).reshape(side, side)


def test_the_status_shows_the_yes_no_mass_explain_wrote(asked, direct):
    status = asked[0]
    written = json.loads((direct[1] / "answer.json").read_text())
    assert f"yes+no mass at the first answer token: {written['yes_no_mass']:.3f}" in status


def test_each_layer_and_head_map_is_the_mean_of_its_capture_rows(client, asked, capture):
    layers = [int(v) for v in capture["layers"]]
    n_heads = capture["attention"].shape[1]
    assert len(layers) >= 2 and n_heads >= 2  # a choice that can go wrong
    every_layer, every_head = list(range(len(layers))), list(range(n_heads))
    cases = [
        ("all", "all", every_layer, every_head),
        (str(layers[-1]), "all", [len(layers) - 1], every_head),
        ("all", "1", every_layer, [1]),
        (str(layers[0]), str(n_heads - 1), [0], [n_heads - 1]),
    ]
    shown = {}
    for layer, head, layer_positions, head_positions in cases:
        status, _, grid, metrics = _view(client, layer, head)
        expected = _by_hand(capture, layer_positions, head_positions)
        np.testing.assert_allclose(grid, expected, rtol=1e-4, atol=1e-7)
        assert f"layer {layer}, head {head}" in status
        assert list(metrics.columns) == METRIC_COLUMNS and len(metrics) == 1
        shown[(layer, head)] = grid
    # the cases are different maps, so the selectors choose something
    assert not np.allclose(shown[("all", "all")], shown[(str(layers[0]), str(n_heads - 1))])


def test_a_stripped_ring_has_no_mass_on_the_border(client, asked, capture):
    layer = str(int(capture["layers"][-1]))
    _, _, kept, _ = _view(client, layer, "0")
    _, _, stripped, _ = _view(client, layer, "0", strip=True)
    border = np.ones(stripped.shape, dtype=bool)
    border[1:-1, 1:-1] = False
    assert kept[border].sum() > 0  # the unstripped map had mass there to remove
    assert np.all(stripped[border] == 0)
    assert stripped.sum() == pytest.approx(1.0, abs=1e-5)
    inner = kept[1:-1, 1:-1]
    np.testing.assert_allclose(stripped[1:-1, 1:-1], inner / inner.sum(), rtol=1e-4, atol=1e-7)


def test_clipping_changes_the_picture_only(client, asked):
    _, clipped_overlay, clipped, clipped_metrics = _view(client, clip=True)
    _, full_overlay, full, full_metrics = _view(client, clip=False)
    np.testing.assert_array_equal(clipped, full)
    pd.testing.assert_frame_equal(clipped_metrics, full_metrics)
    assert np.abs(_pixels(clipped_overlay) - _pixels(full_overlay)).mean() > 0.5


def test_a_bad_layer_is_refused_in_the_page(client, asked):
    status, overlay, _, _ = _view(client, "999", "all")
    assert status.startswith("No map for layer 999, head all: layer 999 was not captured")
    assert overlay is None


def test_the_view_needs_a_question_first(client):
    from gradio_client import Client

    fresh = Client(client.src, verbose=False)  # a new session: nothing asked yet
    status, overlay, _, _ = fresh.predict(
        "all", "all", False, True, api_name=QUESTION_VIEW_API_NAME
    )
    assert status.startswith("Run a question first")
    assert overlay is None


def test_the_bank_choice_fills_the_bank_question_text(client):
    bank = yaml.safe_load(DEFAULT_QUESTION_BANK.read_text())
    effusion = next(f for f in bank["findings"] if f["name"] == "Pleural Effusion")
    for strategy, text in (
        ("baseline.0", effusion["baseline"]),
        ("plain.0", effusion["plain"]),
        ("hard_positive.2", effusion["hard_positive"][1]["question"]),
    ):
        assert client.predict("Pleural Effusion", strategy, api_name=BANK_QUESTION_API_NAME) == text


def test_the_strategy_choices_are_the_bank_strategies(page):
    bank = yaml.safe_load(DEFAULT_QUESTION_BANK.read_text())
    longest = max(len(f["hard_positive"]) for f in bank["findings"])
    (dropdown,) = [b for b in page.blocks.values() if b.elem_id == "qa-bank-strategy"]
    expected = ["baseline.0", "plain.0", *(f"hard_positive.{i}" for i in range(1, longest + 1))]
    assert [value for _, value in dropdown.choices] == expected


def test_the_manifest_pick_answers_as_an_upload_of_the_same_file(client, run_dir):
    (source,) = (run_dir / "preprocess" / "shard-0").glob(f"{PICKED}.*")
    picked = client.predict(PICKED, api_name=MANIFEST_IMAGE_API_NAME)
    assert picked is not None
    with open(picked, "rb") as copy:
        assert copy.read() == source.read_bytes()
    from_pick = client.predict(handle_file(picked), QUESTION, api_name=QUESTION_API_NAME)
    from_upload = client.predict(handle_file(str(source)), QUESTION, api_name=QUESTION_API_NAME)
    assert from_pick[1] == from_upload[1] and from_pick[1] in {"yes", "no", "unclear"}
    assert from_pick[2] == pytest.approx(from_upload[2], abs=1e-6)
    np.testing.assert_array_equal(_pixels(from_pick[3]), _pixels(from_upload[3]))


def test_an_image_without_a_preprocessed_file_is_not_offered(page, client):
    (dropdown,) = [b for b in page.blocks.values() if b.elem_id == "qa-manifest"]
    assert [value for _, value in dropdown.choices] == [PICKED]
    assert dropdown.choices[0][0] == f"{PICKED} · PA · Edema"  # its view and positive finding
    with pytest.raises(Exception, match=f"{UNPROCESSED} is not in the list of choices"):
        client.predict(UNPROCESSED, api_name=MANIFEST_IMAGE_API_NAME)
