"""The paper comparison page: ``paper_comparison.csv`` as a table with one sentence per row.

The sentence saying whether our value agrees with the paper's comes from
:func:`cxr_attention.metrics.paper.agreement_sentence` (the paper's value inside our 95%
bootstrap interval, or equal for counts); any callable taking a row may replace it.
"""

from __future__ import annotations

import html
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from cxr_attention.io import ConfigError, atomic_path
from cxr_attention.metrics.paper import COMPARISON_COLUMNS, agreement_sentence
from cxr_attention.report._html import html_page, html_table

__all__ = ["render_paper_comparison", "write_paper_comparison_page"]

Sentence = Callable[[Mapping[str, Any] | pd.Series], str]

_INTRO = (
    "Our run's value of each headline quantity of the reference paper, with a 95% bootstrap "
    "interval (resampling images or question groups) and the number of observations, beside the "
    "paper's value; the last column says in one sentence whether they agree. Fractions are shown "
    "as fractions (0.74 = 74%)."
)


def render_paper_comparison(
    table: pd.DataFrame,
    *,
    sentence: Sentence = agreement_sentence,
    title: str = "Comparison with the reference paper",
    note: str | None = None,
) -> str:
    """The comparison table as a self-contained HTML page (no scripts).

    Parameters
    ----------
    table : DataFrame
        ``paper_comparison.csv``: ``quantity, paper_value, ours, ci_low, ci_high, n``.
    sentence : callable
        Row (mapping or Series with those columns) to one sentence on agreement.
    title : str
    note : str, optional
        A paragraph under the introduction (e.g. that a demo run's numbers are meaningless).

    Returns
    -------
    str
        HTML document.
    """
    missing = [c for c in COMPARISON_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"paper comparison table lacks columns {missing}")
    rows = []
    for _, row in table.iterrows():
        rows.append(
            [
                str(row["quantity"]),
                _as_float(row["paper_value"]),
                _as_float(row["ours"]),
                _as_float(row["ci_low"]),
                _as_float(row["ci_high"]),
                "" if pd.isna(row["n"]) else str(int(float(row["n"]))),
                sentence(row),
            ]
        )
    body = f"<p>{html.escape(_INTRO)}</p>\n"
    if note:
        body += f"<p><strong>{html.escape(note)}</strong></p>\n"
    if rows:
        body += html_table(
            ["quantity", "paper", "ours", "95% CI low", "95% CI high", "n", "agreement"],
            rows,
            numeric=[False, True, True, True, True, True, False],
        )
    else:
        body += "<p>The comparison table has no rows.</p>\n"
    return html_page(title, body)


def write_paper_comparison_page(
    comparison_csv: str | os.PathLike,
    out_html: str | os.PathLike,
    *,
    sentence: Sentence = agreement_sentence,
    note: str | None = None,
) -> Path:
    """Read ``paper_comparison.csv`` and write its page atomically.

    Raises
    ------
    ConfigError
        When the file lacks one of the comparison columns.
    """
    table = pd.read_csv(comparison_csv)
    missing = [c for c in COMPARISON_COLUMNS if c not in table.columns]
    if missing:
        raise ConfigError(f"{comparison_csv}: missing columns {missing}")
    out_html = Path(out_html)
    with atomic_path(out_html, ".html") as tmp:
        tmp.write_text(render_paper_comparison(table, sentence=sentence, note=note), "utf-8")
    return out_html


def _as_float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")
