"""head_selected's heads chosen on the calibration split (rules/heads.smk), on the tiny model: the
calibration images come from the named split and no study patient, the per-head table is the
captured attention's statistics (recomputed here with numpy), the chosen heads are select_heads'
pick of it, the study's head_selected maps use them and the report's page names them; an empty
calibration split stops the run before any job, naming the key."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from cxr_attention.maps.methods.head_selected import select_heads
from workflow.demo import REPO, snakemake, snakemake_environment

DEMO_TABLES = REPO / "data" / "demo" / "mimic-cxr-jpg"


STUDY = Path(__file__).with_name("heads_study.yaml")


def _config(root: str, model: str) -> dict:
    """The heads study (``heads_study.yaml``) on other tables and another model folder."""
    config = yaml.safe_load(STUDY.read_text())
    config["data"]["root"] = root
    config["model"]["id"] = model
    return config


def _dry_run(config: Path, *targets: str) -> subprocess.CompletedProcess:
    """``snakemake -n`` of ``targets`` (default: the workflow's) with ``config``, in the repo."""
    return subprocess.run(
        [sys.executable, "-m", "snakemake", *targets, "-n", "--nolock", "--configfile", config],
        cwd=REPO,
        env=snakemake_environment(REPO),
        capture_output=True,
        text=True,
        timeout=600,
    )


def _head_statistics_by_numpy(capture: Path) -> pd.DataFrame:
    with np.load(capture) as arrays:
        attention = arrays["attention"].astype(np.float64)  # (layers, heads, rows, tokens)
        layers = arrays["layers"]
    mean_rows = attention.mean(axis=2)
    share = mean_rows.sum(axis=-1)
    p = mean_rows / share[..., None]
    entropy = -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1)), 0), axis=-1)
    n_layers, n_heads = share.shape
    return pd.DataFrame(
        {
            "layer": np.repeat(layers, n_heads),
            "head": np.tile(np.arange(n_heads), n_layers),
            "image_share": share.ravel(),
            "spatial_entropy": entropy.ravel() / np.log(attention.shape[-1]),
        }
    )


def test_head_selected_uses_heads_chosen_on_the_calibration_split(
    fresh_copy: Callable[[str], Path],
):
    workdir = fresh_copy("heads")
    config = workdir / "tests" / "workflow" / STUDY.name
    snakemake(
        workdir,
        "--cores",
        "2",
        "--resources",
        "gpu=1",
        "--configfile",
        str(config),
        "--",
        "results/heads/maps/shard-000.csv",
        "results/heads/report/heads.html",
    )
    run = workdir / "results" / "heads"
    study = pd.read_csv(run / "manifest.csv", dtype=str)
    calibration = pd.read_csv(run / "heads" / "manifest.csv", dtype=str)
    with gzip.open(DEMO_TABLES / "mimic-cxr-2.0.0-split.csv.gz", "rt") as handle:
        split_of = pd.read_csv(handle, dtype=str).set_index("dicom_id")["split"]
    assert len(calibration) == 2 and set(split_of[calibration["dicom_id"]]) == {"validate"}
    assert not set(calibration["subject_id"]) & set(study["subject_id"])

    answers = pd.read_csv(run / "heads" / "inference" / "shard-000.csv", dtype=str)
    assert set(answers["dicom_id"]) == set(calibration["dicom_id"])
    table = pd.read_csv(run / "heads" / "heads.csv", dtype={"sample_id": str})
    for sample_id, rows in table.groupby("sample_id"):
        capture = run / "heads" / "inference" / "shard-000" / f"{sample_id}.npz"
        expected = _head_statistics_by_numpy(capture)
        np.testing.assert_array_equal(rows[["layer", "head"]], expected[["layer", "head"]])
        np.testing.assert_allclose(rows["image_share"], expected["image_share"], rtol=1e-6)
        np.testing.assert_allclose(
            rows["spatial_entropy"], expected["spatial_entropy"], rtol=1e-6, atol=1e-9
        )
    assert set(table["sample_id"]) == set(answers["sample_id"])

    chosen = json.loads((run / "heads" / "localization_heads.json").read_text())
    picked = select_heads(table, k=2, share_quantile=0.75)
    assert [tuple(pair) for pair in chosen["localization_heads"]] == picked
    assert chosen["split"] == "validate" and chosen["images"] == 2
    # the report's page (rule heads_page) names the split and the chosen heads
    page = " ".join((run / "report" / "heads.html").read_text().split())
    assert "Chosen on split validate: 2 image(s)" in page
    pairs = ", ".join(f"({layer}, {head})" for layer, head in picked)
    assert f"Chosen heads (layer, head): {pairs}</h2>" in page

    maps = pd.read_csv(run / "maps" / "shard-000.csv", dtype=str, keep_default_na=False)
    selected = maps[maps["method"] == "head_selected"]
    assert len(selected) > 0
    assert set(selected["heads"]) == {"|".join(str(head) for _, head in picked)}
    assert set(selected["layers"]) == {"|".join(str(layer) for layer, _ in picked)}
    assert not set(maps["dicom_id"]) & set(calibration["dicom_id"])


def test_an_empty_calibration_split_stops_the_run_before_any_job(tmp_path: Path):
    root = tmp_path / "tables"
    shutil.copytree(DEMO_TABLES, root, ignore=shutil.ignore_patterns("files"))
    split_table = root / "mimic-cxr-2.0.0-split.csv.gz"
    with gzip.open(split_table, "rt") as handle:
        split = pd.read_csv(handle, dtype=str)
    split.assign(split=split["split"].replace("validate", "train")).to_csv(split_table, index=False)
    config = tmp_path / "heads.yaml"
    config.write_text(yaml.safe_dump(_config(str(root), str(tmp_path / "tiny"))))
    result = _dry_run(config)
    assert result.returncode == 2, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if "Configuration error" in line]
    assert len(errors) == 1 and "maps.head_calibration.split" in errors[0], result.stderr
    assert "'validate'" in errors[0]
    assert "Job stats" not in result.stdout + result.stderr


def test_hand_set_heads_plan_no_calibration(tmp_path: Path):
    config_values = _config(str(DEMO_TABLES), str(tmp_path / "tiny"))
    config_values["maps"]["localization_heads"] = [[0, 1]]
    config = tmp_path / "heads.yaml"
    config.write_text(yaml.safe_dump(config_values))
    result = _dry_run(config)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "rule maps:" in result.stdout and "heads_inference" not in result.stdout


def test_calibration_failures_join_the_run_s_failure_table(tmp_path: Path):
    # Planned from the dry run: the failures job reads the calibration shards' failure tables
    # (scripts/failures.py names their stage head_calibration_*, tests/test_io.py).
    config = tmp_path / "heads.yaml"
    config.write_text(yaml.safe_dump(_config(str(DEMO_TABLES), str(tmp_path / "tiny"))))
    result = _dry_run(config, "results/heads/failures.csv")
    assert result.returncode == 0, result.stderr[-3000:]
    job = result.stdout[result.stdout.index("rule failures:") :].split("\n\n")[0]
    for stage in ("preprocess", "inference"):
        assert f"results/heads/heads/{stage}/shard-000.failures.csv" in job, job
