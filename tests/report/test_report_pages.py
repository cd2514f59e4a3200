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
from cxr_attention.reference.shard import REFERENCE_COMPAT_COLUMNS
from cxr_attention.report.paper import (
    REFERENCE_COMPAT_QUANTITIES,
    reference_compat_summary,
    render_paper_comparison,
    write_paper_comparison_page,
)
from cxr_attention.report.quality import quality_targets
from cxr_attention.report.summary import (
    fingerprint,
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
            "correct": [True, False, True, None],
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
            "inside_body_lift_mean": 1.2,
            "inside_body_lift_ci_low": 1.1,
            "inside_body_lift_ci_high": 1.3,
            "inside_body_lift_share_above_1": 0.75,
            "border_fraction_lift_mean": 1.4,
            "border_fraction_lift_share_below_1": 0.25,
            "entropy_normalised_mean": 0.9,
        },
        "targets_met": {
            "inside_body_lift_gt_1": True,
            "border_fraction_lift_lt_1": False,
            "entropy_below_uniform": True,
        },
        "accuracy": {
            "overall": 0.5,
            "overall_ci_low": 0.2,
            "overall_ci_high": 0.8,
            "overall_n": 4,
            "overall_unclear_rate": 0.25,
            "overall_accuracy_answered": 2 / 3,
        },
        "answers": {"n_compared": 3, "p_yes_agrees_share": 2 / 3, "n_low_yes_no_mass": 1},
        "by_method": {
            "answer/attention/decision": {
                "quality": {
                    "n_maps": 3,
                    "inside_body_mean": 0.75,
                    "inside_body_area_mean": 0.625,
                    "inside_body_lift_mean": 1.2,
                },
                "js": {"mean": 0.05, "n_pairs": 2},
            },
            "answer/gradcam/decision": {"quality": {"n_maps": 1, "inside_body_mean": 0.5}},
        },
        "fallbacks": {"all/gradcam": {"n_maps": 1, "share": 0.2, "n_fallback": 1}},
        "label_policy": {
            "uncertain=exclude,blank=exclude": {"run_policy": True, "n": 3, "accuracy": 0.5},
            "uncertain=positive,blank=negative": {"run_policy": False, "n": 4, "accuracy": 0.25},
        },
    }
    return manifest, questions, answers, maps, failures, study


def _run_context(**overrides):
    """The run facts beside the tables: exclusions, mask flags, changed settings, provenance."""
    context = {
        "exclusions": pd.DataFrame(
            {"dicom_id": ["x1", "x2", "x3"], "reason": ["view", "view", "no_labels"]}
        ),
        "preprocess": pd.DataFrame(
            {"dicom_id": ["d1", "d2", "d3"], "mask_flags": ["", "touches_lower_border", None]}
        ),
        "changed_settings": {"inference.max_new_tokens": 12, "run": "demo"},
        "provenance": {"git_commit": "0123abc", "packages": {"torch": "2.13.0"}},
    }
    return {**context, **overrides}


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
        **_run_context(),
    )
    assert summary["counts"]["images"] == 3
    assert summary["counts"]["excluded images (exclusions.csv)"] == 3
    assert summary["counts"]["images with a flagged lung mask (out of the lung metrics)"] == 1
    assert summary["counts"]["answers that can be scored"] == 3
    assert summary["exclusions"] == {"no_labels": 1, "view": 2}
    assert summary["warnings"] == []
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
    inside = rows["inside_body above a uniform map's (lift > 1)"]
    assert inside["met"] is True and inside["mean"] == 1.2 and inside["ci_low"] == 1.1
    assert inside["share"] == 0.75
    assert rows["border_fraction below a uniform map's (lift < 1)"]["met"] is False
    missing = quality_targets({})
    assert all(row["met"] is None and np.isnan(row["mean"]) for row in missing)


