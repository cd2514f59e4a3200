"""The grounding page of the report."""

from cxr_attention.report.grounding import write_grounding_page
from cxr_attention.workflow import job_logging

with job_logging(snakemake.log[0]):
    write_grounding_page(snakemake.input.summary, snakemake.output[0])
