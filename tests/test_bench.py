"""The model benchmarks run end to end on the tiny model, so that a GPU session can trust them.

Their timings are not checked (speed goals live in bench/RESULTS.md); what they report about
correctness is: on the CPU in float32, shared + batched answers equal one-at-a-time ones, and
batched Grad-CAM maps equal one-target-at-a-time ones.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def bench(script: str, *args: str) -> str:
    command = [sys.executable, str(REPO / "bench" / script), "--model", "tiny", *args]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.mark.parametrize(
    "order", [(), ("--question-first",)], ids=["image-first", "question-first"]
)
def test_inference_bench_reports_equal_answers_and_every_run(order):
    out = bench(
        "bench_inference.py",
        *("--questions", "4", "--alone", "2", "--batch-size", "4"),
        *("--repeats", "1", "--write-rounds", "2", "--new-tokens", "3"),
        *("--images-per-batch", "1", "2", "--writer-threads", "2", *order),
    )
    agreement = re.search(
        r"same 2 questions: (\d+) identical answers, largest P\(yes\) difference (\S+), "
        r"largest attention difference (\S+)",
        out,
    )
    assert agreement, out
    assert agreement[1] == "2"
    assert float(agreement[2]) < 1e-5 and float(agreement[3]) < 1e-5
    for run in ("plain generate", "capture, one at a time", "capture, shared + batched"):
        assert run in out
    assert re.search(
        r"written as the workflow writes .*none \S+, inline \S+, background \S+, process \S+", out
    )
    assert ("question first" in out) == bool(order)
    assert re.search(r"images per batch 2 \(8 rows\): \S+ q/s", out)


def test_gradcam_bench_reports_equal_maps():
    out = bench("bench_gradcam.py", "--targets", "3", "--max-rows", "2", "--repeats", "1")
    difference = re.search(r"largest map difference .*: (\S+)", out)
    assert difference, out
    assert float(difference[1]) < 1e-5
    assert "fell back" not in out


def test_compaction_bench_reports_planned_lengths_and_equal_answers():
    out = bench("bench_compaction.py", "--questions", "32", "--long-tokens", "6")
    # The planted lengths: two rows of 6 tokens, the others of 1 to 3 (checked by the bench).
    lengths = re.search(r"answer lengths \(tokens: rows\) (.*?);", out)
    assert lengths, out
    rows = dict(item.split(": ") for item in lengths[1].split(", "))
    assert rows["6"] == "2" and set(rows) == {"1", "2", "3", "6"}
    agreement = re.search(
        r"same 32 questions: (\d+) identical answers, largest P\(yes\) difference (\S+), "
        r"largest attention difference (\S+), largest text attention difference (\S+)",
        out,
    )
    assert agreement, out
    assert agreement[1] == "32"
    assert all(float(agreement[i]) <= 1e-6 for i in (2, 3, 4))
    assert re.search(r"compaction speed-up: \S+x wall, \S+x CPU", out)
