"""Metrics of attention maps and the study's statistics.

- :mod:`~cxr_attention.metrics.per_map`: one map against the image's body and lung masks
  (inside-body ratio, border fraction, entropy, focus, left/right and apical/basal shares).
- :mod:`~cxr_attention.metrics.pairwise`: two maps compared (Jensen-Shannon divergence in base 2
  or natural log, Pearson correlation, cosine similarity).
- :mod:`~cxr_attention.metrics.study`: accuracy, AUROC, consistency, divergence between strategies,
  tests and patient-level bootstrap intervals; ``summary.json`` and tidy tables.
- :mod:`~cxr_attention.metrics.paper`: the reference paper's statistics and the comparison table.

Definitions, targets and the statistical design: docs/metrics.md.
"""

# No re-exports: each rule imports (and lists as input) only the modules it runs.
