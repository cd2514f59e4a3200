"""The map-method registry is the one source of method names: the schema's enums, the CLI's
choices, the figures' labels and colours and the settings' defaults all agree with it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cxr_attention.cli import MAP_METHOD_CHOICES
from cxr_attention.figures._style import METHOD_COLOURS, METHOD_LABELS, METHODS
from cxr_attention.maps import registry
from cxr_attention.maps.cascade import compute_sample_maps
from cxr_attention.maps.methods.base import MapMethod
from cxr_attention.maps.params import ACCEPTED_KEYS, RULE_KEYS, WORKFLOW_KEYS, MapParams
from cxr_attention.maps.records import SampleKey
from cxr_attention.maps.targets import MapTarget

REPO = Path(__file__).resolve().parents[2]
MAPS_SCHEMA = json.loads((REPO / "config" / "config.schema.json").read_text())["properties"][
    "maps"
]["properties"]


def test_the_schemas_method_enums_are_the_registry():
    assert MAPS_SCHEMA["method"]["enum"] == ["cascade", "all", *registry.METHODS]
    assert MAPS_SCHEMA["cascade"]["items"]["enum"] == list(registry.METHODS)


def test_cli_choices_and_figure_style_come_from_the_registry():
    assert ["cascade", "all", *registry.METHODS] == MAP_METHOD_CHOICES
    assert METHODS == registry.METHODS
    assert list(METHOD_LABELS) == list(METHOD_COLOURS) == list(registry.METHODS)
    assert len(set(METHOD_COLOURS.values())) == len(METHODS)  # one colour per method


def test_every_registered_method_fills_the_contract():
    for name, method in registry.REGISTRY.items():
        assert isinstance(method, MapMethod)
        assert method.name == name
        assert method.label and method.description and method.colour.startswith("#")
        assert method.needs in ("capture", "vision")
        assert registry.METHOD_DESCRIPTIONS[name] in registry.method_caption()


def test_map_params_defaults_are_the_schemas():
    defaults = MapParams()
    for key, spec in MAPS_SCHEMA.items():
        if key in WORKFLOW_KEYS:
            continue
        from_schema = MapParams.from_dict({key: spec["default"]})
        assert getattr(from_schema, key) == getattr(defaults, key), key


def test_map_params_accept_the_schemas_keys_and_the_rules_only():
    assert set(ACCEPTED_KEYS) == set(MAPS_SCHEMA) - set(WORKFLOW_KEYS) | set(RULE_KEYS)
    with pytest.raises(ValueError, match="'head_calibration'"):
        MapParams.from_dict({"head_calibration": {"split": "validate"}})
    with pytest.raises(ValueError, match="'min_image_masss'"):
        MapParams.from_dict({"min_image_masss": 0.1})
    rule = MapParams.from_dict({"seed": 3, "min_free_gpu_gb": 15.0, "device": "cpu"})
    assert rule.seed == 3


@pytest.mark.parametrize(
    ("cascade", "message"),
    [
        (["attention", "saliency", "uniform"], "unknown method.*'saliency'"),
        (["attention", "gradcam"], "must end with a method that always gives a map"),
        ([], "unknown"),
    ],
)
def test_a_bad_cascade_is_refused_with_the_reason(cascade, message):
    with pytest.raises(ValueError, match=message):
        MapParams.from_dict({"cascade": cascade})


def _capture(n_generated=2, prompt_len=6):
    attention = np.full((1, 2, n_generated, 4), 0.1, dtype=np.float32)
    return {
        "attention": attention,
        "text_attention": np.zeros((1, 2, n_generated, prompt_len), dtype=np.float32),
        "layers": np.array([0]),
        "input_ids": np.arange(prompt_len),
        "generated_ids": np.arange(n_generated),
        "image_token_positions": np.arange(1, 5),
        "grid_shape": np.array([2, 2]),
    }


def test_the_cascade_follows_the_configured_order():
    """Attention is skipped (not in the order): the answer map comes from the next method."""
    answer = MapTarget("", "answer", generated_positions=(0, 1))
    capture = _capture()
    default = compute_sample_maps(capture, [answer], SampleKey("s"), MapParams())
    assert [r.method for r, _ in default] == ["attention"]
    reordered = MapParams(cascade=("gradcam", "attention", "uniform"))
    ((record, grid),) = compute_sample_maps(capture, [answer], SampleKey("s"), reordered)
    assert record.method == "attention"
    assert record.fallback_reason == "gradcam: no model available"
    only_uniform = MapParams(cascade=("uniform",))
    ((record, grid),) = compute_sample_maps(capture, [answer], SampleKey("s"), only_uniform)
    assert record.method == "uniform"
    np.testing.assert_allclose(grid, np.full((2, 2), 0.25))


def test_method_all_yields_every_registered_method():
    """With attention on the image and a prompt term to gate on, only the vision methods (no
    model here) fail: every other registered method gives its map, and uniform lists why."""
    capture = _capture()
    capture["text_attention"][..., 0] = 0.5  # attention to the term's prompt position
    term = MapTarget("fluid", "generated", generated_positions=(1,), prompt_positions=(0,))
    every = MapParams(method="all", localization_heads=((0, 1),))
    maps = compute_sample_maps(capture, [term], SampleKey("s"), every)
    methods = [record.method for record, _ in maps]
    vision = [m for m in registry.METHODS if registry.REGISTRY[m].needs == "vision"]
    # term_attention reads the term's own prompt rows, which this capture did not record.
    absent = {"term_attention": "the capture has no prompt rows"}
    absent |= {m: "no model available" for m in vision}
    assert methods == [m for m in registry.METHODS if m not in absent]
    (uniform,) = [r for r, _ in maps if r.method == "uniform"]
    failed = [m for m in registry.METHODS if m in absent]
    assert uniform.fallback_reason == "; ".join(f"{m}: {absent[m]}" for m in failed)
    for _, grid in maps:
        assert grid.dtype == np.float32 and grid.min() >= 0
        np.testing.assert_allclose(grid.sum(), 1.0, rtol=1e-6)
