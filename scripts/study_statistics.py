"""Study-level statistics: accuracy, AUROC, consistency, JS divergence, CIs and paired tests."""

from pathlib import Path

from cxr_attention.metrics.summary import run_study_statistics
from cxr_attention.workflow import job_logging

with job_logging(snakemake.log[0]):
    run_study_statistics(
        answers_csv=snakemake.input.answers,
        maps_csv=snakemake.input.maps,
        maps_npz=snakemake.input.arrays,
        out_dir=Path(snakemake.output.summary).parent,
        params={
            **snakemake.params.settings,
            "seed": snakemake.params.seed,
            "label_policy": snakemake.params.label_policy,
        },
    )
