"""The run summary page and the paper comparison page: content, verdicts and well-formed HTML."""

from __future__ import annotations

import hashlib
import json
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest

from cxr_attention.io import ConfigError
from cxr_attention.metrics.paper import agreement_sentence
from cxr_attention.report.paper import render_paper_comparison, write_paper_comparison_page
from cxr_attention.report.summary import (
    fingerprint,
    method_quality,
    quality_targets,
    render_run_summary,
    summarise_run,
    write_run_summary,
)

VOID = {"meta", "br", "img", "hr", "link", "input"}


class _Structure(HTMLParser):
    """Checks that tags nest and close, and collects table rows and forbidden elements."""

    def __init__(self):
        super().__init__()
        self.stack: list[str] = []
        self.rows: list[list[str]] = []
        self.forbidden: list[str] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "iframe", "link") or any(k == "src" for k, _ in attrs):
            self.forbidden.append(tag)
        if tag in VOID:
            return
        self.stack.append(tag)
        if tag == "tr":
            self.rows.append([])
        if tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes {self.stack[-1:]}"
        self.stack.pop()
        if tag in ("td", "th"):
            self.rows[-1].append("".join(self._cell or []))
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def _parse(page: str) -> _Structure:
    parser = _Structure()
    parser.feed(page)
    parser.close()
    assert parser.stack == []
    assert not parser.forbidden  # self-contained: no scripts, frames or external resources
    return parser


def _tables():
    manifest = pd.DataFrame(
        {"dicom_id": ["d1", "d2", "d3"], "subject_id": ["s1", "s1", "s2"], "study_id": list("abc")}
    )
    questions = pd.DataFrame({"question_id": ["q1", "q2"]})
    answers = pd.DataFrame(
        {
            "sample_id": ["a", "b", "c", "d"],
            "answer": ["yes", "no", "yes", None],
            "strategy": ["baseline", "plain", "baseline", "plain"],
        }
    )
    maps = pd.DataFrame(
        {
            "map_id": ["m1", "m2", "m3", "m4", "m5"],
            "method": ["attention", "attention", "gradcam", "uniform", "attention"],
            "inside_body": [0.9, 0.6, 0.8, 0.5, np.nan],
            "border_fraction": [0.01, 0.2, 0.05, 0.1, np.nan],
            "entropy": [2.5, 4.8, 3.5, 5.545, np.nan],
        }
    )
    failures = pd.DataFrame(
        {
            "stage": ["preprocess", "preprocess", "inference"],
            "dicom_id": ["d8", "d9", "d3"],
            "path": ["x", "y", "z"],
            "error_type": ["unreadable", "unreadable", "too_small"],
            "message": ["m", "m", "m"],
        }
    )
    study = {
        "map_quality": {
            "source": "answer",
            "inside_body_mean": 0.75,
            "inside_body_ci_low": 0.6,
            "inside_body_ci_high": 0.9,
            "inside_body_share_meeting_target": 0.5,
            "border_fraction_mean": 0.09,
            "border_fraction_share_meeting_target": 0.5,
            "entropy_mean": 3.6,
            "entropy_share_focused": 0.25,
            "entropy_share_diffuse": 0.5,
        },
        "targets_met": {
            "inside_body_ge_0.7": True,
            "border_fraction_le_0.05": False,
            "entropy_focused_lt_3.0": False,
            "entropy_not_diffuse_le_4.5": True,
        },
        "accuracy": {"overall": 0.5, "overall_ci_low": 0.2, "overall_ci_high": 0.8},
    }
    return manifest, questions, answers, maps, failures, study


def test_summary_counts_and_failures_by_stage():
    manifest, questions, answers, maps, failures, study = _tables()
    summary = summarise_run(
        config={"run": "demo", "model": {"id": "tiny"}},
        study_summary=study,
        manifest=manifest,
        questions=questions,
        answers=answers,
        maps=maps,
        failures=failures,
    )
    assert summary["counts"]["images"] == 3
    assert summary["counts"]["subjects"] == 2
    assert summary["counts"]["samples (image, question)"] == 4
    assert summary["counts"]["maps"] == 5
    assert summary["answers"] == {"(blank)": 1, "no": 1, "yes": 2}
    assert summary["failures"].to_dict("records") == [
        {"stage": "inference", "error_type": "too_small", "count": 1},
        {"stage": "preprocess", "error_type": "unreadable", "count": 2},
    ]
    assert summary["model"] == "tiny"


def test_quality_targets_take_the_verdicts_of_the_study_summary():
    *_, study = _tables()
    rows = {row["target"]: row for row in quality_targets(study)}
    assert rows["inside_body >= 0.7"]["met"] is True
    assert rows["border_fraction <= 0.05"]["met"] is False
    assert rows["entropy < 3 nats (focused)"]["share"] == 0.25
    assert rows["entropy <= 4.5 nats (not diffuse)"]["share"] == 0.5  # 1 - share diffuse
    assert rows["inside_body >= 0.7"]["ci_low"] == 0.6
    missing = quality_targets({})
    assert all(row["met"] is None and np.isnan(row["mean"]) for row in missing)


def test_method_quality_matches_a_groupby_oracle():
    *_, maps, _, _ = _tables()
    table = method_quality(maps).set_index("method")
    assert list(table.index) == ["attention", "gradcam", "uniform"]  # the cascade's order
    attention = maps[maps["method"] == "attention"].dropna()
    assert table.loc["attention", "maps"] == 3
    assert table.loc["attention", "inside_body_mean"] == pytest.approx(
        attention["inside_body"].mean()
    )
    assert table.loc["attention", "inside_body_meeting"] == 0.5
    assert table.loc["attention", "entropy_focused"] == 0.5
    assert table.loc["attention", "entropy_diffuse"] == 0.5
    assert table.loc["gradcam", "border_fraction_meeting"] == 1.0  # 0.05 <= 0.05
    assert method_quality(maps.drop(columns="entropy")).empty


