"""Which map stands for a sample: the one selector used by statistics, paper page and figures.

A sample can have several maps: one per term and source, and, where several methods were
computed, one per method. Every consumer that needs fewer picks them here, by the same rule:
the method first in the registry's order (:data:`cxr_attention.maps.registry.METHODS`; then the
smallest ``map_id``), and for one map per sample the ``answer`` source when the sample has it
(else the first source in sorted order), then the first term in sorted order.
"""

from __future__ import annotations

import pandas as pd

from cxr_attention.maps.registry import METHODS

__all__ = ["PREFERRED_SOURCE", "select_maps"]

PREFERRED_SOURCE = "answer"
"""Maps of all generated tokens: every sample has one, so strategies compare like with like."""

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
    rank = {m: i for i, m in enumerate(METHODS)}
    ranked = chosen.assign(_method_rank=chosen["method"].map(rank).fillna(len(rank)))
    if one_per == "term":
        ranked = ranked.sort_values(
            ["sample_id", "term", "source", "_method_rank", "map_id"], kind="mergesort"
        )
        ranked = ranked.drop_duplicates(["sample_id", "term", "source"], keep="first")
        return ranked.drop(columns="_method_rank").reset_index(drop=True)
    ranked = ranked.assign(_source_rank=(ranked["source"] != PREFERRED_SOURCE).astype(int))
    ranked = ranked.sort_values(
        ["sample_id", "_source_rank", "source", "term", "_method_rank", "map_id"], kind="mergesort"
    )
    first = ranked.drop_duplicates("sample_id")
    if one_per == "sample_every_method":
        keys = ["sample_id", "source", "term"]
        first = ranked.merge(first[keys], on=keys, how="inner")
        first = first.drop_duplicates(["sample_id", "method"])
    return first.drop(columns=["_source_rank", "_method_rank"]).reset_index(drop=True)
