"""The run's failures.csv holds every stage's failure rows, the optional stages' included."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from cxr_attention.io import FAILURE_COLUMNS


def _rows(path: Path) -> set[tuple[str, ...]]:
    if path.stat().st_size == 0:
        return set()
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    return set(table[FAILURE_COLUMNS].itertuples(index=False, name=None))


def test_failures_gathers_every_stage(demo_run: Path):
    # Found on disk, not from the rule's inputs: every failure table that a job wrote.
    results = demo_run / "results/demo"
    stage_tables = [
        *results.glob("*/shard-*.failures.csv"),
        results / "grounding/failures.csv",
        demo_run / "resources/known-answer-data/failures.csv",
    ]
    found = {path.parent.name for path in stage_tables if path.is_file()}
    # The demo runs the optional stages and plants its own data.
    assert {"preprocess", "maps", "grounding", "faithfulness", "reliance"} <= found
    assert "known-answer-data" in found

    gathered = _rows(results / "failures.csv")
    for path in stage_tables:
        assert _rows(path) <= gathered, path
    # Not an empty oracle: some stage of the demo reports a failure (the planting leaves out a
    # lesion that a lung has no room for).
    assert gathered
