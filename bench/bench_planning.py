"""How long Snakemake takes to plan the study as the number of images grows.

The number of jobs grows with shards, not images: the manifest is cut into shards of
``--images-per-shard`` images (500 by default), and every stage runs one job per shard. For each
size this script writes synthetic MIMIC-CXR tables in the real format (the four
``mimic-cxr-2.0.0-*.csv.gz`` files with their real columns; no image files, planning never opens
them) into a copy of the repository, and measures, each as one ``snakemake`` command as a user
types it:

* ``dry run``: ``snakemake -n`` from scratch (nothing built yet: every job planned);
* ``no-op rerun``: ``snakemake --cores 1`` when everything is up to date. To get there, the
  manifest rule runs for real and every other output is created empty, then marked up to date with
  ``snakemake --touch`` (which also records Snakemake's metadata, as a real run does).

Directory outputs are empty here, which changes nothing for planning: Snakemake dates a directory
output by the ``.snakemake_timestamp`` file it keeps inside, not by walking its files.

Usage: ``.venv/bin/python bench/bench_planning.py [--sizes 1000 10000 100000]``; prints a table and
the ratio of each size's times to the smallest size's. The rehearsal of MIMIC-CXR's official test
split (issue 21: plan and no-op each within 10 s on 2 cores) is
``bench/bench_planning.py --test-split --sizes 5159``: every synthetic image a frontal test film,
the selection the test split.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from workflow.demo import copy_repository  # noqa: E402
from workflow.demo import snakemake as run_snakemake  # noqa: E402

from cxr_attention.preprocess.mimic import (  # noqa: E402
    CHEXPERT_FINDINGS,
    METADATA_COLUMNS,
    SPLIT_COLUMNS,
    TABLE_BASENAMES,
)

GOAL_SECONDS = 30.0
# Issue 21: the test split's plan and no-op rerun, each on 2 cores.
TEST_SPLIT_GOAL_SECONDS = 10.0
IMAGES_PER_STUDY = 2  # MIMIC-CXR has ~1.7 images per study and ~3.1 studies per patient


def write_mimic_tables(
    root: Path, n_images: int, seed: int = 0, *, frontal_test_only: bool = False
) -> None:
    """Synthetic MIMIC-CXR-JPG tables of ``n_images`` images, in the real files and columns.

    ``frontal_test_only`` makes every image a frontal film of the official test split, so that the
    study's own selection (test split, PA/AP) keeps all of them: the test-split rehearsal.
    """
    rng = np.random.default_rng(seed)
    views = ["PA", "AP"] if frontal_test_only else ["PA", "AP", "LATERAL", "LL"]
    split_p = [0.0, 0.0, 1.0] if frontal_test_only else [0.98, 0.01, 0.01]
    root.mkdir(parents=True, exist_ok=True)
    n_studies = math.ceil(n_images / IMAGES_PER_STUDY)
    study_ids = np.arange(50_000_000, 50_000_000 + n_studies)
    subject_ids = 10_000_000 + np.arange(n_studies) // 3
    image_study = np.arange(n_images) // IMAGES_PER_STUDY
    dicom_ids = [f"{k:08x}-{k * 7919 % 16**8:08x}-bench" for k in range(n_images)]
    metadata = pd.DataFrame(
        {
            "dicom_id": dicom_ids,
            "subject_id": subject_ids[image_study],
            "study_id": study_ids[image_study],
            "PerformedProcedureStepDescription": "CHEST (PA AND LAT)",
            "ViewPosition": rng.choice(views, size=n_images),
            "Rows": 3056,
            "Columns": 2544,
            "StudyDate": 21800506,
            "StudyTime": 213014.531,
            "ProcedureCodeSequence_CodeMeaning": "CHEST (PA AND LAT)",
            "ViewCodeSequence_CodeMeaning": "postero-anterior",
            "PatientOrientationCodeSequence_CodeMeaning": "Erect",
        }
    )[METADATA_COLUMNS]
    split = metadata[["dicom_id", "study_id", "subject_id"]].assign(
        split=rng.choice(["train", "validate", "test"], size=n_images, p=split_p)
    )[SPLIT_COLUMNS]
    labels = pd.DataFrame({"subject_id": subject_ids, "study_id": study_ids})
    for finding in CHEXPERT_FINDINGS:
        labels[finding] = rng.choice([1.0, 0.0, -1.0, np.nan], size=n_studies)
    for name, table in (
        ("metadata", metadata),
        ("split", split),
        ("chexpert", labels),
        ("negbio", labels),
    ):
        table.to_csv(root / f"{TABLE_BASENAMES[name]}.csv.gz", index=False)


def write_config(
    workdir: Path, run: str, data_root: Path, shards: int, *, test_split: bool = False
) -> Path:
    config = yaml.safe_load((workdir / "config" / "demo.yaml").read_text())
    config["run"] = run
    if test_split:
        config["selection"]["splits"] = ["test"]
    config["data"]["root"] = str(data_root.relative_to(workdir))
    config["selection"]["shards"] = shards
    config["selection"]["sample_size"] = None
    path = workdir / "config" / f"{run}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def snakemake(workdir: Path, *arguments: str) -> tuple[float, str]:
    """Run snakemake as the tests do; return its wall-clock seconds and its output."""
    start = time.perf_counter()
    result = run_snakemake(workdir, *arguments)
    return time.perf_counter() - start, result.stdout + result.stderr


def planned_outputs(output: str) -> list[str]:
    """Output paths of every job in a (non-quiet) dry run's job listing."""
    paths = []
    for line in output.splitlines():
        match = re.match(r"\s+output: (.+)$", line)
        if match:
            paths.extend(p.strip() for p in match.group(1).split(","))
    return paths


