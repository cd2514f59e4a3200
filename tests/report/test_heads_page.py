"""The report's localization-heads page (rules/heads.smk, rule heads_page): a hand-made head table
whose picks, chosen heads and means are worked out by hand below, and the page planned only when
the workflow calibrates heads (head_selected used, maps.localization_heads null)."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest
import yaml
from workflow.demo import loaded_workflow

from cxr_attention.io import ConfigError
from cxr_attention.report.heads import write_heads_page

REPO = Path(__file__).resolve().parents[2]
HEADS_STUDY = REPO / "tests" / "workflow" / "heads_study.yaml"

# Two layers (5, 9) of two heads, three samples: (image_share, spatial_entropy) per head.
HEADS = {
    "s1": {(5, 0): (0.40, 0.50), (5, 1): (0.10, 0.10), (9, 0): (0.30, 0.20), (9, 1): (0.20, 0.90)},
    "s2": {(5, 0): (0.35, 0.60), (5, 1): (0.30, 0.40), (9, 0): (0.05, 0.05), (9, 1): (0.25, 0.30)},
    "s3": {(5, 0): (0.50, 0.40), (5, 1): (0.05, 0.20), (9, 0): (0.25, 0.30), (9, 1): (0.15, 0.70)},
}
# By hand, k = 2 and share quantile 0.25 (pandas' linear interpolation over a sample's four
# shares: the lowest plus 0.75 of the gap to the next): the thresholds are 0.175, 0.20 and 0.125,
# so each sample's lowest-share head drops out (s1: (5, 1); s2: (9, 0); s3: (5, 1)) and the two
# of lowest entropy among the other three are its picks: s1 (9, 0) and (5, 0); s2 (9, 1) and
# (5, 1); s3 (9, 0) and (5, 0). Picks: (9, 0) 2, (5, 0) 2, (5, 1) 1, (9, 1) 1; mean entropy
# breaks the ties: (9, 0) 0.55 / 3 = 0.1833 before (5, 0) 0.5, (5, 1) 0.2333 before (9, 1) 0.6333.
# Mean image shares: (9, 0) 0.6 / 3 = 0.2, (5, 0) 1.25 / 3 = 0.4167, (5, 1) 0.15.
CHOSEN_ROWS = [
    ["1", "9", "0", "2", "0.6667", "0.2", "0.1833"],
    ["2", "5", "0", "2", "0.6667", "0.4167", "0.5"],
]
THIRD_ROW = ["3", "5", "1", "1", "0.3333", "0.15", "0.2333"]


class _Tables(HTMLParser):
    """The page's tables as rows of cell texts, its text, and whether its tags nest."""

    def __init__(self):
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self.text: list[str] = []
        self.stack: list[str] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "meta":
            return
        self.stack.append(tag)
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes {self.stack[-1:]}"
        self.stack.pop()
        if tag in ("td", "th"):
            self.tables[-1][-1].append("".join(self._cell or []))
            self._cell = None

    def handle_data(self, data):
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)


def _calibration(folder: Path) -> tuple[Path, Path]:
    rows = [
        {"sample_id": sample, "layer": layer, "head": head, "image_share": share,
         "spatial_entropy": entropy}
        for sample, heads in HEADS.items()
        for (layer, head), (share, entropy) in heads.items()
    ]  # fmt: skip
    table = folder / "heads.csv"
    pd.DataFrame(rows).to_csv(table, index=False)
    chosen = folder / "localization_heads.json"
    chosen.write_text(
        json.dumps(
            {
                "localization_heads": [[9, 0], [5, 0]],
                "split": "validate",
                "k": 2,
                "share_quantile": 0.25,
                "images": 3,
                "samples": 3,
            }
        )
    )
    return table, chosen


def test_page_shows_the_split_the_chosen_heads_and_the_first_heads(tmp_path):
    table, chosen = _calibration(tmp_path)
    page = write_heads_page(table, chosen, tmp_path / "heads.html", top=3).read_text()
    parsed = _Tables()
    parsed.feed(page)
    assert not parsed.stack
    text = " ".join("".join(parsed.text).split())
    assert "Chosen on split validate: 3 image(s), 3 sample(s)" in text
    assert "k = 2, share quantile 0.25" in text
    assert "Chosen heads (layer, head): (9, 0), (5, 0)" in text
    chosen_table, ranking = parsed.tables
    assert chosen_table[1:] == CHOSEN_ROWS
    # the ranking stops at top (3) of the 4 heads: (9, 1) is left out
    assert "The first 3 of 4 heads" in text
    assert ranking[1:] == [*CHOSEN_ROWS, THIRD_ROW]
    # the full table is named, not embedded
    assert f"{table.as_posix()}" in text and "12 rows" in text
    everything = write_heads_page(table, chosen, tmp_path / "all.html", top=4).read_text()
    assert "All 4 heads, in the order of the choice" in everything


def test_page_refuses_a_head_table_without_its_columns(tmp_path):
    table, chosen = _calibration(tmp_path)
    pd.read_csv(table).drop(columns="spatial_entropy").to_csv(table, index=False)
    with pytest.raises(ConfigError, match=r"heads\.csv: missing column"):
        write_heads_page(table, chosen, tmp_path / "heads.html")
    table, chosen = _calibration(tmp_path)
    chosen.write_text("[]")
    with pytest.raises(ConfigError, match="not a localization heads file"):
        write_heads_page(table, chosen, tmp_path / "heads.html")


def test_report_shows_the_page_only_when_the_workflow_calibrates_heads(tmp_path):
    page = "results/heads/report/heads.html"
    calibrated = loaded_workflow(configfiles=[HEADS_STUDY])
    assert page in calibrated.globals["get_report_inputs"](None)
    assert "heads_page" in {rule.name for rule in calibrated.rules}
    # heads set by hand: no calibration, no page
    by_hand = yaml.safe_load(HEADS_STUDY.read_text())
    by_hand["maps"]["localization_heads"] = [[0, 1]]
    config = tmp_path / "by_hand.yaml"
    config.write_text(yaml.safe_dump(by_hand))
    for workflow in (loaded_workflow(configfiles=[config]), loaded_workflow()):  # and the demo
        inputs = workflow.globals["get_report_inputs"](None)
        assert not [path for path in inputs if path.endswith("report/heads.html")]
        assert "heads_page" not in {rule.name for rule in workflow.rules}
