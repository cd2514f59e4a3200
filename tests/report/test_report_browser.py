"""The Snakemake report of a tiny workflow opens in headless Chromium without console errors.

The workflow in ``tmp_path`` mirrors the real one's report items (rules/figures.smk,
rules/report.smk, rules/metrics.smk): folders of per-sample figures and of summary plots marked
with ``patterns``, the run summary and paper comparison pages, and two tables, each with the
repository's captions from ``report/``. It is run with the project's Snakemake, the report is
rendered with ``snakemake --report``, and the page is driven through the DevTools protocol
(:mod:`cxr_attention.report.browser`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cxr_attention.report.browser import check_report

REPO_ROOT = Path(__file__).resolve().parents[2]

SAMPLE_FIGURES = ("overlay__img1", "panels__img1", "sensitivity__img1")
SUMMARY_FIGURES = (
    "metrics_by_strategy",
    "metrics_by_finding",
    "accuracy_by_strategy",
    "accuracy_by_finding",
    "js_histogram",
    "method_usage",
)
PAGES = ("summary.html", "paper_comparison.html")
TABLES = ("maps.csv", "failures.csv")
TABLE_PAGES = ("maps.html", "failures.html")  # the same tables, shown in the page

# Written to tmp_path/make_items.py: synthetic inputs for every figure and page kind.
MAKE_ITEMS = """
import json
from pathlib import Path

import numpy as np
import pandas as pd

from cxr_attention.figures import overlay, panels, sensitivity, summary
from cxr_attention.report.paper import write_paper_comparison_page
from cxr_attention.report.summary import write_run_summary
from cxr_attention.report.tables import write_table_page


def _image():
    rows, cols = np.mgrid[0:300, 0:420]
    body = ((rows - 150) / 140) ** 2 + ((cols - 210) / 190) ** 2 < 1
    image = (40 + 150 * body + 30 * np.sin(cols / 9.0)).clip(0, 255).astype(np.uint8)
    lungs = np.zeros(image.shape, np.uint8)
    lungs[60:230, 70:190] = 1
    lungs[60:230, 230:350] = 2
    return image, body.astype(np.uint8) * 255, lungs


def _map(seed, hot):
    values = np.random.default_rng(seed).random((16, 16)) ** 3
    values[hot] += 2.0
    return values / values.sum()


def _maps_table():
    rng = np.random.default_rng(0)
    rows = []
    for i in range(60):
        finding = ("pleural_effusion", "cardiomegaly")[i % 2]
        strategy = ("baseline", "plain", "hard_positive")[i % 3]
        rows.append({
            "map_id": f"m{i}", "question_id": f"{finding}.{strategy}.0",
            "method": ("attention", "attention", "gradcam", "uniform")[i % 4],
            "inside_body": rng.uniform(0.4, 1), "border_fraction": rng.uniform(0, 0.1),
            "entropy": rng.uniform(2, 5.5), "focus": rng.uniform(0, 0.6),
            "left_right": rng.uniform(0.2, 0.8), "apical_basal": rng.uniform(0.2, 0.8),
        })
    return pd.DataFrame(rows)


def make_samples(folder):
    folder = Path(folder)
    image, body, lungs = _image()
    a, b = _map(1, (4, 3)), _map(2, (10, 12))
    overlay.plot_overlay(image, a, body_mask=body, lung_labels=lungs,
                         title="pleural effusion / attention / answer: yes",
                         out_path=folder / "overlay__img1.png")
    maps = {(s, m): _map(i, (i % 16, 5)) for i, (s, m) in enumerate(
        [(s, m) for s in ("baseline", "plain", "hard_positive")
         for m in ("attention", "gradcam", "uniform")])}
    panels.plot_method_panels(image, maps, methods=("attention", "gradcam", "uniform"),
                               title="img1 / pleural effusion", body_mask=body,
                               lung_labels=lungs, out_path=folder / "panels__img1.png")
    sensitivity.plot_prompt_sensitivity(image, a, b, label_a="baseline", label_b="plain",
                                    title="img1 / pleural effusion", body_mask=body,
                                    lung_labels=lungs, out_path=folder / "sensitivity__img1.png")


