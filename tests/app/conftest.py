"""Fixtures of the app's tests: a real radiograph and the tiny model, loaded once."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="package")
def radiograph(real_cxr) -> Path:
    return sorted((real_cxr / "images").glob("*.jpeg"))[0]


@pytest.fixture(scope="package")
def loaded(tiny_model_dir):
    from cxr_attention.inference.model import load_model

    return load_model(tiny_model_dir, device="cpu")


@pytest.fixture(scope="module")
def client(loaded, tiny_model_dir):
    """The page on the tiny model, as a browser reaches it."""
    from cxr_attention.app import build_app
    from tests.app.app_helpers import explain_settings, served

    with served(build_app(loaded, str(tiny_model_dir), explain_settings())) as page_client:
        yield page_client
