"""The report's grounding page from a summary table."""

from __future__ import annotations

import pandas as pd

from cxr_attention.grounding.datasets import CONTAMINATION
from cxr_attention.report.grounding import render_grounding_page, write_grounding_page


def _summary():
    rows = []
    for dataset in ("ms_cxr", "vindr_cxr"):
        for method, kind, value in (
            ("attention", "answer", 0.5),
            ("baseline_lungs", "baseline", 0.1),
        ):
            for metric in ("mass", "pointing_game"):
                rows.append(
                    {
                        "dataset": dataset,
                        "contamination": CONTAMINATION[dataset],
                        "method": method,
                        "map_kind": kind,
                        "metric": metric,
                        "value": value,
                        "ci_low": value - 0.05,
                        "ci_high": value + 0.05,
                        "n": 12,
                        "n_patients": 7,
                    }
                )
    return pd.DataFrame(rows)


def test_page_has_one_table_per_dataset_with_contamination_and_baselines(tmp_path):
    summary = _summary()
    page = render_grounding_page(summary)
    assert page.count("<table>") == 2
    for dataset in ("ms_cxr", "vindr_cxr"):
        assert f"<h2>{dataset}</h2>" in page
    assert "mostly its train split" in page  # MS-CXR's note
    assert "baseline: uniform within the lungs" in page
    assert "0.5 [0.45, 0.55]" in page
    summary.to_csv(tmp_path / "summary.csv", index=False)
    written = write_grounding_page(tmp_path / "summary.csv", tmp_path / "page.html")
    assert written.read_text(encoding="utf-8") == page


def test_empty_summary_says_so():
    page = render_grounding_page(_summary().iloc[0:0])
    assert "No map of this run matched an annotation" in page


def test_phrase_rows_sit_between_the_term_maps_and_the_baselines():
    summary = _summary()
    extra = summary[summary["map_kind"] == "answer"].copy()
    phrase = extra.assign(map_kind="phrase")
    term = extra.assign(map_kind="term")
    page = render_grounding_page(pd.concat([summary, phrase, term], ignore_index=True))
    ms_cxr = page.split("<h2>vindr_cxr</h2>")[0]
    positions = [
        ms_cxr.index(label)
        for label in ("(answer map)", "(term map)", "(phrase map)", "baseline: uniform")
    ]
    assert positions == sorted(positions)