def test_summary_page_is_well_formed_and_marks_verdicts():
    manifest, questions, answers, maps, failures, study = _tables()
    summary = summarise_run(
        config={"run": "demo<1>", "model": {"id": "tiny"}, "seed": 0},
        study_summary=study,
        manifest=manifest,
        questions=questions,
        answers=answers,
        maps=maps,
        failures=failures,
        data_version=[{"path": "manifest.csv", "md5": "abc", "source": "md5 of the file"}],
    )
    page = render_run_summary(summary)
    structure = _parse(page)
    assert "demo&lt;1&gt;" in page and "demo<1>" not in page  # escaped
    verdicts = {row[0]: row[-1] for row in structure.rows if row and row[0].startswith(("in", "b"))}
    assert verdicts["inside_body >= 0.7"] == "met"
    assert verdicts["border_fraction <= 0.05"] == "not met"
    assert '<td class="unmet">not met</td>' in page
    assert ["preprocess", "unreadable", "2"] in structure.rows
    assert ["manifest.csv", "abc", "md5 of the file"] in structure.rows


def test_fingerprint_prefers_dvc_then_hashes_the_file(tmp_path):
    data = tmp_path / "manifest.csv"
    data.write_text("dicom_id\nd1\n")
    assert fingerprint(data) == {
        "path": str(data),
        "md5": hashlib.md5(data.read_bytes()).hexdigest(),
        "source": "md5 of the file",
    }
    (tmp_path / "manifest.csv.dvc").write_text("outs:\n- md5: 0123abcd\n  path: manifest.csv\n")
    assert fingerprint(data)["md5"] == "0123abcd"
    assert fingerprint(data)["source"].startswith("DVC")
    assert fingerprint(tmp_path / "absent.csv")["source"] == "absent"


def test_write_run_summary_reads_the_run_files(tmp_path):
    manifest, questions, answers, maps, failures, study = _tables()
    paths = {}
    for name, frame in {
        "manifest": manifest,
        "questions": questions,
        "answers": answers,
        "maps": maps,
        "failures": failures,
    }.items():
        paths[name] = tmp_path / f"{name}.csv"
        frame.to_csv(paths[name], index=False)
    (tmp_path / "summary.json").write_text(json.dumps(study))
    out = write_run_summary(
        out_html=tmp_path / "report" / "summary.html",
        config={"run": "demo"},
        manifest_csv=paths["manifest"],
        questions_csv=paths["questions"],
        answers_csv=paths["answers"],
        maps_csv=paths["maps"],
        failures_csv=paths["failures"],
        summary_json=tmp_path / "summary.json",
    )
    page = out.read_text()
    _parse(page)
    assert hashlib.md5(paths["manifest"].read_bytes()).hexdigest() in page
    again = write_run_summary(
        out_html=tmp_path / "again.html",
        config={"run": "demo"},
        manifest_csv=paths["manifest"],
        questions_csv=paths["questions"],
        answers_csv=paths["answers"],
        maps_csv=paths["maps"],
        failures_csv=paths["failures"],
        summary_json=tmp_path / "summary.json",
    )
    assert again.read_text() == page  # deterministic: no timestamps


def _comparison() -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"quantity": "accuracy_overall_baseline", "paper_value": 0.74, "ours": 0.7,
             "ci_low": 0.6, "ci_high": 0.8, "n": 100},
            {"quantity": "groups_count", "paper_value": 63, "ours": 60, "ci_low": np.nan,
             "ci_high": np.nan, "n": 60},
            {"quantity": "js_<b>", "paper_value": np.nan, "ours": 0.1, "ci_low": 0.05,
             "ci_high": 0.15, "n": 10},
        ]
    )  # fmt: skip


def test_paper_page_has_one_row_and_sentence_per_quantity():
    table = _comparison()
    structure = _parse(render_paper_comparison(table))
    body_rows = structure.rows[1:]
    assert [row[0] for row in body_rows] == list(table["quantity"])
    for row, (_, source) in zip(body_rows, table.iterrows(), strict=True):
        assert row[-1] == agreement_sentence(source)
    assert body_rows[1][3:5] == ["", ""]  # no interval: blank cells, not "nan"


def test_paper_page_takes_any_sentence_function_and_escapes():
    page = render_paper_comparison(_comparison(), sentence=lambda row: f"<{row['quantity']}>")
    assert "&lt;js_&lt;b&gt;&gt;" in page
    assert "<b>" not in page
    with pytest.raises(ValueError, match="ours"):
        render_paper_comparison(_comparison().drop(columns="ours"))


def test_write_paper_page_refuses_a_table_without_the_columns(tmp_path):
    good, bad = tmp_path / "good.csv", tmp_path / "bad.csv"
    _comparison().to_csv(good, index=False)
    _comparison().drop(columns="n").to_csv(bad, index=False)
    out = write_paper_comparison_page(good, tmp_path / "page.html", note="Demo data.")
    assert "Demo data." in out.read_text()
    with pytest.raises(ConfigError, match=r"bad\.csv"):
        write_paper_comparison_page(bad, tmp_path / "bad.html")
    assert not (tmp_path / "bad.html").exists()
