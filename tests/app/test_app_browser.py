"""The app in a real browser: Playwright drives Debian's Chromium against the tiny model's page.

Each step does what a researcher does (upload, type, click) and checks what the page shows. The
oracles are independent of the page: the radiograph's own pixels (the overlay must differ), the
phrasings typed (each appears with its answer), and the synthetic run's planted maxima and
hand-counted rows (`tests.app.app_helpers.write_synthetic_run`).

With ``CXR_ATTENTION_SCREENSHOTS=DIR`` set (``make screenshots`` sets ``docs/app``), each tab's
step saves a screenshot of the page into DIR for ``docs/app.md``; without it nothing is written.
Playwright's own browser download is not reachable here, so the tests launch Debian's
``chromium`` package (``.ci/run`` installs it when absent); without it they skip, or fail under
``CI=true``.
"""

from __future__ import annotations

import io
import os
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cxr_attention.app import TAB_LABELS, build_app
from cxr_attention.app_study import MAP_PIXELS_PER_CELL
from cxr_attention.io import atomic_path
from tests.app.app_helpers import (
    SAMPLES,
    explain_settings,
    planted_cell,
    served,
    write_synthetic_run,
)

SCREENSHOTS_ENV = "CXR_ATTENTION_SCREENSHOTS"
QUESTION = "Is there a pleural effusion?"
PHRASINGS = ("Is there a pleural effusion?", "Is fluid present in the pleural space?")
# The tiny model on a shared CPU: one explain() takes seconds, two phrasings twice that.
WAIT_MS = 180_000
VIEWPORT = {"width": 1280, "height": 900}


@pytest.fixture(scope="module")
def study_run(tmp_path_factory) -> Path:
    return write_synthetic_run(tmp_path_factory.mktemp("results") / "demo")


@pytest.fixture(scope="module")
def app_url(loaded, tiny_model_dir, study_run) -> str:
    """One server for the module: the page on the tiny model with the synthetic run."""
    page = build_app(loaded, str(tiny_model_dir), explain_settings(), results_dir=study_run)
    with served(page) as client:
        yield client.src


@pytest.fixture(scope="module")
def chromium_browser(chromium):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture()
def tab(chromium_browser, app_url):
    """A fresh browser page (a new app session) opened on the app."""
    context = chromium_browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    page.goto(app_url)
    page.get_by_role("tab", name=TAB_LABELS[0]).wait_for()
    yield page
    context.close()


def _screenshot(page, name: str) -> None:
    """Save the page as DIR/name.png when CXR_ATTENTION_SCREENSHOTS=DIR (palette PNG, small)."""
    folder = os.environ.get(SCREENSHOTS_ENV)
    if not folder:
        return
    shot = Image.open(io.BytesIO(page.screenshot(full_page=True))).convert("RGB")
    with atomic_path(Path(folder) / f"{name}.png") as partial:
        shot.quantize(colors=128).save(partial, format="PNG", optimize=True)


def _shown_image(page, selector: str) -> np.ndarray:
    """The pixels of the <img> under ``selector``, fetched from its src as the browser did."""
    src = page.locator(f"{selector} img").first.get_attribute("src")
    response = page.request.get(src)
    assert response.ok, f"{src}: HTTP {response.status}"
    return np.asarray(Image.open(io.BytesIO(response.body())).convert("RGB"))


def _ask(page, upload: Path, question: str) -> None:
    page.locator("#qa-image input[type=file]").set_input_files(str(upload))
    page.locator("#qa-question textarea").fill(question)
    page.locator("#qa-run").click()


def _table_rows(page, selector: str) -> list[list[str]]:
    """The body rows of the gr.Dataframe under ``selector``, cell texts as the page shows them
    (the rows it has drawn: the tables here are shorter than its virtual scroll window)."""
    rows = page.locator(f"{selector} [role=grid] [role=row].virtual-row")
    return [
        [cell.strip() for cell in rows.nth(i).locator("[role=gridcell]").all_inner_texts()]
        for i in range(rows.count())
    ]


def _expect_row_count(page, selector: str, count: int) -> None:
    """The gr.Dataframe under ``selector`` holds ``count`` body rows (plus its header row)."""
    from playwright.sync_api import expect

    grid = page.locator(f"{selector} [role=grid]")
    expect(grid).to_have_attribute("aria-rowcount", str(count + 1))