def make_summary(folder):
    folder = Path(folder)
    maps = _maps_table()
    summary.plot_metric_distributions(maps, by="strategy",
                                      out_path=folder / "metrics_by_strategy.png")
    summary.plot_metric_distributions(maps, by="finding",
                                      out_path=folder / "metrics_by_finding.png")
    accuracy = pd.DataFrame({"strategy": ["all", "baseline", "plain"], "accuracy": [0.7, 0.8, 0.6],
                             "ci_low": [0.6, 0.7, 0.4], "ci_high": [0.8, 0.9, 0.8],
                             "n": [40, 20, 20]})
    summary.plot_accuracy(accuracy, out_path=folder / "accuracy_by_strategy.png")
    by_finding = accuracy.assign(finding="pleural_effusion")[
        ["finding", "strategy", "accuracy", "ci_low", "ci_high", "n"]]
    summary.plot_accuracy(by_finding, out_path=folder / "accuracy_by_finding.png")
    js = pd.DataFrame({"js_divergence": np.random.default_rng(0).beta(2, 8, 50),
                       "strategy_b": ["plain", "hard_positive"] * 25})
    summary.plot_js_histogram(js, out_path=folder / "js_histogram.png")
    summary.plot_method_usage(maps, out_path=folder / "method_usage.png")


def make_tables(maps_csv, failures_csv):
    _maps_table().to_csv(maps_csv, index=False)
    pd.DataFrame([{"stage": "preprocess", "dicom_id": "d9", "path": "x.dcm",
                   "error_type": "unreadable", "message": "not a DICOM file"}]).to_csv(
        failures_csv, index=False)


def make_table_pages(maps_csv, failures_csv, maps_html, failures_html):
    write_table_page(maps_csv, maps_html, title="Maps and metrics")
    write_table_page(failures_csv, failures_html, title="Failures")


def make_run_summary(out_html, maps_csv, failures_csv, config):
    folder = Path(out_html).parent
    pd.DataFrame({"dicom_id": ["d1", "d2"], "subject_id": ["s1", "s2"],
                  "study_id": ["t1", "t2"]}).to_csv(folder / "manifest.csv", index=False)
    pd.DataFrame({"question_id": ["pleural_effusion.baseline.0"]}).to_csv(
        folder / "questions.csv", index=False)
    pd.DataFrame({"sample_id": ["d1__q", "d2__q"], "answer": ["yes", "no"],
                  "strategy": ["baseline", "baseline"]}).to_csv(folder / "answers.csv",
                                                                index=False)
    summary = {"map_quality": {"source": "answer", "inside_body_mean": 0.8,
                               "inside_body_ci_low": 0.7, "inside_body_ci_high": 0.9,
                               "border_fraction_mean": 0.1, "entropy_mean": 4.0},
               "targets_met": {"inside_body_ge_0.7": True, "border_fraction_le_0.05": False,
                               "entropy_focused_lt_3.0": False,
                               "entropy_not_diffuse_le_4.5": True},
               "accuracy": {"overall": 0.5, "overall_ci_low": 0.1, "overall_ci_high": 0.9}}
    (folder / "summary.json").write_text(json.dumps(summary))
    pd.DataFrame({"dicom_id": ["d3"], "reason": ["view"]}).to_csv(folder / "exclusions.csv",
                                                                  index=False)
    write_run_summary(out_html=out_html, config=config, manifest_csv=folder / "manifest.csv",
                      questions_csv=folder / "questions.csv", answers_csv=folder / "answers.csv",
                      maps_csv=maps_csv, failures_csv=failures_csv,
                      summary_json=folder / "summary.json",
                      exclusions_csv=folder / "exclusions.csv", preprocess_csvs=[],
                      changed_settings={}, provenance={"git_commit": None, "packages": {}})


