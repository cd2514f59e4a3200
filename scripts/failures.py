"""Gather every stage's failure rows into one table."""

from cxr_attention.io import read_failures, write_csv
from cxr_attention.workflow import job_logging

with job_logging(snakemake.log[0]):
    stages = (
        "known_answer_data",
        "preprocess",
        "inference",
        "maps",
        "metrics",
        "reference_compat",
        "grounding",
        "faithfulness",
        "reliance",
    )
    shards = [path for stage in stages for path in snakemake.input[stage]]
    write_csv(read_failures(shards), snakemake.output[0])