def create_placeholders(workdir: Path, paths: list[str]) -> int:
    """Create each missing output: a folder when its name has no suffix, else an empty file."""
    created = 0
    for name in paths:
        path = workdir / name
        if path.exists():
            continue
        if path.suffix:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
        else:
            path.mkdir(parents=True)
        created += 1
    return created


def measure(
    workdir: Path, n_images: int, images_per_shard: int, *, test_split: bool = False
) -> dict[str, float | int]:
    run = f"bench{n_images}"
    shards = math.ceil(n_images / images_per_shard)
    data_root = workdir / "data" / run
    write_mimic_tables(data_root, n_images, frontal_test_only=test_split)
    config_path = write_config(workdir, run, data_root, shards, test_split=test_split)
    config = str(config_path.relative_to(workdir))
    common = ("--configfile", config)

    dry_seconds, listing = snakemake(workdir, "--dry-run", *common)
    n_jobs = len(re.findall(r"^(?:local)?rule \w+:", listing, flags=re.M))
    snakemake(workdir, f"results/{run}/manifest.csv", "--cores", "1", *common)
    create_placeholders(workdir, planned_outputs(listing))
    snakemake(workdir, "--touch", "--cores", "1", *common)
    noop_dry_seconds, _ = snakemake(workdir, "--dry-run", *common)
    noop_seconds, noop_output = snakemake(workdir, "--cores", "1", *common)
    if "Nothing to be done" not in noop_output:
        raise RuntimeError(f"the no-op rerun planned jobs:\n{noop_output[-3000:]}")
    manifest = pd.read_csv(workdir / "results" / run / "manifest.csv", usecols=["shard"])
    return {
        "images": n_images,
        "selected": len(manifest),
        "shards": shards,
        "jobs": n_jobs,
        "dry_run_s": dry_seconds,
        "noop_dry_run_s": noop_dry_seconds,
        "noop_rerun_s": noop_seconds,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    parser.add_argument("--images-per-shard", type=int, default=500)
    parser.add_argument(
        "--test-split",
        action="store_true",
        help="rehearse the official test split: every synthetic image a frontal test film, the "
        "selection the test split (e.g. --sizes 5159 for MIMIC-CXR's test split)",
    )
    args = parser.parse_args(argv)

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_planning_") as tmp:
        for n_images in args.sizes:
            workdir = copy_repository(Path(tmp) / f"n{n_images}")
            rows.append(
                measure(workdir, n_images, args.images_per_shard, test_split=args.test_split)
            )
            print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    smallest = table.iloc[0]
    for column in ("dry_run_s", "noop_dry_run_s", "noop_rerun_s"):
        table[column.replace("_s", "_ratio")] = table[column] / smallest[column]
    print(table.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    worst = table[["dry_run_s", "noop_rerun_s"]].to_numpy().max()
    goal = TEST_SPLIT_GOAL_SECONDS if args.test_split else GOAL_SECONDS
    verdict = "met" if worst < goal else "NOT met"
    print(f"largest time {worst:.1f} s; goal < {goal:.0f} s: {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
