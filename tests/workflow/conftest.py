"""One snapshot of the repository and one finished demo run, shared by the workflow tests.

Running the demo takes minutes on two cores, so the session runs it once, in a copy of the
repository; tests that change files work on their own copy of that finished run
(`workflow.demo.clone_run`), never on the shared one. Every copy of the session comes from one
snapshot of the checkout, so that runs compared with each other ran the same code even while the
checkout changes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from workflow.demo import LOCAL_RUN, copy_repository, shrink_demo, snakemake


@pytest.fixture(scope="session")
def repository_snapshot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The checkout's files, copied once, with the smaller test demo (`workflow.demo.TEST_SIZE`)."""
    return shrink_demo(copy_repository(tmp_path_factory.mktemp("snapshot") / "repo"))


@pytest.fixture(scope="session")
def fresh_copy(
    repository_snapshot: Path, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[str], Path]:
    """``fresh_copy(name)``: a new copy of the snapshot, nothing run in it yet."""

    def make(name: str) -> Path:
        return copy_repository(tmp_path_factory.mktemp(name) / "repo", source=repository_snapshot)

    return make


@pytest.fixture(scope="session")
def demo_run(fresh_copy: Callable[[str], Path]) -> Path:
    """A copy of the repository in which the whole (smaller) demo has run from clean."""
    workdir = fresh_copy("demo_run")
    snakemake(workdir, *LOCAL_RUN)
    return workdir
