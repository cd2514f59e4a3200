"""Overlays, strategy-by-method panels and prompt-sensitivity figures for a shard's images."""

import os
import tempfile
from pathlib import Path

from cxr_attention.figures.samples import write_sample_figures
from cxr_attention.workflow import job_logging

# The library writes every kind into one folder; the report shows each kind as its own entry, so
# each goes to the folder of its output (file names keep their kind prefix).
KINDS = ("overlay", "panels", "sensitivity", "layers")

with job_logging(snakemake.log[0]):
    parent = Path(snakemake.output.overlay).parent
    parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=parent, prefix=".figures-") as written:
        write_sample_figures(
            answers_csv=snakemake.input.answers,
            maps_csv=snakemake.input.maps,
            maps_npz=snakemake.input.arrays,
            images_csv=snakemake.input.images,
            out_dir=written,
            samples_per_shard=snakemake.params.samples_per_shard,
            max_samples=snakemake.params.max_samples,
        )
        for kind in KINDS:
            folder = Path(snakemake.output[kind])
            folder.mkdir(parents=True, exist_ok=True)
            for figure in sorted(Path(written).glob(f"{kind}__*.png")):
                os.replace(figure, folder / figure.name)
