"""The exclusions table beside the manifest, on a small MIMIC-CXR-JPG tree written by the test."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cxr_attention.io import read_table, write_png
from cxr_attention.preprocess.exclusions import EXCLUSION_COLUMNS
from cxr_attention.preprocess.mimic import (
    CHEXPERT_FINDINGS,
    METADATA_COLUMNS,
    TABLE_BASENAMES,
    image_path,
    read_mimic_tables,
)
from cxr_attention.preprocess.pipeline import preprocess_shard
from cxr_attention.preprocess.selection import select_images, write_manifest
from cxr_attention.progress import CONSOLE_LOGGER, Progress, progress_to_console

SELECTION = {"splits": ["test"], "views": ["PA", "AP"], "sample_size": None, "shards": 1}
QUESTIONS = {
    "source": "bank",
    "findings": ["Cardiomegaly"],
    "uncertain": "exclude",
    "blank": "exclude",
}

# (dicom_id, view, split, Cardiomegaly label); one image per study.
IMAGES = [
    ("d1", "PA", "test", 1.0),
    ("d2", "AP", "test", 0.0),
    ("d3", "PA", "test", 1.0),
    ("d4", "PA", "test", 0.0),
    ("d5", "AP", "test", 1.0),
    ("d6", "PA", "test", 0.0),
    ("d7", "PA", "test", -1.0),  # uncertain: kept, but nothing to score
    ("d8", "PA", "test", np.nan),  # blank: kept, but nothing to score
    ("d9", "LATERAL", "test", 1.0),  # the view filter drops it
    ("d10", "PA", "train", 1.0),  # the split filter drops it
]


def _mimic_tree(root: Path, images=IMAGES, *, with_files: bool = True) -> Path:
    """Tables and JPEG files in MIMIC-CXR-JPG's layout."""
    metadata, split, labels = [], [], []
    for number, (dicom, view, split_name, label) in enumerate(images):
        subject, study = str(10_000_000 + number), str(50_000_000 + number)
        metadata.append(
            {"dicom_id": dicom, "subject_id": subject, "study_id": study, "ViewPosition": view}
        )
        split.append(
            {"dicom_id": dicom, "study_id": study, "subject_id": subject, "split": split_name}
        )
        labels.append({"subject_id": subject, "study_id": study, "Cardiomegaly": label})
        if with_files:
            gradient = np.tile(np.arange(64, dtype=np.uint8) * 4, (64, 1))
            write_png(gradient, image_path(root, "jpg", subject, study, dicom).with_suffix(".png"))
    tables = {
        "metadata": pd.DataFrame(metadata).reindex(columns=METADATA_COLUMNS),
        "split": pd.DataFrame(split),
        "chexpert": pd.DataFrame(labels).reindex(
            columns=["subject_id", "study_id", *CHEXPERT_FINDINGS]
        ),
    }
    root.mkdir(parents=True, exist_ok=True)
    for name, frame in tables.items():
        frame.to_csv(root / f"{TABLE_BASENAMES[name]}.csv.gz", index=False)
    return root


def _write(root: Path, out: Path, questions=QUESTIONS, selection=SELECTION) -> pd.DataFrame:
    write_manifest(
        data={"root": str(root)},
        selection=selection,
        seed=0,
        out_csv=out / "manifest.csv",
        exclusions_csv=out / "exclusions.csv",
        questions=questions,
    )
    return read_table(out / "exclusions.csv")


def test_every_dropped_image_is_listed_with_its_reason(tmp_path, caplog):
    root = _mimic_tree(tmp_path / "mimic", with_files=False)
    with caplog.at_level(logging.INFO):
        exclusions = _write(root, tmp_path / "run")
    manifest = read_table(tmp_path / "run" / "manifest.csv")
    assert list(exclusions.columns) == EXCLUSION_COLUMNS
    reasons = dict(zip(exclusions["dicom_id"], exclusions["reason"], strict=True))
    assert reasons == {"d10": "split", "d9": "view", "d7": "no_labels", "d8": "no_labels"}
    assert "'LATERAL'" in exclusions.set_index("dicom_id").loc["d9", "detail"]
    assert exclusions.set_index("dicom_id").loc["d10", "subject_id"] == "10000009"
    # Images without a scorable label stay in the manifest (their maps are still computed).
    assert sorted(manifest["dicom_id"]) == sorted(f"d{n}" for n in range(1, 9))
    assert "manifest: 8 of 10 images" in caplog.text


def test_sampling_leaves_the_undrawn_images_in_the_exclusions(tmp_path):
    root = _mimic_tree(tmp_path / "mimic", with_files=False)
    exclusions = _write(root, tmp_path / "run", selection={**SELECTION, "sample_size": 5})
    manifest = read_table(tmp_path / "run" / "manifest.csv")
    sampled_out = set(exclusions.loc[exclusions["reason"] == "sampling", "dicom_id"])
    assert len(manifest) == 5 and len(sampled_out) == 3
    # Manifest and exclusions (less no_labels, which stay in the manifest) partition the images.
    dropped = set(exclusions.loc[exclusions["reason"] != "no_labels", "dicom_id"])
    assert dropped.isdisjoint(manifest["dicom_id"])
    assert dropped | set(manifest["dicom_id"]) == {dicom for dicom, *_ in IMAGES}


