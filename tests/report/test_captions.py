"""The report captions in report/: each renders as Snakemake renders it, and every one the rules
name exists."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import pytest
from docutils.core import publish_parts
from jinja2 import Environment

REPO_ROOT = Path(__file__).resolve().parents[2]
CAPTIONS = REPO_ROOT / "report"

# report/<folder caption> -> {file-name prefix: report/<kind caption>}
FOLDER_CAPTIONS = {
    "sample_figures.rst": {
        "overlay": "overlay.rst",
        "panels": "panels.rst",
        "sensitivity": "sensitivity.rst",
    },
    "summary_figures.rst": {
        "metrics_by": "metric_distributions.rst",
        "accuracy": "accuracy.rst",
        "js_histogram": "js_histogram.rst",
        "method_usage": "method_usage.rst",
    },
}


def _render(path: Path, wildcards: dict[str, str], config: dict) -> str:
    """As snakemake.report.FileRecord.render does: Jinja (trim_blocks, lstrip_blocks), then
    docutils to HTML. ``halt_level`` 2 turns any reStructuredText warning into an error."""
    environment = Environment(trim_blocks=True, lstrip_blocks=True)
    snakemake = SimpleNamespace(wildcards=SimpleNamespace(**wildcards), config=config)
    text = environment.from_string(path.read_text()).render(snakemake=snakemake)
    return publish_parts(text, writer="html", settings_overrides={"halt_level": 2})["body"]


@pytest.mark.parametrize("caption", sorted(p.name for p in CAPTIONS.glob("*.rst")))
def test_every_caption_renders_without_warnings(caption):
    config = {"run": "demo", "model": {"id": "resources/tiny-medgemma"}}
    body = _render(CAPTIONS / caption, {"name": "overlay__x"}, config)
    assert len(re.sub(r"<[^>]+>", "", body).strip()) > 40


def test_workflow_description_names_the_run_and_model():
    config = {"run": "demo-run", "model": {"id": "google/medgemma-4b-it"}}
    body = _render(CAPTIONS / "workflow.rst", {}, config)
    assert "demo-run" in body and "google/medgemma-4b-it" in body


@pytest.mark.parametrize("folder_caption", sorted(FOLDER_CAPTIONS))
def test_folder_captions_show_the_paragraph_of_each_kind(folder_caption):
    """A folder of figures gets one caption file; it must say what the per-kind caption says."""
    for prefix, kind_caption in FOLDER_CAPTIONS[folder_caption].items():
        expected = _render(CAPTIONS / kind_caption, {}, {})
        shown = _render(CAPTIONS / folder_caption, {"name": f"{prefix}_example"}, {})
        assert shown == expected, f"{folder_caption} for {prefix!r} differs from {kind_caption}"
    fallback = _render(CAPTIONS / folder_caption, {"name": "something_else"}, {})
    assert fallback.strip()


def test_every_caption_named_by_the_workflow_exists():
    named = set()
    for rules in [REPO_ROOT / "Snakefile", *sorted((REPO_ROOT / "rules").glob("*.smk"))]:
        if rules.exists():
            named |= set(re.findall(r'caption="\.\./report/([^"]+)"', rules.read_text()))
            named |= set(re.findall(r'report: "report/([^"]+)"', rules.read_text()))
    missing = sorted(name for name in named if not (CAPTIONS / name).is_file())
    assert not missing


def test_captions_state_the_catalogue_targets():
    """A caption cannot import the catalogue: each one that names a target must state its value."""
    from cxr_attention.metrics.catalogue import BORDER_FRACTION, ENTROPY, INSIDE_BODY, LEFT_RIGHT

    expected = {
        "inside-body share >=": [f"inside-body share >= {INSIDE_BODY.target:g}"],
        "border share <=": [f"border share <= {BORDER_FRACTION.target:g}"],
        "nats focused": [
            f"entropy < {ENTROPY.band[0]:.1f} nats focused",
            f"{ENTROPY.band[1]:g} diffuse",
        ],
        "balanced within": [f"balanced within {LEFT_RIGHT.band[0]:g}-{LEFT_RIGHT.band[1]:g}"],
    }
    checked = 0
    for caption in sorted(CAPTIONS.glob("*.rst")):
        text = " ".join(caption.read_text().split())
        for cue, statements in expected.items():
            if cue in text:
                for statement in statements:
                    assert statement in text, f"{caption.name}: expected {statement!r}"
                checked += 1
    assert checked >= 8  # run summary, workflow, both metric-distribution captions
