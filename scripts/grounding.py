"""Every map of an annotated image against its annotation: scores, summary with intervals."""

from cxr_attention.grounding.stage import run_grounding
from cxr_attention.workflow import job_logging

with job_logging(snakemake.log[0]):
    settings = snakemake.params.settings
    run_grounding(
        maps_csv=snakemake.input.maps,
        questions_csv=snakemake.input.questions,
        maps_npz=list(snakemake.input.arrays),
        preprocess_csvs=list(snakemake.input.preprocess),
        annotation_files={name: snakemake.input.get(name) for name in snakemake.params.datasets},
        scores_csv=snakemake.output.scores,
        summary_csv=snakemake.output.summary,
        failures_csv=snakemake.output.failures,
        annotations_csv=snakemake.output.annotations,
        thresholds=settings["thresholds"],
        random_maps=settings["random_maps"],
        medfocus_max_side=settings["medfocus_max_side"],
        seed=snakemake.params.seed,
        bootstrap_samples=snakemake.params.metrics["bootstrap_samples"],
        confidence=snakemake.params.metrics["confidence"],
        contamination=settings["contamination"],
    )
