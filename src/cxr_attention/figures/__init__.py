"""Figures of a run: map overlays, method panels, prompt sensitivity and study summaries.

Every function takes arrays or tidy tables and an output path, draws with matplotlib's Agg canvas
(no screen), and writes a PNG atomically whose bytes are identical on rerun (fixed size and DPI,
no metadata that changes). See docs/figures.md.
"""

from cxr_attention.figures.overlay import display_range, draw_overlay, plot_overlay
from cxr_attention.figures.panels import plot_method_panels
from cxr_attention.figures.samples import write_sample_figures
from cxr_attention.figures.sensitivity import plot_prompt_sensitivity
from cxr_attention.figures.summary import (
    plot_accuracy,
    plot_js_histogram,
    plot_method_usage,
    plot_metric_distributions,
    write_summary_figures,
)

__all__ = [
    "display_range",
    "draw_overlay",
    "plot_accuracy",
    "plot_js_histogram",
    "plot_method_panels",
    "plot_method_usage",
    "plot_metric_distributions",
    "plot_overlay",
    "plot_prompt_sensitivity",
    "write_sample_figures",
    "write_summary_figures",
]
