"""Render the Snakemake HTML report of this run (figures, tables and pages marked with report())."""

from cxr_attention.workflow import job_logging, render_report

with job_logging(snakemake.log[0]):
    render_report(
        config=snakemake.config,
        snakefile=snakemake.params.snakefile,
        target="report_items",
        out_html=snakemake.output[0],
    )
