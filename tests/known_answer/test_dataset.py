"""The known-answer dataset reads as a MIMIC-CXR-JPG download: the project's own table reader and
path rule are the oracle; lesions, labels, boxes and questions agree with what was planted."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from cxr_attention.known_answer.dataset import write_known_answer_dataset
from cxr_attention.known_answer.model import QUESTIONS
from cxr_attention.known_answer.plant import LUNG_LABELS
from cxr_attention.preprocess.decode import decode_image
from cxr_attention.preprocess.masks import lung_mask
from cxr_attention.preprocess.mimic import find_table, image_path, read_mimic_tables

DEMO = Path(__file__).resolve().parents[2] / "data/demo/mimic-cxr-jpg"
# A small film with room in both lungs, and one whose right lung mask has no room.
FILMS = [
    "b3e43731-60ddcfa4-ad955344-63444011-63c22875",
    "34287fa5-0af6672a-749c5cb7-a4d3cd5f-0e260489",
]


def _demo_subset(root: Path) -> None:
    """The two films of the demo download, with its four tables cut to them."""
    metadata = pd.read_csv(find_table(DEMO, "metadata"), dtype=str)
    chosen = metadata[metadata["dicom_id"].isin(FILMS)]
    for name in ("metadata", "split", "chexpert", "negbio"):
        table = pd.read_csv(find_table(DEMO, name), dtype=str)
        key = "dicom_id" if "dicom_id" in table else "study_id"
        table[table[key].isin(chosen[key])].to_csv(
            root / f"mimic-cxr-2.0.0-{name}.csv.gz", index=False
        )
    for film in chosen.itertuples():
        source = image_path(DEMO, "jpg", film.subject_id, film.study_id, film.dicom_id)
        target = image_path(root, "jpg", film.subject_id, film.study_id, film.dicom_id)
        target.parent.mkdir(parents=True)
        shutil.copy(source, target)


def test_planted_films_read_as_a_mimic_download(tmp_path: Path):
    source = tmp_path / "source"
    source.mkdir()
    _demo_subset(source)
    failures = write_known_answer_dataset(source, tmp_path / "out", seed=0)
    assert [(f.stage, f.error_type) for f in failures] == [("plant", "no_room")]
    assert "right lesion" in failures[0].message

    root = tmp_path / "out" / "mimic-cxr-jpg"
    tables = read_mimic_tables(root)
    plantings = pd.read_csv(tmp_path / "out" / "plantings.csv", dtype=str, keep_default_na=False)
    boxes = pd.read_csv(tmp_path / "out" / "boxes.csv", dtype={"dicom_id": str})
    questions = pd.read_csv(tmp_path / "out" / "nodule_questions.csv", dtype=str)
    # 2 clean films + 2 planted copies of the first + 1 of the second (its right lung is full).
    assert sorted(plantings["side"]) == ["left", "left", "none", "none", "right"]
    assert len(tables.metadata) == 5 and set(tables.metadata["dicom_id"]) == set(
        plantings["dicom_id"]
    )
    labels = tables.labels.set_index("study_id")["Lung Lesion"]
    for row in plantings.itertuples():
        assert labels[row.study_id] == (0.0 if row.side == "none" else 1.0)
        path = image_path(root, "jpg", row.subject_id, row.study_id, row.dicom_id)
        image, _ = decode_image(path)
        source_row = plantings[plantings["dicom_id"] == row.source_dicom_id].iloc[0]
        original, _ = decode_image(
            image_path(root, "jpg", source_row.subject_id, source_row.study_id, row.source_dicom_id)
        )
        asked = questions[questions["dicom_id"] == row.dicom_id].set_index("question")["answer"]
        assert asked[QUESTIONS["any"]] == ("no" if row.side == "none" else "yes")
        for side in ("left", "right"):
            assert asked[QUESTIONS[side]] == ("yes" if row.side == side else "no")
        if row.side == "none":
            assert row.dicom_id not in set(boxes["dicom_id"])
            continue
        box = boxes[boxes["dicom_id"] == row.dicom_id].iloc[0]
        assert (box.image_width, box.image_height) == (image.shape[1], image.shape[0])
        # The brightening lies in the box and in the named lung of the clean copy's own mask
        # (JPEG noise elsewhere is small).
        difference = image.astype(int) - original.astype(int)
        peak = np.unravel_index(np.argmax(difference), difference.shape)
        assert box.y <= peak[0] < box.y + box.h and box.x <= peak[1] < box.x + box.w
        assert lung_mask(original)[peak] == LUNG_LABELS[row.side]
        assert difference.max() > 40
