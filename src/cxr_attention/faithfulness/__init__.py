"""Does the model use what a map shows, and does it use the image at all?

Torch-free (tables, summaries, pixel perturbations): ``curves`` (cell orders, removal masks, AUC,
ROAD's combined score), ``imputation`` (blurred, mean and ROAD noisy-linear replacements),
``similarity`` (Spearman and SSIM between maps, the question-swap check), ``summary`` (paired
differences from random with patient-level CIs), ``reliance_tables`` (answers under each
image condition, the consistency x reliance table), ``samples`` (the jobs' seeded subsample).

Torch: ``scoring`` (the teacher-forced decision margin of batched perturbed inputs),
``deletion`` (deletion, insertion and least-relevant-first curves of a sample's maps),
``reliance`` (the image conditions), ``randomisation`` (cascading model randomisation),
``shard`` and ``reliance_shard`` (the workflow jobs), ``explain_outputs``
(``cxr-attention explain --faithfulness``, ``--reliance``). ``docs/faithfulness.md`` says how to
read the tables.
"""
