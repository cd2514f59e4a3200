"""MIMIC-CXR tables and manifest selection, on the embedded demo data and on planted tables."""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import re
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pydicom
import pytest

from cxr_attention.io import ConfigError, read_table
from cxr_attention.preprocess.mimic import (
    CHEXPERT_FINDINGS,
    LABEL_COLUMNS,
    MANIFEST_COLUMNS,
    METADATA_COLUMNS,
    SPLIT_COLUMNS,
    TABLE_BASENAMES,
    image_path,
    read_mimic_tables,
)
from cxr_attention.preprocess.selection import (
    BalanceRequest,
    calibration_images,
    select_manifest,
    write_calibration_manifest,
    write_manifest,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
DEMO = REPO_ROOT / "data" / "demo"
DEMO_JPG = DEMO / "mimic-cxr-jpg"
DEMO_DICOM = DEMO / "mimic-cxr"
DICOM_ID = re.compile(r"^[0-9a-f]{8}(-[0-9a-f]{8}){4}$")
EXPECTED_COLUMNS = {
    "metadata": METADATA_COLUMNS,
    "chexpert": LABEL_COLUMNS,
    "negbio": LABEL_COLUMNS,
    "split": SPLIT_COLUMNS,
}


def _header(path: Path) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return handle.readline().rstrip("\n").split(",")


# --- the embedded demo data --------------------------------------------------------------------


@pytest.mark.parametrize("root", [DEMO_JPG, DEMO_DICOM], ids=["jpg", "dicom"])
@pytest.mark.parametrize("name", sorted(TABLE_BASENAMES))
def test_demo_tables_carry_the_real_mimic_columns_in_order(root, name):
    path = root / f"{TABLE_BASENAMES[name]}.csv.gz"
    assert _header(path) == EXPECTED_COLUMNS[name]


@pytest.mark.parametrize(
    ("root", "layout"), [(DEMO_JPG, "jpg"), (DEMO_DICOM, "dicom")], ids=["jpg", "dicom"]
)
def test_every_demo_row_is_an_image_on_disk_in_the_mimic_tree(root, layout):
    tables = read_mimic_tables(root)
    metadata = tables.metadata
    assert metadata["dicom_id"].is_unique
    assert set(metadata["dicom_id"]) == set(tables.split["dicom_id"])
    studies = set(zip(metadata["subject_id"], metadata["study_id"], strict=True))
    assert set(zip(tables.labels["subject_id"], tables.labels["study_id"], strict=True)) == studies
    on_disk = {p.relative_to(root).as_posix() for p in (root / "files").rglob("*") if p.is_file()}
    expected = set()
    for row in metadata.itertuples():
        assert DICOM_ID.match(row.dicom_id), row.dicom_id
        assert re.fullmatch(r"1\d{7}", row.subject_id) and re.fullmatch(r"5\d{7}", row.study_id)
        relative = (
            f"files/p{row.subject_id[:2]}/p{row.subject_id}/s{row.study_id}/{row.dicom_id}"
            + (".jpg" if layout == "jpg" else ".dcm")
        )
        expected.add(relative)
        path = root / relative
        if layout == "jpg":
            image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
            assert image.ndim == 2 and image.dtype == np.uint8  # grayscale, as MIMIC-CXR-JPG
        else:
            image = pydicom.dcmread(path).pixel_array
        assert image.shape == (row.Rows, row.Columns)
    assert on_disk == expected  # nothing in the tree that the tables do not list


def test_demo_images_are_frontal_and_the_labels_are_mimic_values():
    tables = read_mimic_tables(DEMO_JPG)
    assert set(tables.metadata["ViewPosition"]) <= {"PA", "AP"}
    assert set(tables.split["split"]) <= {"train", "validate", "test"}
    values = tables.labels[CHEXPERT_FINDINGS].to_numpy()
    assert np.isin(values[~np.isnan(values)], [1.0, 0.0, -1.0]).all()
    negbio = read_mimic_tables(DEMO_JPG, labels="negbio")
    assert negbio.labeller == "negbio" and len(negbio.labels) == len(tables.labels)


def _load_generator():
    spec = importlib.util.spec_from_file_location("make_demo_data", DEMO / "make_demo_data.py")
    module = importlib.util.module_from_spec(spec)
    # dataclasses look their module up in sys.modules while the class is built.
    sys.modules.setdefault(spec.name, module)
    spec.loader.exec_module(sys.modules[spec.name])
    module = sys.modules[spec.name]
    return module


def _digests(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != "make_demo_data.py"
    }


def test_demo_data_is_exactly_what_the_generator_writes(real_cxr, tmp_path):
    generator = _load_generator()
    generator.build_demo_data(real_cxr, tmp_path)
    assert _digests(tmp_path) == _digests(DEMO)


def test_demo_dicoms_are_byte_copies_of_openly_licensed_sources(real_cxr):
    sources = {
        hashlib.sha256(p.read_bytes()).hexdigest(): p.name
        for p in (real_cxr / "dicom").glob("*.dcm")
    }
    copied = [
        sources.get(hashlib.sha256(p.read_bytes()).hexdigest()) for p in DEMO_DICOM.rglob("*.dcm")
    ]
    assert copied and None not in copied
    assert not any(name.startswith("nema") for name in copied)


def test_demo_labels_map_the_sources_own_labels(real_cxr):
    """Independent oracle: SOURCES.csv's labels column and the documented mapping."""
    generator = _load_generator()
    sources = pd.read_csv(real_cxr / "SOURCES.csv", dtype=str).set_index("file")
    tables = read_mimic_tables(DEMO_JPG)
    labels = tables.labels.set_index(["subject_id", "study_id"])
    for image in generator.JPG_IMAGES:
        text = sources.loc[image.source, "labels"]
        study = (generator.subject_id(image.subject_index), generator.study_id(image))
        row = labels.loc[study]
        positives = set(row.index[row == 1.0])
        # No JPEG source states a negative or uncertain finding: 1.0 or blank only.
        assert ((row == 1.0) | row.isna()).all(), image.source
        if text.lower().startswith("normal") or text == "No Finding":
            assert positives == {"No Finding"}, image.source
        elif image.dataset == "nih":
            nih = {
                "Cardiomegaly": "Cardiomegaly",
                "Effusion": "Pleural Effusion",
                "Infiltration": "Lung Opacity",
                "Pneumothorax": "Pneumothorax",
                "Atelectasis": "Atelectasis",
                "Pleural_Thickening": "Pleural Other",
            }
            assert positives == {nih[x] for x in text.split("|") if x in nih}, image.source
        elif "pneumonia" in text:
            assert positives == {"Pneumonia"}
        else:  # tuberculosis, COVID-19 without finding labels: no CheXpert column, all blank
            assert labels.loc[study].isna().all(), image.source


# --- reading the tables --------------------------------------------------------------------------


def _copy_tables(source: Path, target: Path, *, decompress: bool) -> Path:
    target.mkdir(parents=True, exist_ok=True)
    for base in TABLE_BASENAMES.values():
        gz = source / f"{base}.csv.gz"
        if decompress:
            with gzip.open(gz, "rb") as handle:
                (target / f"{base}.csv").write_bytes(handle.read())
        else:
            shutil.copyfile(gz, target / gz.name)
    return target


def test_csv_and_csv_gz_read_the_same(tmp_path):
    plain = read_mimic_tables(_copy_tables(DEMO_JPG, tmp_path / "plain", decompress=True))
    packed = read_mimic_tables(DEMO_JPG)
    assert plain.paths["metadata"].name.endswith(".csv")
    for name in ("metadata", "labels", "split"):
        pd.testing.assert_frame_equal(getattr(plain, name), getattr(packed, name))


@pytest.mark.parametrize(
    ("labels", "missing"),
    [
        ("chexpert", "metadata"),
        ("chexpert", "split"),
        ("chexpert", "chexpert"),
        ("negbio", "negbio"),
    ],
)
def test_a_missing_table_names_the_file(tmp_path, labels, missing):
    root = _copy_tables(DEMO_JPG, tmp_path, decompress=False)
    (root / f"{TABLE_BASENAMES[missing]}.csv.gz").unlink()
    with pytest.raises(ConfigError, match=re.escape(TABLE_BASENAMES[missing])):
        read_mimic_tables(root, labels=labels)


def test_only_the_chosen_label_table_is_required(tmp_path):
    root = _copy_tables(DEMO_JPG, tmp_path, decompress=False)
    (root / f"{TABLE_BASENAMES['negbio']}.csv.gz").unlink()
    assert len(read_mimic_tables(root, labels="chexpert").labels) > 0


@pytest.mark.parametrize(
    ("name", "column"),
    [
        ("metadata", "ViewPosition"),
        ("metadata", "dicom_id"),
        ("split", "split"),
        ("chexpert", "Pleural Effusion"),
        ("chexpert", "study_id"),
    ],
)
def test_a_missing_column_names_file_and_column(tmp_path, name, column):
    root = _copy_tables(DEMO_JPG, tmp_path, decompress=True)
    path = root / f"{TABLE_BASENAMES[name]}.csv"
    pd.read_csv(path, dtype=str).drop(columns=column).to_csv(path, index=False)
    with pytest.raises(ConfigError) as caught:
        read_mimic_tables(root)
    assert str(path) in str(caught.value) and repr(column) in str(caught.value)


def test_a_label_outside_mimic_values_is_refused_with_its_column(tmp_path):
    root = _copy_tables(DEMO_JPG, tmp_path, decompress=True)
    path = root / f"{TABLE_BASENAMES['chexpert']}.csv"
    table = pd.read_csv(path, dtype=str)
    table.loc[0, "Edema"] = "yes"
    table.to_csv(path, index=False)
    with pytest.raises(ConfigError, match="'Edema'"):
        read_mimic_tables(root)


def test_ids_are_read_as_strings_with_leading_digits_kept(tmp_path):
    tables = _planted_tables(n_subjects=3)
    tables["split"].loc[0, "dicom_id"] = tables["metadata"].loc[0, "dicom_id"] = "000123"
    root = _write(tables, tmp_path)
    read = read_mimic_tables(root)
    assert "000123" in set(read.metadata["dicom_id"]) and "000123" in set(read.split["dicom_id"])
    assert read.metadata["subject_id"].map(type).eq(str).all()


def test_unknown_labeller_is_a_config_error():
    with pytest.raises(ConfigError, match="labels"):
        read_mimic_tables(DEMO_JPG, labels="radgraph")


# --- planted tables for selection -----------------------------------------------------------------


def _planted_tables(n_subjects: int = 400, seed: int = 7) -> dict[str, pd.DataFrame]:
    """Tables with MIMIC's shape: subjects with 1-3 studies, studies with 1-3 images of any view."""
    rng = np.random.default_rng(seed)
    meta, split, labels = [], [], []
    for s in range(n_subjects):
        subject = str(10_000_000 + s * 37)
        subject_split = rng.choice(["train", "validate", "test"], p=[0.8, 0.1, 0.1])
        for _ in range(rng.integers(1, 4)):
            study = str(50_000_000 + int(rng.integers(0, 9_999_999)))
            for _ in range(rng.integers(1, 4)):
                dicom = "-".join(f"{int(x):08x}" for x in rng.integers(0, 2**32, size=5))
                view = rng.choice(["PA", "AP", "LATERAL", "LL", ""])
                meta.append(
                    {
                        "dicom_id": dicom,
                        "subject_id": subject,
                        "study_id": study,
                        "ViewPosition": view,
                        "Rows": 3000,
                        "Columns": 2500,
                    }
                )
                split.append(
                    {
                        "dicom_id": dicom,
                        "study_id": study,
                        "subject_id": subject,
                        "split": subject_split,
                    }
                )
            values = rng.choice([1.0, 0.0, -1.0, np.nan], size=14, p=[0.2, 0.2, 0.1, 0.5])
            labels.append(
                {
                    "subject_id": subject,
                    "study_id": study,
                    **dict(zip(CHEXPERT_FINDINGS, values, strict=True)),
                }
            )
    metadata = pd.DataFrame(meta).reindex(columns=METADATA_COLUMNS)
    label_table = pd.DataFrame(labels).drop_duplicates(["subject_id", "study_id"])
    return {"metadata": metadata, "split": pd.DataFrame(split), "chexpert": label_table}


def _write(tables: dict[str, pd.DataFrame], root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, frame in tables.items():
        frame.to_csv(root / f"{TABLE_BASENAMES[name]}.csv.gz", index=False)
    return root


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    tables = _planted_tables()
    root = _write(tables, tmp_path_factory.mktemp("planted"))
    return root, tables, read_mimic_tables(root)


def test_same_seed_same_manifest_and_row_order_does_not_matter(planted, tmp_path):
    root, raw, tables = planted
    first = select_manifest(tables, root=root, sample_size=50, seed=3, n_shards=4)
    again = select_manifest(tables, root=root, sample_size=50, seed=3, n_shards=4)
    pd.testing.assert_frame_equal(first, again)
    shuffled = {name: frame.sample(frac=1.0, random_state=1) for name, frame in raw.items()}
    reordered = read_mimic_tables(_write(shuffled, tmp_path / "shuffled"))
    pd.testing.assert_frame_equal(
        first, select_manifest(reordered, root=root, sample_size=50, seed=3, n_shards=4)
    )
    other = select_manifest(tables, root=root, sample_size=50, seed=4, n_shards=4)
    assert set(other["dicom_id"]) != set(first["dicom_id"])


def test_manifest_columns_labels_and_paths(planted):
    root, raw, tables = planted
    manifest = select_manifest(tables, root=root, layout="dicom", splits=None, views=None)
    assert list(manifest.columns) == MANIFEST_COLUMNS
    assert len(manifest) == len(raw["metadata"])
    assert manifest["dicom_id"].is_monotonic_increasing and manifest["dicom_id"].is_unique
    labels = raw["chexpert"].set_index(["subject_id", "study_id"])
    expected = labels.loc[list(zip(manifest["subject_id"], manifest["study_id"], strict=True))]
    np.testing.assert_array_equal(
        manifest[CHEXPERT_FINDINGS].to_numpy(), expected[CHEXPERT_FINDINGS].to_numpy(float)
    )
    for row in manifest.sample(20, random_state=0).itertuples():
        assert Path(row.image_path) == image_path(
            root, "dicom", row.subject_id, row.study_id, row.dicom_id
        )


def test_image_path_follows_the_mimic_tree():
    expected = Path("mimic/files/p10/p10000032/s50414267/02aa804e-bde0afdd.jpg")
    assert image_path("mimic", "jpg", "10000032", "50414267", "02aa804e-bde0afdd") == expected
    assert image_path("m", "dicom", "19999987", "55555555", "x").as_posix() == (
        "m/files/p19/p19999987/s55555555/x.dcm"
    )
    with pytest.raises(ConfigError, match="layout"):
        image_path("m", "png", "19999987", "55555555", "x")


def test_split_and_view_filters_match_an_independent_count(planted):
    root, raw, tables = planted
    manifest = select_manifest(tables, root=root, splits=["test"], views=["PA"])
    joined = raw["metadata"].merge(raw["split"][["dicom_id", "split"]], on="dicom_id")
    expected = joined[(joined["split"] == "test") & (joined["ViewPosition"] == "PA")]
    assert set(manifest["dicom_id"]) == set(expected["dicom_id"])
    assert set(manifest["view_position"]) == {"PA"} and set(manifest["split"]) == {"test"}
    default = select_manifest(tables, root=root)
    assert set(default["view_position"]) == {"PA", "AP"}
    blank = select_manifest(tables, root=root, views=[""])
    assert len(blank) == (raw["metadata"]["ViewPosition"].fillna("") == "").sum()


def test_a_study_without_labels_is_kept_with_blanks(planted, tmp_path):
    root, raw, _ = planted
    dropped = raw["chexpert"].iloc[1:]
    lost = raw["chexpert"].iloc[0]
    tables = read_mimic_tables(_write({**raw, "chexpert": dropped}, tmp_path))
    manifest = select_manifest(tables, root=root, splits=None, views=None)
    rows = manifest[manifest["study_id"] == lost["study_id"]]
    assert len(rows) > 0 and rows[CHEXPERT_FINDINGS].isna().all().all()


def test_balance_draws_the_asked_positives_and_negatives(planted):
    root, _, tables = planted
    balance = [
        {"finding": "Pleural Effusion", "positives": 30, "negatives": 20},
        {"finding": "Cardiomegaly", "positives": 10, "negatives": 10},
    ]
    manifest = select_manifest(tables, root=root, balance=balance, seed=1, n_shards=3)
    assert len(manifest) == 70 and manifest["dicom_id"].is_unique
    effusion = manifest["Pleural Effusion"]
    # Images drawn for Cardiomegaly may carry any Pleural Effusion label: count at least.
    assert (effusion == 1.0).sum() >= 30 and (effusion == 0.0).sum() >= 20
    assert set(manifest["view_position"]) <= {"PA", "AP"}
    only_effusion = select_manifest(tables, root=root, balance=balance[:1], seed=1)
    assert (only_effusion["Pleural Effusion"] == 1.0).sum() == 30
    assert (only_effusion["Pleural Effusion"] == 0.0).sum() == 20


def test_balance_with_blank_as_negative_and_with_too_few(planted):
    root, _, tables = planted
    request = BalanceRequest("Edema", positives=10_000, negatives=15, blank_as_negative=True)
    manifest = select_manifest(tables, root=root, views=None, splits=None, balance=[request])
    pool = select_manifest(tables, root=root, views=None, splits=None)
    assert (manifest["Edema"] == 1.0).sum() == (pool["Edema"] == 1.0).sum()  # all there are
    negatives = manifest[manifest["Edema"] != 1.0]["Edema"]
    assert len(negatives) == 15 and (negatives.isna() | (negatives == 0.0)).all()


def test_sample_size_tops_up_a_balanced_draw_and_must_hold_it(planted):
    root, _, tables = planted
    balance = {"finding": "Pneumothorax", "positives": 5, "negatives": 5}
    manifest = select_manifest(tables, root=root, balance=balance, sample_size=40, seed=2)
    assert len(manifest) == 40 and manifest["dicom_id"].is_unique
    with pytest.raises(ConfigError, match="sample_size"):
        select_manifest(tables, root=root, balance=balance, sample_size=9)
    with pytest.raises(ConfigError, match="finding"):
        select_manifest(
            tables, root=root, balance={"finding": "Effusion", "positives": 1, "negatives": 1}
        )


@pytest.mark.parametrize("n_shards", [1, 3, 7])
def test_every_row_lands_in_exactly_one_contiguous_balanced_shard(planted, n_shards):
    root, _, tables = planted
    manifest = select_manifest(tables, root=root, sample_size=100, n_shards=n_shards)
    sizes = manifest["shard"].value_counts().reindex(range(n_shards), fill_value=0)
    assert sizes.sum() == 100 and sizes.max() - sizes.min() <= 1
    assert manifest["shard"].is_monotonic_increasing  # contiguous blocks of dicom_id order
    assert set(manifest["shard"]) == set(range(n_shards))


def test_write_manifest_from_config_sections(tmp_path):
    out = tmp_path / "results" / "demo" / "manifest.csv"
    written = write_manifest(
        data={"root": str(DEMO_JPG), "layout": "jpg", "labels": "chexpert"},
        selection={
            "splits": ["train", "validate", "test"],
            "views": ["PA", "AP"],
            "sample_size": None,
            "balance": None,
            "shards": 2,
        },
        seed=0,
        out_csv=out,
    )
    read = read_table(out)
    assert list(read.columns) == MANIFEST_COLUMNS and len(read) == len(written) > 0
    assert read["dicom_id"].tolist() == written["dicom_id"].tolist()
    assert read["subject_id"].tolist() == written["subject_id"].tolist()
    np.testing.assert_array_equal(
        read[CHEXPERT_FINDINGS].to_numpy(float), written[CHEXPERT_FINDINGS].to_numpy()
    )
    assert all(Path(p).is_file() for p in read["image_path"])
    with pytest.raises(ConfigError, match="missing MIMIC-CXR table"):
        write_manifest(data={"root": str(tmp_path)}, selection={}, seed=0, out_csv=out)


def test_from_vqa_table_selects_exactly_the_images_it_names(tmp_path):
    from cxr_attention.io import read_table
    from cxr_attention.preprocess.selection import write_manifest

    metadata = pd.read_csv(DEMO_JPG / "mimic-cxr-2.0.0-metadata.csv.gz", dtype=str)
    by_dicom = metadata["dicom_id"].iloc[:2].tolist()
    # A row naming only a study (MIMIC folders spell it "s5..."): one image of that study.
    study = metadata["study_id"].iloc[5]
    vqa = pd.DataFrame(
        {
            "dicom_id": [*by_dicom, by_dicom[0], ""],
            "study_id": ["", "", "", f"s{study}"],
            "question": ["Is there cardiomegaly?"] * 4,
        }
    )
    vqa.to_csv(tmp_path / "vqa.csv", index=False)
    selection = {"views": ["PA", "AP"], "sample_size": 1, "from_vqa_table": True, "shards": 1}
    write_manifest(
        data={"root": str(DEMO_JPG)},
        selection=selection,
        seed=0,
        out_csv=tmp_path / "manifest.csv",
        vqa_table=tmp_path / "vqa.csv",
    )
    manifest = read_table(tmp_path / "manifest.csv")
    expected = {*by_dicom, *metadata.loc[metadata["study_id"] == study, "dicom_id"][:1]}
    assert set(manifest["dicom_id"]) == expected  # sample_size is ignored
    assert len(manifest) == len(expected)


# --- the localization heads' calibration images (maps.head_calibration) ----------------------


def test_calibration_images_come_from_the_named_split_and_no_study_patient(planted, tmp_path):
    root, raw, _ = planted
    data = {"root": str(root), "layout": "jpg", "labels": "chexpert"}
    selection = {"splits": ["validate"], "views": ["PA", "AP"], "sample_size": 10, "shards": 1}
    study = write_manifest(data=data, selection=selection, seed=0, out_csv=tmp_path / "m.csv")
    calibration = {"split": "validate", "images": 10_000}
    out = tmp_path / "heads.csv"
    every = write_calibration_manifest(
        data=data,
        selection=selection,
        calibration=calibration,
        seed=0,
        study_manifest_csv=tmp_path / "m.csv",
        out_csv=out,
    )
    # oracle: the planted tables read with pandas
    images = raw["metadata"].merge(raw["split"][["dicom_id", "split"]], on="dicom_id")
    expected = images[
        (images["split"] == "validate")
        & images["ViewPosition"].isin(["PA", "AP"])
        & ~images["subject_id"].isin(study["subject_id"])
    ]
    assert sorted(every["dicom_id"]) == sorted(expected["dicom_id"])
    assert len(every) > 10 and set(every["shard"]) == {0}
    assert not set(every["subject_id"]) & set(study["subject_id"])
    pd.testing.assert_frame_equal(read_table(out), every, check_dtype=False)
    # a draw of 5, the same for the same seed, another for another seed
    five = calibration_images(data, selection, {"split": "validate", "images": 5}, 0)
    assert len(five) == 5 and set(five["dicom_id"]) <= set(images["dicom_id"])
    again = calibration_images(data, selection, {"split": "validate", "images": 5}, 0)
    pd.testing.assert_frame_equal(five, again)
    other = calibration_images(data, selection, {"split": "validate", "images": 5}, 1)
    assert set(other["dicom_id"]) != set(five["dicom_id"])


def test_an_empty_calibration_split_is_a_config_error_naming_the_key(planted, tmp_path):
    root, raw, _ = planted
    no_validate = dict(raw, split=raw["split"].assign(split="train"))
    root = _write(no_validate, tmp_path / "tables")
    data = {"root": str(root), "layout": "jpg", "labels": "chexpert"}
    with pytest.raises(ConfigError, match=r"maps\.head_calibration\.split.*'validate'"):
        calibration_images(data, {"views": ["PA"]}, {"split": "validate", "images": 3}, 0)
