"""The one-page summary of the run: config, model, data version, counts, failures, targets."""

from pathlib import Path

from cxr_attention.report.summary import write_run_summary
from cxr_attention.settings import config_differences, run_provenance
from cxr_attention.workflow import job_logging

with job_logging(snakemake.log[0]):
    # Read when the job runs, never params: a new commit or a machine knob reruns nothing.
    changed_settings = config_differences(snakemake.config)
    provenance = run_provenance(".")  # the working directory: the checkout that runs
    write_run_summary(
        out_html=snakemake.output[0],
        config=snakemake.params.config,
        manifest_csv=snakemake.input.manifest,
        questions_csv=snakemake.input.questions,
        answers_csv=snakemake.input.answers,
        maps_csv=snakemake.input.maps,
        failures_csv=snakemake.input.failures,
        summary_json=snakemake.input.summary,
        exclusions_csv=snakemake.input.exclusions,
        preprocess_csvs=snakemake.input.preprocess,
        changed_settings=changed_settings,
        provenance=provenance,
        # The known-answer table, when lesions were planted (rules/known_answer.smk).
        first_section="".join(Path(path).read_text() for path in snakemake.input.known_answer),
    )
