"""The app in a real browser: Playwright drives Debian's Chromium against the tiny model's page.

Each step does what a researcher does (upload, type, click) and checks what the page shows. The
oracles are independent of the page: the radiograph's own pixels (the overlay must differ), the
phrasings typed (each appears with its answer), the synthetic run's planted maxima and
hand-counted rows (`tests.app.app_helpers.write_synthetic_run`), where a term is (in neither the
question nor the answer, or a word of the question), the conditions toggled and the box of the
annotation file uploaded.

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
from cxr_attention.app_checks import TOGGLED_CONDITIONS
from cxr_attention.app_study import MAP_PIXELS_PER_CELL
from cxr_attention.app_token import TERM_METHOD_COLUMNS
from cxr_attention.io import atomic_path
from cxr_attention.maps.registry import METHODS
from tests.app.app_helpers import (
    SAMPLES,
    explain_settings,
    planted_cell,
    served,
    write_synthetic_run,
)

SCREENSHOTS_ENV = "CXR_ATTENTION_SCREENSHOTS"
QUESTION = "Is there a pleural effusion?"
# Names no finding of the bank: explain maps the answer and the term alone.
TOKEN_QUESTION = "Does this radiograph look unusual?"
ABSENT_TERM = "lung"  # in neither the question nor the tiny model's (byte-noise) answer
QUESTION_WORD = "radiograph"
CHEAPEST_PERTURBATION = "token_mean"  # the removed tokens' embeddings: no pixels re-encoded
AREA_HEADERS = ("map_id", "method", "perturbation", "curve", "auc")
PHRASINGS = ("Is there a pleural effusion?", "Is fluid present in the pleural space?")
# The tiny model on a shared CPU: a token-conditioned step (every method) takes ~85 s alone and
# up to ~240 s on a loaded 2-core machine.
WAIT_MS = 300_000
VIEWPORT = {"width": 1280, "height": 900}
# docs/app.md's screenshots are committed: each at most this many bytes, in the fewest colours
# needed of these (fewer colours band the maps' gradients).
SCREENSHOT_MAX_BYTES = 300_000
SCREENSHOT_COLOURS = (128, 96, 64, 48, 32)


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


def _palette_png(shot: Image.Image) -> bytes:
    """``shot`` as an optimised palette PNG of at most `SCREENSHOT_MAX_BYTES`: the first of
    `SCREENSHOT_COLOURS` that fits (a page's content, e.g. two maps side by side, sets the size)."""
    for colours in SCREENSHOT_COLOURS:
        encoded = io.BytesIO()
        shot.quantize(colors=colours).save(encoded, format="PNG", optimize=True)
        if encoded.tell() <= SCREENSHOT_MAX_BYTES:
            return encoded.getvalue()
    raise AssertionError(
        f"the screenshot is {encoded.tell()} bytes at {colours} colours, over "
        f"{SCREENSHOT_MAX_BYTES}: take a smaller part of the page"
    )


def _screenshot(page, name: str) -> None:
    """Save the page as DIR/name.png when CXR_ATTENTION_SCREENSHOTS=DIR (palette PNG, small)."""
    folder = os.environ.get(SCREENSHOTS_ENV)
    if not folder:
        return
    shot = Image.open(io.BytesIO(page.screenshot(full_page=True))).convert("RGB")
    encoded = _palette_png(shot)
    with atomic_path(Path(folder) / f"{name}.png") as partial:
        partial.write_bytes(encoded)


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


def _method_rows(page) -> list[dict[str, str]]:
    """The token-conditioned tab's table of every method, as the page shows it."""
    _expect_row_count(page, "#tok-methods", len(METHODS))
    return [
        dict(zip(TERM_METHOD_COLUMNS, row, strict=True))
        for row in _table_rows(page, "#tok-methods")
    ]


def _term_gallery(page, methods: list[str]) -> list[tuple[str, np.ndarray]]:
    """Each map of the term's gallery as the page previews it: click its thumbnail in the grid,
    wait for the preview of ``methods[i]`` (the caption names its method first), fetch the
    preview's pixels, close the preview (back to the grid)."""
    from playwright.sync_api import expect

    gallery = page.locator("#tok-term-maps")
    thumbnails = gallery.locator("button.thumbnail-item")
    caption = gallery.locator("caption.caption")
    shown = []
    for i, method in enumerate(methods):
        expect(thumbnails).to_have_count(len(methods))  # the grid, no preview strip
        thumbnails.nth(i).click()
        expect(caption).to_have_text(re.compile(rf"^{re.escape(method)}( |$)"))
        preview = _shown_image(page, "#tok-term-maps .media-button")
        shown.append((caption.inner_text().strip(), preview))
        if i < len(methods) - 1:  # the last one stays open for the screenshot
            gallery.get_by_role("button", name="Close", exact=True).click()
    return shown


def _map_term(
    page, expected_status: str
) -> tuple[list[dict[str, str]], list[tuple[str, np.ndarray]]]:
    from playwright.sync_api import expect

    expect(page.locator("#tok-status")).to_contain_text(expected_status, timeout=WAIT_MS)
    rows = _method_rows(page)
    made = [row for row in rows if row["map_id"]]
    expect(page.locator("#tok-term-maps button.thumbnail-item")).to_have_count(len(made))
    # each map is captioned with the method that made it, in the table's order; the cascade's
    # pick carries the reasons the table gives it
    gallery = _term_gallery(page, [row["method"] for row in made])
    for (caption, _), row in zip(gallery, made, strict=True):
        assert (row["cascade"] == "true") == ("the cascade's pick" in caption)
        if row["cascade"] == "true":
            assert caption == row["reason"]
    return rows, gallery


def test_token_conditioned_switches_term_and_method(tab, radiograph):
    """Map a term in neither the question nor the answer, preview each method's map, then pick a
    word of the question: the methods and maps shown follow the term and the method picked."""
    from playwright.sync_api import expect

    tab.get_by_role("tab", name=TAB_LABELS[1]).click()
    tab.locator("#tok-image input[type=file]").set_input_files(str(radiograph))
    tab.locator("#tok-question textarea").fill(TOKEN_QUESTION)
    tab.locator("#tok-term textarea").fill(ABSENT_TERM)
    tab.locator("#tok-run").click()
    rows, absent = _map_term(tab, f"{ABSENT_TERM} (absent)")
    by_method = {row["method"]: row for row in rows}
    # hand-derived from the question: the term is in neither it nor the answer
    assert by_method["attention"]["reason"] == "no map: term not found"
    assert by_method["term_attention"]["reason"].startswith("no map: ")
    assert {row["source"] for row in rows if row["map_id"]} == {"absent"}
    (pick,) = [caption for caption, _ in absent if "the cascade's pick" in caption]
    assert "attention: term not found" in pick
    # switching method switches the map: no two methods' previews are the same picture
    previews = [pixels for _, pixels in absent]
    assert all(
        not np.array_equal(previews[i], previews[j])
        for i in range(len(previews))
        for j in range(i + 1, len(previews))
        if previews[i].shape == previews[j].shape
    )

    # switch term: a word of the question, picked from the page's choices
    tab.locator("#tok-term-maps").get_by_role("button", name="Close", exact=True).click()
    tab.locator("#tok-tokens").get_by_label(f"question: {QUESTION_WORD}", exact=True).check()
    rows, in_question = _map_term(tab, f"{QUESTION_WORD} (prompt)")
    expect(tab.locator("#tok-term textarea")).to_have_value(QUESTION_WORD)  # the pick fills it
    assert {row["source"] for row in rows if row["map_id"]} == {"prompt"}  # it is the question's
    pixels = dict((caption.split(" ")[0], image) for caption, image in in_question)
    for caption, image in absent:
        method = caption.split(" ")[0]
        if method in pixels and pixels[method].shape == image.shape:
            assert not np.array_equal(pixels[method], image), method  # the title names the term
    _screenshot(tab, "token-conditioned")


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


def _run_checks(page, finished: str) -> None:
    """Run the checks and wait for ``finished`` in the status (new to this run: the page keeps
    the last run's outputs until the next one ends)."""
    from playwright.sync_api import expect

    page.locator("#chk-run").click()
    expect(page.locator("#chk-status")).to_contain_text(finished, timeout=WAIT_MS)
    expect(page.locator("#chk-curve img")).to_be_visible()


def test_checks_show_the_curve_reliance_toggles_and_the_annotation(tab, radiograph, tmp_path):
    """One perturbation (the cheapest), every condition, then an annotation file: the curve with
    the AUC of the areas table, the conditions the toggles leave, and the box outlined."""
    from playwright.sync_api import expect

    tab.get_by_role("tab", name=TAB_LABELS[4]).click()
    tab.locator("#chk-image input[type=file]").set_input_files(str(radiograph))
    tab.locator("#chk-question textarea").fill(QUESTION)
    for box in tab.locator("#chk-perturbations input[type=checkbox]").all():
        box.set_checked(box.get_attribute("name") == CHEAPEST_PERTURBATION)
    _run_checks(tab, "Model answer:")

    # the deletion curve of the first answer map, with the AUC its row of the areas table gives
    curve = _shown_image(tab, "#chk-curve")
    assert curve.shape[:2] == (480, 768)
    areas = [
        dict(zip(AREA_HEADERS, row[: len(AREA_HEADERS)], strict=True))
        for row in _table_rows(tab, "#chk-areas")
    ]
    assert {row["perturbation"] for row in areas} == {CHEAPEST_PERTURBATION}
    first = next(row for row in areas if row["curve"] == "deletion")
    expect(tab.locator("#chk-curve-auc")).to_contain_text(f"deletion AUC {float(first['auc']):.4f}")
    expect(tab.locator("#chk-curve-map input")).to_have_value(
        re.compile(re.escape(first["map_id"]))
    )

    # reliance: the real image and the four conditions; no swap image was given
    _expect_row_count(tab, "#chk-reliance", 1 + len(TOGGLED_CONDITIONS))
    reliance = {row[0]: row for row in _table_rows(tab, "#chk-reliance")}
    assert list(reliance) == ["original", *TOGGLED_CONDITIONS]
    assert reliance["swapped"][4].startswith("not built: upload a swap image")
    original = reliance["original"][1]
    for condition in ("blank", "text_only"):
        answer, unchanged = reliance[condition][1], reliance[condition][4]
        assert unchanged == ("yes" if answer == original else "no")
    for condition in ("blank", "text_only"):  # toggled off: their rows go
        tab.locator("#chk-conditions").get_by_label(condition, exact=True).uncheck()
    _expect_row_count(tab, "#chk-reliance", 3)
    assert [row[0] for row in _table_rows(tab, "#chk-reliance")] == [
        "original",
        "swapped",
        "occluded",
    ]
    plain = _shown_image(tab, "#chk-overlay")
    _expect_row_count(tab, "#chk-annotations", 0)

    # an annotation file of this image: its box listed and outlined on the map
    boxes = tmp_path / "boxes.csv"
    with Image.open(radiograph) as image:
        width, height = image.size
    boxes.write_text(
        "dicom_id,category_name,label_text,x,y,w,h,image_width,image_height\n"
        f"{radiograph.stem},Pleural Effusion,right effusion,{width // 8},{height // 2},"
        f"{width // 4},{height // 4},{width},{height}\n",
        encoding="utf-8",
    )
    tab.locator("#chk-annotation-file input[type=file]").set_input_files(str(boxes))
    # uploaded: Gradio may lay the name out as stem and extension, so its accessible name is read
    expect(tab.locator("#chk-annotation-file").get_by_role("cell", name=boxes.name)).to_be_visible()
    _run_checks(tab, f"1 annotation(s) of {radiograph.stem} outlined")  # markdown: no `
    _expect_row_count(tab, "#chk-annotations", 1)
    (annotation,) = _table_rows(tab, "#chk-annotations")
    assert annotation[2] == "Pleural Effusion"
    assert annotation[5] == f"x {width // 8}, y {height // 2}, w {width // 4}, h {height // 4}"
    outlined = _shown_image(tab, "#chk-overlay")
    assert outlined.shape == plain.shape and not np.array_equal(outlined, plain)
    _screenshot(tab, "checks")
