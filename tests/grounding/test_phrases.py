"""MS-CXR's phrases asked as questions of their own, their term maps scored against their boxes."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from cxr_attention.grounding.datasets import MS_CXR_COLUMNS
from cxr_attention.grounding.phrases import PHRASE_KIND
from cxr_attention.grounding.stage import run_grounding
from cxr_attention.io import ConfigError
from cxr_attention.questions.labels import expand_samples
from cxr_attention.questions.table import study_question_table
from cxr_attention.settings import schema_defaults

DEFAULTS = schema_defaults()
TEMPLATE = DEFAULTS["grounding"]["phrase_question"]
# Bank questions: Pneumothorax's baseline only (one per image), the schema's bank.
QUESTIONS = {**DEFAULTS["questions"], "findings": ["Pneumothorax"], "strategies": ["baseline"]}
# The frame the boxes are drawn in: 16 x 16 cells of 32 x 40 px (non-square).
FRAME_W, FRAME_H = 512, 640
# MS-CXR rows (released columns and order): img_a has one phrase drawn as two boxes, whose union
# covers cells rows 2-3 x cols 2-4; img_b has two phrases of one category, at other places.
MS_CXR_ROWS = [
    ("img_a", "Pneumothorax", "small left apical pneumothorax", 64, 80, 64, 80),
    ("img_a", "Pneumothorax", "small left apical pneumothorax", 128, 80, 32, 80),
    ("img_b", "Pneumothorax", "right pneumothorax", 320, 400, 64, 40),
    ("img_b", "Pneumothorax", "Large  left pneumothorax", 0, 0, 96, 120),
]
A_CELLS = [(row, col) for row in (2, 3) for col in (2, 3, 4)]


def _ms_cxr_csv(path, rows=MS_CXR_ROWS):
    lines = [",".join(MS_CXR_COLUMNS)]
    for index, (dicom_id, category, phrase, x, y, w, h) in enumerate(rows):
        source = f"files/p10/p1000{index}/s5000{index}/{dicom_id}.jpg"
        lines.append(f"{dicom_id},{category},{phrase},{source},{x},{y},{w},{h},{FRAME_W},{FRAME_H}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_one_phrase_question_per_image_and_phrase(tmp_path):
    csv = _ms_cxr_csv(tmp_path / "ms_cxr.csv")
    bank_only = study_question_table(QUESTIONS)
    table = study_question_table(QUESTIONS, ms_cxr_phrases=csv, phrase_question=TEMPLATE)
    # The bank's rows first, unchanged; then one question per (image, phrase) in file order.
    pd.testing.assert_frame_equal(table.iloc[: len(bank_only)], bank_only)
    phrased = table.iloc[len(bank_only) :]
    assert phrased["dicom_id"].tolist() == ["img_a", "img_b", "img_b"]
    terms = ["small left apical pneumothorax", "right pneumothorax", "Large left pneumothorax"]
    assert phrased["target_terms"].tolist() == terms
    assert phrased["question"].tolist() == [TEMPLATE.replace("{phrase}", t) for t in terms]
    assert set(phrased["variant_kind"]) == {PHRASE_KIND}
    assert set(phrased["finding"]) == {"Pneumothorax"}
    assert set(phrased["expected_answer"]) == {"yes"}
    assert (phrased["baseline_question_id"] == phrased["question_id"]).all()

    # Each phrase question pairs with its own image only; img_c, without MS-CXR rows, gets none.
    manifest = pd.DataFrame(
        {"dicom_id": ["img_a", "img_b", "img_c"], "subject_id": ["1", "2", "3"]}
    ).assign(Pneumothorax=[1.0, 1.0, 0.0])
    samples = expand_samples(manifest, table, uncertain="exclude", blank="exclude")
    asked = samples[samples["variant_kind"] == PHRASE_KIND]
    assert asked["dicom_id"].value_counts().to_dict() == {"img_a": 1, "img_b": 2}
    assert (samples["dicom_id"] == "img_c").sum() == len(bank_only)


def test_a_template_without_the_phrase_is_a_config_error(tmp_path):
    csv = _ms_cxr_csv(tmp_path / "ms_cxr.csv")
    with pytest.raises(ConfigError, match=r"grounding\.phrase_question"):
        study_question_table(QUESTIONS, ms_cxr_phrases=csv, phrase_question="Is it there?")


def _preprocess_csv(tmp_path, images):
    lungs = np.zeros((FRAME_H // 4, FRAME_W // 4), dtype=np.uint8)
    lungs[20:140, 10:60] = 1
    lungs[20:140, 68:118] = 2
    rows = []
    for dicom_id, image in images.items():
        lung_path = tmp_path / f"{dicom_id}_lungs.png"
        cv2.imwrite(str(lung_path), lungs)
        rows.append(
            {
                "dicom_id": dicom_id,
                "image": str(image),
                "body_mask": "",
                "lung_mask": str(lung_path),
                "source_width": FRAME_W,
                "source_height": FRAME_H,
                "mask_flags": "",
            }
        )
    pd.DataFrame(rows).to_csv(tmp_path / "preprocess.csv", index=False)
    return tmp_path / "preprocess.csv"


def _ground(tmp_path, maps_csv, maps_npz, questions_csv, preprocess_csv, ms_cxr_csv):
    run_grounding(
        maps_csv=maps_csv,
        maps_npz=[maps_npz],
        preprocess_csvs=[preprocess_csv],
        annotation_files={"ms_cxr": ms_cxr_csv},
        questions_csv=questions_csv,
        scores_csv=tmp_path / "scores.csv",
        summary_csv=tmp_path / "summary.csv",
        failures_csv=tmp_path / "failures.csv",
        annotations_csv=tmp_path / "annotations.csv",
        thresholds=[0.5],
        random_maps=3,
        medfocus_max_side=None,
        seed=0,
        bootstrap_samples=50,
        confidence=0.95,
    )
    scores = pd.read_csv(tmp_path / "scores.csv", dtype=str, keep_default_na=False)
    summary = pd.read_csv(tmp_path / "summary.csv", keep_default_na=False)
    return scores, summary


def test_each_phrase_map_is_scored_against_its_own_phrase_only(tmp_path):
    """Planted maps: a phrase map of img_b is scored against its phrase's box, not the other's."""
    csv = _ms_cxr_csv(tmp_path / "ms_cxr.csv")
    questions = study_question_table(QUESTIONS, ms_cxr_phrases=csv, phrase_question=TEMPLATE)
    questions.to_csv(tmp_path / "questions.csv", index=False)
    phrase_ids = dict(zip(questions["target_terms"], questions["question_id"], strict=False))
    finding_id = questions["question_id"].iloc[0]
    maps, arrays = [], {}

    def add(question_id, term, grid):
        source = "answer" if not term else "prompt"
        map_id = f"img_b__{question_id}__{term or 'answer'}__{source}__attention"
        maps.append(
            {
                "map_id": map_id,
                "sample_id": f"img_b__{question_id}",
                "dicom_id": "img_b",
                "question_id": question_id,
                "term": term,
                "source": source,
                "method": "attention",
                "finding": "Pneumothorax",
                "subject_id": "2",
            }
        )
        arrays[map_id] = grid / grid.sum()

    right = np.full((16, 16), 0.01)
    right[10, 10] = 1.0  # the cell of "right pneumothorax"'s box (x 320-384, y 400-440)
    left = np.full((16, 16), 0.01)
    left[0, 0] = 1.0  # inside "Large left pneumothorax"'s box (x 0-96, y 0-120)
    add(phrase_ids["right pneumothorax"], "right pneumothorax", right)
    add(phrase_ids["right pneumothorax"], "", right)
    add(phrase_ids["Large left pneumothorax"], "Large left pneumothorax", left)
    add(finding_id, "", left)
    pd.DataFrame(maps).to_csv(tmp_path / "maps.csv", index=False)
    np.savez(tmp_path / "maps.npz", **arrays)
    preprocess = _preprocess_csv(tmp_path, {"img_b": ""})
    scores, summary = _ground(
        tmp_path, tmp_path / "maps.csv", tmp_path / "maps.npz", tmp_path / "questions.csv",
        preprocess, csv,
    )  # fmt: skip
    scored = scores[scores["map_kind"] != "baseline"]
    by_phrase = scored.groupby("phrase")["map_kind"].apply(sorted).to_dict()
    # The finding question's answer map counts for both phrases; each phrase map for its own.
    assert by_phrase == {
        "right pneumothorax": ["answer", "phrase", "phrase_answer"],
        "Large  left pneumothorax": ["answer", "phrase"],
    }
    phrase_rows = scored[scored["map_kind"] == "phrase"].set_index("phrase")
    assert phrase_rows.loc["right pneumothorax", "term"] == "right pneumothorax"
    assert float(phrase_rows.loc["right pneumothorax", "pointing_game"]) == 1.0
    assert float(phrase_rows.loc["Large  left pneumothorax", "pointing_game"]) == 1.0
    # The finding question's map peaks inside the left box, so it misses the right one.
    answer = scored[(scored["map_kind"] == "answer")].set_index("phrase")
    assert float(answer.loc["right pneumothorax", "pointing_game"]) == 0.0
    kinds = set(summary.loc[summary["metric"] == "mass", "map_kind"])
    assert kinds == {"answer", "phrase", "phrase_answer", "baseline"}


def test_the_tiny_model_s_phrase_map_is_scored_against_its_box(tiny_model_dir, tmp_path):
    """Questions -> inference -> maps -> gather -> grounding on the tiny model, by hand after."""
    from PIL import Image

    from cxr_attention.inference.runner import run_inference_shard
    from cxr_attention.maps.shard import run_maps_shard
    from cxr_attention.workflow import gather_study_tables

    csv = _ms_cxr_csv(tmp_path / "ms_cxr.csv", MS_CXR_ROWS[:2])
    questions = study_question_table(QUESTIONS, ms_cxr_phrases=csv, phrase_question=TEMPLATE)
    questions.to_csv(tmp_path / "questions.csv", index=False)
    rng = np.random.default_rng(0)
    images = {}
    for dicom_id in ("img_a", "img_c"):
        images[dicom_id] = tmp_path / f"{dicom_id}.png"
        pixels = rng.integers(0, 256, (FRAME_H // 4, FRAME_W // 4), dtype=np.uint8)
        Image.fromarray(pixels).save(images[dicom_id])
    preprocess = _preprocess_csv(tmp_path, images)
    manifest = pd.DataFrame(
        {
            "dicom_id": ["img_a", "img_c"],
            "subject_id": ["10000", "10002"],
            "study_id": ["50000", "50002"],
            "shard": [0, 0],
            "Pneumothorax": [1.0, 0.0],
        }
    )
    manifest.to_csv(tmp_path / "manifest.csv", index=False)
    inference = {
        **DEFAULTS["inference"],
        "max_new_tokens": 3,
        "seed": DEFAULTS["seed"],
        "min_free_gpu_gb": DEFAULTS["model"]["min_free_gpu_gb"],
        "uncertain": "exclude",
        "blank": "exclude",
    }
    inference = {key: inference[key] for key in _inference_keys()}
    run_inference_shard(
        manifest_csv=tmp_path / "manifest.csv",
        questions_csv=tmp_path / "questions.csv",
        preprocess_csv=preprocess,
        shard=0,
        model_id=tiny_model_dir,
        out_csv=tmp_path / "answers.csv",
        out_dir=tmp_path / "captures",
        failures_csv=tmp_path / "inference.failures.csv",
        params=inference,
        device="cpu",
        progress=False,
    )
    run_maps_shard(
        answers_csv=tmp_path / "answers.csv",
        captures_dir=tmp_path / "captures",
        questions_csv=tmp_path / "questions.csv",
        model_id=tiny_model_dir,
        out_csv=tmp_path / "maps-shard.csv",
        out_npz=tmp_path / "maps.npz",
        failures_csv=tmp_path / "maps.failures.csv",
        params={"device": "cpu", "methods": ["attention"], "per_layer": False, "seed": 0},
        images_csv=preprocess,
    )
    shard_maps = pd.read_csv(tmp_path / "maps-shard.csv", dtype=str, keep_default_na=False)
    shard_maps[["map_id"]].to_csv(tmp_path / "metrics-shard.csv", index=False)
    gather_study_tables(
        answers=[tmp_path / "answers.csv"],
        maps=[tmp_path / "maps-shard.csv"],
        metrics=[tmp_path / "metrics-shard.csv"],
        manifest_csv=tmp_path / "manifest.csv",
        answers_out=tmp_path / "answers-all.csv",
        maps_out=tmp_path / "maps.csv",
    )
    maps = pd.read_csv(tmp_path / "maps.csv", dtype=str, keep_default_na=False)
    phrase = "small left apical pneumothorax"
    phrase_maps = maps[maps["term"] == phrase]
    assert len(phrase_maps) == 1
    assert phrase_maps["dicom_id"].tolist() == ["img_a"]
    assert phrase_maps["variant_kind"].tolist() == [PHRASE_KIND]
    assert not (maps.loc[maps["dicom_id"] == "img_c", "variant_kind"] == PHRASE_KIND).any()

    scores, _ = _ground(
        tmp_path, tmp_path / "maps.csv", tmp_path / "maps.npz", tmp_path / "questions.csv",
        preprocess, csv,
    )  # fmt: skip
    row = scores[scores["map_kind"] == "phrase"]
    assert row["map_id"].tolist() == phrase_maps["map_id"].tolist()
    assert row["term"].tolist() == [phrase]
    with np.load(tmp_path / "maps.npz") as arrays:
        grid = arrays[phrase_maps["map_id"].iloc[0]].astype(np.float64)
    assert grid.max() > grid.min()  # a map with a place, not a uniform one
    inside = np.zeros((16, 16), dtype=bool)
    for cell in A_CELLS:
        inside[cell] = True
    peak = grid == grid.max()
    assert float(row["mass"].iloc[0]) == pytest.approx(grid[inside].sum() / grid.sum(), rel=1e-5)
    assert float(row["pointing_game"].iloc[0]) == pytest.approx(inside[peak].mean())
    assert float(row["area"].iloc[0]) == pytest.approx(len(A_CELLS) / 256)


def _inference_keys():
    from cxr_attention.inference.runner import PARAMS

    return PARAMS


def test_the_questions_job_does_not_depend_on_the_grounding_metrics():
    """An edit to the grounding metrics reruns the grounding stage, never the model's questions."""
    from cxr_attention.codegraph import library_closure

    code = library_closure("scripts/questions.py")
    assert "src/cxr_attention/grounding/phrases.py" in code
    assert not {"regions.py", "datasets.py", "stage.py"} & {Path(f).name for f in code}
