"""The faithfulness study tables (patient-level CIs) and their report page."""

from cxr_attention.faithfulness.summary import write_faithfulness_summaries
from cxr_attention.report.faithfulness import FAITHFULNESS_READING, write_tables_page
from cxr_attention.workflow import job_logging

with job_logging(snakemake.log[0]):
    write_faithfulness_summaries(
        areas_csvs=snakemake.input.areas,
        randomisation_csvs=snakemake.input.randomisation,
        maps_csvs=snakemake.input.maps,
        maps_npzs=snakemake.input.arrays,
        questions_csv=snakemake.input.questions,
        manifest_csv=snakemake.input.manifest,
        out_summary=snakemake.output.summary,
        out_randomisation=snakemake.output.randomisation,
        out_question_swap=snakemake.output.question_swap,
        **snakemake.params.bootstrap,
    )
    write_tables_page(
        [snakemake.output.summary, snakemake.output.randomisation, snakemake.output.question_swap],
        FAITHFULNESS_READING,
        snakemake.output.page,
        title="Faithfulness",
    )
