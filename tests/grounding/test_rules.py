"""The grounding stage (rules/grounding.smk) is planned only when grounding.activate is true."""

from __future__ import annotations

from pathlib import Path

import yaml
from workflow.demo import loaded_workflow, planned_rules

from cxr_attention.grounding.datasets import MS_CXR_COLUMNS

REPO = Path(__file__).resolve().parents[2]

GROUNDING_RULES = {"grounding", "grounding_page"}


def test_grounding_planned_only_when_active(tmp_path):
    boxes = tmp_path / "boxes.csv"
    boxes.write_text(",".join(MS_CXR_COLUMNS) + "\n", encoding="utf-8")
    overlay = {
        "run": "grounding-stage-test",
        "grounding": {"activate": False, "ms_cxr": str(boxes)},
    }
    planned = planned_rules(tmp_path, overlay)
    assert {"inference", "maps", "report"} <= planned
    assert not planned & GROUNDING_RULES
    overlay["grounding"]["activate"] = True
    assert planned_rules(tmp_path, overlay) >= GROUNDING_RULES


def test_the_demo_as_configured_plans_the_grounding_stage(tmp_path):
    """``make demo`` grounds its maps: config/demo.yaml activates grounding on the planted boxes."""
    planned = planned_rules(tmp_path, {"run": "grounding-demo-plan-test"})
    assert planned >= GROUNDING_RULES


def test_the_questions_job_reads_ms_cxr_s_phrases_only_when_they_are_asked(tmp_path):
    """The demo asks its planted boxes' phrases; grounding.ms_cxr_phrases: false asks none."""
    demo = loaded_workflow().globals
    assert demo["get_phrase_questions"](None) == {"phrases": demo["config"]["grounding"]["ms_cxr"]}
    assert "{phrase}" in demo["get_phrase_question"](None)
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text(yaml.safe_dump({"grounding": {"ms_cxr_phrases": False}}))
    off = loaded_workflow(configfiles=[REPO / "config/demo.yaml", overlay]).globals
    assert off["get_phrase_questions"](None) == {}
    assert off["get_phrase_question"](None) == ""
