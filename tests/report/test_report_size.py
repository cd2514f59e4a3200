"""The HTML report's size is bounded whatever the study's size (issue 21: at most 15 MB).

A synthetic study with no inference: its report-stage outputs (the maps and failures tables and
their pages, the run summary page with sentence answers, the summary plots, a known-answer hit
figure with a film per 10 images, and the capped sample figures) are written by the project's
own functions for 200 and for 2,000 images (60,000 maps), and each set is rendered by
``snakemake --report`` (the real report, base64 and template included) through a workflow that
registers them as rules/*.smk do. The oracle is the rendered file's size: under the bound at
2,000 images, and no larger than at 200. The sample figures are drawn once:
``figures.report_samples`` caps them at a number set by the configuration
(tests/figures/test_report_samples.py checks the cap for any number of shards and images).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from cxr_attention.figures.known_answer import LesionPanel, plot_method_hits
from cxr_attention.figures.samples import write_sample_figures
from cxr_attention.figures.summary import write_summary_figures
from cxr_attention.report.summary import render_run_summary, summarise_run
from cxr_attention.report.tables import write_table_page

REPO_ROOT = Path(__file__).resolve().parents[2]
REPORT_BOUND = 15_000_000  # bytes (issue 21)
FINDINGS = ("pleural_effusion", "cardiomegaly")
STRATEGIES = ("baseline", "plain", "hard_positive")
METHODS = ("attention", "gradcam", "activation_norm", "uniform", "random")
REPORT_SAMPLES = 4  # the schema's default figures.report_samples

SNAKEFILE = """
rule all:
    input:
        "results/figures/samples",
        "results/figures/summary",
        "results/figures/known_answer",
        "results/report/summary.html",
        "results/report/tables/maps.html",
        "results/report/tables/failures.html",

rule sample_figures:
    output:
        report(directory("results/figures/samples"), patterns=["{kind}__{name}.png"],
               caption="report/overlay.rst", category="Samples", subcategory="{kind}",
               labels={"figure": "{name}"}),
    shell: "false"

rule summary_figures:
    output:
        report(directory("results/figures/summary"), patterns=["{name}.png"],
               caption="report/summary_figures.rst", category="Summary plots",
               labels={"figure": "{name}"}),
    shell: "false"

rule known_answer:
    output:
        report(directory("results/figures/known_answer"), patterns=["{name}.png"],
               caption="report/known_answer.rst", category="Known answer",
               labels={"figure": "{name}"}),
    shell: "false"

rule pages:
    output:
        summary=report("results/report/summary.html", caption="report/run_summary.rst",
                       category="Run summary", labels={"page": "summary"}),
        maps=report("results/report/tables/maps.html", caption="report/maps_table.rst",
                    category="Tables", labels={"table": "maps and metrics"}),
        failures=report("results/report/tables/failures.html", caption="report/failures.rst",
                        category="Tables", labels={"table": "failures"}),
    shell: "false"
