"""Run the demo workflow in a copy of the repository, and read what Snakemake plans.

The workflow tests never run Snakemake in the checkout itself (its results/ belong to whoever
works there): they copy the working tree as git sees it into a temporary folder and run it there,
with that copy's ``src`` first on PYTHONPATH so that jobs import the copy's library, not the
editable install of the checkout.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "LOCAL_RUN",
    "REPO",
    "TEST_SIZE",
    "clone_run",
    "copy_repository",
    "loaded_workflow",
    "planned_jobs",
    "planned_rules",
    "shrink_demo",
    "snakemake",
    "snakemake_environment",
]

REPO = Path(__file__).resolve().parents[2]
# The demo on this machine: two cores, and the single "GPU" the inference and maps rules share.
LOCAL_RUN = ("--cores", "2", "--resources", "gpu=1")
# The demo, smaller, so that the suite can run it several times on two cores: 4 of its 41 images
# (2 per shard), its Lung Lesion and nodule questions, 2 planted films for the method ranking;
# every rule still runs.
TEST_SIZE = {
    "selection": {"sample_size": 4},
    "questions": {"findings": ["Lung Lesion"]},
    "known_answer": {"ranking": {"samples": 2}},
}
# Folders a checkout may hold that are state or output, never part of the workflow.
_NOT_COPIED = {".git", ".venv", ".snakemake", "results", "resources", "logs", "benchmarks"}


def copy_repository(destination: Path, source: Path | None = None) -> Path:
    """Copy a repository's files to destination.

    Parameters
    ----------
    destination : pathlib.Path
        The new folder.
    source : pathlib.Path, optional
        A copy made earlier by this function, copied whole. Default: the checkout, of which only
        the tracked and the untracked-but-not-ignored files are copied (or, outside git, the tree
        without state folders).

    Returns
    -------
    pathlib.Path
        ``destination``.
    """
    if source is not None:
        shutil.copytree(source, destination, symlinks=True)
        return destination
    destination.mkdir(parents=True, exist_ok=True)
    listing = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=False,
    )
    if listing.returncode == 0:
        for name in filter(None, listing.stdout.decode().split("\0")):
            source_file = REPO / name
            if source_file.is_file():  # listed but deleted in the working tree: skip
                target = destination / name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source_file, target)
    else:
        shutil.copytree(
            REPO,
            destination,
            dirs_exist_ok=True,
            ignore=lambda folder, names: (
                [n for n in names if n in _NOT_COPIED or n == "__pycache__"]
                if Path(folder) == REPO
                else [n for n in names if n == "__pycache__"]
            ),
        )
    return destination


def shrink_demo(workdir: Path, overrides: dict = TEST_SIZE) -> Path:
    """Apply ``overrides`` (section -> keys) to the demo config of a copy, in place."""
    path = workdir / "config" / "demo.yaml"
    config = yaml.safe_load(path.read_text())
    for section, values in overrides.items():
        config[section].update(values)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return workdir


def clone_run(source: Path, destination: Path) -> Path:
    """Copy a finished run's folder (results, Snakemake metadata), keeping modification times."""
    shutil.copytree(source, destination, symlinks=True)
    return destination


def snakemake_environment(workdir: Path) -> dict[str, str]:
    """The environment of a Snakemake run in ``workdir``: this venv's tools, the copy's library."""
    environment = dict(os.environ)
    environment["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), environment["PATH"]])
    environment["PYTHONPATH"] = str(workdir / "src")
    return environment


def run_tool(
    workdir: Path, tool: str, *arguments: str, timeout: float = 900, check: bool = True
) -> subprocess.CompletedProcess:
    """Run ``python -m tool *arguments`` (snakemake, dvc) in ``workdir`` with this venv's tools;
    on failure the error shows its output."""
    result = subprocess.run(
        [sys.executable, "-m", tool, *arguments],
        cwd=workdir,
        env=snakemake_environment(workdir),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{tool} {' '.join(arguments)} exited {result.returncode} in {workdir}\n"
            f"{result.stdout[-5000:]}\n{result.stderr[-10000:]}"
        )
    return result


def snakemake(
    workdir: Path, *arguments: str, timeout: float = 900, check: bool = True
) -> subprocess.CompletedProcess:
    """Run ``snakemake *arguments`` in ``workdir`` (see `run_tool`)."""
    return run_tool(workdir, "snakemake", *arguments, timeout=timeout, check=check)


_NOTHING_TO_DO = "Nothing to be done"
_JOB_ROW = re.compile(r"^(\S+)\s+(\d+)$")


def planned_jobs(workdir: Path, *arguments: str) -> Counter[str]:
    """Jobs per rule that ``snakemake --dry-run`` plans (empty when nothing is to be done).

    Reads the "Job stats" table of ``--quiet rules`` output: a header ``job count``, a dashed
    rule, one ``rule count`` row per rule and a ``total`` row, which is checked against the sum.
    """
    result = snakemake(workdir, "--dry-run", "--quiet", "rules", *arguments)
    output = result.stdout + result.stderr
    lines = [line.strip() for line in output.splitlines()]
    if any(_NOTHING_TO_DO in line for line in lines) and "Job stats:" not in lines:
        return Counter()
    try:
        start = lines.index("Job stats:")
    except ValueError as error:
        raise AssertionError(f"no job table in the dry run's output:\n{output}") from error
    header = lines[start + 1].split()
    if header != ["job", "count"] or not set(lines[start + 2]) <= {"-", " "}:
        raise AssertionError(f"unexpected job table header:\n{output}")
    jobs: Counter[str] = Counter()
    for line in lines[start + 3 :]:
        match = _JOB_ROW.match(line)
        if match is None:
            break
        rule, count = match.group(1), int(match.group(2))
        if rule == "total":
            if count != sum(jobs.values()):
                raise AssertionError(f"job table total {count} != sum of rows:\n{output}")
            return jobs
        jobs[rule] = count
    raise AssertionError(f"job table without a total row:\n{output}")


def planned_rules(tmp_path: Path, overlay: dict) -> set[str]:
    """Rules a dry run of the checkout plans with ``overlay`` over config/demo.yaml."""
    overlay_file = tmp_path / "overlay.yaml"
    overlay_file.write_text(yaml.safe_dump(overlay))
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "snakemake"),
            "-n",
            "--nolock",
            "--configfile",
            "config/demo.yaml",
            str(overlay_file),
        ],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return set(re.findall(r"^(?:local)?rule (\w+):", result.stdout, flags=re.M))


def loaded_workflow(workdir: Path = REPO, configfiles: Sequence[Path] = ()) -> Any:
    """The workflow Snakemake builds from ``workdir``'s Snakefile (rules, config); no job runs.

    Parameters
    ----------
    workdir : pathlib.Path
        A repository (the checkout by default).
    configfiles : sequence of pathlib.Path
        What ``--configfile`` would give.
    """
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
            config_settings=ConfigSettings(configfiles=list(configfiles)),
            storage_settings=StorageSettings(),
            workflow_settings=WorkflowSettings(),
            snakefile=workdir / "Snakefile",
            workdir=workdir,
        )
        return workflow_api._workflow
