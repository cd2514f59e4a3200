"""Provide the known-answer model folder: copy the committed weights, or retrain on request."""

import torch

from cxr_attention.known_answer.train import provide_known_answer_model
from cxr_attention.workflow import job_logging

# One thread: on 2 shared cores, 2 threads ran up to 100 times slower (spin-waits).
torch.set_num_threads(1)
with job_logging(snakemake.log[0]):
    provide_known_answer_model(
        snakemake.output[0],
        committed=snakemake.input.committed,
        retrain=snakemake.params.retrain,
        steps=snakemake.params.steps,
        seed=snakemake.params.seed,
    )
