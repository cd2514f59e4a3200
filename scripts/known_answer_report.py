"""The known-answer table, section and figures from the run's answers and maps."""

from pathlib import Path

from cxr_attention.known_answer.films import demo_films
from cxr_attention.report.known_answer import write_known_answer
from cxr_attention.workflow import job_logging

with job_logging(snakemake.log[0]):
    write_known_answer(
        answers_csv=snakemake.input.answers,
        maps_csv=snakemake.input.maps,
        arrays_npz=snakemake.input.arrays,
        preprocess_csvs=snakemake.input.preprocess,
        boxes_csv=snakemake.input.boxes,
        plantings_csv=snakemake.input.plantings,
        held_out=[path.stem for path in demo_films()[1]],
        out_dir=Path(snakemake.output.summary).parent,
        figures_dir=snakemake.output.figures,
        statistics=snakemake.params.statistics,
        seed=snakemake.params.seed,
    )
