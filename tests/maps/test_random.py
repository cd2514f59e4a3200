"""Method ``random``: the seeded null map. Deterministic from the run's seed and the map id (the
same in a fresh interpreter with another hash seed), different between map ids, a valid map."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np

from cxr_attention.maps.cascade import compute_sample_maps
from cxr_attention.maps.params import MapParams
from cxr_attention.maps.records import SampleKey
from cxr_attention.maps.targets import MapTarget

TARGETS = [
    MapTarget("", "answer", generated_positions=(0, 1)),
    MapTarget("effusion", "generated", generated_positions=(1,)),
]


def _capture(grid=(4, 3)):
    n_image = grid[0] * grid[1]
    return {
        "attention": np.zeros((1, 1, 2, n_image), dtype=np.float32),
        "text_attention": np.zeros((1, 1, 2, 20), dtype=np.float32),
        "layers": np.array([0]),
        "input_ids": np.arange(20),
        "generated_ids": np.arange(2),
        "image_token_positions": np.arange(2, 2 + n_image),
        "grid_shape": np.array(grid),
    }


def _random_maps(seed=0, sample_id="s1", capture=None):
    params = MapParams(method="random", seed=seed)
    return compute_sample_maps(capture or _capture(), TARGETS, SampleKey(sample_id), params)


def test_random_maps_are_valid_maps_over_the_capture_grid():
    maps = _random_maps()
    assert [record.method for record, _ in maps] == ["random", "random"]
    for record, grid in maps:
        assert record.fallback_reason == ""
        assert grid.shape == (4, 3) and grid.dtype == np.float32
        assert np.isfinite(grid).all() and grid.min() >= 0
        np.testing.assert_allclose(grid.sum(), 1.0, rtol=1e-6)
        assert grid.std() > 0  # a draw, not the uniform map


def test_random_maps_are_deterministic_and_differ_between_map_ids_and_seeds():
    first, again = _random_maps(), _random_maps()
    for (record, grid), (record_again, grid_again) in zip(first, again, strict=True):
        assert record.map_id == record_again.map_id
        np.testing.assert_array_equal(grid, grid_again)
    (_, answer), (_, term) = first
    assert not np.allclose(answer, term)  # two targets of one sample
    (_, other_sample), _ = _random_maps(sample_id="s2")
    assert not np.allclose(answer, other_sample)
    (_, other_seed), _ = _random_maps(seed=1)
    assert not np.allclose(answer, other_seed)


def test_random_maps_do_not_depend_on_pythons_hash_seed():
    """hashlib, not hash(): another interpreter with another PYTHONHASHSEED draws the same map."""
    script = (
        f"import json, sys; sys.path.insert(0, {os.path.dirname(__file__)!r});"
        "from test_random import _random_maps;"
        "print(json.dumps(_random_maps()[0][1].tolist()))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )
    np.testing.assert_array_equal(
        np.array(json.loads(out.stdout), dtype=np.float32), _random_maps()[0][1]
    )
