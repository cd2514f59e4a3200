"""The model benchmarks run end to end on the tiny model, so that a GPU session can trust them.

Their timings are not checked (speed goals live in bench/RESULTS.md); what they report about
correctness is: on the CPU in float32, shared + batched answers equal one-at-a-time ones, and
batched Grad-CAM maps equal one-target-at-a-time ones.
"""

from __future__ import annotations

import json
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


def test_test_split_bench_measures_every_stage_and_projects_from_its_rates(tmp_path):
    record = tmp_path / "test-split.json"
    out = bench(
        "bench_test_split.py",
        *("--images", "1", "--images-per-batch", "1", "--orders", "question-first"),
        *("--repeats", "1", "--methods", "attention", "uniform", "--json", str(record)),
    )
    results = json.loads(record.read_text())
    answers = results["answers"]
    assert set(answers) == {"one_word, question-first", "sentences, question-first"}
    for run in answers.values():  # the bench checked every answer's planted length
        assert run["answers"] == 42
    # Sentence answers write more: their captures hold a row per generated token.
    assert (
        answers["sentences, question-first"]["bytes_per_answer"]
        > 5 * answers["one_word, question-first"]["bytes_per_answer"]
    )
    projected = results["projections"]
    for key, run in answers.items():  # 5,159 images x 42 questions at the measured rate
        assert projected["answers_minutes"][key] == pytest.approx(
            5159 * 42 / run["answers_per_second"] / 60
        )
    per_map = {row["method"]: row["seconds_per_map"] for row in results["maps"]}
    assert set(per_map) == {"attention", "uniform"}
    assert projected["maps_1000_hours"] == pytest.approx(1000 * sum(per_map.values()) / 3600)
    faithfulness = results["faithfulness"]
    assert faithfulness["n_random"] == 5 and faithfulness["steps"] == 8  # the schema's defaults
    per_sample = faithfulness["random_seconds_per_sample"] + sum(
        faithfulness["seconds_per_map"] + seconds for seconds in per_map.values()
    )
    assert projected["faithfulness_500_hours"] == pytest.approx(500 * per_sample / 3600)
    # The split: the slowest answers, every sample's answer and term map by the default methods
    # (both measured ones are among them), 11 shards x 20 faithfulness samples.
    split = projected["split_hours"]
    slowest = max(5159 * 42 / run["answers_per_second"] for run in answers.values())
    assert split["answers (slowest measured)"] == pytest.approx(slowest / 3600)
    assert split["maps (default maps.methods)"] == pytest.approx(
        5159 * 42 * 2 * sum(per_map.values()) / 3600
    )
    assert split["faithfulness (default)"] == pytest.approx(11 * 20 * per_sample / 3600)
    assert "## Projections (test split: 5,159 images)" in out
