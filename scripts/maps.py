"""Turn one shard's captured attention into token-conditioned maps (with the fallback cascade)."""

from cxr_attention.maps.shard import run_maps_shard
from cxr_attention.workflow import job_logging

with job_logging(snakemake.log[0]):
    run_maps_shard(
        answers_csv=snakemake.input.answers,
        captures_dir=snakemake.input.captures,
        questions_csv=snakemake.input.questions,
        images_csv=snakemake.input.images,
        # the heads chosen on the calibration split, when head_selected needs them
        localization_heads_json=snakemake.input.get("heads"),
        model_id=snakemake.params.model_id,
        out_csv=snakemake.output.table,
        out_npz=snakemake.output.arrays,
        failures_csv=snakemake.output.failures,
        params={
            **snakemake.params.settings,
            "seed": snakemake.params.seed,
            "min_free_gpu_gb": float(snakemake.resources.min_free_gpu_gb),
            "gradcam_max_rows": int(snakemake.resources.gradcam_max_rows),
        },
    )
