"""The accessor of a preprocessed image: what it reads, and one error for every bad file."""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
import pytest

from cxr_attention.geometry import image_to_grid
from cxr_attention.io import InputError
from cxr_attention.metrics.per_map import mask_grids
from cxr_attention.preprocessed import PreprocessTable, read_grey


def _files(tmp_path):
    image = np.arange(60 * 80, dtype=np.uint32).reshape(60, 80) % 251
    body = np.zeros((60, 80), np.uint8)
    body[5:55, 10:70] = 255
    lungs = np.zeros((60, 80), np.uint8)
    lungs[10:50, 15:38], lungs[10:50, 42:65] = 1, 2
    cv2.imwrite(str(tmp_path / "d1.png"), image.astype(np.uint8))
    cv2.imwrite(str(tmp_path / "d1_body.png"), cv2.merge([body] * 3))  # a colour PNG of a mask
    cv2.imwrite(str(tmp_path / "d1_lungs.png"), lungs)
    cv2.imwrite(str(tmp_path / "d2_lungs.png"), np.full((60, 80), 7, np.uint8))
    (tmp_path / "d2.png").write_bytes(b"not a png")
    pd.DataFrame(
        [
            {"dicom_id": "d1", "image": "d1.png", "body_mask": "d1_body.png",
             "lung_mask": "d1_lungs.png"},
            {"dicom_id": "d2", "image": "d2.png", "body_mask": "", "lung_mask": "d2_lungs.png"},
        ]
    ).to_csv(tmp_path / "preprocess.csv", index=False)  # fmt: skip
    return image.astype(np.uint8), body, lungs


def test_reads_the_image_masks_and_their_grids(tmp_path):
    image, body, lungs = _files(tmp_path)
    one = PreprocessTable(tmp_path / "preprocess.csv", tmp_path)["d1"]
    np.testing.assert_array_equal(one.image(), image)
    np.testing.assert_array_equal(one.body_mask(), body)
    np.testing.assert_array_equal(one.lung_labels(), lungs)
    grids = mask_grids(one.body_mask(), one.lung_labels(), (4, 5))
    np.testing.assert_allclose(grids.body, image_to_grid(body > 0, (4, 5)))
    np.testing.assert_allclose(grids.left_lung, image_to_grid(lungs == 2, (4, 5)))


@pytest.mark.parametrize(
    ("dicom_id", "read", "error_type", "file"),
    [
        ("d2", "image", "bad_image", "d2.png"),
        ("d2", "body_mask", "missing_mask", "<body_mask of d2>"),
        ("d2", "lung_labels", "bad_mask", "d2_lungs.png"),
        ("d9", "image", "missing_image", "<image of d9>"),
    ],
)
def test_every_bad_file_is_one_input_error_naming_it(tmp_path, dicom_id, read, error_type, file):
    _files(tmp_path)
    image = PreprocessTable(tmp_path / "preprocess.csv", tmp_path)[dicom_id]
    with pytest.raises(InputError) as caught:
        getattr(image, read)()
    assert caught.value.error_type == error_type
    assert str(caught.value.path).endswith(file)


def test_read_grey_names_a_missing_file(tmp_path):
    with pytest.raises(InputError, match="not found") as caught:
        read_grey(tmp_path / "absent.png", "mask")
    assert caught.value.error_type == "missing_mask"
