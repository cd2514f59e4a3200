"""The report's faithfulness and reliance pages: each study table with its CIs and one sentence on
how to read it (``docs/faithfulness.md`` says more)."""

from __future__ import annotations

import html
import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from cxr_attention.io import read_table, write_html
from cxr_attention.report._html import html_page, html_table

__all__ = ["FAITHFULNESS_READING", "RELIANCE_READING", "write_tables_page"]

FAITHFULNESS_READING = {
    "Deletion and insertion against random orders": (
        "difference = mean over maps of (map's area - the random orders' mean area), CI over "
        "patients. A faithful map: deletion below 0, insertion, lerf and road_combined above 0; "
        "a CI that spans 0 means the map ranks cells no better than chance."
    ),
    "Cascading randomisation": (
        "Similarity of each map to the original model's after randomising the last "
        "layers_randomised layers: abs_spearman, the mean |Spearman| (CI over patients), and "
        "SSIM. A map that explains the model falls towards 0 on abs_spearman (unrelated maps "
        "score about 0.05, smooth ones more); one that stays high reflects the image or the "
        "prompt, not the weights. Judge |Spearman|, not the signed spearman (its mean, shown only "
        "to say whether the maps reverse): a map whose ranking reverses (-0.5) keeps the "
        "original's structure as much as one at +0.5."
    ),
    "Question randomisation": (
        "swap - paraphrase below 0 (abs_spearman, the mean |Spearman|, and ssim): changing the "
        "finding changes the map more than rewording the question does (the paraphrase null); a "
        "reversed map (signed spearman below 0) still resembles the other."
    ),
}
RELIANCE_READING = {
    "Answers under each condition": (
        "share_unchanged near 1 under blank, swapped and text_only means the answer does not "
        "depend on the image; p_yes_shift is the mean change of P(yes), CIs over patients."
    ),
    "Paraphrase consistency x image reliance": (
        "Share of (image, question) groups in each cell. Consistent but not reliant: stable "
        "answers that the image does not drive."
    ),
}


def _numeric(table: pd.DataFrame) -> list[bool]:
    return [pd.api.types.is_numeric_dtype(table[c]) and table[c].dtype != bool for c in table]


def write_tables_page(
    csv_paths: Sequence[str | os.PathLike],
    readings: dict[str, str],
    out_html: str | os.PathLike,
    *,
    title: str,
) -> Path:
    """One page: each table (in ``readings``' order) under its heading and reading sentence."""
    body = []
    for (heading, reading), path in zip(readings.items(), csv_paths, strict=True):
        table = read_table(path)
        rows = [
            ["" if pd.isna(v) else (float(v) if isinstance(v, int | float) else v) for v in row]
            for row in table.itertuples(index=False)
        ]
        body.append(f"<h2>{html.escape(heading)}</h2>\n<p>{html.escape(reading)}</p>\n")
        body.append(
            html_table([str(c) for c in table.columns], rows, numeric=_numeric(table))
            if len(table)
            else "<p>No rows.</p>\n"
        )
    out_html = Path(out_html)
    write_html(html_page(title, "".join(body)), out_html)
    return out_html
