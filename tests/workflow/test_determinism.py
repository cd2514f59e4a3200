"""Two runs of the demo from clean produce byte-identical metrics tables.

The oracle is the first run: the shared demo run and a second run in a fresh copy (model rebuilt,
every image decoded again, every question answered again) must agree byte for byte.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from workflow.demo import LOCAL_RUN, snakemake

pytestmark = pytest.mark.slow

METRICS = Path("results/demo/metrics")


@pytest.fixture(scope="module")
def second_run(fresh_copy) -> Path:
    workdir = fresh_copy("second_run")
    snakemake(workdir, *LOCAL_RUN)
    return workdir


def _metrics_files(run: Path) -> list[str]:
    return sorted(p.name for p in (run / METRICS).iterdir() if p.suffix in {".csv", ".json"})


def test_same_metrics_files(demo_run, second_run):
    names = _metrics_files(demo_run)
    assert "summary.json" in names
    assert len(names) > 5
    assert names == _metrics_files(second_run)


def test_metrics_tables_are_byte_identical(demo_run, second_run):
    differing = []
    for name in _metrics_files(demo_run):
        first, second = demo_run / METRICS / name, second_run / METRICS / name
        if first.read_bytes() != second.read_bytes():
            differing.append(name)
    assert not differing, f"differ between two runs from clean: {differing}"


def test_metrics_are_not_empty(demo_run):
    """Guards the comparison above against two identically empty runs."""
    maps = pd.read_csv(demo_run / METRICS / "maps.csv")
    answers = pd.read_csv(demo_run / METRICS / "answers.csv")
    assert len(answers) > 0
    assert len(maps) > 0
