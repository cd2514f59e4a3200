"""The app's question analysis, called over HTTP as a browser would call it (gradio_client).

The oracle is `cxr_attention.explain.explain` run directly on the same image and question: the
page must show what the library computes, not a second computation.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cxr_attention.app import QUESTION_API_NAME, TAB_LABELS, build_app
from tests.app.app_helpers import explain_directly, explain_settings

QUESTION = "Is there a pleural effusion?"


@pytest.fixture(scope="module")
def direct(loaded, tiny_model_dir, radiograph, tmp_path_factory):
    """What explain() writes for the same image and question, outside the app."""
    out = tmp_path_factory.mktemp("direct")
    result = explain_directly(radiograph, QUESTION, out, loaded, tiny_model_dir)
    return result, out


def test_the_page_has_the_five_tabs(loaded, tiny_model_dir):
    page = build_app(loaded, str(tiny_model_dir), explain_settings())
    labels = [block.label for block in page.blocks.values() if type(block).__name__ == "Tab"]
    assert labels == list(TAB_LABELS)


def test_question_analysis_shows_what_explain_computes(client, direct, radiograph):
    from gradio_client import handle_file

    status, answer, p_yes, overlay, metrics = client.predict(
        handle_file(str(radiograph)), QUESTION, api_name=QUESTION_API_NAME
    )
    result, out = direct
    assert answer in {"yes", "no", "unclear"} and answer == result.answer
    assert 0.0 <= p_yes <= 1.0
    assert p_yes == pytest.approx(result.p_yes, abs=1e-6)
    assert repr(result.generated_text) in status

    shown = np.asarray(Image.open(overlay).convert("RGB"))
    assert np.array_equal(shown, np.asarray(Image.open(out / "overlay.png").convert("RGB")))
    source = np.asarray(Image.open(radiograph).convert("RGB").resize(shown.shape[1::-1]))
    assert np.abs(shown.astype(int) - source.astype(int)).mean() > 1.0  # a map was drawn on it

    table = pd.DataFrame(metrics["data"], columns=metrics["headers"])
    expected = pd.read_csv(out / "metrics.csv")
    assert list(table.columns) == list(expected.columns)
    assert table["map_id"].tolist() == expected["map_id"].tolist()
    numeric = expected.columns.drop("map_id")
    np.testing.assert_allclose(
        table[numeric].apply(pd.to_numeric, errors="coerce").to_numpy(float),
        expected[numeric].to_numpy(float),
        rtol=1e-6,
    )


def test_a_text_file_is_refused_in_the_page_and_the_app_goes_on(client, tmp_path, radiograph):
    from gradio_client import handle_file

    notes = tmp_path / "notes.txt"
    notes.write_text("not a radiograph\n")
    status, answer, p_yes, overlay, _ = client.predict(
        handle_file(str(notes)), QUESTION, api_name=QUESTION_API_NAME
    )
    assert status.startswith("Cannot use notes.txt: ")
    assert answer == "" and p_yes is None and overlay is None

    _, answer, p_yes, _, _ = client.predict(
        handle_file(str(radiograph)), QUESTION, api_name=QUESTION_API_NAME
    )
    assert answer in {"yes", "no", "unclear"} and 0.0 <= p_yes <= 1.0
