"""Plant lesions into the source's frontal films and write them as a MIMIC-CXR-JPG download."""

from pathlib import Path

from cxr_attention.known_answer.dataset import write_known_answer_dataset
from cxr_attention.workflow import job_logging

with job_logging(snakemake.log[0]) as log:
    failures = write_known_answer_dataset(
        # the source download's folder: where its tables are
        Path(snakemake.input.tables[0]).parent,
        Path(snakemake.output.boxes).parent,
        seed=snakemake.params.seed,
    )
    for failure in failures:
        log.warning("left out %s: %s", failure.dicom_id, failure.message)
