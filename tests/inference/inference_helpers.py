"""Settings for the inference tests: the study's from the config schema, a capture's explicit."""

from __future__ import annotations

import json
from pathlib import Path

from cxr_attention.inference import batching

SCHEMA = Path(__file__).resolve().parents[2] / "config" / "config.schema.json"

#: Capture settings of the capture tests (every question of a call in one batch of up to 8, the
#: image shared, every prompt row kept); a test overrides what it is about.
CAPTURE = {
    "layers": 3,
    "max_new_tokens": 8,
    "batch_size": 8,
    "share": True,
    "prompt_image_rows": "all",
}


def schema_defaults(section: str) -> dict:
    """The defaults of one section of config/config.schema.json."""
    properties = json.loads(SCHEMA.read_text())["properties"]
    return {
        key: spec["default"]
        for key, spec in properties[section]["properties"].items()
        if "default" in spec
    }


def run_params(**overrides) -> dict:
    """``run_inference_shard``'s params as the workflow passes them with the default config."""
    schema = json.loads(SCHEMA.read_text())["properties"]
    questions = schema_defaults("questions")
    params = {
        **schema_defaults("inference"),
        "seed": schema["seed"]["default"],
        "min_free_gpu_gb": schema_defaults("model")["min_free_gpu_gb"],
        "uncertain": questions["uncertain"],
        "blank": questions["blank"],
    }
    return {**params, **overrides}


def capture_answers(model, processor, image, questions, **options):
    """``batching.capture_answers`` with `CAPTURE`'s settings unless ``options`` name others."""
    return batching.capture_answers(model, processor, image, questions, **{**CAPTURE, **options})


def capture_images(model, processor, requests, **options):
    """``batching.capture_images`` with `CAPTURE`'s settings unless ``options`` name others."""
    return batching.capture_images(model, processor, requests, **{**CAPTURE, **options})
