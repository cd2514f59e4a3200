"""Gather every stage's failure rows into one table."""

import pandas as pd

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
    study = read_failures(shards)
    # The calibration images' failures, named apart: they are not the study's images.
    calibration = read_failures(snakemake.input.head_calibration, stage_prefix="head_calibration_")
    write_csv(pd.concat([study, calibration], ignore_index=True), snakemake.output[0])
