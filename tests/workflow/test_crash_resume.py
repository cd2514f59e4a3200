"""Kill -9 the inference job mid-shard, rerun: finished samples are kept, results are unchanged.

The inference runner writes each finished (image, question) into ``<shard>.partial/`` (its capture
arrays, then its answer record, which marks it finished); Snakemake does not own that folder and so
keeps it after a crash. The test kills Snakemake and its job with SIGKILL once a few samples are
finished, reruns, and checks against two oracles: the files themselves (same inode and modification
time: not recomputed, only moved into the output folder) and the uninterrupted demo run (same
answers and the same capture arrays).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from workflow.demo import LOCAL_RUN, snakemake, snakemake_environment

pytestmark = pytest.mark.slow

SHARD = "000"
ANSWERS = Path(f"results/demo/inference/shard-{SHARD}.csv")
CAPTURES = Path(f"results/demo/inference/shard-{SHARD}")
CHECKPOINT = Path(f"results/demo/inference/shard-{SHARD}.partial")
LOG = Path(f"logs/demo/inference/{SHARD}.log")
KILL_AFTER = 3  # finished samples in the checkpoint before the kill
TIMING_COLUMNS = ["seconds"]


def _finished(checkpoint: Path) -> dict[str, os.stat_result]:
    """Samples the runner counts as finished: answer record and capture arrays both written."""
    return {
        record.stem: (checkpoint / f"{record.stem}.npz").stat()
        for record in checkpoint.glob("*.json")
        if (checkpoint / f"{record.stem}.npz").exists()
    }


def _kill_mid_shard(workdir: Path, timeout: float = 600) -> None:
    """Run the shard's inference and SIGKILL Snakemake's process group mid-shard."""
    process = subprocess.Popen(
        [sys.executable, "-m", "snakemake", str(ANSWERS), *LOCAL_RUN],
        cwd=workdir,
        env=snakemake_environment(workdir),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: the job dies with it
    )
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and process.poll() is None:
            checkpoint = workdir / CHECKPOINT
            if checkpoint.is_dir() and len(_finished(checkpoint)) >= KILL_AFTER:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                return
            time.sleep(0.02)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    pytest.fail(f"inference ended (exit {process.returncode}) before {KILL_AFTER} samples")


@pytest.fixture(scope="module")
def crashed_and_resumed(fresh_copy):
    workdir = fresh_copy("crash")
    _kill_mid_shard(workdir)
    assert not (workdir / ANSWERS).exists(), "the shard finished before the kill"
    before = _finished(workdir / CHECKPOINT)
    # A killed Snakemake leaves its lock behind; `--unlock` is the documented first step.
    snakemake(workdir, "--unlock")
    snakemake(workdir, str(ANSWERS), *LOCAL_RUN, "--rerun-incomplete")
    return workdir, before


def test_finished_samples_are_not_recomputed(crashed_and_resumed):
    workdir, before = crashed_and_resumed
    assert len(before) >= KILL_AFTER
    for sample_id, status in before.items():
        after = (workdir / CAPTURES / f"{sample_id}.npz").stat()
        assert (after.st_ino, after.st_mtime_ns) == (status.st_ino, status.st_mtime_ns), sample_id
    assert not (workdir / CHECKPOINT).exists(), "the checkpoint folder is removed when done"


def test_log_counts_the_skipped_samples(crashed_and_resumed):
    workdir, before = crashed_and_resumed
    log = (workdir / LOG).read_text()
    match = re.search(r"shard \d+: (\d+) samples, (\d+) already done", log)
    assert match, log[-2000:]
    total, done = map(int, match.groups())
    assert done == len(before)
    assert total > done


def test_resumed_results_equal_an_uninterrupted_run(crashed_and_resumed, demo_run):
    workdir, _ = crashed_and_resumed
    resumed = pd.read_csv(workdir / ANSWERS, dtype=str, keep_default_na=False)
    reference = pd.read_csv(demo_run / ANSWERS, dtype=str, keep_default_na=False)
    # The capture column holds the path inside each copy; compare it relative to the run.
    for table, root in ((resumed, workdir), (reference, demo_run)):
        table["capture"] = [
            str(Path(p).relative_to(root)) if Path(p).is_absolute() else p for p in table["capture"]
        ]
    pd.testing.assert_frame_equal(
        resumed.drop(columns=TIMING_COLUMNS), reference.drop(columns=TIMING_COLUMNS)
    )
    names = sorted(p.name for p in (demo_run / CAPTURES).glob("*.npz"))
    assert names == sorted(p.name for p in (workdir / CAPTURES).glob("*.npz"))
    for name in names:
        with np.load(workdir / CAPTURES / name) as ours, np.load(demo_run / CAPTURES / name) as ref:
            assert sorted(ours.files) == sorted(ref.files), name
            for key in ref.files:
                np.testing.assert_array_equal(ours[key], ref[key], err_msg=f"{name}: {key}")