def test_planted_tables_partition_into_manifest_and_exclusions(tmp_path):
    from test_mimic import _planted_tables
    from test_mimic import _write as write_tables

    raw = _planted_tables(n_subjects=200)
    tables = read_mimic_tables(write_tables(raw, tmp_path))
    manifest, exclusions = select_images(
        tables, root=tmp_path, splits=["test", "validate"], views=["PA"], sample_size=10
    )
    joined = raw["metadata"].merge(raw["split"][["dicom_id", "split"]], on="dicom_id")
    wrong_split = ~joined["split"].isin(["test", "validate"])
    wrong_view = ~wrong_split & (joined["ViewPosition"].fillna("") != "PA")
    by_reason = exclusions.groupby("reason")["dicom_id"].apply(set).to_dict()
    assert by_reason["split"] == set(joined.loc[wrong_split, "dicom_id"])
    assert by_reason["view"] == set(joined.loc[wrong_view, "dicom_id"])
    assert (~wrong_split & ~wrong_view).sum() > 10
    assert len(by_reason["sampling"]) == (~wrong_split & ~wrong_view).sum() - 10
    assert len(manifest) + len(exclusions) == len(raw["metadata"])
    assert exclusions["dicom_id"].is_unique


def test_nothing_left_to_score_warns_on_the_console(tmp_path):
    blank_images = [(dicom, view, split, np.nan) for dicom, view, split, _ in IMAGES]
    root = _mimic_tree(tmp_path / "mimic", blank_images, with_files=False)
    console = io.StringIO()
    with progress_to_console("manifest", stream=console):
        exclusions = _write(root, tmp_path / "run", questions={**QUESTIONS, "blank": "exclude"})
    assert (exclusions["reason"] == "no_labels").sum() == 8
    assert "WARNING none of the 8 images in the manifest has a label" in console.getvalue()
    # With blank read as negative every image can be scored: no warning.
    console = io.StringIO()
    with progress_to_console("manifest", stream=console):
        exclusions = _write(root, tmp_path / "run2", questions={**QUESTIONS, "blank": "negative"})
    assert "no_labels" not in set(exclusions["reason"]) and console.getvalue() == ""


def test_an_empty_manifest_warns_on_the_console(tmp_path):
    root = _mimic_tree(tmp_path / "mimic", with_files=False)
    console = io.StringIO()
    with progress_to_console("manifest", stream=console):
        exclusions = _write(root, tmp_path / "run", selection={**SELECTION, "views": ["LL"]})
    assert len(exclusions) == len(IMAGES)
    assert "WARNING the manifest is empty" in console.getvalue()


def test_a_missing_file_is_a_missing_failure_not_corrupt(tmp_path):
    root = _mimic_tree(tmp_path / "mimic")
    _write(root, tmp_path / "run")
    manifest = read_table(tmp_path / "run" / "manifest.csv")
    # The tree holds PNG files under .png names; the manifest asks for .jpg: none exists.
    table, failures = preprocess_shard(manifest.iloc[:2], tmp_path / "out", max_side=64)
    assert table.empty and {failure.error_type for failure in failures} == {"missing"}
    assert all("no such file" in failure.message for failure in failures)


def test_progress_reaches_the_console_every_tenth_and_at_the_end():
    console = io.StringIO()
    with progress_to_console("preprocess/000", stream=console):
        progress = Progress("preprocess", total=25)
        for _ in range(25):
            progress.step()
    lines = console.getvalue().splitlines()
    # Every 3 items (a tenth of 25, rounded up) and at the 25th.
    assert [line.split()[3] for line in lines] == [f"{n}/25" for n in (*range(3, 25, 3), 25)]
    assert lines[-1].startswith("[preprocess/000] INFO preprocess: 25/25 images (100%)")
    assert not logging.getLogger(CONSOLE_LOGGER).handlers  # removed after the block


@pytest.mark.parametrize("total", [0, 1])
def test_progress_of_tiny_loops(total):
    console = io.StringIO()
    with progress_to_console(stream=console):
        progress = Progress("maps", total=total, unit="samples")
        for _ in range(total):
            progress.step()
    assert console.getvalue().count("samples") == total


def test_a_shard_with_no_usable_image_warns_on_the_console(tmp_path):
    from cxr_attention.preprocess.pipeline import run_preprocess_shard

    root = _mimic_tree(tmp_path / "mimic", with_files=False)
    _write(root, tmp_path / "run")
    console = io.StringIO()
    with progress_to_console("preprocess/000", stream=console):
        run_preprocess_shard(
            manifest_csv=tmp_path / "run" / "manifest.csv",
            shard=0,
            out_csv=tmp_path / "run" / "shard-0.csv",
            out_dir=tmp_path / "run" / "shard-0",
            failures_csv=tmp_path / "run" / "shard-0.failures.csv",
            max_side=64,
        )
    assert "WARNING preprocess shard 0: none of its 8 images could be used (missing)" in (
        console.getvalue()
    )
    failures = read_table(tmp_path / "run" / "shard-0.failures.csv")
    assert set(failures["error_type"]) == {"missing"} and len(failures) == 8
