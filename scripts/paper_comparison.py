"""Our numbers beside the reference paper's headline results."""

from cxr_attention.metrics.paper import run_paper_comparison
from cxr_attention.workflow import job_logging

with job_logging(snakemake.log[0]):
    run_paper_comparison(
        answers_csv=snakemake.input.answers,
        maps_csv=snakemake.input.maps,
        maps_npz=snakemake.input.arrays,
        reference_yaml=snakemake.input.reference,
        out_csv=snakemake.output[0],
        params={**snakemake.params.settings, "seed": snakemake.params.seed},
    )
