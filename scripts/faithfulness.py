"""Deletion / insertion curves and randomisation checks of one shard's subsample."""

from cxr_attention.faithfulness.shard import run_faithfulness_shard
from cxr_attention.maps.methods.head_selected import with_localization_heads
from cxr_attention.workflow import job_logging

with job_logging(snakemake.log[0]):
    run_faithfulness_shard(
        answers_csv=snakemake.input.answers,
        captures_dir=snakemake.input.captures,
        images_csv=snakemake.input.images,
        model_id=snakemake.params.model_id,
        out_areas=snakemake.output.areas,
        out_points=snakemake.output.points,
        out_randomisation=snakemake.output.randomisation,
        failures_csv=snakemake.output.failures,
        settings=snakemake.params.settings,
        # head_selected's heads: chosen on the calibration split unless set by hand
        maps_params=with_localization_heads(snakemake.params.maps, snakemake.input.get("heads")),
        inference=snakemake.params.inference,
        seed=snakemake.params.seed,
        min_free_gpu_gb=float(snakemake.resources.min_free_gpu_gb),
    )
