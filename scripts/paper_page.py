"""The report page with the reference paper's numbers beside ours, a sentence per row."""

from cxr_attention.report.paper import write_paper_comparison_page
from cxr_attention.workflow import job_logging

with job_logging(snakemake.log[0]):
    write_paper_comparison_page(
        snakemake.input.comparison,
        snakemake.output[0],
        note=snakemake.params.note,
        reference_compat_csvs=snakemake.input.reference_compat,
    )
