"""Metrics of attention maps and the study's statistics.

- :mod:`~cxr_attention.metrics.catalogue`: every per-map metric's column, label, unit and target.
- :mod:`~cxr_attention.metrics.per_map`: one map against the image's body and lung masks
  (inside-body ratio, border fraction, entropy, focus, left/right and apical/basal shares);
  :mod:`~cxr_attention.metrics.shard` computes them for a shard.
- :mod:`~cxr_attention.metrics.pairwise`: two maps compared (Jensen-Shannon divergence in base 2
  or natural log, Pearson correlation, cosine similarity).
- :mod:`~cxr_attention.metrics.selection`: which map stands for a sample (one selector).
- :mod:`~cxr_attention.metrics.study` (settings), :mod:`~cxr_attention.metrics.bootstrap`
  (patient-level bootstrap intervals), :mod:`~cxr_attention.metrics.tables` (reading a run's
  tables), :mod:`~cxr_attention.metrics.answer_stats` (accuracy, AUROC, consistency),
  :mod:`~cxr_attention.metrics.map_stats` (divergence between strategies, tests) and
  :mod:`~cxr_attention.metrics.summary` (``summary.json``, tidy tables, the workflow entry).
- :mod:`~cxr_attention.metrics.paper`: the reference paper's statistics and the comparison table.

Definitions, targets and the statistical design: docs/metrics.md.
"""

# No re-exports: each rule imports (and lists as input) only the modules it runs.
