"""Figures: PNG size and byte-identical reruns, and the overlay's geometry on a non-square image."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy.spatial.distance import jensenshannon

from cxr_attention.figures._groups import group_order, with_question_parts
from cxr_attention.figures.accuracy import plot_accuracy
from cxr_attention.figures.overlay import display_range, plot_overlay
from cxr_attention.figures.panels import plot_method_panels
from cxr_attention.figures.sensitivity import plot_prompt_sensitivity
from cxr_attention.figures.summary import (
    plot_js_histogram,
    plot_method_usage,
    plot_metric_distributions,
)

HEIGHT, WIDTH = 240, 480  # a wide, non-square radiograph


def _image() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(60, 200, size=(HEIGHT, WIDTH), dtype=np.uint8)


def _masks() -> tuple[np.ndarray, np.ndarray]:
    body = np.zeros((HEIGHT, WIDTH), np.uint8)
    body[10:230, 30:450] = 255
    lungs = np.zeros((HEIGHT, WIDTH), np.uint8)
    lungs[40:200, 60:220] = 1
    lungs[40:200, 260:420] = 2
    return body, lungs


def _map(seed: int = 0) -> np.ndarray:
    values = np.random.default_rng(seed).random((16, 16)) ** 3
    return values / values.sum()


def _metrics_table() -> pd.DataFrame:
    rng = np.random.default_rng(1)
    rows = []
    for i in range(36):
        finding = ("pleural_effusion", "cardiomegaly")[i % 2]
        strategy = ("baseline", "plain", "hard_positive")[i % 3]
        rows.append(
            {
                "map_id": f"m{i}",
                "question_id": f"{finding}.{strategy}.{i % 4}",
                "method": ("attention", "gradcam", "uniform")[i % 3],
                "inside_body": rng.uniform(0.5, 1),
                "border_fraction": rng.uniform(0, 0.1),
                "entropy": rng.uniform(2, 5.5),
                "focus": rng.uniform(0, 0.5),
                "left_right": rng.uniform(0.2, 0.8) if i % 5 else np.nan,
                "apical_basal": rng.uniform(0.2, 0.8),
            }
        )
    return pd.DataFrame(rows)


def _accuracy_table() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "finding": ["all", "all", "cardiomegaly", "cardiomegaly"],
            "strategy": ["all", "baseline", "all", "baseline"],
            "accuracy": [0.7, 0.8, 0.5, np.nan],
            "ci_low": [0.6, 0.6, 0.3, np.nan],
            "ci_high": [0.8, 0.9, 0.7, np.nan],
            "n": [40, 20, 10, 0],
            "n_correct": [28, 16, 5, 0],
            "n_subjects": [10, 10, 5, 0],
        }
    )


def _js_table() -> pd.DataFrame:
    rng = np.random.default_rng(2)
    return pd.DataFrame(
        {"js_divergence": rng.beta(2, 6, 40), "strategy_b": ["plain", "hard_positive"] * 20}
    )


def _draw(kind: str, out: Path, figsize: tuple[float, float], dpi: int) -> Path:
    """One figure of each kind from synthetic inputs."""
    image, (body, lungs) = _image(), _masks()
    common = {"out_path": out, "figsize": figsize, "dpi": dpi}
    if kind == "overlay":
        return plot_overlay(
            image, _map(), body_mask=body, lung_labels=lungs, title="effusion", **common
        )
    if kind == "panels":
        maps = {("baseline", "attention"): _map(1), ("plain", "gradcam"): _map(2)}
        return plot_method_panels(
            image, maps, title="img", answers={"baseline": "yes"}, body_mask=body, **common
        )
    if kind == "sensitivity":
        return plot_prompt_sensitivity(
            image, _map(1), _map(2), label_a="baseline", label_b="plain", title="img", **common
        )
    if kind == "distributions":
        return plot_metric_distributions(_metrics_table(), by="finding", **common)
    if kind == "accuracy":
        return plot_accuracy(_accuracy_table(), **common)
    if kind == "js_histogram":
        return plot_js_histogram(_js_table(), **common)
    if kind == "method_usage":
        return plot_method_usage(_metrics_table(), **common)
    raise AssertionError(kind)


KINDS = (
    "overlay",
    "panels",
    "sensitivity",
    "distributions",
    "accuracy",
    "js_histogram",
    "method_usage",
)


def _png_chunk_types(data: bytes) -> list[bytes]:
    """Chunk types of a PNG file, read from its structure (length, type, data, CRC)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    types, offset = [], 8
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        chunk_type = data[offset + 4 : offset + 8]
        body = data[offset + 8 : offset + 8 + length]
        (crc,) = struct.unpack(">I", data[offset + 8 + length : offset + 12 + length])
        assert zlib.crc32(chunk_type + body) == crc
        types.append(chunk_type)
        offset += 12 + length
    return types


