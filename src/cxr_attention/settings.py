"""The study's settings: one frozen dataclass per config section, built from the validated config.

Defaults live only in ``config/config.schema.json``: Snakemake's ``validate`` fills them in, and
the dataclasses here take none of their own, so a key missing from a section is an error, as is a
key the section does not know. Machine knobs (`MACHINE_KNOBS`: how much GPU memory a job needs,
how many Grad-CAM rows fit at once) say nothing about the results; the rules pass them as
resources, never as params, so that changing them reruns no job. The maps section's dataclass
belongs to the maps stage (``maps.cascade.MapParams``); `build_settings` builds it the same way.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
from collections.abc import Mapping
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

__all__ = [
    "MACHINE_KNOBS",
    "SECTIONS",
    "DataSettings",
    "FiguresSettings",
    "InferenceSettings",
    "MetricsSettings",
    "ModelSettings",
    "PaperSettings",
    "PreprocessSettings",
    "QuestionsSettings",
    "SelectionSettings",
    "SettingsError",
    "build_settings",
    "config_differences",
    "load_schema",
    "run_provenance",
    "schema_defaults",
    "study_settings",
    "without_machine_knobs",
]

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "config" / "config.schema.json"

# Keys of the schema that tune the machine, not the study: passed to jobs as resources.
MACHINE_KNOBS: dict[str, tuple[str, ...]] = {
    "model": ("min_free_gpu_gb",),
    "maps": ("gradcam_max_rows",),
}

T = TypeVar("T")


class SettingsError(ValueError):
    """A configuration error: an unknown or missing key, or a model that cannot be found."""


@dataclasses.dataclass(frozen=True)
class DataSettings:
    """Where the images and tables are (``data``)."""

    layout: str
    root: str
    labels: str
    table: str | None


@dataclasses.dataclass(frozen=True)
class SelectionSettings:
    """Which images the study asks about, and in how many shards (``selection``)."""

    splits: list[str]
    views: list[str]
    sample_size: int | None
    balance: list[dict[str, Any]] | None
    from_vqa_table: bool
    shards: int


@dataclasses.dataclass(frozen=True)
class PreprocessSettings:
    """Decoding and resizing of the radiographs (``preprocess``)."""

    max_side: int


@dataclasses.dataclass(frozen=True)
class ModelSettings:
    """The model (``model``; ``min_free_gpu_gb`` is a machine knob)."""

    id: str
    build_tiny: bool


@dataclasses.dataclass(frozen=True)
class QuestionsSettings:
    """The question table and the label policy (``questions``)."""

    source: str
    bank: str
    vqa_table: str | None
    findings: list[str] | None
    strategies: list[str]
    uncertain: str
    blank: str


@dataclasses.dataclass(frozen=True)
class InferenceSettings:
    """Decoding and attention capture (``inference``)."""

    layers: int | tuple[int, ...]
    min_yes_no_mass: float
    max_new_tokens: int
    batch_size: int
    images_per_batch: int
    image_first: bool
    share: bool
    prompt_template: str
    prompt_image_rows: str


@dataclasses.dataclass(frozen=True)
class MetricsSettings:
    """Bootstrap confidence intervals (``metrics``)."""

    bootstrap_samples: int
    confidence: float


@dataclasses.dataclass(frozen=True)
class FiguresSettings:
    """Per-sample figures (``figures``)."""

    samples_per_shard: int
    report_samples: int


@dataclasses.dataclass(frozen=True)
class PaperSettings:
    """The comparison with the reference paper (``paper``)."""

    activate: bool
    reference: str
    note: str | None
    reference_compat: bool


SECTIONS: dict[str, type] = {
    "data": DataSettings,
    "selection": SelectionSettings,
    "preprocess": PreprocessSettings,
    "model": ModelSettings,
    "questions": QuestionsSettings,
    "inference": InferenceSettings,
    "metrics": MetricsSettings,
    "figures": FiguresSettings,
    "paper": PaperSettings,
}


def build_settings(cls: type[T], section: str, values: Mapping[str, Any]) -> T:
    """A section's dataclass from its values, refusing unknown and missing keys by name.

    Parameters
    ----------
    cls : type
        A frozen dataclass with no defaults (one of `SECTIONS`, or another stage's own).
    section : str
        The section's name in the config, for the error message.
    values : Mapping
        The section's keys, defaults already filled in (Snakemake's ``validate`` does that;
        elsewhere merge `schema_defaults` first). Machine knobs of the section are skipped.

    Raises
    ------
    SettingsError
        Naming the unknown or missing key and the section.
    """
    fields = {field.name for field in dataclasses.fields(cls)}
    knobs = set(MACHINE_KNOBS.get(section, ()))
    unknown = sorted(set(values) - fields - knobs)
    if unknown:
        raise SettingsError(f"unknown key {unknown[0]!r} in config section {section!r}")
    missing = sorted(fields - set(values))
    if missing:
        raise SettingsError(f"missing key {missing[0]!r} in config section {section!r}")
    return cls(**{name: values[name] for name in fields})


def study_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """Every section of `SECTIONS` built from a validated config, keyed by section name."""
    return {name: build_settings(cls, name, config.get(name, {})) for name, cls in SECTIONS.items()}


def without_machine_knobs(config: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of the config without `MACHINE_KNOBS`: what a job may record as params."""
    return {
        name: (
            {k: v for k, v in value.items() if k not in MACHINE_KNOBS[name]}
            if name in MACHINE_KNOBS and isinstance(value, Mapping)
            else value
        )
        for name, value in config.items()
    }


@cache
def load_schema(path: str | os.PathLike = SCHEMA_PATH) -> dict[str, Any]:
    """The config schema (``config/config.schema.json`` of this checkout)."""
    return json.loads(Path(path).read_text())


def schema_defaults(schema: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The schema's default of every key, nested as in the config (keys without one left out)."""
    schema = load_schema() if schema is None else schema
    defaults: dict[str, Any] = {}
    for name, spec in schema.get("properties", {}).items():
        if spec.get("type") == "object" and "properties" in spec:
            defaults[name] = schema_defaults(spec)
        elif "default" in spec:
            defaults[name] = spec["default"]
    return defaults


def config_differences(
    config: Mapping[str, Any], defaults: Mapping[str, Any] | None = None, prefix: str = ""
) -> dict[str, Any]:
    """Every config key whose value differs from the schema's default (or that has none).

    Returns
    -------
    dict
        Dotted key (``inference.max_new_tokens``) to the config's value, in the config's order.
    """
    defaults = schema_defaults() if defaults is None else defaults
    differences: dict[str, Any] = {}
    for key, value in config.items():
        dotted = f"{prefix}{key}"
        default = defaults.get(key, _NO_DEFAULT)
        if isinstance(value, Mapping) and isinstance(default, Mapping):
            differences.update(config_differences(value, default, prefix=f"{dotted}."))
        elif value != default:
            differences[dotted] = value
    return differences


_NO_DEFAULT = object()

_PACKAGES = ("cxr-attention", "torch", "transformers", "snakemake", "numpy", "pandas")


def run_provenance(repository: str | os.PathLike = ".") -> dict[str, Any]:
    """The git commit of the workflow (``-dirty`` with uncommitted changes) and package versions."""
    versions = {}
    for package in _PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {"git_commit": _git_commit(repository), "packages": versions}


def _git_commit(repository: str | os.PathLike) -> str | None:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(repository), *args],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None  # not a git checkout (an unpacked archive), or no git
    return f"{commit}-dirty" if dirty else commit
