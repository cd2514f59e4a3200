"""The conda environment files pin what pyproject.toml pins, and install this checkout.

Conda channels cannot be reached here, so the environments are never built in the tests. What can
be checked without them is checked against independent oracles: the pins against pyproject.toml
and requirements.lock, the rules' ``conda:`` directives against the files in envs/, and the
relative paths of the pip section against pip itself, run from the folder where conda runs it.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
ENV_FILES = sorted((REPO / "envs").glob("*.yaml"))

# Snakemake copies an environment file to <conda prefix>/<hash>.yaml and runs
# `conda env create --file <that copy>`; conda writes the pip section to a requirements file in the
# folder of that copy and runs pip there. The default conda prefix is .snakemake/conda in the
# workflow's working directory (snakemake/persistence/__init__.py, deployment/conda.py).
SNAKEMAKE_CONDA_PREFIX = Path(".snakemake", "conda")
PROJECT_LINE = "-e ../.."
LOCK_LINE = "-c ../../requirements.lock"


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def _pyproject_pins() -> dict[str, str]:
    """Exact pins of pyproject.toml (runtime and dev), keyed by canonical name."""
    project = _pyproject()["project"]
    specs = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        specs.extend(extra)
    return {canonicalize_name(r.name): str(r.specifier) for r in map(Requirement, specs)}


def _lock_pins() -> dict[str, str]:
    pins = {}
    for line in (REPO / "requirements.lock").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            requirement = Requirement(line)
            pins[canonicalize_name(requirement.name)] = str(requirement.specifier)
    return pins


def _load(env_file: Path) -> tuple[dict, list[str], list[str]]:
    """The environment, its conda dependencies and its pip lines."""
    env = yaml.safe_load(env_file.read_text())
    conda_specs = [d for d in env["dependencies"] if isinstance(d, str)]
    pip_sections = [d["pip"] for d in env["dependencies"] if isinstance(d, dict)]
    assert len(pip_sections) == 1, f"{env_file.name}: expected one pip section"
    return env, conda_specs, pip_sections[0]


def _pip_requirements(pip_lines: list[str]) -> list[Requirement]:
    return [Requirement(line) for line in pip_lines if not line.startswith("-")]


def test_rules_use_existing_env_files():
    referenced = set()
    for smk in (REPO / "rules").glob("*.smk"):
        for match in re.finditer(r"conda:\s*\n\s*\"([^\"]+)\"", smk.read_text()):
            referenced.add((smk.parent / match.group(1)).resolve())
    assert referenced, "no rule has a conda: directive"
    assert referenced <= {path.resolve() for path in ENV_FILES}, (
        f"rules reference missing env files: {referenced - set(ENV_FILES)}"
    )
    assert {path.resolve() for path in ENV_FILES} <= referenced, "an env file no rule uses"


@pytest.mark.parametrize("env_file", ENV_FILES, ids=lambda p: p.name)
def test_channels_are_conda_forge_only(env_file):
    env, _, _ = _load(env_file)
    assert env["channels"] == ["conda-forge", "nodefaults"]


@pytest.mark.parametrize("env_file", ENV_FILES, ids=lambda p: p.name)
def test_python_matches_requires_python(env_file):
    _, conda_specs, _ = _load(env_file)
    pythons = [spec for spec in conda_specs if re.match(r"python\b", spec)]
    assert len(pythons) == 1, f"{env_file.name}: pin python once"
    version = pythons[0].split("=")[-1].strip()
    assert re.fullmatch(r"3\.\d+", version), f"{env_file.name}: pin a python series, got {version}"
    requires_python = SpecifierSet(_pyproject()["project"]["requires-python"])
    assert requires_python.contains(f"{version}.0")
    assert "pip" in conda_specs


@pytest.mark.parametrize("env_file", ENV_FILES, ids=lambda p: p.name)
def test_pip_pins_equal_pyproject_pins(env_file):
    _, _, pip_lines = _load(env_file)
    pyproject = _pyproject_pins()
    lock = _lock_pins()
    requirements = _pip_requirements(pip_lines)
    assert requirements, f"{env_file.name} lists no packages"
    for requirement in requirements:
        name = canonicalize_name(requirement.name)
        assert name in pyproject, f"{env_file.name}: {name} is not a dependency in pyproject.toml"
        assert str(requirement.specifier) == pyproject[name], (
            f"{env_file.name}: {name}{requirement.specifier} but pyproject.toml has "
            f"{pyproject[name]}"
        )
        assert str(requirement.specifier).startswith("=="), f"{name}: pin exactly"
        if name in lock:  # the lock agrees too (torch is left to the platform's wheel)
            assert lock[name] == pyproject[name]


@pytest.mark.parametrize("env_file", ENV_FILES, ids=lambda p: p.name)
def test_env_installs_the_project_with_the_lock(env_file):
    _, _, pip_lines = _load(env_file)
    assert pip_lines[-2:] == [LOCK_LINE, PROJECT_LINE]


def test_imported_packages_are_in_some_env():
    """Every third-party package the library imports is pinned in at least one env file."""
    import_names = {"cv2": "opencv-python-headless", "skimage": "scikit-image", "yaml": "pyyaml"}
    listed = {
        canonicalize_name(r.name) for env in ENV_FILES for r in _pip_requirements(_load(env)[2])
    }
    pyproject = _pyproject_pins()
    stdlib = set(sys.stdlib_module_names) | {"cxr_attention", "__future__"}
    missing = set()
    for module in (REPO / "src").rglob("*.py"):
        for match in re.finditer(r"^\s*(?:from|import) ([A-Za-z_]\w*)", module.read_text(), re.M):
            top = match.group(1)
            if top in stdlib:
                continue
            name = canonicalize_name(import_names.get(top, top))
            if name in pyproject and name not in listed:
                missing.add(name)
    assert not missing, f"imported by src/ but in no env file: {sorted(missing)}"


def test_pip_lines_resolve_to_this_project_from_snakemakes_copy(tmp_path):
    """Run pip as conda would, from Snakemake's copy location: the lines name this project.

    pip resolves the editable path and the constraints file; ``--dry-run --no-deps`` builds only
    the project's metadata (no network, nothing installed).
    """
    root = tmp_path / "checkout"
    root.mkdir()
    for name in ("pyproject.toml", "README.md", "requirements.lock"):
        shutil.copy2(REPO / name, root / name)
    shutil.copytree(REPO / "src", root / "src", ignore=shutil.ignore_patterns("*.egg-info"))
    pip_workdir = root / SNAKEMAKE_CONDA_PREFIX
    pip_workdir.mkdir(parents=True)
    requirements = pip_workdir / "condaenv.test.requirements.txt"
    requirements.write_text(f"{LOCK_LINE}\n{PROJECT_LINE}\n")
    report = pip_workdir / "report.json"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--dry-run",
            "--no-deps",
            "--no-index",
            "--no-build-isolation",
            "--quiet",
            "--report",
            str(report),
            "-r",
            requirements.name,
        ],
        cwd=pip_workdir,
        check=True,
        capture_output=True,
        text=True,
    )
    installs = json.loads(report.read_text())["install"]
    assert [item["metadata"]["name"] for item in installs] == ["cxr-attention"]
    assert installs[0]["is_direct"]
    assert Path(installs[0]["download_info"]["url"].removeprefix("file://")) == root