def test_summary_page_shows_split_methods_unclear_and_label_policies():
    manifest, questions, answers, maps, failures, study = _tables()
    manifest["split"] = ["test", "test", "train"]
    summary = summarise_run(
        config={"run": "demo", "selection": {"splits": ["test", "train"]}},
        study_summary=study,
        manifest=manifest,
        questions=questions,
        answers=answers,
        maps=maps,
        failures=failures,
        **_run_context(),
    )
    page = render_run_summary(summary)
    rows = _parse(page).rows
    assert "Split studied: test (2 images), train (1 images)" in page
    assert "outside the test split" in page
    method_rows = {row[0]: row for row in rows if row and row[0].startswith("answer/")}
    assert method_rows["answer/attention/decision"][1:5] == ["3", "0.75", "0.625", "1.2"]
    assert "answer/gradcam/decision" in method_rows  # never pooled with attention
    assert ["all strategies", "0.5", "0.2 to 0.8", "25.0%", "0.6667", "4"] in rows
    assert "in 66.7% of 3 yes/no answers" in page and "1 answers have a low yes+no" in page
    assert ["exclude", "exclude", "yes", "3", "0.5", "", ""] in rows
    assert ["positive", "negative", "", "4", "0.25", "", ""] in rows
    assert ["all/gradcam", "1", "20.0%", "1", ""] in rows


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
        **_run_context(),
    )
    page = render_run_summary(summary)
    structure = _parse(page)
    assert "demo&lt;1&gt;" in page and "demo<1>" not in page  # escaped
    verdicts = {row[0]: row[-1] for row in structure.rows if row and row[0].startswith(("in", "b"))}
    assert verdicts["inside_body above a uniform map's (lift > 1)"] == "met"
    assert verdicts["border_fraction below a uniform map's (lift < 1)"] == "not met"
    assert '<td class="unmet">not met</td>' in page
    assert ["preprocess", "unreadable", "2"] in structure.rows
    assert ["manifest.csv", "abc", "md5 of the file"] in structure.rows
    assert ["inference.max_new_tokens", "12"] in structure.rows  # settings off their defaults
    assert ["torch", "2.13.0"] in structure.rows and "0123abc" in page
    assert 'class="warning"' not in page


