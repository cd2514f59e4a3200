"""The workflow entry points: a shard's per-sample figures and a run's summary plots."""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cxr_attention.figures.samples import write_sample_figures
from cxr_attention.figures.summary import SUMMARY_FIGURES, write_summary_figures

STRATEGIES = ("baseline", "plain", "hard_positive")


def _shard(
    tmp_path,
    dicom_ids=("d2", "d1"),
    findings=("pleural_effusion", "cardiomegaly"),
    per_layer=(),
):
    """A preprocess table with images and masks on disk, answers, maps and their arrays.

    ``per_layer``: decoder layers that get an attention answer map each (the maps stage's
    ``maps.per_layer``), beside the map over all of them.
    """
    folder = tmp_path / "preprocess" / "shard-0"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    image_rows, answer_rows, map_rows, arrays = [], [], [], {}
    for dicom_id in dicom_ids:
        image = rng.integers(0, 255, size=(200, 260), dtype=np.uint8)
        body = np.zeros_like(image)
        body[10:190, 10:250] = 255
        lungs = np.zeros_like(image)
        lungs[40:160, 30:120], lungs[40:160, 140:230] = 1, 2
        for suffix, array in (("", image), ("_body", body), ("_lungs", lungs)):
            cv2.imwrite(str(folder / f"{dicom_id}{suffix}.png"), array)
        image_rows.append(
            {
                "dicom_id": dicom_id,
                "image": f"preprocess/shard-0/{dicom_id}.png",
                "body_mask": f"preprocess/shard-0/{dicom_id}_body.png",
                "lung_mask": f"preprocess/shard-0/{dicom_id}_lungs.png",
            }
        )
        for finding in findings:
            for strategy in STRATEGIES:
                for variant in (0, 1):
                    question_id = f"{finding}.{strategy}.{variant}"
                    sample_id = f"{dicom_id}__{question_id}"
                    answer_rows.append(
                        {
                            "sample_id": sample_id,
                            "dicom_id": dicom_id,
                            "question_id": question_id,
                            "finding": finding,
                            "strategy": strategy,
                            "answer": "yes",
                        }
                    )
                    for source, term in (("answer", "yes"), ("prompt", finding)):
                        for method in ("gradcam", "attention"):
                            map_id = f"{sample_id}__{term}__{source}__{method}"
                            values = rng.random((16, 16)).astype(np.float32)
                            arrays[map_id] = values / values.sum()
                            row = {
                                "map_id": map_id,
                                "sample_id": sample_id,
                                "dicom_id": dicom_id,
                                "question_id": question_id,
                                "term": term,
                                "source": source,
                                "method": method,
                            }
                            if per_layer:
                                row |= {"rows": "decision", "per_layer": False, "layers": ""}
                            map_rows.append(row)
                            if not (per_layer and source == "answer" and method == "attention"):
                                continue
                            for layer in per_layer:
                                layer_id = f"{sample_id}__answer_layer{layer}__answer__attention"
                                arrays[layer_id] = np.full((16, 16), 1 / 256, np.float32)
                                arrays[layer_id][layer % 16, 3] += 0.5
                                map_rows.append(
                                    row | {"map_id": layer_id, "per_layer": True, "layers": layer}
                                )
    paths = {
        "answers_csv": tmp_path / "answers.csv",
        "maps_csv": tmp_path / "maps.csv",
        "images_csv": tmp_path / "images.csv",
        "maps_npz": tmp_path / "maps.npz",
    }
    pd.DataFrame(answer_rows).to_csv(paths["answers_csv"], index=False)
    pd.DataFrame(map_rows).to_csv(paths["maps_csv"], index=False)
    pd.DataFrame(image_rows).to_csv(paths["images_csv"], index=False)
    np.savez(paths["maps_npz"], **arrays)
    return paths, pd.DataFrame(map_rows)


def test_sample_figures_of_the_first_images_each_finding(tmp_path):
    paths, _ = _shard(tmp_path)
    out = tmp_path / "figures"
    written = write_sample_figures(**paths, out_dir=out, samples_per_shard=1, root=tmp_path)
    expected = set()
    for finding in ("pleural_effusion", "cardiomegaly"):
        stem = f"d1__{finding}"  # d1 sorts first
        expected |= {f"overlay__{stem}.png", f"panels__{stem}.png"}
        expected |= {f"sensitivity__{stem}__{s}.png" for s in ("plain", "hard_positive")}
    assert {p.name for p in written} == expected
    assert {p.name for p in out.iterdir()} == expected
    for path in written:
        with Image.open(path) as png:
            assert png.format == "PNG"