@pytest.mark.parametrize("kind", KINDS)
def test_each_figure_is_a_png_of_figsize_times_dpi(kind, tmp_path):
    out = _draw(kind, tmp_path / f"{kind}.png", figsize=(7.5, 4.0), dpi=80)
    with Image.open(out) as png:
        assert png.format == "PNG"
        assert png.size == (600, 320)
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind


@pytest.mark.parametrize("kind", KINDS)
def test_each_figure_is_byte_identical_on_rerun_without_metadata(kind, tmp_path):
    first = _draw(kind, tmp_path / "a.png", figsize=(6.0, 4.0), dpi=60).read_bytes()
    second = _draw(kind, tmp_path / "b.png", figsize=(6.0, 4.0), dpi=60).read_bytes()
    assert first == second
    assert not {b"tEXt", b"iTXt", b"zTXt", b"tIME"} & set(_png_chunk_types(first))


def _planted(cell: tuple[int, int]) -> np.ndarray:
    grid = np.full((16, 16), 0.5 / 255)
    grid[cell] = 0.5
    return grid


def _run_containing(flags: np.ndarray, index: int) -> tuple[int, int]:
    """First and last index of the run of True values in ``flags`` that contains ``index``."""
    assert flags[index]
    start = index
    while start > 0 and flags[start - 1]:
        start -= 1
    stop = index
    while stop < len(flags) - 1 and flags[stop + 1]:
        stop += 1
    return start, stop


def test_overlay_puts_a_planted_hot_cell_where_it_lies_on_a_non_square_image(tmp_path):
    """Two renders that differ only in where the hot token is: the hot spots' centroids fix the
    image's placement and scale on the canvas, which must match the drawn image's own extent and
    the image's aspect ratio (a squashed or transposed map would not)."""
    image = np.full((HEIGHT, WIDTH), 128, np.uint8)
    cell_a, cell_b = (3, 13), (11, 4)  # row, column: A upper right, B lower left
    arrays = []
    for name, cell in (("a", cell_a), ("b", cell_b)):
        out = plot_overlay(
            image, _planted(cell), title="planted", out_path=tmp_path / f"{name}.png", alpha=1.0
        )
        with Image.open(out) as png:
            arrays.append(np.asarray(png.convert("RGB")).astype(float))
    render_a, render_b = arrays
    brightness_a, brightness_b = render_a.sum(-1), render_b.sum(-1)
    # 100, not more: the palette PNG (save_figure) dithers the hot spot's steep halo by a few
    # levels per channel, and a higher bar would cut into the spot itself.
    hot_a = brightness_a - brightness_b > 100  # where only A's hot token is drawn
    hot_b = brightness_b - brightness_a > 100
    assert hot_a.sum() > 50 and hot_b.sum() > 50
    (ya, xa), (yb, xb) = (np.argwhere(m).mean(axis=0) for m in (hot_a, hot_b))

    # Token centres lie at (index + 0.5) / 16 of the displayed image's extent.
    shown_width = (xa - xb) / ((cell_a[1] - cell_b[1]) / 16)
    shown_height = (ya - yb) / ((cell_a[0] - cell_b[0]) / 16)
    assert shown_width > 0 and shown_height > 0  # A right of and above B: not mirrored
    assert shown_width / shown_height == pytest.approx(WIDTH / HEIGHT, rel=0.05)
    left = xa - (cell_a[1] + 0.5) / 16 * shown_width
    top = ya - (cell_a[0] + 0.5) / 16 * shown_height

    # The drawn image itself: the non-white run through the middle of the solved extent.
    not_white = render_b.min(-1) < 250
    middle_row, middle_col = round(top + shown_height / 2), round(left + shown_width / 2)
    first_col, last_col = _run_containing(not_white[middle_row], middle_col)
    first_row, last_row = _run_containing(not_white[:, middle_col], middle_row)
    assert first_col == pytest.approx(left, abs=0.02 * shown_width)
    assert last_col + 1 == pytest.approx(left + shown_width, abs=0.02 * shown_width)
    assert first_row == pytest.approx(top, abs=0.02 * shown_height)
    assert last_row + 1 == pytest.approx(top + shown_height, abs=0.02 * shown_height)


def test_display_range_clips_at_percentiles_and_falls_back_to_the_full_range():
    values = np.random.default_rng(3).random((16, 16))
    limits = display_range(values, (2, 98))
    assert (limits.low, limits.high) == tuple(np.percentile(values, [2, 98]))
    assert limits.clipped

    single_hot = np.zeros((16, 16))
    single_hot[5, 7] = 1.0  # percentiles both 0: the hot token must still show
    limits = display_range(single_hot, (2, 98))
    assert (limits.low, limits.high, limits.clipped) == (0.0, 1.0, False)

    constant = display_range(np.full((16, 16), 1 / 256))
    assert constant.low < constant.high

    pooled = display_range([np.zeros((2, 2)), np.ones((2, 2))], (0, 100))
    assert (pooled.low, pooled.high) == (0.0, 1.0)
    with pytest.raises(ValueError, match="percentiles"):
        display_range(values, (98, 2))