"""


def _film(rng: np.random.Generator, size: int = 256) -> np.ndarray:
    """A film-like picture: a bright body, dark lungs, rib-like stripes and grain."""
    rows, cols = np.mgrid[0:size, 0:size] / size
    body = ((rows - 0.5) / 0.48) ** 2 + ((cols - 0.5) / 0.45) ** 2 < 1
    lungs = (((rows - 0.45) / 0.3) ** 2 + ((np.abs(cols - 0.5) - 0.2) / 0.12) ** 2) < 1
    film = 30 + 150 * body - 70 * lungs + 12 * np.sin(rows * 60) + rng.normal(0, 6, rows.shape)
    return film.clip(0, 255).astype(np.uint8), lungs


def _sample_shard(folder: Path) -> dict[str, Path]:
    """One shard of two films asked about two findings: the report's four capped samples, with
    every strategy, map method and two per-layer attention maps (tables as the maps stage's)."""
    rng = np.random.default_rng(0)
    images, answers, maps, arrays = [], [], [], {}
    (folder / "preprocess").mkdir(parents=True)
    for dicom_id in ("d1", "d2"):
        film, lungs = _film(rng)
        body = (film > 20).astype(np.uint8) * 255
        for suffix, array in (("", film), ("_body", body), ("_lungs", lungs.astype(np.uint8))):
            cv2.imwrite(str(folder / "preprocess" / f"{dicom_id}{suffix}.png"), array)
        images.append(
            {
                "dicom_id": dicom_id,
                "image": f"preprocess/{dicom_id}.png",
                "body_mask": f"preprocess/{dicom_id}_body.png",
                "lung_mask": f"preprocess/{dicom_id}_lungs.png",
            }
        )
        for finding in FINDINGS:
            for strategy in STRATEGIES:
                question_id = f"{finding}.{strategy}.0"
                sample_id = f"{dicom_id}__{question_id}"
                answers.append(
                    {"sample_id": sample_id, "dicom_id": dicom_id, "question_id": question_id,
                     "finding": finding, "strategy": strategy, "answer": "yes"}
                )  # fmt: skip
                for method in METHODS:
                    map_id = f"{sample_id}__yes__answer__{method}"
                    values = rng.random((16, 16)) ** 4
                    arrays[map_id] = (values / values.sum()).astype(np.float32)
                    row = {"map_id": map_id, "sample_id": sample_id, "dicom_id": dicom_id,
                           "question_id": question_id, "term": "yes", "source": "answer",
                           "method": method, "rows": "decision", "per_layer": False,
                           "layers": ""}  # fmt: skip
                    maps.append(row)
                    if method == "attention":
                        for layer in (5, 11):
                            layer_id = f"{sample_id}__answer_layer{layer}__answer__attention"
                            arrays[layer_id] = arrays[map_id][::-1].copy()
                            maps.append(
                                row | {"map_id": layer_id, "per_layer": True, "layers": layer}
                            )
    paths = {name: folder / f"{name}.csv" for name in ("answers", "maps", "images")}
    pd.DataFrame(answers).to_csv(paths["answers"], index=False)
    pd.DataFrame(maps).to_csv(paths["maps"], index=False)
    pd.DataFrame(images).to_csv(paths["images"], index=False)
    np.savez(folder / "maps.npz", **arrays)
    return {
        "answers_csv": paths["answers"],
        "maps_csv": paths["maps"],
        "images_csv": paths["images"],
        "maps_npz": folder / "maps.npz",
    }


@pytest.fixture(scope="module")
def sample_figures(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("shard")
    out = folder / "figures"
    written = write_sample_figures(
        **_sample_shard(folder),
        out_dir=out,
        samples_per_shard=2,
        max_samples=REPORT_SAMPLES,
        root=folder,
    )
    kinds = {path.name.split("__")[0] for path in written}
    assert kinds == {"overlay", "panels", "sensitivity", "layers"}
    return out


def _study_tables(images: int, folder: Path) -> dict[str, Path]:
    """The metrics stage's tables of a study of ``images`` images (every answer a sentence)."""
    rng = np.random.default_rng(images)
    dicom = np.repeat([f"{i:08x}-{i * 7919 % 99991:05d}" for i in range(images)], 30)
    n = len(dicom)
    metric_names = ("inside_body", "border_fraction", "focus", "left_right", "apical_basal")
    maps = pd.DataFrame(
        {
            "map_id": [f"{d}__q{i % 30}__map" for i, d in enumerate(dicom)],
            "sample_id": [f"{d}__q{i % 6}" for i, d in enumerate(dicom)],
            "dicom_id": dicom,
            "finding": np.tile(np.repeat(FINDINGS, 15), images),
            "strategy": np.tile(np.repeat(STRATEGIES, 5), 2 * images),
            "method": np.tile(METHODS, 6 * images),
            "source": "answer",
            "rows": "decision",
            "entropy": rng.uniform(2, 5.5, n),
            **{name: rng.random(n) for name in metric_names},
            **{f"extra_metric_{k}": rng.random(n) for k in range(10)},
        }
    )
    accuracy = pd.DataFrame(
        {"strategy": ["all", *STRATEGIES], "accuracy": 0.6, "ci_low": 0.5, "ci_high": 0.7,
         "n": 6 * images, "n_correct": 3 * images, "n_subjects": images}
    )  # fmt: skip
    samples = 6 * images
    answers = pd.DataFrame(
        {
            "sample_id": [f"s{i}" for i in range(samples)],
            "strategy": np.tile(STRATEGIES, 2 * images),
            "answer": [f"Sample {i} shows no sign of it in either lung." for i in range(samples)],
            "correct": "yes",
        }
    )  # fmt: skip
    failures = pd.DataFrame(
        {
            "stage": "maps",
            "dicom_id": dicom[::600],
            "error_type": "out_of_memory",
            "message": "CUDA out of memory. Tried to allocate 2.00 GiB; " * 4,
        }
    )
    paths = {
        "maps_csv": folder / "metrics" / "maps.csv",
        "accuracy_by_strategy_csv": folder / "metrics" / "accuracy_by_strategy.csv",
        "accuracy_by_finding_csv": folder / "metrics" / "accuracy_by_finding.csv",
        "js_divergence_csv": folder / "metrics" / "js_divergence.csv",
        "failures_csv": folder / "failures.csv",
    }
    paths["maps_csv"].parent.mkdir(parents=True)
    maps.to_csv(paths["maps_csv"], index=False)
    accuracy.to_csv(paths["accuracy_by_strategy_csv"], index=False)
    accuracy.assign(finding=FINDINGS[0]).to_csv(paths["accuracy_by_finding_csv"], index=False)
    pd.DataFrame({"js_divergence": rng.random(samples), "strategy_b": "plain"}).to_csv(
        paths["js_divergence_csv"], index=False
    )
    failures.to_csv(paths["failures_csv"], index=False)
    return paths | {"answers": answers, "maps": maps, "failures": failures}


def _report(images: int, workdir: Path, sample_figures: Path) -> int:
    """Write the synthetic study's report items, render its report; the report's bytes."""
    shutil.copytree(REPO_ROOT / "report", workdir / "report")
    (workdir / "Snakefile").write_text(textwrap.dedent(SNAKEFILE))
    results = workdir / "results"
    tables = _study_tables(images, results)
    shutil.copytree(sample_figures, results / "figures" / "samples")
    write_summary_figures(
        **{k: v for k, v in tables.items() if k.endswith("_csv") and k != "failures_csv"},
        out_dir=results / "figures" / "summary",
    )
    rng = np.random.default_rng(1)
    film, _ = _film(rng, size=256)
    panels = [
        LesionPanel(film, rng.random((16, 16)), (60, 80, 40, 40), i % 2, 2.0, f"film {i}")
        for i in range(images // 10)
    ]
    plot_method_hits(panels, "attention", results / "figures" / "known_answer" / "hits.png")
    pages = results / "report"
    write_table_page(tables["maps_csv"], pages / "tables" / "maps.html", title="Maps")
    write_table_page(tables["failures_csv"], pages / "tables" / "failures.html", title="Failures")
    summary = summarise_run(
        config={"run": "synthetic", "model": {"id": "none"}},
        study_summary={},
        manifest=pd.DataFrame({"dicom_id": np.unique(tables["maps"]["dicom_id"])}),
        questions=pd.DataFrame({"question_id": range(6)}),
        answers=tables["answers"],
        maps=tables["maps"],
        failures=tables["failures"],
        exclusions=pd.DataFrame(columns=["dicom_id", "reason"]),
        preprocess=pd.DataFrame(),
        changed_settings={},
        provenance={"git_commit": None, "packages": {}},
    )
    summary["first_section"] = ""
    (pages / "summary.html").write_text(render_run_summary(summary), encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "1", "--report", "report.html"],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return (workdir / "report.html").stat().st_size


def test_the_report_stays_under_15_mb_and_does_not_grow_with_the_study(tmp_path, sample_figures):
    small = _report(200, tmp_path / "small", sample_figures)
    large = _report(2000, tmp_path / "large", sample_figures)
    assert large <= REPORT_BOUND
    # Ten times the images: the same report, give or take the plots' pixels (a percent).
    assert large <= 1.01 * small, (small, large)
    # The tables stay in their CSVs: the report holds their pages, not them.
    assert (tmp_path / "large" / "results" / "metrics" / "maps.csv").stat().st_size > large
