"""Build the tiny random Gemma 3 model folder that the demo loads like MedGemma."""

from cxr_attention.models.tiny import build_tiny_model
from cxr_attention.workflow import job_logging

with job_logging(snakemake.log[0]):
    build_tiny_model(snakemake.output[0], seed=snakemake.params.seed)
