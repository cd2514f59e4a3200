"""Per-head image share and spatial entropy on the calibration captures; the heads chosen."""

from cxr_attention.maps.methods.head_selected import write_head_selection
from cxr_attention.workflow import job_logging

with job_logging(snakemake.log[0]):
    write_head_selection(
        answers_csv=snakemake.input.answers,
        captures_dir=snakemake.input.captures,
        out_table=snakemake.output.table,
        out_heads=snakemake.output.chosen,
        calibration=snakemake.params.calibration,
    )
