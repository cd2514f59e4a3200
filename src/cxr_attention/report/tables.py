"""A tidy CSV as a page of the Snakemake report, so that its tables show in the page.

Snakemake's report shows HTML results inline (in an iframe) but offers a CSV only for download;
its documentation points to datavzrd for interactive tables, a separate program. This page needs
nothing beyond the report: the table as plain HTML (:mod:`cxr_attention.report._html`), numbers
right-aligned, with at most ``max_rows`` rows and at most ``max_bytes`` bytes (the CSV beside it
keeps every row). The report embeds the page, so both bounds keep the report's size independent
of the study's (issue 21): a wide table reaches the byte bound before the row bound.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from cxr_attention.io import read_table, write_html
from cxr_attention.report._html import html_page, html_table

__all__ = ["MAX_PAGE_BYTES", "MAX_ROWS", "render_table_page", "write_table_page"]

MAX_ROWS = 2000
"""Rows shown per page: a browser renders this many quickly; the CSV holds the rest."""

MAX_PAGE_BYTES = 500_000
"""Bytes (UTF-8) of a page at most: its share of the report's 15 MB, whatever the table's width."""


def render_table_page(
    table: pd.DataFrame,
    *,
    title: str,
    max_rows: int = MAX_ROWS,
    max_bytes: int = MAX_PAGE_BYTES,
    csv_name: str = "the CSV",
) -> str:
    """The HTML page of ``table``: a line with its size, then as many of its first ``max_rows``
    rows as fit in ``max_bytes``; ``csv_name`` names the file that has every row."""
    if max_rows < 1:
        raise ValueError(f"max_rows must be positive, got {max_rows}")
    numeric = [
        pd.api.types.is_numeric_dtype(table[c]) and not pd.api.types.is_bool_dtype(table[c])
        for c in table.columns
    ]
    shown = min(len(table), max_rows)
    while True:
        page = _page(table, shown, numeric, title=title, csv_name=csv_name)
        size = len(page.encode("utf-8"))
        if size <= max_bytes or shown == 0:
            break
        # Rows are alike in width: scale the count by the overshoot, at least one row fewer.
        shown = min(shown - 1, int(shown * max_bytes / size * 0.98))
        shown = max(shown, 0)
    if size > max_bytes:
        raise ValueError(f"{title}: even without rows the page takes {size} > {max_bytes} bytes")
    return page


def _page(
    table: pd.DataFrame, shown: int, numeric: list[bool], *, title: str, csv_name: str
) -> str:
    lead = f"{len(table)} rows, {len(table.columns)} columns"
    if len(table) > shown:
        lead += f"; the first {shown} shown ({csv_name} has every row)"
    if table.empty:
        body = "<p>The table has no rows in this run.</p>\n"
    else:
        rows = [
            ["" if pd.isna(v) else (float(v) if numeric[j] else v) for j, v in enumerate(row)]
            for row in table.head(shown).itertuples(index=False)
        ]
        body = html_table([str(c) for c in table.columns], rows, numeric=numeric)
    return html_page(title, body, lead=lead)


def write_table_page(
    csv_path: str | os.PathLike, out_html: str | os.PathLike, *, title: str | None = None
) -> Path:
    """Write the page of the table ``csv_path`` to ``out_html`` (atomically); a cut page names
    the CSV (its path as given, e.g. ``results/<run>/metrics/maps.csv``) that has every row."""
    table = read_table(csv_path)
    page = render_table_page(
        table, title=title or Path(csv_path).name, csv_name=f"{Path(csv_path).as_posix()}"
    )
    out_html = Path(out_html)
    write_html(page, out_html)
    return out_html