def test_summary_page_opens_with_a_warning_when_nothing_can_be_scored():
    manifest, questions, answers, maps, failures, study = _tables()
    answers["correct"] = None  # every label blank or excluded: nothing to score
    summary = summarise_run(
        config={"run": "demo"},
        study_summary=study,
        manifest=manifest,
        questions=questions,
        answers=answers,
        maps=maps,
        failures=failures,
        **_run_context(),
    )
    page = render_run_summary(summary)
    assert summary["counts"]["answers that can be scored"] == 0
    first = page.index('class="warning"')
    assert "no answer can be scored" in page[first:]
    assert first < page.index("<h2>")  # before any number


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
    context = _run_context()
    context["exclusions"].to_csv(tmp_path / "exclusions.csv", index=False)
    context["preprocess"].to_csv(tmp_path / "preprocess.csv", index=False)
    files = {
        "exclusions_csv": tmp_path / "exclusions.csv",
        "preprocess_csvs": [tmp_path / "preprocess.csv"],
        "changed_settings": context["changed_settings"],
        "provenance": context["provenance"],
    }
    out = write_run_summary(
        out_html=tmp_path / "report" / "summary.html",
        config={"run": "demo"},
        manifest_csv=paths["manifest"],
        questions_csv=paths["questions"],
        answers_csv=paths["answers"],
        maps_csv=paths["maps"],
        failures_csv=paths["failures"],
        summary_json=tmp_path / "summary.json",
        **files,
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
        **files,
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


# --------------------------------------------------------------------------- reference_compat

_BATCH = 1 - 1e-8  # the batch runner's renormalised ratio: the paper's "99.99%"


def _reference_compat() -> pd.DataFrame:
    """Four samples with known means: s3's reference map failed (one-token answer), s4 has no
    corrected inside-body (no body mask), so each row's means run over different samples."""
    nan = np.nan
    values = {
        #                          s1     s2     s3    s4
        "ref_first_cell_mass":   [0.70,  0.72,  nan,  0.74],
        "first_cell_mass":       [0.002, 0.004, 0.5,  0.006],
        "ref_entropy":           [4.4,   4.5,   nan,  4.6],
        "entropy":               [5.0,   5.2,   1.0,  5.4],
        "ref_focus":             [0.010, 0.012, nan,  0.014],
        "focus_max":             [0.02,  0.03,  0.9,  0.04],
        "focus":                 [0.2,   0.3,   0.95, 0.4],
        "ref_inside_body_runner":[0.14,  0.18,  nan,  0.3],
        "ref_inside_body":       [0.1,   0.2,   nan,  0.9],
        "ref_inside_body_batch": [_BATCH, _BATCH, nan, _BATCH],
        "inside_body":           [0.8,   0.9,   0.1,  nan],
    }  # fmt: skip
    table = pd.DataFrame(np.nan, index=range(4), columns=REFERENCE_COMPAT_COLUMNS)
    table["sample_id"] = ["s1", "s2", "s3", "s4"]
    table["dicom_id"] = ["d1", "d1", "d2", "d3"]
    table["question_id"] = "cardiomegaly.baseline.0"
    for column, column_values in values.items():
        table[column] = column_values
    return table


def _compat_rows(page: str) -> list[list[str]]:
    rows = _parse(page).rows
    start = next(i for i, row in enumerate(rows) if row[:2] == ["quantity", "reference way"])
    return rows[start + 1 :]


def test_reference_compat_summary_pairs_samples_and_takes_hand_means():
    summary = reference_compat_summary(_reference_compat()).set_index("quantity")
    assert list(summary.index) == list(REFERENCE_COMPAT_QUANTITIES)
    # s3 (no reference map) drops out everywhere, s4 only from inside-body.
    assert summary["n"].to_dict() == {
        "map mass in grid cell 0": 3,
        "entropy (nats)": 3,
        "focus": 3,
        "inside-body": 2,
    }
    assert summary.at["map mass in grid cell 0", "ref_first_cell_mass"] == pytest.approx(0.72)
    assert summary.at["map mass in grid cell 0", "first_cell_mass"] == pytest.approx(0.004)
    assert summary.at["entropy (nats)", "ref_entropy"] == pytest.approx(4.5)
    assert summary.at["entropy (nats)", "entropy"] == pytest.approx(5.2)
    assert summary.at["focus", "ref_focus"] == pytest.approx(0.012)
    assert summary.at["focus", "focus_max"] == pytest.approx(0.03)
    assert summary.at["focus", "focus"] == pytest.approx(0.3)
    assert summary.at["inside-body", "ref_inside_body"] == pytest.approx(0.15)
    assert summary.at["inside-body", "ref_inside_body_runner"] == pytest.approx(0.16)
    assert summary.at["inside-body", "ref_inside_body_batch"] == pytest.approx(_BATCH)
    assert summary.at["inside-body", "inside_body"] == pytest.approx(0.85)
    assert np.isnan(summary.at["inside-body", "ref_entropy"])  # not this row's column
    with pytest.raises(ValueError, match="ref_focus"):
        reference_compat_summary(_reference_compat().drop(columns="ref_focus"))


def test_paper_page_shows_the_reference_numbers_beside_the_corrected_ones(tmp_path):
    comparison = tmp_path / "paper_comparison.csv"
    _comparison().to_csv(comparison, index=False)
    table = _reference_compat()
    shards = [tmp_path / "shard-0.csv", tmp_path / "shard-1.csv"]
    table.iloc[:2].to_csv(shards[0], index=False)
    table.iloc[2:].to_csv(shards[1], index=False)
    out = write_paper_comparison_page(
        comparison, tmp_path / "page.html", reference_compat_csvs=shards
    )
    page = out.read_text()
    assert "<h2>The reference&#x27;s numbers from our own captures</h2>" in page
    assert "&lt;start_of_turn&gt;" in page and "<start_of_turn>" not in page
    rows = _compat_rows(page)
    assert [row[:4] for row in rows] == [
        ["map mass in grid cell 0", "0.72", "0.004", "3"],
        ["entropy (nats)", "4.5", "5.2", "3"],
        ["focus", "0.012", "0.03 (largest cell); 0.3 (top 5% of cells)", "3"],
        [
            "inside-body",
            "0.16 (runner's largest-contour mask); 0.15 (inverted Otsu mask); "
            "1 (batch ratio, renormalised)",
            "0.85",
            "2",
        ],
    ]
    sentences = [row[4] for row in rows]
    assert "grid cell 0: that cell holds 72% of its map" in sentences[0]
    assert "gives it 0.4% (a uniform map: 1/256 = 0.39%)" in sentences[0]
    assert "4.5 nats" in sentences[1] and "is 5.2 nats" in sentences[1]
    assert "never counts: 0.012" in sentences[2] and "13 largest cells 0.3" in sentences[2]
    assert "reads 1 for any map (here 100%)" in sentences[3]
    assert "largest-contour mask that leaves the sink cell 0" in sentences[3]
    assert "16% here" in sentences[3] and "would give 15%" in sentences[3]
    assert "Our maps put 85% of their mass inside the body." in sentences[3]
    # The first section is untouched, and the shards' order changes nothing.
    assert page.startswith(render_paper_comparison(_comparison()).split("</body>")[0])
    again = write_paper_comparison_page(
        comparison, tmp_path / "again.html", reference_compat_csvs=shards[::-1]
    )
    assert again.read_text() == page


def test_paper_page_without_reference_compat_is_unchanged(tmp_path):
    comparison = tmp_path / "paper_comparison.csv"
    _comparison().to_csv(comparison, index=False)
    plain = write_paper_comparison_page(comparison, tmp_path / "plain.html").read_text()
    empty = write_paper_comparison_page(
        comparison, tmp_path / "empty.html", reference_compat_csvs=()
    ).read_text()
    assert plain == empty == render_paper_comparison(_comparison())
    assert "<h2>" not in plain and "reference way" not in plain


def test_paper_page_says_so_when_reference_compat_has_nothing_to_compare(tmp_path):
    header_only = _reference_compat().iloc[:0]
    page = render_paper_comparison(_comparison(), reference_compat=header_only)
    assert "have no samples: nothing to compare." in page
    assert not any(row[:2] == ["quantity", "reference way"] for row in _parse(page).rows)
    all_nan = _reference_compat()  # every reference map failed
    for reference, _ in REFERENCE_COMPAT_QUANTITIES.values():
        all_nan[list(reference)] = np.nan
    page = render_paper_comparison(_comparison(), reference_compat=all_nan)
    assert "has finite values on both the reference&#x27;s and the corrected side" in page
    assert "reference way" not in page
    # One quantity with no pair: a blank row with a sentence, the others shown.
    partial = _reference_compat()
    partial["inside_body"] = np.nan
    rows = _compat_rows(render_paper_comparison(_comparison(), reference_compat=partial))
    assert rows[3][1:] == ["", "", "0", "No sample has the inside-body on both sides."]
    assert [row[3] for row in rows[:3]] == ["3", "3", "3"]


def test_write_paper_page_refuses_bad_reference_compat_tables(tmp_path):
    comparison = tmp_path / "paper_comparison.csv"
    _comparison().to_csv(comparison, index=False)
    empty_file, lacking = tmp_path / "shard-0.csv", tmp_path / "shard-1.csv"
    empty_file.write_text("")
    _reference_compat().drop(columns="ref_inside_body_batch").to_csv(lacking, index=False)
    for bad in (empty_file, lacking):
        with pytest.raises(ConfigError, match=bad.name):
            write_paper_comparison_page(
                comparison, tmp_path / "page.html", reference_compat_csvs=[bad]
            )
    assert not (tmp_path / "page.html").exists()


# --------------------------------------------------------------------------- table pages


def test_table_page_shows_every_cell_and_says_when_it_is_cut(tmp_path):
    from html.parser import HTMLParser

    from cxr_attention.report.tables import write_table_page

    table = pd.DataFrame(
        {"map_id": ["m1", "m2", "m3"], "inside_body": [0.75, float("nan"), 0.125],
         "message": ["a < b", "ok", "x"]}
    )  # fmt: skip
    table.to_csv(tmp_path / "maps.csv", index=False)

    class Cells(HTMLParser):
        def __init__(self):
            super().__init__()
            self.rows, self._in_cell = [], False

        def handle_starttag(self, tag, attrs):
            if tag == "tr":
                self.rows.append([])
            self._in_cell = tag in ("td", "th")
            if self._in_cell:
                self.rows[-1].append("")

        def handle_endtag(self, tag):
            self._in_cell = False if tag in ("td", "th") else self._in_cell

        def handle_data(self, data):
            if self._in_cell:
                self.rows[-1][-1] += data

    page = write_table_page(tmp_path / "maps.csv", tmp_path / "maps.html").read_text()
    cells = Cells()
    cells.feed(page)
    assert cells.rows == [
        ["map_id", "inside_body", "message"],
        ["m1", "0.75", "a < b"],  # escaped in the page, the same text when read
        ["m2", "", "ok"],
        ["m3", "0.125", "x"],
    ]
    assert "3 rows, 3 columns" in page

    from cxr_attention.report.tables import render_table_page

    cut = render_table_page(table, title="maps", max_rows=2)
    assert cut.count("<tr>") == 3 and "the first 2 shown (the CSV has every row)" in cut
    empty = render_table_page(table.iloc[:0], title="maps")
    assert "no rows" in empty


def test_table_page_keeps_the_first_rows_that_fit_its_byte_bound():
    from cxr_attention.report.tables import render_table_page

    table = pd.DataFrame({"map_id": [f"m{i:05d}" for i in range(3000)], "note": ["x" * 200] * 3000})
    page = render_table_page(table, title="maps", max_bytes=100_000, csv_name="metrics/maps.csv")
    assert len(page.encode("utf-8")) <= 100_000
    shown = page.count("<tr>") - 1  # less the header row
    # A row's HTML, counted by hand: the bound holds at most 100 kB / this many rows, and the
    # page keeps all but a few of those (the head, style and lead take a few rows' worth).
    per_row = len("<tr><td>m00000</td><td>" + "x" * 200 + "</td></tr>\n")
    assert 0.9 * 100_000 / per_row < shown < 100_000 / per_row
    assert f"3000 rows, 2 columns; the first {shown} shown (metrics/maps.csv has every row)" in page
    assert f"m{shown - 1:05d}" in page and f"m{shown:05d}" not in page


def test_run_summary_lists_the_most_frequent_answers_and_counts_the_rest():
    from cxr_attention.report.summary import _value_counts

    answers = pd.DataFrame({"answer": ["yes"] * 5 + ["no"] * 3 + ["maybe"] * 3 + ["a", "b", None]})
    # 6 distinct values (a missing answer counts as "(blank)"); the 3 most frequent, ties by value.
    assert _value_counts(answers, "answer", limit=3) == {
        "maybe": 3,
        "no": 3,
        "yes": 5,
        "(other: 3 distinct values)": 3,
    }
    assert _value_counts(answers, "answer", limit=6) == {
        "(blank)": 1, "a": 1, "b": 1, "maybe": 3, "no": 3, "yes": 5
    }  # fmt: skip
