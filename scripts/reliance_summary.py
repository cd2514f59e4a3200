"""The image-reliance study tables (patient-level CIs) and their report page."""

from cxr_attention.faithfulness.reliance_tables import write_reliance_summaries
from cxr_attention.report.faithfulness import RELIANCE_READING, write_tables_page
from cxr_attention.workflow import job_logging

with job_logging(snakemake.log[0]):
    write_reliance_summaries(
        snakemake.input.tables,
        snakemake.output.summary,
        snakemake.output.four_way,
        **snakemake.params.bootstrap,
    )
    write_tables_page(
        [snakemake.output.summary, snakemake.output.four_way],
        RELIANCE_READING,
        snakemake.output.page,
        title="Image reliance",
    )
