"""The reference study's maps and metrics beside the corrected ones, for one shard."""

from cxr_attention.reference.shard import run_reference_compat_shard
from cxr_attention.workflow import job_logging

with job_logging(snakemake.log[0]):
    run_reference_compat_shard(
        answers_csv=snakemake.input.answers,
        captures_dir=snakemake.input.captures,
        preprocess_csv=snakemake.input.images,
        maps_csv=snakemake.input.maps,
        maps_npz=snakemake.input.maps_npz,
        out_csv=snakemake.output.table,
        params={"model_id": snakemake.params.model_id},
    )