def test_sensitivity_title_uses_the_base_2_divergence_not_the_distance(tmp_path):
    """The JS computed by default equals scipy's base-2 distance squared: same title, same bytes."""
    map_a, map_b = _map(4), _map(5)
    expected = jensenshannon(map_a.ravel(), map_b.ravel(), base=2) ** 2
    kwargs = {"label_a": "a", "label_b": "b", "title": "t", "dpi": 50}
    default = plot_prompt_sensitivity(_image(), map_a, map_b, out_path=tmp_path / "d.png", **kwargs)
    given = plot_prompt_sensitivity(
        _image(), map_a, map_b, js=expected, out_path=tmp_path / "g.png", **kwargs
    )
    distance = plot_prompt_sensitivity(
        _image(), map_a, map_b, js=np.sqrt(expected), out_path=tmp_path / "s.png", **kwargs
    )
    assert default.read_bytes() == given.read_bytes()
    assert default.read_bytes() != distance.read_bytes()


def test_bad_inputs_are_refused(tmp_path):
    out = tmp_path / "x.png"
    with pytest.raises(ValueError, match="uint8"):
        plot_overlay(_image().astype(float), _map(), title="t", out_path=out)
    with pytest.raises(ValueError, match="2-D"):
        plot_overlay(_image(), _map().ravel(), title="t", out_path=out)
    with pytest.raises(ValueError, match="mask"):
        plot_overlay(_image(), _map(), body_mask=np.ones((10, 10)), title="t", out_path=out)
    with pytest.raises(ValueError, match="not shown"):
        plot_method_panels(_image(), {("baseline", "saliency"): _map()}, title="t", out_path=out)
    with pytest.raises(ValueError, match="lacks columns"):
        plot_accuracy(pd.DataFrame({"strategy": ["all"], "accuracy": [0.5]}), out_path=out)
    assert not out.exists()


def test_question_parts_and_group_order_follow_the_identifier_contract():
    table = pd.DataFrame({"question_id": ["cardiomegaly.hard_positive.3", "vqa.12"]})
    parts = with_question_parts(table)
    assert parts["finding"].tolist() == ["cardiomegaly", "vqa"]
    assert parts["strategy"].tolist() == ["hard_positive", "vqa"]
    assert group_order(["plain", "all", "hard_positive", "baseline", "zeta"], "strategy") == [
        "all",
        "baseline",
        "plain",
        "hard_positive",
        "zeta",
    ]


@pytest.mark.parametrize("kind", ["js_histogram", "method_usage", "distributions"])
def test_empty_tables_still_give_a_figure(kind, tmp_path):
    out = tmp_path / f"{kind}.png"
    if kind == "js_histogram":
        plot_js_histogram(_js_table().iloc[:0], out_path=out, dpi=40)
    elif kind == "method_usage":
        plot_method_usage(_metrics_table().iloc[:0], out_path=out, dpi=40)
    else:
        plot_metric_distributions(_metrics_table().iloc[:0], by="strategy", out_path=out, dpi=40)
    with Image.open(out) as png:
        assert png.size[0] > 0


def test_saved_figures_are_palette_pngs_close_to_matplotlibs_rendering(tmp_path):
    """The oracle is matplotlib's own RGBA PNG of the same figure: the palette PNG must keep its
    pixels' local averages (dithering trades single pixels for no banding) in fewer bytes: about
    half on this smooth test picture, a third on the demo's figures of real films."""
    import io

    from cxr_attention.figures._style import figure_style, new_figure, save_figure

    rows, cols = np.mgrid[0:300, 0:400]
    radiograph = 128 + 90 * np.sin(cols / 37.0) * np.cos(rows / 53.0)
    heat = np.exp(-(((rows - 90) / 40.0) ** 2) - ((cols - 280) / 60.0) ** 2)
    with figure_style():
        figure = new_figure((6.0, 4.0), dpi=100)
        ax = figure.subplots()
        ax.imshow(radiograph, cmap="gray", vmin=0, vmax=255)
        ax.imshow(heat, cmap="inferno", alpha=0.5)
        ax.set_title("a radiograph and a heat map")
        reference = io.BytesIO()
        figure.savefig(reference, format="png", dpi=100)
        out = save_figure(figure, tmp_path / "figure.png", dpi=100)
    reference.seek(0)
    with Image.open(reference) as png:
        expected = np.asarray(png.convert("RGB"), dtype=float)
    with Image.open(out) as png:
        assert png.mode == "P"
        saved = np.asarray(png.convert("RGB"), dtype=float)
    assert saved.shape == expected.shape == (400, 600, 3)

    def block_means(pixels):  # 4 x 4 pixel blocks: what the eye averages over
        return pixels.reshape(100, 4, 150, 4, 3).mean(axis=(1, 3))

    assert np.abs(block_means(saved) - block_means(expected)).mean() < 2.0
    assert np.abs(block_means(saved) - block_means(expected)).max() < 40
    assert out.stat().st_size < 0.6 * len(reference.getvalue())
