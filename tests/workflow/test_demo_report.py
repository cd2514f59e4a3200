"""The demo run's HTML report, opened in headless Chromium, shows every figure kind of the study."""

from __future__ import annotations

from pathlib import Path

from cxr_attention.report.browser import check_report

# File-name stems of each figure kind (src/cxr_attention/figures/samples.py and summary.py).
SAMPLE_KINDS = ("overlay__", "panels__", "sensitivity__", "layers__")
SUMMARY_KINDS = (
    "metrics_by_strategy",
    "metrics_by_finding",
    "accuracy_by_strategy",
    "accuracy_by_finding",
    "js_histogram",
    "method_usage",
)


def test_demo_report_shows_every_figure_kind_without_console_errors(demo_run: Path, chromium):
    check = check_report(demo_run / "results/demo/report.html", chromium=chromium)
    assert check.console_errors == []
    shown = [Path(name).name for name, item in check.results.items() if item["shown"] is not False]
    for kind in SAMPLE_KINDS:
        assert any(name.startswith(kind) for name in shown), f"no {kind} figure in the report"
    for kind in SUMMARY_KINDS:
        assert f"{kind}.png" in shown, f"no {kind} plot in the report"
    assert {"summary.html", "paper_comparison.html", "maps.html", "failures.html"} <= set(shown)
    # the every-map and every-failure CSVs grow with the study, so the report embeds their pages
    # of first rows only
    assert "maps.csv" not in shown and "failures.csv" not in shown
    assert (demo_run / "results/demo/paper_comparison.csv").is_file()


def test_demo_report_ranks_every_map_method_on_the_known_answer_benchmark(demo_run: Path):
    import pandas as pd

    from cxr_attention.maps.registry import METHODS

    ranking = pd.read_csv(demo_run / "results/demo/known_answer/method_ranking.csv")
    assert list(dict.fromkeys(ranking["method"])) == list(METHODS)
    overall = ranking[ranking["criterion"] == "overall"]
    assert sorted(overall["rank"]) == sorted(overall["value"].rank(method="min"))
    pointing = ranking[ranking["criterion"] == "pointing_game"].set_index("method")
    assert (pointing["n"] > 0).any()  # the planted films are ranked whatever the selection drew
    summary = (demo_run / "results/demo/report/summary.html").read_text()
    assert "Method ranking on the planted lesions" in summary
    assert all(method in summary for method in METHODS)