def test_sample_figures_show_the_answer_map_per_layer_when_the_shard_has_one(tmp_path):
    paths, _ = _shard(tmp_path, findings=("pleural_effusion",), per_layer=(5, 11))
    out = tmp_path / "figures"
    written = write_sample_figures(**paths, out_dir=out, samples_per_shard=1, root=tmp_path)
    names = {p.name for p in written}
    # The per-layer maps are their own figure and never stand in for the answer map elsewhere.
    assert "layers__d1__pleural_effusion.png" in names
    assert {n.split("__")[0] for n in names} == {"overlay", "panels", "sensitivity", "layers"}
    with Image.open(out / "layers__d1__pleural_effusion.png") as png:
        # One row of panels: the mean of the layers, then layers 5 and 11.
        assert png.width > 2 * png.height


def test_sample_figures_skip_an_unreadable_image_and_none_when_asked(tmp_path, caplog):
    paths, _ = _shard(tmp_path, findings=("pleural_effusion",))
    (tmp_path / "preprocess" / "shard-0" / "d1.png").unlink()
    written = write_sample_figures(
        **paths, out_dir=tmp_path / "a", samples_per_shard=2, root=tmp_path
    )
    assert {p.name.split("__")[1] for p in written} == {"d2"}
    assert "d1" in caplog.text
    none = write_sample_figures(**paths, out_dir=tmp_path / "b", samples_per_shard=0, root=tmp_path)
    assert none == [] and (tmp_path / "b").is_dir()


def _study_tables(tmp_path, *, empty_js: bool):
    rng = np.random.default_rng(0)
    maps = pd.DataFrame(
        {
            "map_id": [f"m{i}" for i in range(12)],
            "finding": ["pleural_effusion", "cardiomegaly"] * 6,
            "strategy": list(STRATEGIES) * 4,
            "method": ["attention", "uniform"] * 6,
            "inside_body": rng.random(12),
            "border_fraction": rng.random(12) / 10,
            "entropy": rng.uniform(2, 5.5, 12),
            "focus": rng.random(12),
            "left_right": rng.random(12),
            "apical_basal": rng.random(12),
        }
    )
    accuracy = pd.DataFrame(
        {"strategy": ["all", "baseline"], "accuracy": [0.5, 0.6], "ci_low": [0.3, 0.4],
         "ci_high": [0.7, 0.8], "n": [10, 5], "n_correct": [5, 3], "n_subjects": [4, 4]}
    )  # fmt: skip
    by_finding = accuracy.assign(finding="cardiomegaly")
    js = pd.DataFrame({"js_divergence": rng.random(6), "strategy_b": ["plain"] * 6})
    paths = {}
    for name, frame in (
        ("maps_csv", maps),
        ("accuracy_by_strategy_csv", accuracy),
        ("accuracy_by_finding_csv", by_finding),
        ("js_divergence_csv", js.iloc[:0] if empty_js else js),
    ):
        paths[name] = tmp_path / f"{name}.csv"
        frame.to_csv(paths[name], index=False)
    if empty_js:
        paths["js_divergence_csv"].write_text("")  # a run without pairs writes an empty file
    return paths


@pytest.mark.parametrize("empty_js", [False, True])
def test_summary_figures_write_every_stem(tmp_path, empty_js):
    paths = _study_tables(tmp_path, empty_js=empty_js)
    written = write_summary_figures(**paths, out_dir=tmp_path / "summary")
    assert [p.stem for p in written] == list(SUMMARY_FIGURES)
    assert all(p.is_file() and p.stat().st_size > 1000 for p in written)


def test_summary_figures_of_a_run_without_maps(tmp_path):
    # gather_study_tables writes a run without maps as write_csv(pd.DataFrame()): a lone newline.
    from cxr_attention.io import write_csv

    paths = _study_tables(tmp_path, empty_js=True)
    write_csv(pd.DataFrame(), paths["maps_csv"])
    assert paths["maps_csv"].read_bytes() == b"\n"
    written = write_summary_figures(**paths, out_dir=tmp_path / "summary")
    assert [p.stem for p in written] == list(SUMMARY_FIGURES)
    assert all(p.is_file() and p.stat().st_size > 1000 for p in written)


def test_sample_figures_draw_only_the_first_samples_by_image_then_finding(tmp_path):
    paths, _ = _shard(tmp_path)  # d2 and d1, each asked about two findings: four samples
    written = write_sample_figures(
        **paths, out_dir=tmp_path / "figures", samples_per_shard=2, max_samples=3, root=tmp_path
    )
    # By image then finding: d1's two findings, then d2's first (cardiomegaly < pleural_...).
    drawn = {tuple(p.stem.split("__")[1:3]) for p in written}
    assert drawn == {("d1", "cardiomegaly"), ("d1", "pleural_effusion"), ("d2", "cardiomegaly")}
    # Overlay, panels and two sensitivity figures (plain, hard_positive) per sample.
    assert len(written) == 3 * 4