def make_paper_page(out_html):
    folder = Path(out_html).parent
    pd.DataFrame([
        {"quantity": "accuracy_overall_baseline", "paper_value": 0.74, "ours": 0.7,
         "ci_low": 0.6, "ci_high": 0.8, "n": 100},
        {"quantity": "groups_count", "paper_value": 63, "ours": 60, "ci_low": None,
         "ci_high": None, "n": 60},
    ]).to_csv(folder / "paper_comparison.csv", index=False)
    write_paper_comparison_page(folder / "paper_comparison.csv", out_html)
"""

SNAKEFILE = """
import sys

sys.path.insert(0, workflow.basedir)
from make_items import (make_paper_page, make_run_summary, make_samples, make_summary,
                        make_table_pages, make_tables)

configfile: "config.yaml"

report: "report/workflow.rst"

rule all:
    input:
        "results/figures/samples",
        "results/figures/summary",
        "results/report/summary.html",
        "results/report/paper_comparison.html",
        "results/report/tables/maps.html",
        "results/report/tables/failures.html",

rule sample_figures:
    output:
        report(
            directory("results/figures/samples"),
            patterns=["{name}.png"],
            caption="report/sample_figures.rst",
            category="Samples",
            subcategory="shard 0",
            labels={"figure": "{name}"},
        ),
    run:
        Path(output[0]).mkdir(parents=True, exist_ok=True)
        make_samples(output[0])

rule summary_figures:
    output:
        report(
            directory("results/figures/summary"),
            patterns=["{name}.png"],
            caption="report/summary_figures.rst",
            category="Summary plots",
            labels={"figure": "{name}"},
        ),
    run:
        Path(output[0]).mkdir(parents=True, exist_ok=True)
        make_summary(output[0])

rule tables:
    output:
        maps=report("results/metrics/maps.csv", caption="report/maps_table.rst",
                    category="Tables", labels={"table": "maps and metrics, CSV"}),
        failures=report("results/failures.csv", caption="report/failures.rst",
                        category="Tables", labels={"table": "failures, CSV"}),
    run:
        make_tables(output.maps, output.failures)

rule table_pages:
    input:
        maps="results/metrics/maps.csv",
        failures="results/failures.csv",
    output:
        maps=report("results/report/tables/maps.html", caption="report/maps_table.rst",
                    category="Tables", labels={"table": "maps and metrics"}),
        failures=report("results/report/tables/failures.html", caption="report/failures.rst",
                        category="Tables", labels={"table": "failures"}),
    run:
        make_table_pages(input.maps, input.failures, output.maps, output.failures)

rule run_summary:
    input:
        maps="results/metrics/maps.csv",
        failures="results/failures.csv",
    output:
        report("results/report/summary.html", caption="report/run_summary.rst",
               category="Run summary", labels={"page": "summary"}),
    run:
        make_run_summary(output[0], input.maps, input.failures, config)

rule paper_page:
    output:
        report("results/report/paper_comparison.html", caption="report/paper_comparison.rst",
               category="Paper comparison", labels={"page": "paper comparison"}),
    run:
        make_paper_page(output[0])
"""

CONFIG = """
run: tiny
model:
  id: resources/tiny-medgemma
