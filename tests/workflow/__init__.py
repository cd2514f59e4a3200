"""Tests of the workflow as a whole: environments, staleness, determinism, crash safety, DVC."""
