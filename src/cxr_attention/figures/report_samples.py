"""Which samples' figures enter the report: a study-wide cap shared out over the shards.

The report embeds every registered sample figure, so its size grows with their number. The cap
(``figures.report_samples``) bounds that number by the configuration, not by the study's images
or shards. This module draws nothing and imports no plotting library: the workflow reads the
quota when it parses the rules (rules/figures.smk).
"""

from __future__ import annotations

import pandas as pd

from cxr_attention.io import ConfigError

__all__ = ["report_sample_quota", "select_report_samples"]


def report_sample_quota(cap: int, shard: int, shards: int) -> int:
    """The samples shard ``shard`` (0-based, of ``shards``) may draw of a study-wide ``cap``.

    The cap is shared out evenly, the first shards taking one more when it does not divide: the
    quotas sum to ``cap`` for any number of shards, so the report's sample figures are bounded by
    the configuration and not by the study's size, and a shard needs no other shard's table.
    """
    if cap < 0 or shards < 1 or not 0 <= shard < shards:
        raise ConfigError(f"no report quota for shard {shard} of {shards} with a cap of {cap}")
    return cap // shards + (1 if shard < cap % shards else 0)


def select_report_samples(samples: pd.DataFrame, limit: int) -> pd.DataFrame:
    """The first ``limit`` distinct samples (``dicom_id``, ``finding``), by image then finding.

    Sorting by the keys themselves (not by table order) makes the choice the same on every run
    and whatever order a shard's rows come in. Returns a frame of those two columns as strings.
    """
    missing = [c for c in ("dicom_id", "finding") if c not in samples.columns]
    if missing:
        raise ConfigError(f"samples table lacks columns {missing}")
    keys = samples[["dicom_id", "finding"]].astype(str).drop_duplicates()
    keys = keys.sort_values(["dicom_id", "finding"], kind="stable")
    return keys.head(max(limit, 0)).reset_index(drop=True)
