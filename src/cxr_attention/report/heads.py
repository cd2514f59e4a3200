"""The report's localization-heads page: where ``head_selected``'s heads were chosen and why.

The calibration (rules/heads.smk, `cxr_attention.maps.methods.head_selected`) writes the head
table (one row per calibration sample, captured layer and head) and the chosen heads. The page
shows the split and the number of images and samples they were chosen on, the chosen heads with
their picks, mean image share and mean spatial entropy, and the first :data:`TOP_HEADS` heads in
the order the choice reads them. The head table itself grows with the calibration (34 layers x 8
heads per sample on MedGemma), so the page names the CSV instead of embedding it: the report's
size must not grow with the study (issue 21).
"""

from __future__ import annotations

import html
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from cxr_attention.io import ConfigError, read_table, write_html
from cxr_attention.maps.methods.head_selected import (
    HEAD_COLUMNS,
    head_picks,
    read_head_selection,
)
from cxr_attention.report._html import html_page, html_table

__all__ = ["TOP_HEADS", "render_heads_page", "write_heads_page"]

TOP_HEADS = 20
"""Heads listed in the page's ranking at most; the head table (CSV) has every one."""

_HEADER = [
    "rank",
    "layer",
    "head",
    "picked in (samples)",
    "share of samples",
    "mean image share",
    "mean spatial entropy",
]


def render_heads_page(
    table: pd.DataFrame,
    selection: Mapping[str, Any],
    *,
    csv_name: str = "the head table",
    top: int = TOP_HEADS,
) -> str:
    """The page's HTML.

    Parameters
    ----------
    table : DataFrame
        The head table (``HEAD_COLUMNS``).
    selection : mapping
        The chosen heads' file as `read_head_selection` reads it (``localization_heads``,
        ``split``, ``k``, ``share_quantile``, ``images``, ``samples``).
    csv_name : str
        The head table's file, named as the place to find every row.
    top : int
        Heads listed in the ranking at most.
    """
    k, quantile = int(selection["k"]), float(selection["share_quantile"])
    heads = head_picks(table, k=k, share_quantile=quantile)
    n_samples = int(table["sample_id"].nunique())
    heads.insert(0, "rank", range(1, len(heads) + 1))
    heads["share of samples"] = heads["picks"] / n_samples
    by_pair = heads.set_index(["layer", "head"], drop=False)
    chosen = [
        by_pair.loc[pair] for pair in selection["localization_heads"] if pair in by_pair.index
    ]

    def rows(heads_shown: Iterable[pd.Series]) -> list[list]:
        return [
            [
                int(row["rank"]),
                int(row["layer"]),
                int(row["head"]),
                int(row["picks"]),
                float(row["share of samples"]),
                float(row["image_share"]),
                float(row["spatial_entropy"]),
            ]
            for row in heads_shown
        ]

    numeric = [True] * len(_HEADER)
    pairs = ", ".join(f"({layer}, {head})" for layer, head in selection["localization_heads"])
    parts = [
        "<p>head_selected averages the attention of a few localization heads (Kang et al., CVPR "
        "2025). Each calibration sample's candidates are its heads whose image share (the "
        f"attention its generated rows give the image) is at least the sample's {quantile:g} "
        f"quantile; its {k} candidates of lowest spatial entropy (0: one image token, 1: "
        f"uniform) are its picks; the {k} heads picked in most samples are chosen (ties: lower "
        "mean entropy). docs/maps.md says more.</p>\n",
        f"<h2>Chosen heads (layer, head): {html.escape(pairs)}</h2>\n",
    ]
    if len(chosen) < len(selection["localization_heads"]):
        parts.append(
            '<p class="warning">Some chosen heads are not in the head table: it and the '
            "chosen heads' file come from different calibrations.</p>\n"
        )
    parts.append(html_table(_HEADER, rows(chosen), numeric=numeric))
    shown = min(top, len(heads))
    which = f"The first {shown} of {len(heads)}" if shown < len(heads) else f"All {shown}"
    parts.append(f"<h2>{which} heads, in the order of the choice</h2>\n")
    parts.append(
        html_table(_HEADER, rows(row for _, row in heads.head(shown).iterrows()), numeric=numeric)
    )
    parts.append(
        f"<p>Every head of every sample ({len(table)} rows: sample_id, layer, head, image_share, "
        f"spatial_entropy) is in <code>{html.escape(csv_name)}</code>, which the report does not "
        "embed because it grows with the calibration.</p>\n"
    )
    lead = (
        f"Chosen on split {selection['split']}: {int(selection['images'])} image(s), "
        f"{int(selection['samples'])} sample(s) (image, question); k = {k}, share quantile "
        f"{quantile:g}."
    )
    return html_page("Localization heads", "".join(parts), lead=lead)


def write_heads_page(
    table_csv: str | os.PathLike,
    selection_json: str | os.PathLike,
    out_html: str | os.PathLike,
    *,
    top: int = TOP_HEADS,
) -> Path:
    """Write the page of the calibration's head table and chosen heads (atomically); the page
    names ``table_csv`` (its path as given, e.g. ``results/<run>/heads/heads.csv``) and ranks
    ``top`` heads at most."""
    table = read_table(table_csv, required=HEAD_COLUMNS)
    if table.empty:
        raise ConfigError(f"{table_csv}: no head statistics (no calibration sample)")
    page = render_heads_page(
        table,
        read_head_selection(selection_json),
        csv_name=Path(table_csv).as_posix(),
        top=top,
    )
    out_html = Path(out_html)
    write_html(page, out_html)
    return out_html
