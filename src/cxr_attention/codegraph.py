"""The library modules a workflow script runs, read from its import graph (the rules' code inputs).

Snakemake reruns a job when one of its inputs changes, so every rule lists, as inputs, the files
of every ``cxr_attention`` module its script imports, directly or not. Reading the imports with
``ast`` (nothing is imported) keeps those lists from drifting as modules move or gain imports.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

__all__ = ["library_closure"]

PACKAGE = "cxr_attention"


def library_closure(script: str | os.PathLike, src: str | os.PathLike = "src") -> list[str]:
    """Files of every ``cxr_attention`` module that ``script`` imports, transitively.

    Importing ``a.b.c`` runs ``a/__init__.py`` and ``a/b/__init__.py`` too, so parents are listed.

    Parameters
    ----------
    script : str or os.PathLike
        A Python file (a workflow script or a library module).
    src : str or os.PathLike
        The folder holding the ``cxr_attention`` package. Returned paths start with it as given,
        so a relative ``src`` gives paths relative to the same folder (the workflow's working
        directory).

    Returns
    -------
    list of str
        Sorted file paths, ``src/cxr_attention/...``.
    """
    src = Path(src)
    seen: set[Path] = set()
    pending = [Path(script)]
    while pending:
        current = pending.pop()
        for dotted in _imported_modules(current, src):
            parts = dotted.split(".")
            for depth in range(1, len(parts) + 1):
                found = _module_file(src, parts[:depth])
                if found is not None and found not in seen:
                    seen.add(found)
                    pending.append(found)
    return sorted(path.as_posix() for path in seen)


def _module_file(src: Path, parts: list[str]) -> Path | None:
    base = src.joinpath(*parts)
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return None


def _imported_modules(path: Path, src: Path) -> set[str]:
    """Dotted names of the package's modules (or of names inside them) that ``path`` imports."""
    tree = ast.parse(path.read_text(), filename=str(path))
    try:
        package = list(path.relative_to(src).parts[:-1])
    except ValueError:  # a script outside the package: no relative imports
        package = []
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package[: len(package) - node.level + 1]
                module = ".".join([*anchor, node.module] if node.module else anchor)
            else:
                module = node.module or ""
            found.add(module)
            # `from a import b` may import the submodule a.b; _module_file skips plain names.
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return {name for name in found if name == PACKAGE or name.startswith(PACKAGE + ".")}
