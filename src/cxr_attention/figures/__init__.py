"""Figures of a run: map overlays, method panels, prompt sensitivity and study summaries.

Every function takes arrays or tidy tables and an output path, draws with matplotlib's Agg canvas
(no screen), and writes a PNG atomically whose bytes are identical on rerun (fixed size and DPI,
no metadata that changes). See docs/figures.md.
"""

# No re-exports: each rule imports (and lists as input) only the modules it runs.