def test_question_analysis_shows_the_answer_and_an_overlay_drawn_on_the_upload(tab, radiograph):
    from playwright.sync_api import expect

    _ask(tab, radiograph, QUESTION)
    answer = tab.locator("#qa-answer textarea")
    expect(answer).to_have_value(re.compile(r"^(yes|no|unclear)$"), timeout=WAIT_MS)
    expect(tab.locator("#qa-status")).to_contain_text("Model answer:")
    p_yes = float(tab.locator("#qa-p-yes input").input_value())
    assert 0.0 <= p_yes <= 1.0
    expect(tab.locator("#qa-overlay img")).to_be_visible()

    shown = _shown_image(tab, "#qa-overlay")
    source = np.asarray(Image.open(radiograph).convert("RGB").resize(shown.shape[1::-1]))
    assert np.abs(shown.astype(int) - source.astype(int)).mean() > 1.0  # a map was drawn on it
    expect(tab.locator("#qa-metrics")).to_contain_text("answer")  # the answer map's metric row
    _screenshot(tab, "question-analysis")


# Token-conditioned: the "switch term and method" step (issue 20) belongs here, written with the
# tab itself; its screenshot is token-conditioned.png.


def test_prompt_sensitivity_shows_both_phrasings_their_maps_and_the_js(tab, radiograph):
    from playwright.sync_api import expect

    tab.get_by_role("tab", name="Prompt sensitivity").click()
    tab.locator("#ps-image input[type=file]").set_input_files(str(radiograph))
    tab.locator("#ps-phrasing-1 textarea").fill(PHRASINGS[0])
    tab.locator("#ps-phrasing-2 textarea").fill(PHRASINGS[1])
    tab.locator("#ps-run").click()
    status = tab.locator("#ps-status")
    expect(status).to_contain_text("2 phrasings: answers", timeout=WAIT_MS)

    _expect_row_count(tab, "#ps-answers", 2)
    rows = _table_rows(tab, "#ps-answers")
    assert [row[1] for row in rows] == list(PHRASINGS)
    assert all(row[2] in {"yes", "no", "unclear"} for row in rows)
    expect(tab.locator("#ps-overlays img")).to_have_count(2)
    expect(tab.locator("#ps-difference img")).to_be_visible()
    js = float(tab.locator("#ps-js input").input_value())
    assert 0.0 <= js <= 1.0  # base 2: bounded by one bit
    assert f"= {js:.4f}" in status.inner_text()
    _screenshot(tab, "prompt-sensitivity")


def test_the_study_browser_opens_the_run_filters_and_shows_a_planted_map(tab):
    from playwright.sync_api import expect

    tab.get_by_role("tab", name="Study browser").click()
    table = "#study-samples"
    _expect_row_count(tab, table, len(SAMPLES) * 2)

    # hand-counted: the wrong answers are s2 (no, expected yes) and s4 (unclear, expected no)
    tab.locator("#study-correct input").click()
    tab.get_by_role("option", name="no", exact=True).click()
    tab.locator("#study-filter").click()
    _expect_row_count(tab, table, 4)
    assert sorted({row[1] for row in _table_rows(tab, table)}) == ["s2", "s4"]

    map_id = "s4__answer__gradcam"  # s4 is the fourth sample; gradcam its second answer map
    tab.locator("#study-map-id textarea").fill(map_id)
    tab.locator("#study-show").click()
    expect(tab.locator("#study-status")).to_contain_text("Pneumothorax")
    expect(tab.locator("#study-map img")).to_be_visible()
    pixels = _shown_image(tab, "#study-map").mean(axis=2)
    cells = pixels.reshape(16, MAP_PIXELS_PER_CELL, 16, MAP_PIXELS_PER_CELL).mean(axis=(1, 3))
    # the sequential colour map runs dark to bright: the planted maximum is the brightest cell
    assert np.unravel_index(cells.argmax(), cells.shape) == planted_cell(2 * 3 + 1)
    expect(tab.locator("#study-metrics")).to_contain_text(map_id)
    _screenshot(tab, "study-browser")


def test_a_text_upload_shows_its_reason_and_the_next_question_works(tab, radiograph, tmp_path):
    from playwright.sync_api import expect

    notes = tmp_path / "notes.txt"
    notes.write_text("not a radiograph\n")
    _ask(tab, notes, QUESTION)
    status = tab.locator("#qa-status")
    expect(status).to_contain_text("Cannot use notes.txt", timeout=WAIT_MS)
    expect(tab.locator("#qa-answer textarea")).to_have_value("")
    _screenshot(tab, "bad-upload")

    tab.locator("#qa-image").get_by_role("button", name="Clear").click()  # as a user would
    _ask(tab, radiograph, QUESTION)
    expect(tab.locator("#qa-answer textarea")).to_have_value(
        re.compile(r"^(yes|no|unclear)$"), timeout=WAIT_MS
    )
    expect(status).to_contain_text("Model answer:")
