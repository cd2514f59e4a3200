"""Study-level plots: metric distributions, accuracy with CIs, JS histogram, method usage."""

from cxr_attention.figures.summary import write_summary_figures
from cxr_attention.workflow import job_logging

with job_logging(snakemake.log[0]):
    write_summary_figures(
        maps_csv=snakemake.input.maps,
        accuracy_by_strategy_csv=snakemake.input.accuracy_by_strategy,
        accuracy_by_finding_csv=snakemake.input.accuracy_by_finding,
        js_divergence_csv=snakemake.input.js_divergence,
        out_dir=snakemake.output[0],
    )
