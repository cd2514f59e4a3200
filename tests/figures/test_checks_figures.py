"""The checks' figures: a deletion curve against random orders, annotation outlines on overlays.

Oracles: the hand-written points (the plotted line is the map's points, the band the random
orders' mean +- sample sd by hand), and a box whose pixel edges are known.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import Normalize, to_rgba
from PIL import Image

from cxr_attention.figures._style import figure_style, new_figure
from cxr_attention.figures.faithfulness import draw_faithfulness_curve, plot_faithfulness_curve
from cxr_attention.figures.overlay import CONTOUR_STYLES, draw_overlay, plot_overlay

FRACTIONS = [0.0, 0.5, 1.0]
MAP_MARGINS = [2.0, 0.5, -1.0]
RANDOM_MARGINS = {"random_order:0": [2.0, 1.5, -1.0], "random_order:1": [2.0, 0.5, -1.0]}


def _points() -> pd.DataFrame:
    rows = [("m1", "gradcam", f, v) for f, v in zip(FRACTIONS, MAP_MARGINS, strict=True)]
    for name, margins in RANDOM_MARGINS.items():
        rows += [(name, "random_order", f, v) for f, v in zip(FRACTIONS, margins, strict=True)]
    # another perturbation's points, which must not be drawn
    rows += [("m1", "gradcam", f, 9.0) for f in FRACTIONS]
    table = pd.DataFrame(rows, columns=["map_id", "method", "fraction", "margin"])
    table["perturbation"] = ["blur"] * (len(rows) - 3) + ["road"] * 3
    table["curve"] = "deletion"
    return table


AREA = {
    "map_id": "m1",
    "method": "gradcam",
    "perturbation": "blur",
    "curve": "deletion",
    "auc": 0.5,
    "random_auc_mean": 0.75,
    "random_auc_sd": 0.25,
}


def test_curve_draws_the_maps_points_over_the_random_mean_and_sd():
    with figure_style():
        ax = new_figure((4, 3)).add_subplot()
        draw_faithfulness_curve(ax, _points(), AREA)
    lines = {line.get_label(): line for line in ax.get_lines()}
    mine = lines["gradcam map (AUC 0.500)"]
    np.testing.assert_allclose(mine.get_xdata(), FRACTIONS)
    np.testing.assert_allclose(mine.get_ydata(), MAP_MARGINS)
    random = lines["random orders, mean +-1 sd (AUC 0.750 +- 0.250)"]
    np.testing.assert_allclose(random.get_ydata(), [2.0, 1.0, -1.0])
    # the band: mean +- sample sd of (1.5, 0.5) at the middle step = 1 +- 0.7071
    (band,) = ax.collections
    vertices = band.get_paths()[0].vertices
    middle = vertices[np.isclose(vertices[:, 0], 0.5)][:, 1]
    np.testing.assert_allclose([middle.min(), middle.max()], [1 - 0.5**0.5, 1 + 0.5**0.5])


def test_curve_of_an_unknown_map_names_it(tmp_path):
    with pytest.raises(ValueError, match=r"no points of m2 \(blur, deletion\)"):
        plot_faithfulness_curve(
            _points(), {**AREA, "map_id": "m2"}, title="t", out_path=tmp_path / "c.png"
        )
    out = plot_faithfulness_curve(_points(), AREA, title="t", out_path=tmp_path / "c.png")
    with Image.open(out) as png:
        assert png.size == (round(6.4 * 120), round(4.0 * 120))


def test_annotation_outline_lies_on_the_boxes_pixel_edges(tmp_path):
    """A box over columns 25-74 and rows 10-29 of a 100 x 50 image: its outline runs along x 25
    and 75, y 10 and 30 (the pixels' edges), in the annotation's colour, and it is named."""
    image = np.full((50, 100), 100, np.uint8)
    box = np.zeros((50, 100), dtype=bool)
    box[10:30, 25:75] = True
    with figure_style():
        ax = new_figure((4, 3)).add_subplot()
        draw_overlay(ax, image, np.ones((16, 16)), norm=Normalize(0, 2), annotation_mask=box)
    colour = to_rgba(CONTOUR_STYLES["annotation"][1])
    (outline,) = [c for c in ax.collections if np.allclose(c.get_edgecolor()[0], colour, atol=1e-3)]
    vertices = np.concatenate([path.vertices for path in outline.get_paths()])
    assert vertices[:, 0].min() == pytest.approx(25) and vertices[:, 0].max() == pytest.approx(75)
    assert vertices[:, 1].min() == pytest.approx(10) and vertices[:, 1].max() == pytest.approx(30)
    assert "annotation" in [t.get_text() for t in ax.get_legend().get_texts()]
    assert ax.get_xlim() == (0, 100) and ax.get_ylim() == (50, 0)  # the image's own extent

    with_box = plot_overlay(
        image, np.ones((16, 16)), title="t", out_path=tmp_path / "a.png", annotation_mask=box
    )
    without = plot_overlay(image, np.ones((16, 16)), title="t", out_path=tmp_path / "b.png")
    with Image.open(with_box) as a, Image.open(without) as b:
        assert not np.array_equal(np.asarray(a), np.asarray(b))
