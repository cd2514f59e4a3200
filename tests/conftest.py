"""Shared fixtures: the real test data beside the repository, and the tiny model folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def _shared_data_dir() -> Path | None:
    """``../shared/data`` beside the repository (CI always has it; a user's clone may not)."""
    override = os.environ.get("CXR_ATTENTION_SHARED_DATA")
    candidates = [Path(override)] if override else []
    candidates.append(REPO_ROOT.parent / "shared" / "data")
    return next((c for c in candidates if (c / "real_cxr").is_dir()), None)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path to ``shared/data``; skips the test with the reason when it is absent."""
    found = _shared_data_dir()
    if found is None:
        pytest.skip("needs ../shared/data/real_cxr beside the repository (absent in this clone)")
    return found


@pytest.fixture(scope="session")
def real_cxr(shared_data: Path) -> Path:
    return shared_data / "real_cxr"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny random MedGemma look-alike, built once per test session (a few seconds, offline)."""
    from cxr_attention.models.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny_model"), seed=0)


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's headless Chromium (Playwright's own browser download is not reachable here)."""
    from cxr_attention.report.browser import find_chromium

    found = find_chromium()
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but no Chromium on PATH: install Debian's `chromium` package")
        pytest.skip(
            "needs headless Chromium (Debian: apt-get install chromium); set CI=true to fail"
        )
    return found
