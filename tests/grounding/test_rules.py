"""The grounding stage (rules/grounding.smk) is planned only when grounding.activate is true."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

from cxr_attention.grounding.datasets import MS_CXR_COLUMNS

REPO = Path(__file__).resolve().parents[2]
GROUNDING_RULES = {"grounding", "grounding_page"}


def _planned_rules(tmp_path: Path, grounding: dict) -> set[str]:
    overlay = tmp_path / "grounding.yaml"
    overlay.write_text(yaml.safe_dump({"run": "grounding-stage-test", "grounding": grounding}))
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


def test_grounding_planned_only_when_active(tmp_path):
    boxes = tmp_path / "boxes.csv"
    boxes.write_text(",".join(MS_CXR_COLUMNS) + "\n", encoding="utf-8")
    planned = _planned_rules(tmp_path, {"activate": False, "ms_cxr": str(boxes)})
    assert {"inference", "maps", "report"} <= planned
    assert not planned & GROUNDING_RULES
    assert _planned_rules(tmp_path, {"activate": True, "ms_cxr": str(boxes)}) >= GROUNDING_RULES
