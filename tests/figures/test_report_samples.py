"""The study-wide cap on the samples whose figures enter the report (figures.report_samples)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cxr_attention.figures.report_samples import report_sample_quota, select_report_samples
from cxr_attention.io import ConfigError

FINDINGS = ("atelectasis", "cardiomegaly", "edema", "pleural_effusion")


def _study(images: int, seed: int = 0) -> pd.DataFrame:
    """Every image asked about every finding, several questions each, rows in random order."""
    rows = [
        {"dicom_id": f"img{i:05d}", "finding": finding, "question_id": f"{finding}.{q}"}
        for i in range(images)
        for finding in FINDINGS
        for q in range(2)
    ]
    table = pd.DataFrame(rows)
    return table.sample(frac=1, random_state=seed).reset_index(drop=True)


def _keys(frame: pd.DataFrame) -> list[tuple[str, str]]:
    return list(frame[["dicom_id", "finding"]].itertuples(index=False, name=None))


def test_the_first_samples_by_image_then_finding_hand_computed():
    table = pd.DataFrame(
        {
            "dicom_id": ["b", "a", "c", "a", "b", "a"],
            "finding": ["edema", "edema", "edema", "cardiomegaly", "cardiomegaly", "edema"],
        }
    )
    # Distinct samples sorted: (a, cardiomegaly), (a, edema), (b, cardiomegaly), (b, edema), (c...)
    assert _keys(select_report_samples(table, 3)) == [
        ("a", "cardiomegaly"),
        ("a", "edema"),
        ("b", "cardiomegaly"),
    ]
    assert _keys(select_report_samples(table, 0)) == []
    assert len(select_report_samples(table, 50)) == 5  # fewer samples than the cap: all of them


def test_a_study_of_5000_samples_gives_exactly_the_cap_the_same_each_time():
    study = _study(1250)  # 1,250 images x 4 findings = 5,000 samples (10,000 rows)
    assert len(study[["dicom_id", "finding"]].drop_duplicates()) == 5000
    chosen = select_report_samples(study, 12)
    assert len(chosen) == 12
    # Whatever order the rows come in, the same samples: the first three images, every finding.
    reordered = select_report_samples(_study(1250, seed=1), 12)
    assert _keys(chosen) == _keys(reordered)
    assert _keys(chosen) == [(f"img{i:05d}", f) for i in range(3) for f in FINDINGS]
    assert ("img00003", "atelectasis") not in _keys(chosen)


def test_the_shards_quotas_share_the_cap_out_whatever_the_number_of_shards():
    assert [report_sample_quota(5, k, 3) for k in range(3)] == [2, 2, 1]
    assert [report_sample_quota(2, k, 4) for k in range(4)] == [1, 1, 0, 0]
    for cap in range(0, 40):
        for shards in (1, 2, 3, 7, 20, 250):
            quotas = [report_sample_quota(cap, k, shards) for k in range(shards)]
            assert sum(quotas) == cap
            assert max(quotas) - min(quotas) <= 1


@pytest.mark.parametrize(("cap", "shard", "shards"), [(-1, 0, 2), (4, 2, 2), (4, 0, 0)])
def test_an_impossible_quota_is_a_clear_error(cap, shard, shards):
    with pytest.raises(ConfigError, match="no report quota"):
        report_sample_quota(cap, shard, shards)


def test_a_samples_table_without_its_keys_is_a_clear_error():
    with pytest.raises(ConfigError, match="finding"):
        select_report_samples(pd.DataFrame({"dicom_id": ["a"]}), 1)


@pytest.mark.parametrize("shards", [1, 2, 7, 50, 400])
def test_the_samples_drawn_over_a_sharded_study_stay_within_the_cap(shards):
    """A 5,000-sample study split as the workflow splits it: each shard draws its quota alone."""
    cap = 12
    study = _study(1250)
    parts = np.array_split(np.array(sorted(set(study["dicom_id"]))), shards)
    drawn = []
    for k, images in enumerate(parts):
        shard = study[study["dicom_id"].isin(images)]
        drawn += _keys(select_report_samples(shard, report_sample_quota(cap, k, shards)))
    assert len(drawn) == len(set(drawn)) == cap  # every shard has samples enough to fill its share
