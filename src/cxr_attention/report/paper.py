"""The paper comparison page: ``paper_comparison.csv`` as a table with one sentence per row.

The sentence saying whether our value agrees with the paper's comes from
:func:`cxr_attention.metrics.paper.agreement_sentence` (the paper's value inside our 95%
bootstrap interval, or equal for counts); any callable taking a row may replace it.

With the ``reference_compat`` tables of a run (:mod:`cxr_attention.reference.shard`), the page
gets a second section: the reference's numbers recomputed the reference's way from our own
captures beside the corrected pipeline's, on the same samples, with a sentence per quantity on
where the difference comes from (:func:`reference_compat_summary`).
"""

from __future__ import annotations

import html
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from cxr_attention.io import ConfigError, read_table, write_html
from cxr_attention.metrics.paper import COMPARISON_COLUMNS, agreement_sentence
from cxr_attention.reference.shard import REFERENCE_COMPAT_COLUMNS
from cxr_attention.report._html import as_float, format_number, html_page, html_table

__all__ = [
    "REFERENCE_COMPAT_QUANTITIES",
    "reference_compat_summary",
    "render_paper_comparison",
    "write_paper_comparison_page",
]

Sentence = Callable[[Mapping[str, Any] | pd.Series], str]

_INTRO = (
    "Our run's value of each headline quantity of the reference paper, with a 95% bootstrap "
    "interval (resampling images or question groups) and the number of observations, beside the "
    "paper's value; the last column says in one sentence whether they agree. Fractions are shown "
    "as fractions (0.74 = 74%). Like with like: the paper's Jensen-Shannon, Pearson and cosine "
    "values come from 14 baseline-variant pairs that all flip the answer, so our rows of the same "
    "name are over our answer flips; the rows ending in _all_pairs give every pair, flips or not. "
    "Our maps are the answer maps made by attention at the decision step."
)


def render_paper_comparison(
    table: pd.DataFrame,
    *,
    sentence: Sentence = agreement_sentence,
    title: str = "Comparison with the reference paper",
    note: str | None = None,
    reference_compat: pd.DataFrame | None = None,
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
    reference_compat : DataFrame, optional
        The run's ``reference_compat`` rows (columns of
        :data:`cxr_attention.reference.shard.REFERENCE_COMPAT_COLUMNS`, all shards together).
        When given, a second section sets the reference's numbers beside the corrected ones
        (:func:`reference_compat_summary`); an empty table gets a sentence saying so.

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
                as_float(row["paper_value"]),
                as_float(row["ours"]),
                as_float(row["ci_low"]),
                as_float(row["ci_high"]),
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
    if reference_compat is not None:
        body += _reference_compat_section(reference_compat)
    return html_page(title, body)


def write_paper_comparison_page(
    comparison_csv: str | os.PathLike,
    out_html: str | os.PathLike,
    *,
    sentence: Sentence = agreement_sentence,
    note: str | None = None,
    reference_compat_csvs: Sequence[str | os.PathLike] = (),
) -> Path:
    """Read ``paper_comparison.csv`` and write its page atomically.

    Parameters
    ----------
    comparison_csv : path
        ``paper_comparison.csv``.
    out_html : path
    sentence : callable
        Row to one sentence on agreement.
    note : str, optional
        A paragraph under the introduction.
    reference_compat_csvs : sequence of paths
        The run's ``reference_compat/shard-<k>.csv`` tables. When not empty, the page gets the
        section "The reference's numbers from our own captures" (see
        :func:`render_paper_comparison`); without them the page is as before.

    Raises
    ------
    ConfigError
        When the comparison file lacks one of its columns, or a ``reference_compat`` table is
        empty or lacks a column the section reads.
    """
    table = read_table(comparison_csv, required=COMPARISON_COLUMNS)
    if isinstance(reference_compat_csvs, str | os.PathLike):  # one path, not its characters
        reference_compat_csvs = [reference_compat_csvs]
    compat = _read_reference_compat(reference_compat_csvs) if reference_compat_csvs else None
    page = render_paper_comparison(table, sentence=sentence, note=note, reference_compat=compat)
    out_html = Path(out_html)
    write_html(page, out_html)
    return out_html


# --------------------------------------------------------------------------- reference_compat

