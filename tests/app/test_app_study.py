"""The app's study browser, called over HTTP as a browser would call it (gradio_client).

The run folder is synthetic (`tests.app.app_helpers.write_synthetic_run`, pandas tables in the
run's real column names); the oracle for the samples table is a plain pandas filter of those same
tables, and the shown map must have its brightest square where the maximum was planted in that
map's grid.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cxr_attention.app import ExplainSettings, build_app
from cxr_attention.app_study import (
    MAP_PIXELS_PER_CELL,
    SAMPLE_API_NAME,
    SAMPLES_API_NAME,
    SUMMARY_API_NAME,
)
from tests.app.app_helpers import SAMPLES, served, write_synthetic_run


def _settings() -> ExplainSettings:
    # never used: the study browser needs no model (build_app gets none)
    return ExplainSettings(
        layers=1, method="attention", max_new_tokens=1, image_first=True, max_side=64
    )


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return write_synthetic_run(tmp_path_factory.mktemp("results") / "synthetic")


@pytest.fixture(scope="module")
def client(run_dir):
    """The page with no model: the study browser reads the run folder alone."""
    with served(build_app(None, "no-model", _settings(), results_dir=run_dir)) as page_client:
        yield page_client


def _oracle(run_dir, finding, strategy, correct, method) -> list[str]:
    answers = pd.read_csv(run_dir / "metrics" / "answers.csv", keep_default_na=False)
    maps = pd.read_csv(run_dir / "metrics" / "maps.csv", keep_default_na=False)
    joined = maps[maps["source"] == "answer"].merge(answers, on="sample_id")
    scored = joined["expected"] != ""
    joined["ok"] = np.where(
        scored, np.where(joined["answer"] == joined["expected"], "yes", "no"), ""
    )
    keep = pd.Series(True, index=joined.index)
    for column, value in (
        ("finding", finding),
        ("strategy", strategy),
        ("ok", correct),
        ("method", method),
    ):
        if value != "all":
            keep &= joined[column] == value
    return sorted(joined.loc[keep, "map_id"])


@pytest.mark.parametrize(
    "filters",
    [
        ("all", "all", "all", "all"),
        ("Pneumothorax", "all", "no", "all"),
        ("all", "baseline", "yes", "gradcam"),
        ("Edema", "paraphrase", "all", "attention"),
        ("Edema", "baseline", "no", "all"),  # none: s1 is right
    ],
)
def test_the_filter_returns_the_rows_a_pandas_filter_returns(client, run_dir, filters):
    table = client.predict(*filters, api_name=SAMPLES_API_NAME)
    shown = pd.DataFrame(table["data"], columns=table["headers"])
    assert shown["map_id"].tolist() == _oracle(run_dir, *filters)
    assert (shown["map_id"].str.contains("__answer__")).all()


def test_wrong_answers_are_s2_and_s4(client):
    # hand-counted: s2 (no, expected yes) and s4 (unclear, expected no), two answer maps each
    table = client.predict("all", "all", "no", "all", api_name=SAMPLES_API_NAME)
    shown = pd.DataFrame(table["data"], columns=table["headers"])
    assert sorted(set(shown["sample_id"])) == ["s2", "s4"] and len(shown) == 4
    assert set(shown["correct"]) == {"no"}


@pytest.mark.parametrize("map_id", ["s1__answer__attention", "s4__answer__gradcam"])
def test_a_sample_shows_its_own_grid_and_metrics(client, run_dir, map_id):
    status, image, metrics = client.predict(map_id, api_name=SAMPLE_API_NAME)
    sid = map_id.split("__")[0]
    assert SAMPLES[sid][0] in status
    grid = np.load(run_dir / "maps" / "shard-000.npz")[map_id]
    pixels = np.asarray(Image.open(image).convert("L"), dtype=float)
    assert pixels.shape == (16 * MAP_PIXELS_PER_CELL, 16 * MAP_PIXELS_PER_CELL)
    cells = pixels.reshape(16, MAP_PIXELS_PER_CELL, 16, MAP_PIXELS_PER_CELL).mean(axis=(1, 3))
    assert np.unravel_index(cells.argmax(), cells.shape) == np.unravel_index(
        grid.argmax(), grid.shape
    )
    assert (cells == cells.min()).sum() == 255  # every other cell is the uniform floor
    table = pd.DataFrame(metrics["data"], columns=metrics["headers"])
    expected = pd.read_csv(run_dir / "metrics" / "maps.csv").set_index("map_id").loc[map_id]
    assert table["map_id"].tolist() == [map_id]
    assert float(table["entropy"].iloc[0]) == pytest.approx(expected["entropy"])
    assert float(table["inside_body"].iloc[0]) == pytest.approx(expected["inside_body"])


def test_an_unknown_or_prompt_map_is_refused_with_a_message(client):
    for map_id in ("nope", "s1__prompt__attention"):
        status, image, _ = client.predict(map_id, api_name=SAMPLE_API_NAME)
        assert f"`{map_id}`" in status and image is None


def test_a_summary_table_is_shown_as_written(client, run_dir):
    table = client.predict("accuracy_by_finding.csv", api_name=SUMMARY_API_NAME)
    shown = pd.DataFrame(table["data"], columns=table["headers"])
    assert shown["finding"].tolist() == ["Edema", "Pneumothorax"]


def test_without_a_run_folder_the_tab_says_how_to_open_one():
    page = build_app(None, "no-model", _settings())
    texts = [b.value for b in page.blocks.values() if getattr(b, "elem_id", None) == "study-no-run"]
    assert len(texts) == 1 and "--results results/<run>" in texts[0]


def test_the_tab_links_to_the_report_and_the_app_serves_it(client, run_dir):
    import re
    import urllib.error
    import urllib.request

    page = build_app(None, "no-model", _settings(), results_dir=run_dir)
    texts = [str(b.value) for b in page.blocks.values() if type(b).__name__ == "Markdown"]
    links = [link for t in texts for link in re.findall(r"\[report\.html\]\(([^)]+)\)", t)]
    assert len(links) == 1
    with urllib.request.urlopen(client.src.rstrip("/") + links[0]) as response:
        assert response.read().decode() == (run_dir / "report.html").read_text()
    assert any("report/summary.html`: not written" in t for t in texts)
    answers = (run_dir / "metrics" / "answers.csv").resolve()
    with pytest.raises(urllib.error.HTTPError):  # only the report pages are served
        urllib.request.urlopen(client.src.rstrip("/") + f"/gradio_api/file={answers}")
