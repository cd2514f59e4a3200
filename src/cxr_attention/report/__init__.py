"""Pages of the HTML report: the one-page run summary and the paper comparison.

Both are self-contained HTML files (no scripts, no external resources) that the workflow marks
with ``report()`` so Snakemake's report embeds them; :mod:`cxr_attention.report.browser` opens a
finished report in headless Chromium and checks it. Captions live in ``report/`` at the
repository root. See docs/figures.md.
"""

from cxr_attention.report.paper import render_paper_comparison, write_paper_comparison_page
from cxr_attention.report.summary import (
    fingerprint,
    render_run_summary,
    summarise_run,
    write_run_summary,
)

__all__ = [
    "fingerprint",
    "render_paper_comparison",
    "render_run_summary",
    "summarise_run",
    "write_paper_comparison_page",
    "write_run_summary",
]
