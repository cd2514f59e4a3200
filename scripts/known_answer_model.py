"""Provide the known-answer model folder: copy the committed weights, or retrain on request."""

from cxr_attention.known_answer.train import provide_known_answer_model
from cxr_attention.workflow import job_logging

with job_logging(snakemake.log[0]):
    provide_known_answer_model(
        snakemake.output[0], committed=snakemake.input.committed, **snakemake.params.settings
    )
