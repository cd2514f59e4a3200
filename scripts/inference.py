"""Answer every question about one shard's images, capturing attention to the image tokens."""

from cxr_attention.inference.runner import run_inference_shard
from cxr_attention.workflow import job_logging

with job_logging(snakemake.log[0]):
    run_inference_shard(
        manifest_csv=snakemake.input.manifest,
        questions_csv=snakemake.input.questions,
        preprocess_csv=snakemake.input.images,
        shard=int(snakemake.wildcards.shard),
        model_id=snakemake.params.model_id,
        out_csv=snakemake.output.answers,
        out_dir=snakemake.output.captures,
        failures_csv=snakemake.output.failures,
        params={
            **snakemake.params.settings,
            **snakemake.params.labels,
            "seed": snakemake.params.seed,
            "min_free_gpu_gb": float(snakemake.resources.min_free_gpu_gb),
        },
    )
