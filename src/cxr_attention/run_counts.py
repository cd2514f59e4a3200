"""What a finished (or partial) run holds, in one line: its report and its counts.

``make demo`` ends with :func:`describe_run` (through ``cxr-attention summary results/<run>``), so
that a user sees where the report is and how many images were studied, failed or excluded
without opening a table.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cxr_attention.io import ConfigError, read_table

__all__ = ["RunCounts", "count_run", "describe_run"]


@dataclass(frozen=True)
class RunCounts:
    """Counts of one run folder (``results/<run>``).

    Attributes
    ----------
    images : int
        Rows of ``manifest.csv``.
    failures : dict of str to int
        Rows of ``failures.csv`` per stage.
    exclusions : dict of str to int
        Rows of ``exclusions.csv`` per reason.
    flagged_masks : int
        Preprocessed images whose lung mask is flagged (``mask_ok`` false).
    report : pathlib.Path or None
        ``report.html`` when it exists.
    """

    images: int
    failures: dict[str, int]
    exclusions: dict[str, int]
    flagged_masks: int
    report: Path | None


def count_run(results_dir: str | os.PathLike) -> RunCounts:
    """Read a run folder's manifest, failures, exclusions and preprocess tables.

    Raises
    ------
    ConfigError
        ``results_dir`` holds no ``manifest.csv`` (not a run folder, or the run never started).
    """
    folder = Path(results_dir)
    if not (folder / "manifest.csv").is_file():
        raise ConfigError(f"{folder}: no manifest.csv; not a run folder (results/<run>)")
    flagged = 0
    for shard in sorted((folder / "preprocess").glob("shard-*[0-9].csv")):
        table = read_table(shard)
        if "mask_ok" in table.columns:
            flagged += int((~table["mask_ok"].astype(str).isin(["True", "true", "1"])).sum())
    report = folder / "report.html"
    return RunCounts(
        images=len(read_table(folder / "manifest.csv")),
        failures=_counts(folder / "failures.csv", "stage"),
        exclusions=_counts(folder / "exclusions.csv", "reason"),
        flagged_masks=flagged,
        report=report if report.is_file() else None,
    )


def _counts(path: Path, column: str) -> dict[str, int]:
    if not path.is_file():
        return {}
    table = read_table(path)
    if column not in table.columns or table.empty:
        return {}
    return {str(key): int(count) for key, count in table[column].value_counts().items()}


def describe_run(results_dir: str | os.PathLike) -> str:
    """Two lines: the report's path, then images, failures (per stage), exclusions (per reason)."""
    counts = count_run(results_dir)

    def listed(by_key: dict[str, int]) -> str:
        total = sum(by_key.values())
        detail = ", ".join(f"{count} {key}" for key, count in by_key.items())
        return f"{total} ({detail})" if detail else "0"

    report = counts.report or f"{Path(results_dir) / 'report.html'} (not written yet)"
    return (
        f"report: {report}\n"
        f"images: {counts.images}; failures: {listed(counts.failures)}; "
        f"exclusions: {listed(counts.exclusions)}; flagged lung masks: {counts.flagged_masks}"
    )
