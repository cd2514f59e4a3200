"""Every rule lists, as inputs, the library modules its script imports (directly or not).

Snakemake reruns a job when one of its inputs changes, so a module missing from a rule's inputs
would let an edit go unnoticed and leave stale results. The rules compute those inputs with
``cxr_attention.codegraph``; the oracle here is the standard library's ``modulefinder``, which
follows the byte code's imports with the package's folder as the only search path.
"""

from __future__ import annotations

import modulefinder
from pathlib import Path

import pytest

from workflow.demo import loaded_workflow

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src"


def _modulefinder_closure(script: Path) -> set[str]:
    """Files of the cxr_attention modules that modulefinder sees the script import."""
    finder = modulefinder.ModuleFinder(path=[str(SRC)])
    finder.run_script(str(script))
    return {
        str(Path(module.__file__).relative_to(REPO))
        for name, module in finder.modules.items()
        if (name == "cxr_attention" or name.startswith("cxr_attention.")) and module.__file__
    }


# The demo's rules, and the head calibration's, which only a study using head_selected has.
HEADS_STUDY = Path(__file__).with_name("heads_study.yaml")
RULES = [rule for rule in loaded_workflow().rules if rule.script] + [
    rule
    for rule in loaded_workflow(configfiles=[HEADS_STUDY]).rules
    if rule.script and rule.name.startswith("heads")
]


@pytest.mark.parametrize("rule", RULES, ids=[rule.name for rule in RULES])
def test_rule_lists_exactly_the_modules_its_script_imports(rule):
    script = (REPO / "rules" / rule.script).resolve()
    needed = _modulefinder_closure(script)
    listed = {str(f) for f in rule.input if isinstance(f, str) and f.startswith("src/")}
    assert needed, f"modulefinder found no library module in {script}"
    assert listed == needed, (
        f"rule {rule.name}: missing {sorted(needed - listed)}, extra {sorted(listed - needed)}"
    )


def test_every_listed_module_exists():
    for rule in RULES:
        for listed in rule.input:
            if isinstance(listed, str) and listed.startswith("src/"):
                assert (REPO / listed).is_file(), f"rule {rule.name} lists missing {listed}"
