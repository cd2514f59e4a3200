"""Titles, labels and legends of the sample figures lie inside the figure and say what they show.

The oracle is matplotlib's own renderer: after the figure is saved, every title, axis label and
legend is measured with ``get_window_extent`` and must lie inside the figure's bounding box
(a clipped text pokes out of it). The question text must be on the figure and an answer map is
called one (not ``term ''``).
"""

from __future__ import annotations

import re

import cv2
import numpy as np
import pandas as pd
import pytest
from matplotlib.text import Text

from cxr_attention.figures import overlay, panels, sensitivity
from cxr_attention.figures.samples import write_sample_figures

# A real MIMIC-CXR image id is 44 characters: wider than an overlay at the figure's font size.
DICOM_ID = "01ee40b2-3914538e-d0c98d8c-1be65939-1a211794"
QUESTIONS = {
    "baseline": "Is there evidence of pleural effusion in this chest X-ray?",
    "plain": "Is there fluid around the lungs in this picture of my chest?",
    "hard_positive": "Could the blunting of the costophrenic angles mean there is pleural fluid?",
}


def _shard(tmp_path):
    folder = tmp_path / "preprocess"
    folder.mkdir()
    rng = np.random.default_rng(1)
    image = rng.integers(0, 255, size=(240, 240), dtype=np.uint8)
    body = np.zeros_like(image)
    body[10:230, 10:230] = 255
    lungs = np.zeros_like(image)
    lungs[40:200, 30:110], lungs[40:200, 130:210] = 1, 2
    for suffix, array in (("", image), ("_body", body), ("_lungs", lungs)):
        cv2.imwrite(str(folder / f"{DICOM_ID}{suffix}.png"), array)
    images = [
        {
            "dicom_id": DICOM_ID,
            "image": f"preprocess/{DICOM_ID}.png",
            "body_mask": f"preprocess/{DICOM_ID}_body.png",
            "lung_mask": f"preprocess/{DICOM_ID}_lungs.png",
        }
    ]
    answers, maps, arrays = [], [], {}
    for strategy, question in QUESTIONS.items():
        sample_id = f"{DICOM_ID}__pleural_effusion.{strategy}.0"
        answers.append(
            {
                "sample_id": sample_id,
                "dicom_id": DICOM_ID,
                "question_id": f"pleural_effusion.{strategy}.0",
                "finding": "pleural_effusion",
                "strategy": strategy,
                "question": question,
                "answer": "yes",
            }
        )
        map_id = f"{sample_id}__answer__answer__attention"
        values = rng.random((16, 16)).astype(np.float32)
        arrays[map_id] = values / values.sum()
        # The answer's own map has a blank term (docs/architecture.md).
        maps.append(
            {
                "map_id": map_id,
                "sample_id": sample_id,
                "dicom_id": DICOM_ID,
                "term": "",
                "source": "answer",
                "method": "attention",
            }
        )
    paths = {name: tmp_path / f"{name}.csv" for name in ("answers_csv", "maps_csv", "images_csv")}
    for name, rows in (("answers_csv", answers), ("maps_csv", maps), ("images_csv", images)):
        pd.DataFrame(rows).to_csv(paths[name], index=False)
    paths["maps_npz"] = tmp_path / "maps.npz"
    np.savez(paths["maps_npz"], **arrays)
    return paths


@pytest.fixture
def saved_figures(tmp_path, monkeypatch):
    """Every figure the sample figures save, kept for measuring."""
    figures = []
    for module in (overlay, panels, sensitivity):
        original = module.save_figure

        def keep(figure, out_path, *, dpi=overlay.DPI, _original=original):
            path = _original(figure, out_path, dpi=dpi)
            figures.append((path.name, figure))
            return path

        monkeypatch.setattr(module, "save_figure", keep)
    written = write_sample_figures(
        **_shard(tmp_path), out_dir=tmp_path / "figures", samples_per_shard=1, root=tmp_path
    )
    assert len(written) == len(figures) == 4  # overlay, panels, two sensitivity figures
    return figures


def _texts(figure):
    """Titles, axis labels and legends of a figure, found without the library's own helper."""
    items = [figure._suptitle] if figure._suptitle is not None else []
    items += list(figure.legends)
    for ax in figure.axes:
        items += [ax.title, ax.xaxis.label, ax.yaxis.label]
        if ax.get_legend() is not None:
            items.append(ax.get_legend())
    return [t for t in items if t.get_visible() and (not hasattr(t, "get_text") or t.get_text())]


def test_titles_labels_and_legends_lie_inside_the_figure(saved_figures):
    for name, figure in saved_figures:
        renderer = figure.canvas.get_renderer()
        figure.draw(renderer)
        box = figure.bbox
        for item in _texts(figure):
            extent = item.get_window_extent(renderer)
            inside = (
                extent.x0 >= box.x0 - 0.5
                and extent.x1 <= box.x1 + 0.5
                and extent.y0 >= box.y0 - 0.5
                and extent.y1 <= box.y1 + 0.5
            )
            label = getattr(item, "get_text", lambda: "legend")()
            assert inside, f"{name}: {label!r} at {extent} outside {box}"


def _all_text(figure) -> str:
    words = [t.get_text() for t in figure.findobj(Text)]
    return re.sub(r"\s+", " ", " ".join(words))


def test_the_question_is_shown_and_the_answer_map_named(saved_figures):
    by_name = {name.split("__")[0]: figure for name, figure in saved_figures}
    for kind in ("overlay", "panels"):
        text = _all_text(by_name[kind])
        # Wrapping may break a line anywhere between words: compare with whitespace collapsed.
        assert QUESTIONS["baseline"] in text.replace("- ", "-"), kind
        assert "answer map" in text and "term ''" not in text, kind
    assert all(q in _all_text(by_name["panels"]).replace("- ", "-") for q in QUESTIONS.values())
    # The whole image id, its first character included, even when wrapped across lines.
    assert DICOM_ID in _all_text(by_name["overlay"]).replace(" ", "")
