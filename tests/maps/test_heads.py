"""Localization heads: per-head image share and spatial entropy by hand, the selection on a
planted table, and ``head_selected``'s map from the chosen heads' captured attention."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from cxr_attention.captures import Capture
from cxr_attention.maps.methods.base import MapInputs, Unavailable
from cxr_attention.maps.methods.head_selected import (
    HEAD_COLUMNS,
    HeadSelected,
    head_statistics,
    head_table,
    select_heads,
)
from cxr_attention.maps.params import MapParams
from cxr_attention.maps.records import SampleKey
from cxr_attention.maps.targets import MapTarget


def _capture(attention):
    attention = np.asarray(attention, dtype=np.float32)
    n_layers, _, n_rows, n_image = attention.shape
    return Capture(
        attention=attention,
        text_attention=np.zeros((n_layers, attention.shape[1], n_rows, 8), np.float32),
        layers=np.arange(3, 3 + n_layers),
        input_ids=np.arange(8),
        generated_ids=np.arange(n_rows),
        image_token_positions=np.arange(2, 2 + n_image),
        grid_shape=np.array([2, 2]),
    )


def test_head_statistics_by_hand():
    # one layer (index 7), two heads, two rows, four image tokens
    attention = np.array(
        [[[[0.1, 0.1, 0.1, 0.1], [0.1, 0.1, 0.1, 0.1]], [[0.6, 0, 0, 0], [0.4, 0, 0, 0]]]]
    )
    table = head_statistics(attention, [7], rows=[0, 1])
    assert table[["layer", "head"]].values.tolist() == [[7, 0], [7, 1]]
    np.testing.assert_allclose(table["image_share"], [0.4, 0.5])
    np.testing.assert_allclose(table["spatial_entropy"], [1.0, 0.0], atol=1e-12)
    # two tokens of equal weight: entropy log 2 / log 4 = 0.5
    half = head_statistics(np.array([[[[0.2, 0.2, 0, 0]]]]), [0], rows=[0])
    np.testing.assert_allclose(half["spatial_entropy"], [0.5])


def test_select_heads_finds_the_planted_localization_heads():
    rng = np.random.default_rng(0)
    samples = []
    for sample in range(6):
        attention = rng.random((2, 4, 3, 4)) * 0.05  # diffuse, small shares
        focus = np.zeros(4)
        focus[sample % 4] = 0.8
        attention[1, 2] = focus  # layer 4 head 2: much image attention, on one token
        attention[0, 3] = focus / 2 + 0.01  # layer 3 head 3: the same, a little less sharp
        samples.append((f"s{sample}", _capture(attention)))
    table = head_table(samples)
    assert list(table.columns) == HEAD_COLUMNS and len(table) == 6 * 8
    assert select_heads(table, k=2, share_quantile=0.75) == [(4, 2), (3, 3)]
    with pytest.raises(ValueError, match="k >= 1"):
        select_heads(table, k=0, share_quantile=0.75)


def test_head_selected_averages_the_chosen_heads():
    attention = np.zeros((2, 2, 1, 4))
    attention[0, 1, 0] = [0.4, 0.2, 0.0, 0.0]  # layer 3, head 1
    attention[1, 0, 0] = [0.0, 0.2, 0.2, 0.0]  # layer 4, head 0
    attention[1, 1, 0] = [0.0, 0.0, 0.0, 0.9]  # not chosen
    target = MapTarget("", "answer", generated_positions=(0,))
    params = MapParams(localization_heads=((3, 1), (4, 0)), min_image_mass=0.0)
    inputs = MapInputs(_capture(attention), params, SampleKey("s"))
    (result,) = HeadSelected().attribute(inputs, [target])
    np.testing.assert_allclose(result.grid, [[0.4, 0.4], [0.2, 0.0]], atol=1e-7)  # (.4+.4+.2)/1
    assert result.image_mass == pytest.approx(0.5)
    assert (result.layers, result.heads) == ("3|4", "1|0")
    (none,) = HeadSelected().attribute(
        MapInputs(_capture(attention), MapParams(), SampleKey("s")), [target]
    )
    assert isinstance(none, Unavailable) and "localization_heads" in none.reason


def test_write_head_selection_writes_the_head_table_and_the_planted_heads(tmp_path):
    from scipy.stats import entropy

    from cxr_attention.captures import write_capture
    from cxr_attention.maps.methods.head_selected import (
        read_localization_heads,
        with_localization_heads,
        write_head_selection,
    )

    rng = np.random.default_rng(1)
    rows, attentions = [], {}
    for sample in range(5):
        attention = (rng.random((2, 4, 3, 4)) * 0.05).astype(np.float32)
        attention[1, 0] = np.eye(4, dtype=np.float32)[sample % 4] * 0.7  # layer 4 head 0
        attention[0, 2, :, sample % 4] += 0.6  # layer 3 head 2: sharp, a little less so
        name = f"s{sample}"
        write_capture(tmp_path / f"{name}.npz", _capture(attention))
        rows.append({"sample_id": name, "dicom_id": f"d{sample // 2}", "capture": f"{name}.npz"})
        attentions[name] = attention.astype(np.float64)
    pd.DataFrame(rows).to_csv(tmp_path / "answers.csv", index=False)
    calibration = {"split": "validate", "images": 3, "k": 2, "share_quantile": 0.75}
    heads = write_head_selection(
        answers_csv=tmp_path / "answers.csv",
        captures_dir=tmp_path,
        out_table=tmp_path / "heads.csv",
        out_heads=tmp_path / "localization_heads.json",
        calibration=calibration,
    )
    assert heads == [(4, 0), (3, 2)]
    assert read_localization_heads(tmp_path / "localization_heads.json") == ((4, 0), (3, 2))
    chosen = json.loads((tmp_path / "localization_heads.json").read_text())
    assert (chosen["split"], chosen["images"], chosen["samples"]) == ("validate", 3, 5)
    table = pd.read_csv(tmp_path / "heads.csv", dtype={"sample_id": str})
    assert list(table.columns) == HEAD_COLUMNS and len(table) == 5 * 2 * 4
    # oracle: each head's mean row, its sum and its normalised entropy (scipy)
    for row in table.itertuples(index=False):
        mean_row = attentions[row.sample_id][row.layer - 3, row.head].mean(axis=0)
        assert row.image_share == pytest.approx(mean_row.sum(), rel=1e-5)
        assert row.spatial_entropy == pytest.approx(entropy(mean_row) / np.log(4), abs=1e-5)
    # the maps settings take the chosen heads unless they are set by hand
    path = tmp_path / "localization_heads.json"
    assert with_localization_heads({}, path)["localization_heads"] == ((4, 0), (3, 2))
    by_hand = with_localization_heads({"localization_heads": [[3, 1]]}, path)
    assert by_hand["localization_heads"] == [[3, 1]]
    assert with_localization_heads({"min_image_mass": 0.1}, []) == {"min_image_mass": 0.1}
