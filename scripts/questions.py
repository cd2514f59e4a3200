"""Build the study's question table from the question bank or the user's VQA table."""

from cxr_attention.questions.table import write_question_table
from cxr_attention.workflow import job_logging

with job_logging(snakemake.log[0]):
    write_question_table(settings=snakemake.params.settings, out_csv=snakemake.output[0])