#: The quantities of the reference_compat section: label -> (the reference's columns, the
#: corrected pipeline's columns), names from
#: :data:`cxr_attention.reference.shard.REFERENCE_COMPAT_COLUMNS`. Focus compares like with
#: like: the reference's largest (masked) cell against our largest cell (``focus_max``); our
#: top-5% ``focus`` is given beside it.
REFERENCE_COMPAT_QUANTITIES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "map mass in grid cell 0": (("ref_first_cell_mass",), ("first_cell_mass",)),
    "entropy (nats)": (("ref_entropy",), ("entropy",)),
    "focus": (("ref_focus",), ("focus_max", "focus")),
    "inside-body": (
        ("ref_inside_body_runner", "ref_inside_body", "ref_inside_body_batch"),
        ("inside_body",),
    ),
}

_COMPAT_NAMED = {c for ref, ours in REFERENCE_COMPAT_QUANTITIES.values() for c in ref + ours}
if not _COMPAT_NAMED.issubset(REFERENCE_COMPAT_COLUMNS):  # a rename there must not pass silently
    raise ImportError(
        "report.paper reads reference_compat columns that REFERENCE_COMPAT_COLUMNS lacks: "
        f"{sorted(_COMPAT_NAMED - set(REFERENCE_COMPAT_COLUMNS))}"
    )
#: The value columns the section reads, in the table's own order.
_COMPAT_USED = [c for c in REFERENCE_COMPAT_COLUMNS if c in _COMPAT_NAMED]

#: What each column is called inside a table cell holding two values.
_COMPAT_CELL_NAMES = {
    "ref_inside_body_runner": "runner's largest-contour mask",
    "ref_inside_body": "inverted Otsu mask",
    "ref_inside_body_batch": "batch ratio, renormalised",
    "focus_max": "largest cell",
    "focus": "top 5% of cells",
}

_COMPAT_HEADING = "The reference's numbers from our own captures"
_COMPAT_EMPTY = "The reference_compat tables have no samples: nothing to compare."
_COMPAT_NO_PAIRS = (
    "No sample of the reference_compat tables has finite values on both the reference's and the "
    "corrected side: nothing to compare."
)
_COMPAT_INTRO = (
    "The same captures as the corrected pipeline, read the reference's way (the reference_compat "
    "option, never the default). Its map takes key positions 1:257 as the 256 image tokens; with "
    "the question before the image those start with <start_of_turn> at position 1, an attention "
    "sink that lands in grid cell 0. Its runner scored inside-body on a non-inverted, "
    "largest-contour mask (the body with the lungs); the batch app's mask inverts an Otsu "
    "threshold, so it keeps the dark pixels (outside air and aerated lung) instead of the body; "
    "both are shown. Each row gives means "
    "over the samples with finite values on both sides; n counts them. Not reproduced: the "
    "reference's re-run without token_type_ids (the attention here is the generation's)."
)


