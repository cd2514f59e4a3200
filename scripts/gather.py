"""Join every shard's answers, maps and metrics into the study's tidy tables."""

from cxr_attention.workflow import gather_study_tables, job_logging

with job_logging(snakemake.log[0]):
    gather_study_tables(
        answers=snakemake.input.answers,
        maps=snakemake.input.maps,
        metrics=snakemake.input.metrics,
        manifest_csv=snakemake.input.manifest,
        answers_out=snakemake.output.answers,
        maps_out=snakemake.output.maps,
    )
