"""The paper stage (rules/paper.smk) is planned only when paper.activate is true."""

from __future__ import annotations

from pathlib import Path

import pytest

from workflow.demo import planned_rules

PAPER_RULES = {"paper_comparison", "reference_compat", "paper_page"}


def _planned_rules(tmp_path: Path, paper: dict) -> set[str]:
    return planned_rules(tmp_path, {"run": "paper-stage-test", "paper": paper})


@pytest.mark.parametrize("reference_compat", [True, False])
def test_no_paper_job_without_paper_activate(tmp_path, reference_compat):
    planned = _planned_rules(tmp_path, {"activate": False, "reference_compat": reference_compat})
    assert {"inference", "maps", "report"} <= planned
    assert not planned & PAPER_RULES


def test_paper_jobs_with_paper_activate(tmp_path):
    planned = _planned_rules(tmp_path, {"activate": True, "reference_compat": True})
    assert planned >= PAPER_RULES
