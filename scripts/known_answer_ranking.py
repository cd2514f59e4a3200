"""Every registered map method ranked on the planted held-out films (docs/known_answer.md)."""

from cxr_attention.known_answer.films import demo_films
from cxr_attention.known_answer.ranking import run_method_ranking
from cxr_attention.workflow import job_logging

with job_logging(snakemake.log[0]):
    run_method_ranking(
        files_dir=snakemake.input.files,
        max_side=snakemake.params.max_side,
        plantings_csv=snakemake.input.plantings,
        boxes_csv=snakemake.input.boxes,
        model_id=snakemake.params.model_id,
        held_out=[path.stem for path in demo_films()[1]],
        out_ranking=snakemake.output.ranking,
        out_samples=snakemake.output.samples,
        out_section=snakemake.output.section,
        settings=snakemake.params.settings,
        maps_params=snakemake.params.maps,
        inference=snakemake.params.inference,
        statistics=snakemake.params.statistics,
        seed=snakemake.params.seed,
        min_free_gpu_gb=float(snakemake.resources.min_free_gpu_gb),
    )
