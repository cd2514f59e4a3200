"""The per-image pipeline, the shard loop and the ``preprocess`` command's library function."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pydicom
import pytest
from test_decode import DICOM_KINDS, make_bad_files

from cxr_attention.io import FAILURE_COLUMNS
from cxr_attention.preprocess.pipeline import (
    SHARD_COLUMNS,
    find_inputs,
    preprocess_image,
    preprocess_paths,
    preprocess_shard,
    unique_stems,
)


def _lateral_dicom(real_cxr: Path, tmp_path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(real_cxr / "dicom" / DICOM_KINDS["uncompressed_monochrome2"])
    ds.ViewPosition = "LL"
    path = tmp_path / "lateral.dcm"
    ds.save_as(path)
    return path


def _check_outputs(out_dir: Path, stem: str) -> dict:
    image = cv2.imread(str(out_dir / f"{stem}.png"), cv2.IMREAD_UNCHANGED)
    body = cv2.imread(str(out_dir / f"{stem}_body.png"), cv2.IMREAD_UNCHANGED)
    lungs = cv2.imread(str(out_dir / f"{stem}_lungs.png"), cv2.IMREAD_UNCHANGED)
    meta = json.loads((out_dir / f"{stem}.json").read_text())
    assert image.dtype == np.uint8 and image.ndim == 2
    assert body.shape == image.shape == lungs.shape
    assert set(np.unique(body)) <= {0, 255} and set(np.unique(lungs)) <= {0, 1, 2}
    assert (meta["width"], meta["height"]) == (image.shape[1], image.shape[0])
    return meta


def test_downscaled_output_has_masks_at_png_size_and_scale(real_cxr: Path, tmp_path: Path) -> None:
    source = real_cxr / "images" / "nih_00000001_000.png"  # 1024 x 1024
    row = preprocess_image(source, tmp_path, "nih", max_side=256)
    meta = _check_outputs(tmp_path, "nih")
    assert (row["width"], row["height"]) == (256, 256)
    assert (row["source_width"], row["source_height"]) == (1024, 1024)
    assert row["scale"] == meta["scale"] == 0.25
    assert meta["source_path"] == str(source) and meta["photometric"] == "MONOCHROME2"
    assert set(meta["masks"]) >= {"body_fraction", "lung_fraction"}
    assert row["image"] == str(tmp_path / "nih.png")


def test_rerun_writes_identical_files(real_cxr: Path, tmp_path: Path) -> None:
    source = real_cxr / "dicom" / DICOM_KINDS["jpeg2000_monochrome1_15bit"]
    preprocess_image(source, tmp_path / "a", "x", max_side=512)
    preprocess_image(source, tmp_path / "b", "x", max_side=512)
    for name in ("x.png", "x.json", "x_body.png", "x_lungs.png"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_paths_all_good_exit_zero_and_header_only_failures(real_cxr: Path, tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    (inputs / "sub").mkdir(parents=True)
    shutil.copy(real_cxr / "images" / "mhh_2168a917.png", inputs / "one.png")
    shutil.copy(real_cxr / "dicom" / DICOM_KINDS["jpeg_baseline"], inputs / "sub" / "two.dcm")
    out = tmp_path / "out"
    table, failures = preprocess_paths([inputs], out, max_side=512)
    assert len(table) == 2 and failures == []
    for stem in ("one", "two"):
        _check_outputs(out, stem)
    failures = pd.read_csv(out / "failures.csv")
    assert list(failures.columns) == FAILURE_COLUMNS and failures.empty


def test_each_bad_file_gives_one_failure_row_and_the_rest_finish(
    real_cxr: Path, tmp_path: Path
) -> None:
    bad = make_bad_files(real_cxr, tmp_path / "bad")
    lateral = _lateral_dicom(real_cxr, tmp_path / "bad")
    good = [
        real_cxr / "images" / "nih_00000013_021.png",
        real_cxr / "dicom" / DICOM_KINDS["jpeg2000_monochrome1_15bit"],
    ]
    paths = [*good, *(path for path, _ in bad.values()), lateral]
    out = tmp_path / "out"
    assert len(preprocess_paths(paths, out, max_side=512)[1]) > 0
    failures = pd.read_csv(out / "failures.csv", dtype=str, keep_default_na=False)
    assert list(failures.columns) == FAILURE_COLUMNS
    expected = {str(path.resolve()): error_type for path, error_type in bad.values()}
    expected[str(lateral.resolve())] = "wrong_view"
    assert dict(zip(failures["path"], failures["error_type"], strict=True)) == expected
    assert (failures["stage"] == "preprocess").all() and (failures["message"] != "").all()
    for path in good:
        _check_outputs(out, path.stem)


def test_an_unforeseen_error_of_one_file_is_a_failure_row(
    real_cxr: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import cxr_attention.preprocess.masks as masks

    good = real_cxr / "images" / "nih_00000013_021.png"
    odd = real_cxr / "images" / "mhh_2168a917.png"
    real_body_mask = masks.body_mask
    calls = []

    def body_mask_failing_on_the_second_image(image: np.ndarray) -> np.ndarray:
        calls.append(image.shape)
        if len(calls) == 2:
            raise RuntimeError("a defect nobody foresaw")
        return real_body_mask(image)

    monkeypatch.setattr(masks, "body_mask", body_mask_failing_on_the_second_image)
    out = tmp_path / "out"
    assert len(preprocess_paths([good, odd], out, max_side=256)[1]) == 1
    failures = pd.read_csv(out / "failures.csv", dtype=str, keep_default_na=False)
    assert failures[["dicom_id", "path", "error_type"]].values.tolist() == [
        [odd.stem, str(odd.resolve()), "RuntimeError"]
    ]
    assert failures.loc[0, "message"] == "a defect nobody foresaw"
    _check_outputs(out, good.stem)
    assert not (out / f"{odd.stem}.png").exists()


def test_no_inputs_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("nothing here")
    with pytest.raises(ValueError, match="no DICOM, JPEG or PNG inputs"):
        preprocess_paths([tmp_path], tmp_path / "out")


def test_duplicate_stems_are_made_unique_deterministically(tmp_path: Path) -> None:
    paths = [tmp_path / "a" / "x.png", tmp_path / "b" / "x.png", tmp_path / "x-2.dcm"]
    assert unique_stems(paths) == ["x", "x-3", "x-2"]
    assert len(set(unique_stems(paths))) == 3


def test_find_inputs_recurses_and_keeps_named_files(tmp_path: Path) -> None:
    (tmp_path / "d" / "e").mkdir(parents=True)
    for name in ("d/a.PNG", "d/e/b.dcm", "d/c.txt", "named.bin", "d/.hidden.png"):
        (tmp_path / name).write_bytes(b"x")
    dicom = bytes(128) + b"DICM" + bytes(64)
    for name in ("d/IM0001", "d/e/1.2.840.10008.5", "d/DICOMDIR"):
        (tmp_path / name).write_bytes(dicom)
    found = find_inputs([tmp_path / "d", tmp_path / "named.bin"])
    assert [p.name for p in found] == ["IM0001", "a.PNG", "1.2.840.10008.5", "b.dcm", "named.bin"]


def test_a_folder_of_dicoms_without_suffix_is_preprocessed(real_cxr: Path, tmp_path: Path) -> None:
    folder = tmp_path / "export"
    folder.mkdir()
    source = real_cxr / "dicom" / DICOM_KINDS["uncompressed_monochrome2"]
    (folder / "IM0001").write_bytes(source.read_bytes())
    out = tmp_path / "out"
    assert preprocess_paths([folder], out, max_side=512)[1] == []
    _check_outputs(out, "IM0001")


def test_shard_table_and_failures(real_cxr: Path, tmp_path: Path) -> None:
    lateral = _lateral_dicom(real_cxr, tmp_path)
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    manifest = pd.DataFrame(
        {
            "dicom_id": ["d1", "d2", "d3", "d4"],
            "image_path": [
                str(real_cxr / "images" / "kermany_person1_virus_6.jpeg"),
                str(lateral),
                str(empty),
                str(real_cxr / "images" / "mhh_fff13f3a.png"),
            ],
            "view_position": ["AP", "PA", "PA", "LATERAL"],
            "subject_id": ["1", "2", "3", "4"],
        }
    )
    out = tmp_path / "shard-0"
    table, failures = preprocess_shard(manifest, out, max_side=512)
    assert list(table.columns) == SHARD_COLUMNS
    assert table["dicom_id"].tolist() == ["d1"]
    assert table.loc[0, "image"] == str(out / "d1.png")
    assert table.loc[0, "source_width"] == 3776 and max(table.loc[0, ["width", "height"]]) == 512
    _check_outputs(out, "d1")
    assert [(f.stage, f.dicom_id, f.error_type) for f in failures] == [
        ("preprocess", "d2", "wrong_view"),
        ("preprocess", "d3", "empty"),
        ("preprocess", "d4", "wrong_view"),
    ]
