"""The report's localization-heads page: the calibration's chosen heads and its head ranking."""

from cxr_attention.report.heads import write_heads_page
from cxr_attention.workflow import job_logging

with job_logging(snakemake.log[0]):
    write_heads_page(snakemake.input.table, snakemake.input.chosen, snakemake.output[0])