seed: 0
"""


def _snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "1", "--directory", str(workdir), *args],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"snakemake {' '.join(args)} failed:\n{result.stderr[-4000:]}"
    return result


@pytest.fixture(scope="module")
def report_html(tmp_path_factory: pytest.TempPathFactory) -> Path:
    workdir = tmp_path_factory.mktemp("tiny_workflow")
    shutil.copytree(REPO_ROOT / "report", workdir / "report")
    (workdir / "make_items.py").write_text(MAKE_ITEMS)
    (workdir / "Snakefile").write_text("from pathlib import Path\n" + textwrap.dedent(SNAKEFILE))
    (workdir / "config.yaml").write_text(CONFIG)
    _snakemake(workdir)
    _snakemake(workdir, "--report", "report.html")
    return workdir / "report.html"


@pytest.fixture(scope="module")
def browser_check(report_html: Path, chromium: str, tmp_path_factory: pytest.TempPathFactory):
    shots = Path(os.environ.get("CXR_REPORT_SCREENSHOTS") or tmp_path_factory.mktemp("shots"))
    return check_report(report_html, screenshot_dir=shots, chromium=chromium)


def test_report_has_no_console_errors(browser_check):
    assert browser_check.console_errors == []


def test_every_figure_and_page_kind_is_listed_and_shown(browser_check, report_html):
    by_name = {entry["name"]: entry for entry in browser_check.results.values()}
    expected = [f"{n}.png" for n in SAMPLE_FIGURES + SUMMARY_FIGURES]
    expected += list(PAGES + TABLES + TABLE_PAGES)
    assert sorted(by_name) == sorted(expected)
    for name, entry in by_name.items():
        assert entry["listed"], f"{name} not listed under its category"
        if name.endswith(".csv"):
            assert entry["shown"] is None  # tables are offered for download
            continue
        assert entry["shown"], f"{name} did not render"
        if name.endswith(".png"):
            with Image.open(report_html.parent / _path_of(browser_check, name)) as png:
                assert (entry["width"], entry["height"]) == png.size


def test_tables_are_shown_as_tables(browser_check, report_html):
    shown = {e["name"]: e for e in browser_check.results.values() if e["name"] in TABLE_PAGES}
    assert sorted(shown) == sorted(TABLE_PAGES)
    assert all(entry["shown"] for entry in shown.values())
    # The page the report embeds is the table itself: a header cell per column, a row per row.
    page = (report_html.parent / "results" / "report" / "tables" / "maps.html").read_text()
    assert page.count("<tr>") == 1 + 60 and "<th>inside_body</th>" in page


def test_categories_match_the_workflow(browser_check):
    assert set(browser_check.categories) == {
        "Samples",
        "Summary plots",
        "Tables",
        "Run summary",
        "Paper comparison",
    }


def test_folder_captions_pick_the_paragraph_of_each_figure_kind(report_html, browser_check):
    captions = {entry["name"]: entry["caption"] for entry in browser_check.results.values()}
    assert "diverging scale centred at zero" in captions["sensitivity__img1.png"]
    assert "rows are the prompt strategies" in captions["panels__img1.png"]
    assert "stretched over it" in captions["overlay__img1.png"]
    assert "Jensen-Shannon divergence" in captions["js_histogram.png"]
    assert "bootstrap confidence intervals" in captions["accuracy_by_finding.png"]
    assert "fallback cascade" in captions["method_usage.png"]
    assert "quality targets" in captions["metrics_by_strategy.png"]
    assert "System Message" not in report_html.read_text()  # no reStructuredText errors


def test_screenshots_show_the_figures(browser_check):
    assert browser_check.screenshots
    for shot in browser_check.screenshots:
        with Image.open(shot) as image:
            pixels = np.asarray(image.convert("L"))
        assert pixels.std() > 5, f"{shot.name} is blank"


def _path_of(check, name: str) -> str:
    return next(path for path, entry in check.results.items() if entry["name"] == name)


PLANTED_ERRORS_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>planted</title></head><body>
<div id="loading-screen">loading</div>
<img src="missing-file-{token}.png">
<script>
var categories = {{}};
var results = {{}};
var app = {{setView: function () {{}}}};
document.querySelector('#loading-screen').style.display = "none";
console.error("planted console error {token}");
setTimeout(function () {{ throw new Error("planted uncaught {token}"); }}, 0);
</script>
</body></html>
"""


def test_the_check_catches_planted_console_errors(chromium, tmp_path):
    """The oracle can fail: a page with a console error, an uncaught exception and a missing
    image (a load error) gives one recorded error each."""
    page = tmp_path / "planted.html"
    page.write_text(PLANTED_ERRORS_PAGE.format(token="q7"))
    errors = check_report(page, chromium=chromium, timeout=60).console_errors
    assert any("console.error" in e and "planted console error q7" in e for e in errors)
    assert any("uncaught exception" in e and "planted uncaught q7" in e for e in errors)
    assert any("missing-file-q7.png" in e for e in errors)
