"""Glue between Snakemake jobs and the library: logging, shard selection, gathering shards."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import pandas as pd
import yaml

from cxr_attention.io import atomic_path, read_table, write_csv
from cxr_attention.progress import loud_warning, progress_to_console

__all__ = [
    "gather_study_tables",
    "job_logging",
    "plain_config",
    "read_shard",
    "render_report",
]


@contextlib.contextmanager
def job_logging(log_path: str | os.PathLike) -> Iterator[logging.Logger]:
    """Send the job's log records, warnings and stderr (progress bars) to its Snakemake log file.

    An exception that ends the job is logged with its traceback before it propagates, so that the
    log Snakemake points to says what failed. Progress and loud warnings
    (:mod:`cxr_attention.progress`) also reach the console, prefixed with the job's log name.
    """
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    label = Path(log_path).with_suffix("").as_posix().removeprefix("logs/")
    with (
        open(log_path, "w", buffering=1) as handle,
        contextlib.redirect_stderr(handle),
        progress_to_console(label),
    ):
        handler = logging.StreamHandler(handle)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root = logging.getLogger()
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        logging.captureWarnings(True)
        try:
            yield logging.getLogger("cxr_attention")
        except BaseException:
            logging.getLogger("cxr_attention").exception("the job failed")
            raise
        finally:
            root.removeHandler(handler)
            sys.stderr.flush()


def read_shard(manifest_csv: str | os.PathLike, shard: int | str) -> pd.DataFrame:
    """The manifest rows of one shard (identifiers kept as strings)."""
    manifest = read_table(manifest_csv, required=("shard",))
    return manifest[manifest["shard"] == int(shard)].reset_index(drop=True)


# Timings differ between any two runs; the study's tables leave them out.
_WALL_CLOCK_COLUMNS = ["seconds"]

# Sample-level columns copied onto every map row, so that one tidy table serves the statistics,
# the figures and DVC plots.
_SAMPLE_COLUMNS = [
    "sample_id",
    "subject_id",
    "finding",
    "strategy",
    "baseline_question_id",
    "variant_index",
    "variant_kind",
    "answer",
    "expected",
    "correct",
    "p_yes",
]


def gather_study_tables(
    *,
    answers: Sequence[str | os.PathLike],
    maps: Sequence[str | os.PathLike],
    metrics: Sequence[str | os.PathLike],
    manifest_csv: str | os.PathLike,
    answers_out: str | os.PathLike,
    maps_out: str | os.PathLike,
) -> None:
    """Write the study's answers table and its maps table (maps + metrics + sample columns).

    The study's tables leave out the wall-clock ``seconds`` of each answer (it stays in each
    shard's answers table): two runs from clean must give byte-identical metrics tables.
    """
    del manifest_csv  # listed as an input so that a new selection regathers
    answer_table = _concat(answers).drop(columns=_WALL_CLOCK_COLUMNS, errors="ignore")
    write_csv(answer_table, answers_out)
    _warn_when_nothing_scored(answer_table)
    map_table = _concat(maps)
    metric_table = _concat(metrics)
    if map_table.empty:
        write_csv(map_table, maps_out)
        return
    joined = map_table.merge(metric_table, on="map_id", how="left", validate="one_to_one")
    sample_columns = [c for c in _SAMPLE_COLUMNS if c in answer_table.columns]
    joined = joined.merge(
        answer_table[sample_columns], on="sample_id", how="left", validate="many_to_one"
    )
    write_csv(joined.sort_values("map_id", kind="stable"), maps_out)


def _warn_when_nothing_scored(answer_table: pd.DataFrame) -> None:
    """Warn on the console when no answer has an expected one: accuracy and AUROC will be empty."""
    correct = answer_table.get("correct", pd.Series(dtype=object))
    scored = int((correct.notna() & (correct.astype(str) != "")).sum())
    if scored == 0:
        loud_warning(
            "0 of %d answers can be scored: no sample has an expected answer (check the labels "
            "and questions.uncertain / questions.blank); accuracy and AUROC will be empty",
            len(answer_table),
        )


def _concat(paths: Sequence[str | os.PathLike]) -> pd.DataFrame:
    frames = [frame for frame in map(read_table, paths) if len(frame.columns)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def plain_config(config: Mapping) -> dict:
    """``config`` as plain dicts and lists: Snakemake fills schema defaults of nested objects as
    OrderedDicts, which ``yaml.safe_dump`` refuses."""
    return json.loads(json.dumps(config))


def render_report(
    *, config: dict, snakefile: str | os.PathLike, target: str, out_html: str | os.PathLike
) -> None:
    """Run ``snakemake --report`` over ``target`` with this run's config, from inside a job.

    The job itself holds the working directory's lock, hence ``--nolock``; the report only reads.
    """
    with tempfile.TemporaryDirectory() as tmp, atomic_path(out_html, ".html") as tmp_html:
        config_file = Path(tmp) / "config.yaml"
        config_file.write_text(yaml.safe_dump(plain_config(config), sort_keys=True))
        command = [
            sys.executable,
            "-m",
            "snakemake",
            "--snakefile",
            str(snakefile),
            "--configfile",
            str(config_file),
            "--nolock",
            "--report",
            str(tmp_html),
            target,
        ]
        logging.getLogger(__name__).info("running %s", " ".join(command))
        subprocess.run(command, check=True, stdout=sys.stderr, stderr=sys.stderr)
