"""Pages of the HTML report: the one-page run summary and the paper comparison.

Both are self-contained HTML files (no scripts, no external resources) that the workflow marks
with ``report()`` so Snakemake's report embeds them; :mod:`cxr_attention.report.browser` opens a
finished report in headless Chromium and checks it. Captions live in ``report/`` at the
repository root. See docs/figures.md.
"""

# No re-exports: each rule imports (and lists as input) only the modules it runs.
