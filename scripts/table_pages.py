"""The run's tidy tables as pages of the report (shown as tables, not only offered for download)."""

from cxr_attention.report.tables import write_table_page
from cxr_attention.workflow import job_logging

with job_logging(snakemake.log[0]):
    write_table_page(snakemake.input.maps, snakemake.output.maps, title="Maps and metrics")
    write_table_page(snakemake.input.failures, snakemake.output.failures, title="Failures")
