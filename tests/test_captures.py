"""The capture file contract (``captures.load_capture``) on files written as the workflow does."""

import numpy as np
import pytest

from cxr_attention.captures import load_capture
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
