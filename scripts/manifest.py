"""Select the study's images from the MIMIC-CXR tables into the manifest."""

from cxr_attention.preprocess.selection import write_manifest
from cxr_attention.workflow import job_logging

with job_logging(snakemake.log[0]):
    write_manifest(
        data=snakemake.params.data,
        selection=snakemake.params.selection,
        seed=snakemake.params.seed,
        vqa_table=snakemake.params.vqa_table,
        out_csv=snakemake.output.manifest,
        exclusions_csv=snakemake.output.exclusions,
        questions=snakemake.params.questions,
    )
