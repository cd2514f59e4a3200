"""After a finished run, an edit reruns exactly the stale steps, and nothing else.

Every rule lists the library modules it runs as inputs, so Snakemake's own planner is the oracle:
each test makes a real edit (a comment line appended, so the file's checksum changes; recent
Snakemake ignores a bare touch whose checksum did not change), asks for a dry run, and checks which
rules it plans. The edit is undone afterwards: the restored content has the recorded checksum
again, so the next test starts from a finished run.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from workflow.demo import clone_run, planned_jobs

pytestmark = pytest.mark.slow

SHARDS = 2  # config/demo.yaml: selection.shards
PREPROCESSING = {"manifest", "preprocess"}
MODEL = {"build_tiny_model", "questions", "inference", "maps"}


@pytest.fixture(scope="module")
def finished_run(demo_run: Path) -> Path:
    """The shared demo run: these tests only ask for dry runs, and undo every edit."""
    return demo_run


@contextlib.contextmanager
def edited(path: Path, line: str) -> Iterator[None]:
    """Append ``line`` to the file for the duration of the block, then restore its content."""
    original = path.read_bytes()
    path.write_bytes(original + line.encode() + b"\n")
    try:
        yield
    finally:
        path.write_bytes(original)


def test_second_run_has_nothing_to_do(finished_run):
    assert planned_jobs(finished_run) == {}


def test_moved_run_has_nothing_to_do(demo_run, tmp_path):
    """A finished run copied to another folder (another clone, a moved project) is up to date.

    Fails when a rule's params hold an absolute path: Snakemake records params, so the new
    location would look like a changed setting.
    """
    assert planned_jobs(clone_run(demo_run, tmp_path / "moved")) == {}


def test_metrics_edit_reruns_metrics_figures_and_report_only(finished_run):
    with edited(finished_run / "src/cxr_attention/metrics/per_map.py", "# edited by a test"):
        jobs = planned_jobs(finished_run)
    assert jobs["map_metrics"] == SHARDS
    assert {"gather", "study_statistics", "summary_figures", "report"} <= set(jobs)
    assert not set(jobs) & (PREPROCESSING | MODEL)
    assert planned_jobs(finished_run) == {}


# The preprocessing stage's own module. (The mask module is shared: the known-answer planting
# places its lesions inside the lungs that it finds, so a mask edit reruns the planting as well.)
PREPROCESSING_MODULE = "src/cxr_attention/preprocess/pipeline.py"


def test_preprocessing_edit_reruns_everything_downstream(finished_run):
    with edited(finished_run / PREPROCESSING_MODULE, "# edited by a test"):
        jobs = planned_jobs(finished_run)
    for rule in ("preprocess", "inference", "maps", "map_metrics", "sample_figures"):
        assert jobs[rule] == SHARDS, rule
    assert {"gather", "study_statistics", "summary_figures", "failures", "report"} <= set(jobs)
    # Neither the image selection, the questions nor the model depend on preprocessing.
    assert not set(jobs) & {"manifest", "questions", "build_tiny_model"}
    assert planned_jobs(finished_run) == {}


def test_question_bank_edit_reruns_inference_and_after_not_preprocessing(finished_run):
    with edited(finished_run / "config/questions.yaml", "# edited by a test"):
        jobs = planned_jobs(finished_run)
    assert jobs["questions"] == 1
    for rule in ("inference", "maps", "map_metrics"):
        assert jobs[rule] == SHARDS, rule
    assert {"gather", "study_statistics", "report"} <= set(jobs)
    assert not set(jobs) & (PREPROCESSING | {"build_tiny_model"})
    assert planned_jobs(finished_run) == {}


# Modules of one map method and of the question bank.
MAP_METHOD_MODULE = "src/cxr_attention/maps/methods/attention.py"
QUESTION_BANK_MODULE = "src/cxr_attention/questions/bank.py"
# Rules downstream of maps (reference_compat, the paper page and the known-answer ranking replay
# the map methods too).
AFTER_MAPS = {
    "map_metrics",
    "sample_figures",
    "gather",
    "study_statistics",
    "summary_figures",
    "failures",
    "paper_comparison",
    "reference_compat",
    "paper_page",
    "faithfulness",
    "faithfulness_summary",
    "grounding",
    "grounding_page",
    "known_answer_report",
    "known_answer_ranking",
    "table_pages",
    "run_summary",
    "report",
    "all",
}


@pytest.mark.parametrize(
    ("module", "first_rule", "first_count", "rerun_allowed"),
    [
        (MAP_METHOD_MODULE, "maps", SHARDS, {"maps", *AFTER_MAPS}),
        (
            QUESTION_BANK_MODULE,
            "questions",
            1,
            {"questions", "inference", "maps", "reliance", "reliance_summary", *AFTER_MAPS},
        ),
    ],
    ids=["map-method", "question-bank"],
)
def test_module_edit_reruns_its_stage_onward_only(
    finished_run, module, first_rule, first_count, rerun_allowed
):
    with edited(finished_run / module, "# edited by a test"):
        jobs = planned_jobs(finished_run)
    assert jobs[first_rule] == first_count
    assert set(jobs) <= rerun_allowed, sorted(set(jobs) - rerun_allowed)
    assert not set(jobs) & PREPROCESSING
    assert planned_jobs(finished_run) == {}


def test_machine_knobs_rerun_nothing(finished_run, tmp_path):
    """GPU memory thresholds tune the job to the machine: they are resources, never params."""
    knobs = tmp_path / "knobs.yaml"
    knobs.write_text("model:\n  min_free_gpu_gb: 3.5\nmaps:\n  gradcam_max_rows: 2\n")
    assert planned_jobs(finished_run, "--configfile", "config/demo.yaml", str(knobs)) == {}
    # The oracle sees a real setting: the same overlay with a study setting plans jobs.
    knobs.write_text("model:\n  min_free_gpu_gb: 3.5\nfigures:\n  samples_per_shard: 1\n")
    jobs = planned_jobs(finished_run, "--configfile", "config/demo.yaml", str(knobs))
    assert jobs["sample_figures"] == SHARDS
