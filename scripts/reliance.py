"""Each sampled question of one shard asked again with a grey, swapped, occluded or no image."""

from cxr_attention.faithfulness.reliance_shard import run_reliance_shard
from cxr_attention.workflow import job_logging

with job_logging(snakemake.log[0]):
    run_reliance_shard(
        answers_csv=snakemake.input.answers,
        manifest_csv=snakemake.input.manifest,
        images_csvs=snakemake.input.images,
        model_id=snakemake.params.model_id,
        out_csv=snakemake.output.table,
        failures_csv=snakemake.output.failures,
        settings=snakemake.params.settings,
        image_first=snakemake.params.image_first,
        seed=snakemake.params.seed,
        min_free_gpu_gb=float(snakemake.resources.min_free_gpu_gb),
    )
