"""A job's log says what failed, and a step that leaves nothing to score warns on the console."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections import OrderedDict
from pathlib import Path

import pandas as pd
import pytest

from cxr_attention.workflow import gather_study_tables

SRC = Path(__file__).resolve().parents[2] / "src"


def test_failing_job_log_ends_with_the_exception_and_its_traceback(tmp_path):
    log = tmp_path / "logs" / "job.log"
    script = textwrap.dedent(
        f"""
        from cxr_attention.workflow import job_logging

        def read_model():
            raise FileNotFoundError("no config.json in /nowhere")

        with job_logging({str(log)!r}) as logger:
            logger.info("loading the model")
            read_model()
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        env={"PYTHONPATH": str(SRC)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    lines = log.read_text().splitlines()
    assert "loading the model" in lines[0]
    assert "the job failed" in "\n".join(lines)
    assert "Traceback (most recent call last):" in lines
    assert any("in read_model" in line for line in lines)
    assert lines[-1] == "FileNotFoundError: no config.json in /nowhere"


def _answers(tmp_path, correct):
    path = tmp_path / f"answers-{len(correct)}-{correct[0]!s}.csv"
    pd.DataFrame({"sample_id": [f"s{i}" for i in range(len(correct))], "correct": correct}).to_csv(
        path, index=False
    )
    return path


def _gather(tmp_path, answers):
    empty = tmp_path / "empty.csv"
    empty.write_text("map_id\n")
    gather_study_tables(
        answers=[answers],
        maps=[empty],
        metrics=[empty],
        manifest_csv=empty,
        answers_out=tmp_path / "answers_out.csv",
        maps_out=tmp_path / "maps_out.csv",
    )


def test_gather_warns_on_the_console_when_no_answer_can_be_scored(tmp_path, capfd):
    from cxr_attention.workflow import job_logging

    with job_logging(tmp_path / "gather.log"):
        _gather(tmp_path, _answers(tmp_path, ["", "", ""]))
    console = capfd.readouterr().err
    assert "WARNING 0 of 3 answers can be scored" in console
    assert "0 of 3 answers can be scored" in (tmp_path / "gather.log").read_text()


def test_gather_is_quiet_when_answers_can_be_scored(tmp_path, capfd):
    from cxr_attention.workflow import job_logging

    with job_logging(tmp_path / "gather.log"):
        _gather(tmp_path, _answers(tmp_path, [True, "", False]))
    assert "can be scored" not in capfd.readouterr().err


def test_plain_config_turns_snakemake_s_ordered_defaults_into_yaml_safe_dicts():
    import yaml

    from cxr_attention.workflow import plain_config

    # What Snakemake's validate leaves for a nested object's schema default.
    config = {"maps": {"head_calibration": OrderedDict([("split", "validate"), ("k", 3)])}}
    with pytest.raises(yaml.representer.RepresenterError):
        yaml.safe_dump(config)
    assert yaml.safe_load(yaml.safe_dump(plain_config(config))) == {
        "maps": {"head_calibration": {"split": "validate", "k": 3}}
    }
