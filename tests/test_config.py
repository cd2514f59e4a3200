"""Every shipped config validates against the schema, alone or as an overlay of the default."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import update_config, validate

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "config" / "config.schema.json"


def _load(name: str) -> dict:
    return yaml.safe_load((REPO / "config" / name).read_text())


@pytest.mark.parametrize("overlay", [None, "config_dicom.yaml", "paper.yaml"])
def test_config_validates(overlay):
    config = _load("config.yaml")
    if overlay:
        update_config(config, _load(overlay))  # what `--configfile` does on top of configfile:
    validate(copy.deepcopy(config), str(SCHEMA))


def test_schema_rejects_unknown_keys_and_bad_values():
    config = _load("config.yaml")
    config["inference"]["layerz"] = 3
    with pytest.raises(WorkflowError):
        validate(config, str(SCHEMA))
    config = _load("config.yaml")
    config["inference"]["prompt_template"] = "no placeholder"
    with pytest.raises(WorkflowError):
        validate(config, str(SCHEMA))
