"""Groups of the summary figures: question parts, display order, empty panels."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
from matplotlib.axes import Axes

from cxr_attention.figures._style import STRATEGIES

__all__ = ["group_order", "say_empty", "with_question_parts"]


def with_question_parts(table: pd.DataFrame) -> pd.DataFrame:
    """Add ``finding`` and ``strategy`` from ``question_id`` where the table lacks them.

    ``question_id`` is ``<finding_slug>.<strategy>.<variant_index>`` (docs/architecture.md);
    a user VQA table's ``vqa.<row>`` gets finding ``vqa`` and strategy ``vqa``.
    """
    if {"finding", "strategy"} <= set(table.columns) or "question_id" not in table.columns:
        return table
    parts = table["question_id"].astype(str).str.split(".", n=2, expand=True)
    parts = parts.reindex(columns=range(3))
    table = table.copy()
    is_vqa = parts[0].eq("vqa")
    if "finding" not in table.columns:
        table["finding"] = parts[0]
    if "strategy" not in table.columns:
        table["strategy"] = parts[1].where(~is_vqa, "vqa")
    return table


def group_order(values: pd.Series | Sequence[str], by: str) -> list[str]:
    """Display order of groups: the study's strategy order, else sorted; ``"all"`` first."""
    present = sorted({str(v) for v in values if pd.notna(v)})
    known = STRATEGIES if by in ("strategy", "strategy_b", "strategy_a") else ()
    ordered = [s for s in known if s in present] + [s for s in present if s not in known]
    if "all" in ordered:
        ordered.remove("all")
        ordered.insert(0, "all")
    return ordered


def say_empty(ax: Axes) -> None:
    """Write "no data in this run" in the middle of an empty panel."""
    ax.text(0.5, 0.5, "no data in this run", transform=ax.transAxes, ha="center", va="center")
