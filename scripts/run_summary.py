"""The one-page summary of the run: config, model, data version, counts, failures, targets."""

from cxr_attention.report.summary import write_run_summary
from cxr_attention.workflow import job_logging

with job_logging(snakemake.log[0]):
    write_run_summary(
        out_html=snakemake.output[0],
        config=snakemake.params.config,
        manifest_csv=snakemake.input.manifest,
        questions_csv=snakemake.input.questions,
        answers_csv=snakemake.input.answers,
        maps_csv=snakemake.input.maps,
        failures_csv=snakemake.input.failures,
        summary_json=snakemake.input.summary,
    )
