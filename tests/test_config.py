"""The configuration: shipped configs validate, unknown keys are refused by name, the settings
dataclasses match the schema, a study config holds no demo value, and a bad model stops the
workflow before any job."""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import update_config, validate
from workflow.demo import loaded_workflow

from cxr_attention import settings
from cxr_attention.model_source import ModelSourceError, check_model_source
from cxr_attention.settings import (
    MACHINE_KNOBS,
    SECTIONS,
    InferenceSettings,
    SettingsError,
    build_settings,
    config_differences,
    schema_defaults,
)

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "config" / "config.schema.json"
SCHEMA_JSON = json.loads(SCHEMA.read_text())


def _load(name: str) -> dict:
    return yaml.safe_load((REPO / "config" / name).read_text())


@pytest.mark.parametrize(
    "files",
    [["demo.yaml"], ["demo.yaml", "config_dicom.yaml"], ["paper.yaml"], ["study.yaml"]],
    ids=["demo", "demo+dicom", "paper", "study"],
)
def test_shipped_configs_validate(files):
    config: dict = {}
    for name in files:
        update_config(config, _load(name))  # what several --configfile files do
    validate(config, str(SCHEMA))
    assert settings.study_settings(config)["model"].id == config["model"]["id"]


def _objects(schema: dict, where: str = "config"):
    if schema.get("type") == "object" or "properties" in schema:
        yield where, schema
    for name, spec in schema.get("properties", {}).items():
        yield from _objects(spec, f"{where}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from _objects(schema["items"], f"{where}[]")


def test_every_object_of_the_schema_refuses_unknown_keys():
    objects = dict(_objects(SCHEMA_JSON))
    assert len(objects) > len(SECTIONS)
    loose = [
        where for where, spec in objects.items() if spec.get("additionalProperties") is not False
    ]
    assert not loose


@pytest.mark.parametrize(
    "path",
    [("layerz",), ("inference", "layerz"), ("selection", "balance", 0, "positivez")],
    ids=["top", "section", "balance-item"],
)
def test_validate_names_the_unknown_key(path):
    config = _load("demo.yaml")
    config["selection"]["balance"] = [{"finding": "Edema", "positives": 1, "negatives": 1}]
    target = config
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = 3
    with pytest.raises(WorkflowError) as error:
        validate(config, str(SCHEMA))
    assert f"'{path[-1]}' was unexpected" in str(error.value)


def test_schema_rejects_bad_values():
    config = _load("demo.yaml")
    config["inference"]["prompt_template"] = "no placeholder"
    with pytest.raises(WorkflowError):
        validate(config, str(SCHEMA))


@pytest.mark.parametrize("section", sorted(SECTIONS))
def test_dataclass_fields_are_the_schema_keys_without_defaults_of_their_own(section):
    fields = dataclasses.fields(SECTIONS[section])
    schema_keys = set(SCHEMA_JSON["properties"][section]["properties"])
    assert {f.name for f in fields} == schema_keys - set(MACHINE_KNOBS.get(section, ()))
    assert all(f.default is dataclasses.MISSING for f in fields)
    assert all(f.default_factory is dataclasses.MISSING for f in fields)
    assert SECTIONS[section].__dataclass_params__.frozen


def test_build_settings_refuses_unknown_and_missing_keys_by_name():
    # The demo's inference settings over the schema's defaults, as Snakemake's validate fills them.
    values = {**schema_defaults()["inference"], **_load("demo.yaml")["inference"]}
    built = build_settings(InferenceSettings, "inference", values)
    assert built.max_new_tokens == values["max_new_tokens"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        built.layers = 1
    with pytest.raises(SettingsError, match="unknown key 'layerz' in config section 'inference'"):
        build_settings(InferenceSettings, "inference", {**values, "layerz": 3})
    del values["share"]
    with pytest.raises(SettingsError, match="missing key 'share' in config section 'inference'"):
        build_settings(InferenceSettings, "inference", values)


def test_schema_defaults_fill_a_validated_config():
    """The defaults that `schema_defaults` reads are the ones Snakemake's validate sets."""
    config = {"run": "x", "data": {"root": "d"}, "selection": {}, "model": {"id": "m"}}
    config["questions"] = {}
    validate(config, str(SCHEMA))
    expected = schema_defaults()
    assert config["inference"] == expected["inference"]
    assert config["paper"] == expected["paper"]
    assert config["selection"] == expected["selection"]


def test_default_selection_is_the_official_test_split_and_the_demo_keeps_its_own():
    """MedGemma was trained on MIMIC-CXR data: a study unsure of its splits gets the unseen one."""
    config = {"run": "x", "data": {"root": "d"}, "selection": {}, "model": {"id": "m"}}
    config["questions"] = {}
    validate(config, str(SCHEMA))
    assert config["selection"]["splits"] == ["test"]
    assert "splits" not in (_load("study.yaml").get("selection") or {})  # takes the default
    assert _load("demo.yaml")["selection"]["splits"] == ["train", "validate", "test"]


def test_config_differences_lists_every_key_off_its_default():
    config = copy.deepcopy(schema_defaults())
    config["run"] = "demo"
    config["inference"]["max_new_tokens"] = 12
    config["paper"]["note"] = "Demo run"
    config["model"] = {"id": "resources/tiny", "build_tiny": True, "min_free_gpu_gb": 15}
    assert config_differences(config) == {
        "run": "demo",
        "inference.max_new_tokens": 12,
        "paper.note": "Demo run",
        "model.id": "resources/tiny",
        "model.build_tiny": True,
    }


def test_run_provenance_names_the_commit_and_versions():
    provenance = settings.run_provenance(REPO)
    head = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    assert provenance["git_commit"].removesuffix("-dirty") == head
    import snakemake

    assert provenance["packages"]["snakemake"] == snakemake.__version__


# --- the model check -------------------------------------------------------------------------


@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache, with the hub off limits."""
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


def test_model_check_accepts_a_folder_with_config_and_a_cached_hub_id(tmp_path, offline_cache):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    check_model_source(str(folder))
    # The cache layout of huggingface_hub: refs/main names a snapshot folder holding the files.
    repo = offline_cache / "models--owner--some-model"
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    (repo / "snapshots" / "abc123" / "config.json").write_text("{}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    check_model_source("owner/some-model")


@pytest.mark.parametrize(
    ("model_id", "reason"),
    [
        ("{folder}", "the folder holds no config.json"),
        ("./nowhere", "not a hub id (owner/name)"),
        ("a/b/c", "not a hub id (owner/name)"),
        ("owner/not-cached", "not in the Hugging Face cache"),
    ],
)
def test_model_check_refuses_in_one_line(tmp_path, offline_cache, model_id, reason):
    model_id = model_id.format(folder=tmp_path)
    with pytest.raises(ModelSourceError) as error:
        check_model_source(model_id)
    message = str(error.value)
    assert message.startswith(f"model {model_id}") and reason in message
    assert "\n" not in message


def _snakemake(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(Path(sys.executable).parent / "snakemake"), "-n", "--nolock", *args],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO / "src"), **(env or {})},
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_bad_model_stops_the_workflow_before_any_job(tmp_path):
    study = _load("study.yaml")
    study["model"]["id"] = str(tmp_path / "no-such-model")
    config_file = tmp_path / "study.yaml"
    config_file.write_text(yaml.safe_dump(study))
    result = _snakemake("--configfile", str(config_file), env={"HF_HUB_OFFLINE": "1"})
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if "Configuration error" in line]
    assert errors == [
        f"Configuration error: model {tmp_path / 'no-such-model'}: no such folder, and not a hub "
        "id (owner/name)"
    ]
    assert "Job stats" not in result.stdout + result.stderr
    assert "rule " not in result.stdout + result.stderr


def test_study_config_gets_its_own_keys_and_schema_defaults_only(tmp_path):
    """A --configfile replaces the demo: no demo value (paper.note, max_new_tokens) leaks in."""
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    study = _load("study.yaml")
    study["model"]["id"] = str(model)
    study["data"]["root"] = "data/demo/mimic-cxr-jpg"  # inputs that exist, set by the study
    study["paper"]["activate"] = True
    config_file = tmp_path / "study.yaml"
    config_file.write_text(yaml.safe_dump(study))
    result = _snakemake("--configfile", str(config_file))
    assert result.returncode == 0, result.stderr[-3000:]
    demo = _load("demo.yaml")
    # The dry run plans the study's run, not the demo's, with the schema's defaults elsewhere.
    assert f"results/{study['run']}/report.html" in result.stdout
    assert f"results/{demo['run']}/" not in result.stdout
    assert "\nrule build_tiny_model:" not in result.stdout  # the study's model is a folder
    assert "\nrule inference:" in result.stdout
    effective = _effective_config(config_file)
    assert effective["paper"]["note"] is None
    differences = config_differences(effective)
    for dotted in differences:
        section, _, key = dotted.partition(".")
        assert (study[section][key] if key else study[section]) == differences[dotted], dotted


def _effective_config(config_file: Path) -> dict:
    """The config the workflow runs with, read back through Snakemake's own API."""
    return copy.deepcopy(dict(loaded_workflow(configfiles=[config_file]).config))
