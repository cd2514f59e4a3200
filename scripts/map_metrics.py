"""Per-map metrics for one shard: inside-body ratio, border, entropy, focus, laterality."""

from cxr_attention.metrics.shard import run_metrics_shard
from cxr_attention.workflow import job_logging

with job_logging(snakemake.log[0]):
    run_metrics_shard(
        maps_csv=snakemake.input.maps,
        maps_npz=snakemake.input.arrays,
        preprocess_csv=snakemake.input.images,
        out_csv=snakemake.output.table,
        failures_csv=snakemake.output.failures,
    )
