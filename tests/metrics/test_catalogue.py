"""The catalogue of per-map metrics: its verdicts on hand-picked values, and the docs agree."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from cxr_attention.metrics.catalogue import (
    BORDER_FRACTION,
    CATALOGUE,
    ENTROPY,
    INSIDE_BODY,
    LEFT_RIGHT,
    METRIC_COLUMNS,
    QUALITY_TARGETS,
    metric,
)
from cxr_attention.metrics.per_map import map_metrics

DOCS = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"


def test_columns_are_what_map_metrics_computes():
    import numpy as np

    values = map_metrics(np.full((4, 4), 1 / 16), body_mask=None, lung_labels=None)
    assert ["map_id", *values] == METRIC_COLUMNS
    assert [m.column for m in CATALOGUE] == list(values)[: len(CATALOGUE)]


@pytest.mark.parametrize(
    ("entry", "value", "meets"),
    [
        (INSIDE_BODY, 0.7, True),
        (INSIDE_BODY, 0.69, False),
        (BORDER_FRACTION, 0.05, True),
        (BORDER_FRACTION, 0.051, False),
        (INSIDE_BODY, math.nan, False),
    ],
)
def test_targets(entry, value, meets):
    assert entry.meets_target(value) is meets


@pytest.mark.parametrize(
    ("entry", "value", "band"),
    [
        (ENTROPY, 2.99, "focused"),
        (ENTROPY, 3.0, "intermediate"),
        (ENTROPY, 4.5, "intermediate"),
        (ENTROPY, 4.51, "diffuse"),
        (ENTROPY, math.nan, "undefined"),
        (LEFT_RIGHT, 0.5, "balanced"),
        (LEFT_RIGHT, 0.2, "right"),
    ],
)
def test_bands(entry, value, band):
    assert entry.band_of(value) == band


def test_quality_verdicts_are_against_chance_and_their_summary_keys():
    by_key = {t.key: t for t in QUALITY_TARGETS}
    assert list(by_key) == [
        "inside_body_lift_gt_1",
        "border_fraction_lift_lt_1",
        "entropy_below_uniform",
    ]
    # A uniform map has lift 1 and normalised entropy 1: it meets none of them.
    assert not any(target.met(1.0) for target in QUALITY_TARGETS)
    assert by_key["inside_body_lift_gt_1"].met(1.05)
    assert by_key["border_fraction_lift_lt_1"].met(0.5)
    assert by_key["inside_body_lift_gt_1"].value_column == "inside_body_lift"
    assert by_key["inside_body_lift_gt_1"].statistic == "ci_low"
    with pytest.raises(KeyError, match="no per-map metric"):
        metric("sharpness")


def test_the_docs_table_states_the_catalogue_targets():
    section = DOCS.read_text().split("## Per-map metrics")[1].split("\n## ")[0]
    rows = {}
    for line in section.splitlines():
        found = re.match(r"\| `(\w+)` \|.*\|(.*)\|$", line)
        if found:
            rows[found.group(1)] = found.group(2).strip()
    assert set(rows) == {m.column for m in CATALOGUE}
    assert f">= {INSIDE_BODY.target}" in rows["inside_body"]
    assert f"<= {BORDER_FRACTION.target}" in rows["border_fraction"]
    low, high = ENTROPY.band
    assert f"< {low} focused, > {high} diffuse" in rows["entropy"]
    assert f"balanced {LEFT_RIGHT.band[0]}-{LEFT_RIGHT.band[1]}" in rows["left_right"]
