"""The image-table layout (data.layout: table): non-MIMIC images into the manifest."""

from __future__ import annotations

import pandas as pd
import pytest

from cxr_attention.io import ConfigError
from cxr_attention.preprocess.selection import write_manifest


def _table(tmp_path, text):
    path = tmp_path / "images.csv"
    path.write_text(text, encoding="utf-8")
    return path


def _manifest(tmp_path, table, **selection):
    return write_manifest(
        data={"root": str(tmp_path / "root"), "layout": "table", "table": str(table)},
        selection={"views": None, "shards": 2, **selection},
        seed=0,
        out_csv=tmp_path / "manifest.csv",
    )


def test_table_rows_become_manifest_rows(tmp_path):
    table = _table(
        tmp_path,
        "image_path,image_id,patient_id,view_position,Cardiomegaly,Pleural Effusion\n"
        "test/abc.dicom,abc,abc,PA,1.0,\n"
        "test/def.dicom,def,p2,AP,0.0,-1.0\n"
        "/abs/ghi.png,ghi,p2,PA,,1.0\n",
    )
    manifest = _manifest(tmp_path, table)
    assert manifest["dicom_id"].tolist() == ["abc", "def", "ghi"]
    assert manifest["subject_id"].tolist() == ["abc", "p2", "p2"]
    assert manifest["study_id"].tolist() == ["abc", "def", "ghi"]
    assert manifest["split"].tolist() == ["test"] * 3
    root = (tmp_path / "root").as_posix()
    assert manifest["image_path"].tolist() == [
        f"{root}/test/abc.dicom",
        f"{root}/test/def.dicom",
        "/abs/ghi.png",
    ]
    assert manifest["Cardiomegaly"].tolist()[:2] == [1.0, 0.0]
    assert pd.isna(manifest["Cardiomegaly"].iloc[2])
    assert manifest["Pleural Effusion"].tolist()[1:] == [-1.0, 1.0]
    assert manifest["Edema"].isna().all()
    assert manifest["shard"].tolist() == [0, 0, 1]
    written = pd.read_csv(tmp_path / "manifest.csv", dtype=str)
    assert written["dicom_id"].tolist() == ["abc", "def", "ghi"]


def test_view_filter_applies_to_the_table(tmp_path):
    table = _table(
        tmp_path,
        "image_path,image_id,patient_id,view_position\na.png,a,1,PA\nb.png,b,2,LL\nc.png,c,3,\n",
    )
    assert _manifest(tmp_path, table, views=["PA", "AP"])["dicom_id"].tolist() == ["a"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("image_path,image_id\na.png,a\n", "missing column"),
        ("image_path,image_id,patient_id\na.png,a,1\nb.png,a,2\n", "appears twice"),
        ("image_path,image_id,patient_id,Edema\na.png,a,1,yes\n", "labels are 1.0"),
        ("image_path,image_id,patient_id,split\na.png,a,1,val\n", "unknown split"),
    ],
)
def test_bad_tables_name_the_file_and_reason(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        _manifest(tmp_path, _table(tmp_path, text))


def test_table_layout_needs_the_table(tmp_path):
    with pytest.raises(ConfigError, match=r"data\.table"):
        write_manifest(
            data={"root": str(tmp_path), "layout": "table", "table": None},
            selection={},
            seed=0,
            out_csv=tmp_path / "manifest.csv",
        )
