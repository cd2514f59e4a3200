"""One finished demo run, shared by every workflow test that needs one.

Running the demo takes minutes on two cores, so the session runs it once, in a copy of the
repository; tests that change files work on their own copy of that finished run
(`workflow.demo.clone_run`), never on the shared one.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from workflow.demo import LOCAL_RUN, copy_repository, shrink_demo, snakemake


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the repository in which the whole (smaller) demo has run from clean."""
    workdir = shrink_demo(copy_repository(tmp_path_factory.mktemp("demo_run") / "repo"))
    snakemake(workdir, *LOCAL_RUN)
    return workdir
