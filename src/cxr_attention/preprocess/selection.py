"""The manifest: which images of the MIMIC-CXR tables (:mod:`.mimic`) a run studies, in what shard.

The images of a study go into the ``manifest`` table that every later stage reads
(docs/architecture.md).

Selection, in order:

1. join metadata and split on ``dicom_id``; keep the configured splits and view positions;
2. join the labels on ``(subject_id, study_id)`` (a study without a label row gets blanks);
3. optional per-finding balance: for each entry ``{finding, positives, negatives}`` in turn, draw
   that many images labelled 1.0 and 0.0 for the finding from the images not drawn yet;
4. optional sample size: without balance, a random sample of that many images; with balance, the
   balanced draw topped up at random to that many;
5. sort by ``dicom_id`` and cut into ``n_shards`` contiguous blocks of sizes differing by at most
   one.

Every image of the metadata table left out by steps 1-4 gets a row in the exclusions table
(:mod:`.exclusions`), written beside the manifest.

Every random draw uses one ``numpy.random.default_rng(seed)`` on a pool sorted by ``dicom_id``, so
the manifest depends only on the tables' content and the seed, not on their row order.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cxr_attention.io import ConfigError, read_table, write_csv
from cxr_attention.preprocess.exclusions import (
    exclusion_rows,
    unscorable_images,
    write_exclusions,
)
from cxr_attention.preprocess.image_table import TABLE_LAYOUT, read_image_table, table_image_paths
from cxr_attention.preprocess.mimic import (
    CHEXPERT_FINDINGS,
    DEFAULT_VIEWS,
    LABEL_COLUMNS,
    MANIFEST_COLUMNS,
    SPLITS,
    MimicTables,
    _image_paths,
    _layout_suffix,
    read_mimic_tables,
)
from cxr_attention.progress import loud_warning

__all__ = [
    "CALIBRATION_KEY",
    "BalanceRequest",
    "NamedImages",
    "images_named_by",
    "select_images",
    "select_manifest",
    "write_calibration_manifest",
    "write_manifest",
]

CALIBRATION_KEY = "maps.head_calibration"
"""The config key of the localization heads' calibration split (``head_selected``)."""

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BalanceRequest:
    """Draw ``positives`` images labelled 1.0 and ``negatives`` labelled 0.0 for ``finding``.

    Uncertain (-1.0) and blank labels count as neither, unless ``blank_as_negative`` is set, in
    which case blank ("not mentioned in the report") also counts as negative.
    """

    finding: str
    positives: int
    negatives: int
    blank_as_negative: bool = False

    @classmethod
    def from_config(cls, entry: Mapping[str, Any]) -> BalanceRequest:
        """Build from one config entry ``{finding, positives, negatives[, blank_as_negative]}``."""
        try:
            request = cls(
                finding=str(entry["finding"]),
                positives=int(entry["positives"]),
                negatives=int(entry["negatives"]),
                blank_as_negative=bool(entry.get("blank_as_negative", False)),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise ConfigError(
                f"selection.balance entry {dict(entry)!r} needs finding, positives and negatives"
                f" ({error})"
            ) from error
        if request.finding not in CHEXPERT_FINDINGS:
            raise ConfigError(
                f"selection.balance: unknown finding {request.finding!r}; "
                f"expected one of {CHEXPERT_FINDINGS}"
            )
        if request.positives < 0 or request.negatives < 0:
            raise ConfigError(f"selection.balance: negative count in {dict(entry)!r}")
        return request


def _draw(rng: np.random.Generator, candidates: np.ndarray, count: int) -> np.ndarray:
    """``count`` positions drawn without replacement from ``candidates`` (all when too few)."""
    if count >= candidates.size:
        return candidates
    return rng.choice(candidates, size=count, replace=False)


def _balanced_positions(
    pool: pd.DataFrame, requests: Sequence[BalanceRequest], rng: np.random.Generator
) -> np.ndarray:
    """Row positions of the balanced draw; an image is drawn at most once across requests."""
    taken = np.zeros(len(pool), dtype=bool)
    chosen: list[np.ndarray] = []
    for request in requests:
        values = pool[request.finding].to_numpy()
        negative = values == 0.0
        if request.blank_as_negative:
            negative |= np.isnan(values)
        for kind, mask, count in (
            ("positives", values == 1.0, request.positives),
            ("negatives", negative, request.negatives),
        ):
            candidates = np.flatnonzero(mask & ~taken)
            if candidates.size < count:
                logger.warning(
                    "balance %s: asked for %d %s, only %d available; taking all of them",
                    request.finding,
                    count,
                    kind,
                    candidates.size,
                )
            drawn = _draw(rng, candidates, count)
            taken[drawn] = True
            chosen.append(drawn)
    return np.concatenate(chosen) if chosen else np.empty(0, dtype=np.intp)


def _as_requests(
    balance: Sequence[Mapping[str, Any] | BalanceRequest] | Mapping[str, Any] | None,
) -> list[BalanceRequest]:
    if balance is None:
        return []
    if isinstance(balance, Mapping):
        balance = [balance]
    return [
        entry if isinstance(entry, BalanceRequest) else BalanceRequest.from_config(entry)
        for entry in balance
    ]


def select_manifest(tables: MimicTables, **options: Any) -> pd.DataFrame:
    """The manifest of :func:`select_images` (same parameters), without the exclusions."""
    return select_images(tables, **options)[0]


def select_images(
    tables: MimicTables,
    *,
    root: str | os.PathLike,
    layout: str = "jpg",
    splits: Sequence[str] | None = SPLITS,
    views: Sequence[str] | None = DEFAULT_VIEWS,
    sample_size: int | None = None,
    balance: Sequence[Mapping[str, Any] | BalanceRequest] | Mapping[str, Any] | None = None,
    seed: int = 0,
    n_shards: int = 1,
    named: NamedImages | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Select a study's images into the manifest table (docs/architecture.md).

    Parameters
    ----------
    tables : MimicTables
        From :func:`read_mimic_tables`.
    root : path-like
        The download's top folder; ``image_path`` is ``root/files/...`` (relative when ``root``
        is).
    layout : {"jpg", "dicom", "table"}
        Image file type in the tree, or ``table``: the paths of an image table
        (:mod:`.image_table`; ``tables`` from :func:`.image_table.read_image_table`).
    splits : sequence of str or None
        Splits to keep (``train``, ``validate``, ``test``); None keeps every split.
    views : sequence of str or None
        ``ViewPosition`` values to keep (default PA and AP); ``""`` keeps images without one;
        None keeps every view.
    sample_size : int or None
        Number of images: a random sample without balance, the balanced draw topped up at
        random with it. None: every image (without balance) or only the balanced draw.
    balance : list of dict or BalanceRequest, dict, or None
        ``{finding, positives, negatives[, blank_as_negative]}`` entries, drawn in order, each
        from the images not drawn yet: ``positives`` images labelled 1.0 for the finding and
        ``negatives`` labelled 0.0 (or blank too, with ``blank_as_negative``). When too few
        exist, all are taken and a warning is logged.
    seed : int
        Seed of ``numpy.random.default_rng``; the same tables and seed give the same manifest.
    n_shards : int
        Number of shards: contiguous blocks of the ``dicom_id``-sorted manifest, sizes differing
        by at most one (``shard = row * n_shards // n_rows``).
    named : NamedImages, optional
        Keep exactly the images a VQA table names (:func:`images_named_by`): its ``dicom_id``s,
        and for rows that name only a study, that study's first image (by ``dicom_id``) passing
        the split and view filters. ``sample_size`` and ``balance`` are then ignored.

    Returns
    -------
    manifest : pandas.DataFrame
        :data:`MANIFEST_COLUMNS`, sorted by ``dicom_id``; identifiers as strings, ``shard`` int,
        label columns float with NaN for blank.
    exclusions : pandas.DataFrame
        :data:`.exclusions.EXCLUSION_COLUMNS`: every other image of the metadata table, with
        reason ``split``, ``view`` or ``sampling``.

    Raises
    ------
    ConfigError
        Unknown split, layout or finding, a bad count, or a balanced draw larger than
        ``sample_size``.
    """
    # A single name from a config ("views: PA") means a list of one.
    splits = [splits] if isinstance(splits, str) else splits
    views = [views] if isinstance(views, str) else views
    if n_shards < 1:
        raise ConfigError(f"selection.shards must be at least 1, not {n_shards}")
    if sample_size is not None and sample_size < 1:
        raise ConfigError(f"selection.sample_size must be at least 1 or null, not {sample_size}")
    if splits is not None and (unknown := sorted(set(splits) - set(SPLITS))):
        raise ConfigError(f"selection.splits: unknown split(s) {unknown}; expected {SPLITS}")
    requests = _as_requests(balance)
    if layout != TABLE_LAYOUT:
        _layout_suffix(layout)

    metadata = tables.metadata[["dicom_id", "subject_id", "study_id", "ViewPosition"]]
    try:
        images = metadata.merge(
            tables.split[["dicom_id", "split"]], on="dicom_id", how="left", validate="one_to_one"
        )
    except pd.errors.MergeError as error:
        raise ConfigError(
            f"a dicom_id appears twice in the metadata or split table ({error})"
        ) from error
    excluded = []
    wrong_split = images["split"].isna()
    if splits is not None:
        wrong_split |= ~images["split"].isin(list(splits))
    if wrong_split.any():
        detail = ("split " + images["split"].map(repr) + " not in selection.splits").where(
            images["split"].notna(), "no row in the split table"
        )
        excluded.append(exclusion_rows(images[wrong_split], "split", detail[wrong_split]))
        images = images[~wrong_split]
    if views is not None:
        wrong_view = ~images["ViewPosition"].isin([str(v).strip() for v in views])
        detail = "ViewPosition " + images["ViewPosition"].map(repr) + " not in selection.views"
        excluded.append(exclusion_rows(images[wrong_view], "view", detail[wrong_view]))
        images = images[~wrong_view]
    pool = images.merge(
        tables.labels[LABEL_COLUMNS], on=["subject_id", "study_id"], how="left", validate="m:1"
    )
    n_candidates = len(pool)
    # Sorting first makes every draw independent of the tables' row order.
    pool = pool.sort_values("dicom_id", kind="stable", ignore_index=True)
    candidates = pool

    rng = np.random.default_rng(seed)
    if named is not None:
        by_study = pool[pool["study_id"].isin(named.study_ids)].drop_duplicates("study_id")
        pool = pool[pool["dicom_id"].isin(named.dicom_ids) | pool.index.isin(by_study.index)]
        missing = len(named.dicom_ids) - int(pool["dicom_id"].isin(named.dicom_ids).sum())
        if missing:
            logger.warning("%d image(s) named by the VQA table are not selectable", missing)
    elif requests:
        positions = _balanced_positions(pool, requests, rng)
        if sample_size is not None:
            if positions.size > sample_size:
                raise ConfigError(
                    f"selection.balance draws {positions.size} images, more than "
                    f"selection.sample_size ({sample_size})"
                )
            rest = np.setdiff1d(np.arange(len(pool)), positions, assume_unique=True)
            positions = np.concatenate([positions, _draw(rng, rest, sample_size - positions.size)])
        pool = pool.iloc[np.sort(positions)]
    elif sample_size is not None:
        if sample_size > len(pool):
            logger.warning(
                "sample_size %d is larger than the %d images selected; taking all of them",
                sample_size,
                len(pool),
            )
        pool = pool.iloc[np.sort(_draw(rng, np.arange(len(pool)), sample_size))]

    not_drawn = candidates[~candidates["dicom_id"].isin(pool["dicom_id"])]
    excluded.append(exclusion_rows(not_drawn, "sampling", _sampling_detail(named, requests)))
    exclusions = pd.concat(excluded, ignore_index=True).sort_values(
        "dicom_id", kind="stable", ignore_index=True
    )

    manifest = pool.reset_index(drop=True).rename(columns={"ViewPosition": "view_position"})
    if layout == TABLE_LAYOUT:
        manifest["image_path"] = table_image_paths(root, manifest, tables)
    else:
        manifest["image_path"] = _image_paths(root, layout, manifest)
    manifest["shard"] = np.arange(len(manifest), dtype=np.int64) * n_shards // max(len(manifest), 1)
    manifest[CHEXPERT_FINDINGS] = manifest[CHEXPERT_FINDINGS].astype("float64")
    logger.info(
        "manifest: %d of %d images, in %d shard(s); %d passed the split and view filters; "
        "excluded: %s",
        len(manifest),
        len(tables.metadata),
        n_shards,
        n_candidates,
        _reason_counts(exclusions),
    )
    if manifest.empty:
        loud_warning(
            "the manifest is empty: no image of %s is left to study (%s); see exclusions.csv",
            tables.paths.get("metadata", "the metadata table") if tables.paths else "the tables",
            _reason_counts(exclusions),
        )
    return manifest[MANIFEST_COLUMNS], exclusions


def _sampling_detail(named: NamedImages | None, requests: Sequence[BalanceRequest]) -> str:
    if named is not None:
        return "not named by the VQA table (selection.from_vqa_table)"
    if requests:
        return "not drawn by selection.balance / selection.sample_size"
    return "not drawn by selection.sample_size"


def _reason_counts(exclusions: pd.DataFrame) -> str:
    counts = exclusions["reason"].value_counts()
    return ", ".join(f"{count} {reason}" for reason, count in counts.items()) or "none"


@dataclass(frozen=True)
class NamedImages:
    """The images a VQA table asks about: by ``dicom_id``, or by ``study_id`` alone."""

    dicom_ids: frozenset[str]
    study_ids: frozenset[str]


def images_named_by(vqa_table: str | os.PathLike) -> NamedImages:
    """The images a VQA table (docs/questions.md) names, for ``selection.from_vqa_table``."""
    path = Path(vqa_table)
    if not path.is_file():
        raise ConfigError(f"{path}: VQA table not found (questions.vqa_table)")
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    if not {"dicom_id", "study_id"} & set(table.columns):
        raise ConfigError(f"{path}: missing column 'dicom_id' or 'study_id'")
    blank = pd.Series("", index=table.index)
    dicom_ids = table["dicom_id"].str.strip() if "dicom_id" in table else blank
    # MIMIC's folders write studies as s5xxxxxxx; the tables as 5xxxxxxx.
    study_ids = (
        table["study_id"].str.strip().str.removeprefix("s") if "study_id" in table else blank
    )
    return NamedImages(
        dicom_ids=frozenset(dicom_ids[dicom_ids != ""]),
        study_ids=frozenset(study_ids[(dicom_ids == "") & (study_ids != "")]),
    )


def write_manifest(
    *,
    data: Mapping[str, Any],
    selection: Mapping[str, Any],
    seed: int,
    out_csv: str | os.PathLike,
    vqa_table: str | os.PathLike | None = None,
    exclusions_csv: str | os.PathLike | None = None,
    questions: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """Read the tables named by a config's ``data`` section, select, write ``manifest.csv``.

    Parameters
    ----------
    data : mapping
        The config's ``data`` section: ``root``, ``layout`` (default ``"jpg"``), ``labels``
        (default ``"chexpert"``).
    selection : mapping
        The config's ``selection`` section: ``splits``, ``views``, ``sample_size``, ``balance``,
        ``shards`` (defaults as in config.schema.json).
    seed : int
        The config's ``seed``.
    out_csv : path-like
        Where to write the manifest (atomically).
    vqa_table : path-like, optional
        With ``selection.from_vqa_table``: the table whose images are selected.
    exclusions_csv : path-like, optional
        Where to write the exclusions table (:mod:`.exclusions`; atomically).
    questions : mapping, optional
        The config's ``questions`` section: manifest images none of whose answers can be scored
        are listed in the exclusions as ``no_labels`` (they stay in the manifest), and a loud
        warning says so when that is every image.

    Returns
    -------
    pandas.DataFrame
        The manifest written.
    """
    tables = _read_tables(data)
    manifest, exclusions = select_images(
        tables,
        root=data["root"],
        layout=data.get("layout", "jpg"),
        splits=selection.get("splits", SPLITS),
        views=selection.get("views", DEFAULT_VIEWS),
        sample_size=selection.get("sample_size"),
        balance=selection.get("balance"),
        seed=int(seed),
        n_shards=int(selection.get("shards", 1)),
        named=images_named_by(vqa_table) if selection.get("from_vqa_table") else None,
    )
    if questions is not None:
        unscorable = unscorable_images(manifest, questions)
        if len(unscorable):
            logger.info(
                "%d of the %d manifest images have no scorable label (no_labels in the exclusions)",
                len(unscorable),
                len(manifest),
            )
        if len(manifest) and len(unscorable) == len(manifest):
            loud_warning(
                "none of the %d images in the manifest has a label that can be scored (%s); "
                "every answer will be unscored. See exclusions.csv",
                len(manifest),
                unscorable["detail"].iloc[0],
            )
        exclusions = pd.concat([exclusions, unscorable], ignore_index=True)
    write_csv(manifest, out_csv)
    if exclusions_csv is not None:
        write_exclusions(exclusions, exclusions_csv)
    return manifest


def _read_tables(data: Mapping[str, Any]) -> MimicTables:
    """The tables the config's ``data`` section names (MIMIC-CXR's, or an image table)."""
    if "root" not in data:
        raise ConfigError("config data.root is not set")
    if data.get("layout") == TABLE_LAYOUT:
        if not data.get("table"):
            raise ConfigError("data.layout is table but data.table (the image table) is not set")
        return read_image_table(data["table"])
    return read_mimic_tables(data["root"], labels=data.get("labels", "chexpert"))


def calibration_images(
    data: Mapping[str, Any],
    selection: Mapping[str, Any],
    calibration: Mapping[str, Any],
    seed: int,
    study_patients: Sequence[str] = (),
) -> pd.DataFrame:
    """The calibration images of the localization heads, as a one-shard manifest.

    The images of the official split ``calibration["split"]`` with the study's views, less every
    image of a patient in ``study_patients`` (the study's own images never calibrate), drawn
    like the study's (:func:`select_images`: ``calibration["images"]`` at random with ``seed``,
    from a pool sorted by ``dicom_id``).

    Raises
    ------
    ConfigError
        No image is left (the message names :data:`CALIBRATION_KEY` and the split).
    """
    tables = _read_tables(data)
    split = str(calibration["split"])
    if study_patients:
        keep = ~tables.metadata["subject_id"].isin(set(map(str, study_patients)))
        tables = dataclasses.replace(tables, metadata=tables.metadata[keep])
    manifest, _ = select_images(
        tables,
        root=data["root"],
        layout=data.get("layout", "jpg"),
        splits=[split],
        views=selection.get("views", DEFAULT_VIEWS),
        sample_size=int(calibration["images"]),
        seed=int(seed),
        n_shards=1,
    )
    if manifest.empty:
        source = data.get("table") if data.get("layout") == TABLE_LAYOUT else data["root"]
        raise ConfigError(
            f"{CALIBRATION_KEY}.split: no image of split {split!r} with views "
            f"{list(selection.get('views', DEFAULT_VIEWS))} in {source}"
            + (" outside the study's patients" if study_patients else "")
            + "; name a split that has images"
        )
    return manifest


def write_calibration_manifest(
    *,
    data: Mapping[str, Any],
    selection: Mapping[str, Any],
    calibration: Mapping[str, Any],
    seed: int,
    study_manifest_csv: str | os.PathLike,
    out_csv: str | os.PathLike,
) -> pd.DataFrame:
    """:func:`calibration_images` outside the patients of the study's manifest, written
    (atomically) as ``out_csv``."""
    study = read_table(study_manifest_csv, required=("subject_id",), text=True)
    manifest = calibration_images(
        data, selection, calibration, seed, study_patients=study["subject_id"].unique().tolist()
    )
    logger.info(
        "head calibration: %d image(s) of split %s, none of the study's %d patients",
        len(manifest),
        calibration["split"],
        study["subject_id"].nunique(),
    )
    write_csv(manifest, out_csv)
    return manifest
