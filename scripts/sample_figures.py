"""Overlays, strategy-by-method panels and prompt-sensitivity figures for a shard's images."""

from cxr_attention.figures.samples import write_sample_figures
from cxr_attention.workflow import job_logging

with job_logging(snakemake.log[0]):
    write_sample_figures(
        answers_csv=snakemake.input.answers,
        maps_csv=snakemake.input.maps,
        maps_npz=snakemake.input.arrays,
        images_csv=snakemake.input.images,
        out_dir=snakemake.output[0],
        samples_per_shard=snakemake.params.samples_per_shard,
    )
