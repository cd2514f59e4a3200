"""The shared table reader (empty tables, required columns, text mode) and the npz writer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cxr_attention.io import (
    FAILURE_COLUMNS,
    ConfigError,
    read_failures,
    read_table,
    write_csv,
    write_npz,
)


def test_an_empty_frame_written_by_write_csv_reads_back_as_no_rows(tmp_path: Path) -> None:
    # write_csv of a frame without columns writes a lone newline, not 0 bytes.
    path = tmp_path / "gathered.csv"
    write_csv(pd.DataFrame(), path)
    assert path.read_bytes() == b"\n"
    assert read_table(path).empty
    table = read_table(path, required=("map_id", "dicom_id"), text=True)
    assert list(table.columns) == ["map_id", "dicom_id"] and table.empty


def test_a_zero_byte_file_is_no_rows(tmp_path: Path) -> None:
    path = tmp_path / "shard-0.csv"
    path.write_bytes(b"")
    assert read_table(path).shape == (0, 0)


def test_identifiers_are_strings_and_text_mode_keeps_blanks(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("dicom_id,subject_id,width,answer\n007,10000032,512,\n")
    default = read_table(path)
    assert default.loc[0, "dicom_id"] == "007" and default.loc[0, "subject_id"] == "10000032"
    assert default.loc[0, "width"] == 512 and pd.isna(default.loc[0, "answer"])
    text = read_table(path, text=True)
    assert text.loc[0].tolist() == ["007", "10000032", "512", ""]


def test_a_missing_required_column_names_the_file_and_the_column(tmp_path: Path) -> None:
    path = tmp_path / "answers.csv"
    path.write_text("sample_id,dicom_id\ns1,d1\n")
    with pytest.raises(
        ConfigError, match=r"answers\.csv: missing column\(s\) subject_id, strategy"
    ):
        read_table(path, required=("sample_id", "subject_id", "strategy"))
    path.write_text("sample_id,dicom_id\n")  # a header without rows is checked too
    with pytest.raises(ConfigError, match="subject_id"):
        read_table(path, required=("subject_id",), text=True)


def test_a_missing_file_is_a_config_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"absent\.csv: file not found"):
        read_table(tmp_path / "absent.csv")


def test_write_npz_reads_back_with_numpy_byte_for_byte_the_same_each_time(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    arrays = {
        "attention": rng.dirichlet(np.ones(256), size=(3, 8, 5)).astype(np.float16),
        "input_ids": np.arange(300, dtype=np.int64),
        "input_tokens": np.asarray(["<bos>", "▁effusion", ""], dtype=str),
        "empty": np.zeros((0, 8, 4), dtype=np.float32),
    }
    write_npz(tmp_path / "a.npz", **arrays)
    with np.load(tmp_path / "a.npz", allow_pickle=False) as stored:
        assert sorted(stored.files) == sorted(arrays)
        for name, array in arrays.items():
            assert stored[name].dtype == array.dtype
            np.testing.assert_array_equal(stored[name], array)
    write_npz(tmp_path / "b.npz", **arrays)
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    assert (tmp_path / "a.npz").stat().st_size < sum(a.nbytes for a in arrays.values())


def test_write_npz_that_fails_leaves_no_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="pickle"):
        write_npz(tmp_path / "bad.npz", ok=np.ones(3), objects=np.asarray([{}, []], dtype=object))
    assert list(tmp_path.iterdir()) == []


def test_read_failures_gathers_tables_and_names_the_stage_apart_when_asked(tmp_path: Path) -> None:
    first, second, missing = tmp_path / "a.csv", tmp_path / "b.csv", tmp_path / "absent.csv"
    row = ["preprocess", "d1", "/x/d1.jpg", "corrupt", "d1.jpg: truncated"]
    pd.DataFrame([row], columns=FAILURE_COLUMNS).to_csv(first, index=False)
    second.write_text("")  # a shard without failures
    gathered = read_failures([first, second, missing])
    assert gathered.values.tolist() == [row]
    relabelled = read_failures([first], stage_prefix="head_calibration_")
    assert relabelled.values.tolist() == [["head_calibration_preprocess", *row[1:]]]
    assert list(read_failures([missing], stage_prefix="x_").columns) == FAILURE_COLUMNS
