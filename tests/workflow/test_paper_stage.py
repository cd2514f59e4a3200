"""The paper stage (rules/paper.smk) is planned only when paper.activate is true."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
PAPER_RULES = {"paper_comparison", "reference_compat", "paper_page"}


def _planned_rules(tmp_path: Path, paper: dict) -> set[str]:
    overlay = tmp_path / "paper.yaml"
    overlay.write_text(yaml.safe_dump({"run": "paper-stage-test", "paper": paper}))
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "snakemake"),
            "-n",
            "--nolock",
            "--configfile",
            "config/demo.yaml",
            str(overlay),
        ],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return set(re.findall(r"^(?:local)?rule (\w+):", result.stdout, flags=re.M))


@pytest.mark.parametrize("reference_compat", [True, False])
def test_no_paper_job_without_paper_activate(tmp_path, reference_compat):
    planned = _planned_rules(tmp_path, {"activate": False, "reference_compat": reference_compat})
    assert {"inference", "maps", "report"} <= planned
    assert not planned & PAPER_RULES


def test_paper_jobs_with_paper_activate(tmp_path):
    planned = _planned_rules(tmp_path, {"activate": True, "reference_compat": True})
    assert planned >= PAPER_RULES
