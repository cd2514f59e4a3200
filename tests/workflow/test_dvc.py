"""DVC on the demo: repro records the run, push/pull restore it, Snakemake then plans nothing.

On a copy of the finished demo run (the fixture already ran Snakemake, so ``dvc repro`` runs the
stage's real command and Snakemake finds its jobs done): ``dvc repro`` writes dvc.lock, ``dvc
push`` sends the results to a local remote, the outputs, DVC's cache and Snakemake's state are
wiped as in a fresh clone, ``dvc pull`` restores identical files, ``dvc metrics show`` prints the
metrics, and after ``snakemake --touch`` (the step that README and ``make pull`` prescribe)
Snakemake has nothing to do.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from workflow.demo import clone_run, planned_jobs, run_tool, snakemake

pytestmark = pytest.mark.slow

OUTPUTS = [
    Path("results/demo"),
    Path("resources/known-answer-data"),
    Path("resources/known-answer-model"),
]
SUMMARY = Path("results/demo/metrics/summary.json")


def dvc(workdir: Path, *arguments: str) -> subprocess.CompletedProcess:
    return run_tool(workdir, "dvc", *arguments)


def _digests(workdir: Path) -> dict[str, str]:
    """SHA-256 of every file under the stage's outputs, keyed by path."""
    digests = {}
    for output in OUTPUTS:
        for path in sorted((workdir / output).rglob("*")):
            if path.is_file():
                digests[str(path.relative_to(workdir))] = hashlib.sha256(
                    path.read_bytes()
                ).hexdigest()
    return digests


def _leaves(tree: object, prefix: str = "") -> dict[str, object]:
    if isinstance(tree, dict):
        leaves: dict[str, object] = {}
        for key, value in tree.items():
            leaves.update(_leaves(value, f"{prefix}.{key}" if prefix else str(key)))
        return leaves
    return {prefix: tree}


@pytest.fixture(scope="module")
def versioned_run(demo_run: Path, tmp_path_factory: pytest.TempPathFactory):
    """A copy of the demo run under git + DVC, reproduced and pushed to a local remote."""
    root = tmp_path_factory.mktemp("dvc")
    workdir = clone_run(demo_run, root / "repo")
    subprocess.run(["git", "init", "-q"], cwd=workdir, check=True)
    dvc(workdir, "remote", "add", "--default", "local", str(root / "remote"))
    first = dvc(workdir, "repro", "demo")
    dvc(workdir, "push")
    return workdir, first


def test_repro_records_the_run(versioned_run):
    workdir, first = versioned_run
    assert "Running stage 'demo'" in first.stdout + first.stderr
    lock = yaml.safe_load((workdir / "dvc.lock").read_text())
    outs = {out["path"] for out in lock["stages"]["demo"]["outs"]}
    assert outs == {str(path) for path in OUTPUTS}
    deps = {dep["path"] for dep in lock["stages"]["demo"]["deps"]}
    assert {"src/cxr_attention", "config", "data/demo/mimic-cxr-jpg", "Snakefile"} <= deps
    again = dvc(workdir, "repro", "demo")
    assert "didn't change, skipping" in again.stdout + again.stderr


def test_pull_restores_identical_files_and_snakemake_plans_nothing(versioned_run):
    workdir, _ = versioned_run
    expected = _digests(workdir)
    assert any(name.endswith("summary.json") for name in expected)
    for path in [*OUTPUTS, Path(".dvc/cache"), Path(".snakemake")]:
        shutil.rmtree(workdir / path)
    # The sequence of `make pull`: restore, check against dvc.lock (exit 0), mark up to date.
    dvc(workdir, "pull")
    assert _digests(workdir) == expected
    dvc(workdir, "status", "--quiet")
    snakemake(workdir, "--touch", "--cores", "1")
    assert planned_jobs(workdir) == {}
    assert _digests(workdir) == expected, "--touch must not change any content"


def test_checkout_then_touch_plans_nothing(versioned_run):
    workdir, _ = versioned_run
    expected = _digests(workdir)
    # --relink rewrites every output file from the cache: new modification times everywhere.
    dvc(workdir, "checkout", "--relink")
    assert _digests(workdir) == expected
    snakemake(workdir, "--touch", "--cores", "1")
    assert planned_jobs(workdir) == {}


def test_metrics_show_prints_the_summary(versioned_run):
    workdir, _ = versioned_run
    shown = json.loads(dvc(workdir, "metrics", "show", "--json").stdout)
    (revision,) = shown.values()  # the workspace ("" before the first commit)
    data = revision["data"][str(SUMMARY)]["data"]
    summary = json.loads((workdir / SUMMARY).read_text())
    expected = {k: v for k, v in _leaves(summary).items() if isinstance(v, int | float)}
    assert expected, "summary.json has no numbers"
    assert {k: v for k, v in _leaves(data).items() if k in expected} == expected
    table = dvc(workdir, "metrics", "show").stdout
    assert str(SUMMARY) in table


def test_plots_read_the_tidy_tables(versioned_run):
    """Every plot of dvc.yaml renders rows that hold its x and y columns."""
    workdir, _ = versioned_run
    rendered = json.loads(dvc(workdir, "plots", "show", "--json").stdout)["data"]
    for plot in yaml.safe_load((workdir / "dvc.yaml").read_text())["plots"]:
        ((title, definition),) = plot.items()
        ((table, y_field),) = definition["y"].items()
        assert (workdir / table).is_file(), table
        rows = rendered[title][0]["content"]["data"]["values"]
        assert rows, f"{title}: no rows from {table}"
        assert all(definition["x"] in row and y_field in row for row in rows), title
