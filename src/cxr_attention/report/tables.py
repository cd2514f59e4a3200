"""A tidy CSV as a page of the Snakemake report, so that its tables show in the page.

Snakemake's report shows HTML results inline (in an iframe) but offers a CSV only for download;
its documentation points to datavzrd for interactive tables, a separate program. This page needs
nothing beyond the report: the table as plain HTML (:mod:`cxr_attention.report._html`), numbers
right-aligned, with at most ``max_rows`` rows (the CSV beside it keeps every row).
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from cxr_attention.io import atomic_path, read_table
from cxr_attention.report._html import html_page, html_table

__all__ = ["MAX_ROWS", "render_table_page", "write_table_page"]

MAX_ROWS = 2000
"""Rows shown per page: a browser renders this many quickly; the CSV holds the rest."""


def render_table_page(table: pd.DataFrame, *, title: str, max_rows: int = MAX_ROWS) -> str:
    """The HTML page of ``table``: a line with its size, then its first ``max_rows`` rows."""
    if max_rows < 1:
        raise ValueError(f"max_rows must be positive, got {max_rows}")
    shown = table.head(max_rows)
    numeric = [
        pd.api.types.is_numeric_dtype(table[c]) and not pd.api.types.is_bool_dtype(table[c])
        for c in table.columns
    ]
    lead = f"{len(table)} rows, {len(table.columns)} columns"
    if len(table) > max_rows:
        lead += f"; the first {max_rows} shown (the CSV has every row)"
    if table.empty:
        body = "<p>The table has no rows in this run.</p>\n"
    else:
        rows = [
            ["" if pd.isna(v) else (float(v) if numeric[j] else v) for j, v in enumerate(row)]
            for row in shown.itertuples(index=False)
        ]
        body = html_table([str(c) for c in table.columns], rows, numeric=numeric)
    return html_page(title, body, lead=lead)


def write_table_page(
    csv_path: str | os.PathLike, out_html: str | os.PathLike, *, title: str | None = None
) -> Path:
    """Write the page of the table ``csv_path`` to ``out_html`` (atomically)."""
    table = read_table(csv_path)
    page = render_table_page(table, title=title or Path(csv_path).name)
    out_html = Path(out_html)
    with atomic_path(out_html, ".html") as tmp:
        Path(tmp).write_text(page, encoding="utf-8")
    return out_html
