"""Build the study's question table from the question bank or the user's VQA table, and MS-CXR's
phrases when the grounding stage asks them (grounding.ms_cxr_phrases)."""

from cxr_attention.questions.table import write_question_table
from cxr_attention.workflow import job_logging

with job_logging(snakemake.log[0]):
    write_question_table(
        settings=snakemake.params.settings,
        out_csv=snakemake.output[0],
        ms_cxr_phrases=snakemake.input.get("phrases"),
        phrase_question=snakemake.params.phrase_question,
    )
