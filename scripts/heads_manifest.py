"""Draw the localization heads' calibration images: the named split, no study patient."""

from cxr_attention.preprocess.selection import write_calibration_manifest
from cxr_attention.workflow import job_logging

with job_logging(snakemake.log[0]):
    write_calibration_manifest(
        data=snakemake.params.data,
        selection=snakemake.params.selection,
        calibration=snakemake.params.calibration,
        seed=snakemake.params.seed,
        study_manifest_csv=snakemake.input.study,
        out_csv=snakemake.output[0],
    )