def reference_compat_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Means of the reference's and the corrected values per quantity, on the same samples.

    Parameters
    ----------
    table : DataFrame
        ``reference_compat`` rows with at least the columns of
        :data:`REFERENCE_COMPAT_QUANTITIES`.

    Returns
    -------
    DataFrame
        One row per quantity, in the order of :data:`REFERENCE_COMPAT_QUANTITIES`: ``quantity``,
        ``n`` (samples whose every column of that quantity is finite) and one column per
        value column holding its mean over those samples (NaN where the column is not one of
        the quantity's, or ``n`` is 0).

    Raises
    ------
    ValueError
        When a column is missing.
    """
    missing = [c for c in _COMPAT_USED if c not in table.columns]
    if missing:
        raise ValueError(f"reference_compat table lacks columns {missing}")
    values = table[_COMPAT_USED].apply(pd.to_numeric, errors="coerce").astype(float)
    finite = values.apply(lambda column: column.map(math.isfinite)).astype(bool)
    rows = []
    for quantity, (reference, corrected) in REFERENCE_COMPAT_QUANTITIES.items():
        columns = list(reference + corrected)
        same_samples = finite[columns].all(axis=1)
        row: dict[str, Any] = {"quantity": quantity, "n": int(same_samples.sum())}
        row.update(dict.fromkeys(_COMPAT_USED, math.nan))
        if row["n"]:
            row.update(values.loc[same_samples, columns].mean().to_dict())
        rows.append(row)
    return pd.DataFrame(rows, columns=["quantity", "n", *_COMPAT_USED])


def _percent(value: float) -> str:
    return f"{100 * value:.3g}%" if math.isfinite(value) else "no value"


def _number(value: float) -> str:
    return format_number(value) if math.isfinite(value) else "no value"


def _explain_first_cell(means: Mapping[str, float]) -> str:
    return (
        "The reference's image keys start at prompt position 1, an attention sink, which becomes "
        f"grid cell 0: that cell holds {_percent(means['ref_first_cell_mass'])} of its map. The "
        "corrected map, on the image tokens only, gives it "
        f"{_percent(means['first_cell_mass'])} (a uniform map: 1/256 = 0.39%)."
    )


def _explain_entropy(means: Mapping[str, float]) -> str:
    return (
        "The reference's entropy is that of its map cut to the cells its inverted mask keeps (air "
        "and lung, not the body), renormalised, with 1e-10 added per cell: "
        f"{_number(means['ref_entropy'])} nats. The corrected map's entropy over all 256 tokens "
        f"is {_number(means['entropy'])} nats (a uniform map: ln 256 = 5.545)."
    )


def _explain_focus(means: Mapping[str, float]) -> str:
    return (
        "The reference's focus is the largest cell of its map after the inverted mask and before "
        "renormalising, so the mass on the cells the mask drops never counts: "
        f"{_number(means['ref_focus'])}. The corrected map's largest cell holds "
        f"{_number(means['focus_max'])} and its 13 largest cells {_number(means['focus'])}."
    )


def _explain_inside_body(means: Mapping[str, float]) -> str:
    return (
        "The reference's 99.99% is its batch ratio, which renormalises the masked map before "
        "summing it and so reads 1 for any map (here "
        f"{_percent(means['ref_inside_body_batch'])}). Its runner's per-map 0.13-0.19 came from "
        "a non-inverted, largest-contour mask that leaves the sink cell 0 (outside air) out: "
        f"{_percent(means['ref_inside_body_runner'])} here. The batch app's inverted Otsu mask, "
        "which keeps the dark pixels instead of the body, would give "
        f"{_percent(means['ref_inside_body'])}. Our maps put "
        f"{_percent(means['inside_body'])} of their mass inside the body."
    )


_COMPAT_EXPLAIN: dict[str, Callable[[Mapping[str, float]], str]] = {
    "map mass in grid cell 0": _explain_first_cell,
    "entropy (nats)": _explain_entropy,
    "focus": _explain_focus,
    "inside-body": _explain_inside_body,
}


def _compat_cell(means: Mapping[str, float], columns: tuple[str, ...]) -> float | str:
    """One mean as a number; several as text naming each (e.g. both inside-body ratios)."""
    if len(columns) == 1:
        return float(means[columns[0]])
    if not any(math.isfinite(means[column]) for column in columns):
        return ""
    return "; ".join(
        f"{format_number(means[column])} ({_COMPAT_CELL_NAMES[column]})" for column in columns
    )


def _reference_compat_section(table: pd.DataFrame) -> str:
    """The section "The reference's numbers from our own captures" of the comparison page."""
    body = f"<h2>{html.escape(_COMPAT_HEADING)}</h2>\n<p>{html.escape(_COMPAT_INTRO)}</p>\n"
    if table.empty:
        return body + f"<p>{html.escape(_COMPAT_EMPTY)}</p>\n"
    summary = reference_compat_summary(table)
    if not summary["n"].any():
        return body + f"<p>{html.escape(_COMPAT_NO_PAIRS)}</p>\n"
    rows = []
    for record in summary.to_dict("records"):
        reference, corrected = REFERENCE_COMPAT_QUANTITIES[record["quantity"]]
        if record["n"]:
            why = _COMPAT_EXPLAIN[record["quantity"]](record)
        else:
            why = f"No sample has the {record['quantity']} on both sides."
        rows.append(
            [
                record["quantity"],
                _compat_cell(record, reference),
                _compat_cell(record, corrected),
                str(record["n"]),
                why,
            ]
        )
    return body + html_table(
        ["quantity", "reference way", "corrected", "n", "why they differ"],
        rows,
        # Left-aligned values: a cell may hold two named values (both inside-body ratios).
        numeric=[False, False, False, True, False],
    )


def _read_reference_compat(paths: Sequence[str | os.PathLike]) -> pd.DataFrame:
    """All shards' ``reference_compat`` rows, sorted by ``sample_id`` (shard order is moot)."""
    tables = []
    for path in paths:
        try:
            table = pd.read_csv(path, dtype={"sample_id": str, "dicom_id": str})
        except pd.errors.EmptyDataError as error:
            raise ConfigError(f"{path}: empty file, expected columns {_COMPAT_USED}") from error
        missing = [c for c in ["sample_id", *_COMPAT_USED] if c not in table.columns]
        if missing:
            raise ConfigError(f"{path}: missing columns {missing}")
        tables.append(table)
    combined = pd.concat(tables, ignore_index=True)
    # A stable sort, so that the means' floating-point sums do not depend on the shards' order.
    return combined.sort_values("sample_id", kind="mergesort", ignore_index=True)
