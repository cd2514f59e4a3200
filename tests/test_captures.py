"""The capture file contract (``captures.load_capture``) on files written as the workflow does."""

import numpy as np
import pytest

from cxr_attention.captures import Capture, load_capture, locate_capture, write_capture
from cxr_attention.io import InputError, write_npz


def _arrays(layers=2, heads=4, generated=3, prompt_len=270):
    rng = np.random.default_rng(0)
    image_positions = np.arange(5, 261)
    after_image = np.arange(261, prompt_len)
    return {
        "attention": rng.random((layers, heads, generated, 256)).astype(np.float16),
        "text_attention": rng.random((layers, heads, generated, prompt_len)).astype(np.float16),
        "prompt_image_attention": rng.random((layers, heads, after_image.size, 256)).astype(
            np.float16
        ),
        "prompt_image_positions": after_image,
        "layers": np.arange(layers),
        "input_ids": np.arange(prompt_len),
        "generated_ids": np.arange(generated),
        "image_token_positions": image_positions,
        "image_hidden_norms": rng.random((layers, 256)).astype(np.float32),
    }


def test_a_written_capture_reads_back_equal(tmp_path):
    arrays = _arrays()
    write_npz(tmp_path / "sample.npz", **arrays)
    loaded = load_capture(tmp_path / "sample.npz")
    assert sorted(loaded) == sorted(arrays)
    for key, value in arrays.items():
        np.testing.assert_array_equal(loaded[key], value)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda a: a.pop("text_attention"), "lacks"),
        (lambda a: a.update(generated_ids=np.arange(5)), "shapes disagree"),
        (lambda a: a.update(prompt_image_positions=np.arange(3)), "prompt_image_positions"),
        (lambda a: a.update(image_hidden_norms=np.ones((3, 256))), "image_hidden_norms"),
    ],
)
def test_a_capture_that_breaks_the_contract_names_the_file(tmp_path, change, message):
    arrays = _arrays()
    change(arrays)
    write_npz(tmp_path / "sample.npz", **arrays)
    with pytest.raises(InputError, match=message) as raised:
        load_capture(tmp_path / "sample.npz")
    assert "sample.npz" in str(raised.value)
    assert raised.value.error_type == "bad_capture"


def test_a_file_that_is_no_archive_is_a_bad_capture(tmp_path):
    (tmp_path / "sample.npz").write_bytes(b"not a zip")
    with pytest.raises(InputError, match="unreadable") as raised:
        load_capture(tmp_path / "sample.npz")
    assert raised.value.error_type == "bad_capture"


def test_a_loaded_capture_is_typed_and_lacks_only_the_optional_arrays(tmp_path):
    arrays = _arrays()
    write_npz(tmp_path / "sample.npz", **arrays)
    loaded = load_capture(tmp_path / "sample.npz")
    assert isinstance(loaded, Capture)
    np.testing.assert_array_equal(loaded.attention, arrays["attention"])
    np.testing.assert_array_equal(loaded.prompt_image_positions, arrays["prompt_image_positions"])
    assert loaded.pixel_values is None and loaded.grid_shape is None and loaded.grid is None
    assert "pixel_values" not in loaded and loaded.aspect_ratio == 1.0


def test_write_capture_stores_the_arrays_in_field_order_as_write_npz_does(tmp_path):
    """The file is byte-identical to np.load-compatible write_npz of the same arrays in the
    order docs/architecture.md lists them, whatever order the caller's mapping has."""
    arrays = {**_arrays(), "grid_shape": np.array([16, 16])}
    shuffled = dict(reversed(list(arrays.items())))
    write_capture(tmp_path / "typed.npz", Capture.from_arrays(shuffled))
    write_npz(tmp_path / "plain.npz", **arrays)
    assert (tmp_path / "typed.npz").read_bytes() == (tmp_path / "plain.npz").read_bytes()
    with np.load(tmp_path / "typed.npz") as archive:
        assert archive.files == list(arrays)
    assert load_capture(tmp_path / "typed.npz").grid == (16, 16)


def test_locate_capture_falls_back_to_the_shards_folder(tmp_path):
    (tmp_path / "here.npz").write_bytes(b"")
    assert locate_capture(tmp_path / "here.npz", "elsewhere") == tmp_path / "here.npz"
    moved = locate_capture("results/old/inference/shard-000/s1.npz", tmp_path)
    assert moved == tmp_path / "s1.npz"
