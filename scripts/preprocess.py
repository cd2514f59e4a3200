"""Decode one shard's radiographs to normalised PNGs with body and lung masks."""

from cxr_attention.preprocess.pipeline import run_preprocess_shard
from cxr_attention.workflow import job_logging

with job_logging(snakemake.log[0]):
    run_preprocess_shard(
        manifest_csv=snakemake.input.manifest,
        shard=int(snakemake.wildcards.shard),
        out_csv=snakemake.output.table,
        out_dir=snakemake.output.images,
        failures_csv=snakemake.output.failures,
        max_side=snakemake.params.max_side,
    )
