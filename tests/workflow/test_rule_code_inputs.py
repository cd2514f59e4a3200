"""Every rule lists, as inputs, the library modules its script imports (directly or not).

Snakemake reruns a job when one of its inputs changes, so a module missing from a rule's inputs
would let an edit go unnoticed and leave stale results. The oracle is the scripts' own import
graph, read with ``ast``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGE = "cxr_attention"


def _module_file(dotted: str) -> Path | None:
    parts = dotted.split(".")
    base = REPO / "src" / Path(*parts)
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return None


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    inside_src = path.is_relative_to(REPO / "src")
    package = ".".join(path.relative_to(REPO / "src").parts[:-1]) if inside_src else ""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import inside the package
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*anchor, node.module] if node.module else anchor)
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return {m for m in found if m == PACKAGE or m.startswith(PACKAGE + ".")}


def _library_closure(script: Path) -> set[str]:
    """Files of every cxr_attention module the script imports, transitively, with their parents."""
    seen: set[Path] = set()
    pending = [script]
    while pending:
        current = pending.pop()
        for dotted in _imported_modules(current):
            parts = dotted.split(".")
            for depth in range(1, len(parts) + 1):  # importing a.b.c runs a and a.b too
                found = _module_file(".".join(parts[:depth]))
                if found is not None and found not in seen:
                    seen.add(found)
                    pending.append(found)
    return {str(p.relative_to(REPO)) for p in seen}


def _workflow_rules():
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import (
        ConfigSettings,
        ResourceSettings,
        StorageSettings,
        WorkflowSettings,
    )

    with SnakemakeApi() as api:
        workflow_api = api.workflow(
            resource_settings=ResourceSettings(),
            config_settings=ConfigSettings(),
            storage_settings=StorageSettings(),
            workflow_settings=WorkflowSettings(),
            snakefile=REPO / "Snakefile",
            workdir=REPO,
        )
        return list(workflow_api._workflow.rules)


RULES = [rule for rule in _workflow_rules() if rule.script]


@pytest.mark.parametrize("rule", RULES, ids=[rule.name for rule in RULES])
def test_rule_lists_every_module_its_script_imports(rule):
    script = (REPO / "rules" / rule.script).resolve()
    needed = _library_closure(script)
    listed = {str(f) for f in rule.input if isinstance(f, str)}
    missing = sorted(needed - listed)
    assert not missing, f"rule {rule.name} runs {missing} without listing them as inputs"


def test_every_listed_module_exists():
    for rule in RULES:
        for listed in rule.input:
            if isinstance(listed, str) and listed.startswith("src/"):
                assert (REPO / listed).is_file(), f"rule {rule.name} lists missing {listed}"
