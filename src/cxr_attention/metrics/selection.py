"""Which map stands for a sample: the one selector used by statistics, paper page and figures.

A sample can have several maps: one per term and source, and, where several methods were
computed, one per method. Every consumer that needs fewer picks them here, by the same rule:
the method first in the registry's order (:data:`cxr_attention.maps.registry.METHODS`; then the
smallest ``map_id``), the decision step's rows before the mean over all generated rows (maps
table column ``rows``: ``decision`` | ``all``), and for one map per sample the ``answer`` source
when the sample has it (else the first source in sorted order), then the first term in sorted
order.

The statistics never pool methods: :func:`statistics_maps` keeps every method (and drops the
counterfactual maps, of terms absent from the answer), each statistic is computed per method and
per ``rows`` (:data:`PAIR_KEYS`), and the headline numbers are those of :func:`headline_maps`:
the answer maps of the decision step made by :data:`HEADLINE_METHOD`.
"""

from __future__ import annotations

import pandas as pd

from cxr_attention.maps.registry import METHODS

__all__ = [
    "HEADLINE_METHOD",
    "HEADLINE_ROWS",
    "METHOD_KEYS",
    "PREFERRED_SOURCE",
    "headline_maps",
    "select_maps",
    "statistics_maps",
    "with_method_keys",
]

PREFERRED_SOURCE = "answer"
"""Maps of the answer: every sample has one, so strategies compare like with like."""

HEADLINE_METHOD = "attention"
"""The method of the headline numbers (every other method is reported beside it, never pooled)."""

HEADLINE_ROWS = "decision"
"""The rows of the headline answer map: the step that chose the first answer token."""

METHOD_KEYS = ("method", "rows")
"""What a statistic is computed per: two maps are compared only when these agree."""


def _column(maps: pd.DataFrame, name: str, default: object) -> pd.Series:
    if name in maps.columns:
        return maps[name]
    return pd.Series(default, index=maps.index, dtype=object)


def _is_true(values: pd.Series) -> pd.Series:
    return values.astype(str).str.strip().str.lower().isin(["true", "1", "1.0", "yes"])


def with_method_keys(maps: pd.DataFrame) -> pd.DataFrame:
    """``maps`` with a ``rows`` column (blank where the table has none: an older maps table)."""
    if "rows" in maps.columns:
        return maps.assign(rows=maps["rows"].fillna("").astype(str))
    return maps.assign(rows="")


def statistics_maps(maps: pd.DataFrame) -> pd.DataFrame:
    """The maps the statistics use: every method and rows, without the counterfactual maps and
    the per-layer maps.

    A counterfactual map (column ``counterfactual`` true) is a term map of a term absent from the
    answer; it stays in the maps table and its figures but never enters an answer statistic. A
    per-layer map (column ``per_layer`` true) is one captured layer's share of an attention map,
    for the report's figure; counted beside the map over all layers it would weigh the same sample
    several times.
    """
    dropped = _is_true(_column(maps, "counterfactual", False)) | _is_true(
        _column(maps, "per_layer", False)
    )
    kept = maps[~dropped]
    return with_method_keys(kept)


def headline_maps(
    maps: pd.DataFrame, *, source: str = PREFERRED_SOURCE, one_per: str = "term"
) -> pd.DataFrame:
    """The headline maps: of ``source``, made by :data:`HEADLINE_METHOD`, rows
    :data:`HEADLINE_ROWS` (where the table records rows), not counterfactual; one per sample and
    term, or per sample (``one_per``, as in :func:`select_maps`)."""
    kept = statistics_maps(maps)
    kept = kept[(kept["source"] == source) & (kept["method"] == HEADLINE_METHOD)]
    kept = kept[kept["rows"].isin(["", HEADLINE_ROWS])]
    return select_maps(kept, one_per=one_per)


_ONE_PER = ("term", "sample", "sample_every_method")


def select_maps(
    maps: pd.DataFrame, *, source: str | None = None, one_per: str = "term"
) -> pd.DataFrame:
    """The maps that stand for each sample (of ``source`` only, if given).

    Parameters
    ----------
    maps : DataFrame
        Maps table: ``map_id, sample_id, term, source, method`` at least.
    source : str, optional
        Keep only the maps of this source.
    one_per : str
        ``"term"``: one map per sample, term and source, of the preferred method (statistics).
        ``"sample"``: one map per sample: preferred source, first term, preferred method.
        ``"sample_every_method"``: that source and term of each sample, one map per method
        (figures that set methods side by side).

    Returns
    -------
    DataFrame
        The chosen rows with a fresh index, sorted by ``sample_id`` (then term and source for
        ``"term"``, method preference for ``"sample_every_method"``).
    """
    if one_per not in _ONE_PER:
        raise ValueError(f"one_per must be one of {_ONE_PER}, got {one_per!r}")
    chosen = maps if source is None else maps[maps["source"] == source]
    # A per-layer map is one layer's share of a map, never the map that stands for a sample.
    chosen = chosen[~_is_true(_column(chosen, "per_layer", False))]
    rank = {m: i for i, m in enumerate(METHODS)}
    ranked = chosen.assign(
        _method_rank=chosen["method"].map(rank).fillna(len(rank)),
        _rows_rank=(_column(chosen, "rows", HEADLINE_ROWS).astype(str) != HEADLINE_ROWS).astype(
            int
        ),
    )
    if one_per == "term":
        ranked = ranked.sort_values(
            ["sample_id", "term", "source", "_method_rank", "_rows_rank", "map_id"],
            kind="mergesort",
        )
        ranked = ranked.drop_duplicates(["sample_id", "term", "source"], keep="first")
        return ranked.drop(columns=["_method_rank", "_rows_rank"]).reset_index(drop=True)
    ranked = ranked.assign(_source_rank=(ranked["source"] != PREFERRED_SOURCE).astype(int))
    ranked = ranked.sort_values(
        ["sample_id", "_source_rank", "source", "term", "_method_rank", "_rows_rank", "map_id"],
        kind="mergesort",
    )
    first = ranked.drop_duplicates("sample_id")
    if one_per == "sample_every_method":
        keys = ["sample_id", "source", "term"]
        first = ranked.merge(first[keys], on=keys, how="inner")
        first = first.drop_duplicates(["sample_id", "method"])
    return first.drop(columns=["_source_rank", "_method_rank", "_rows_rank"]).reset_index(drop=True)
