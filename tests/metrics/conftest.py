"""A small synthetic study (answers, maps, arrays, metrics) in the run tables' formats."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

FINDINGS = ("pleural_effusion", "cardiomegaly")
VARIANT_KINDS = ("phrasing_variation", "synonym_replacement", "voice_change")


def build_study(seed: int = 0, n_images: int = 12) -> dict:
    """Answers, maps table, map arrays and metrics of ``n_images`` images, 2 images per patient.

    Every image gets, per finding, a baseline, a plain and three hard-positive questions; each
    question one ``answer`` map. Answers, P(yes) and metrics are random with a fixed seed.
    """
    rng = np.random.default_rng(seed)
    answers, maps, metrics, arrays = [], [], [], {}
    for index in range(n_images):
        dicom_id, subject_id = f"d{index:02d}", f"s{index // 2:02d}"
        for finding in FINDINGS:
            expected = "yes" if rng.random() < 0.5 else "no"
            questions = [(f"{finding}.baseline.0", "baseline", "", "0", "original")]
            questions.append((f"{finding}.plain.0", "plain", "", "0", "plain"))
            for k, kind in enumerate(VARIANT_KINDS, start=1):
                questions.append(
                    (f"{finding}.hard_positive.{k}", "hard_positive", questions[0][0], str(k), kind)
                )
            for question_id, strategy, baseline_id, variant_index, kind in questions:
                sample_id = f"{dicom_id}__{question_id}"
                answer = str(rng.choice(["yes", "no", "unclear"], p=[0.45, 0.45, 0.1]))
                p_yes = float(np.clip(rng.normal(0.7 if expected == "yes" else 0.4, 0.2), 0, 1))
                answers.append(
                    {
                        "sample_id": sample_id,
                        "dicom_id": dicom_id,
                        "subject_id": subject_id,
                        "study_id": f"t{index:02d}",
                        "question_id": question_id,
                        "finding": finding,
                        "strategy": strategy,
                        "baseline_question_id": baseline_id,
                        "variant_index": variant_index,
                        "variant_kind": kind,
                        "question": "?",
                        "answer": answer,
                        "p_yes": p_yes,
                        "label": "1.0" if expected == "yes" else "0.0",
                        "expected": expected,
                        "correct": str(answer == expected),
                    }
                )
                map_id = f"{sample_id}__answer__answer__attention"
                values = rng.dirichlet(np.full(256, 0.5)).reshape(16, 16).astype(np.float32)
                arrays[map_id] = values
                maps.append(
                    {
                        "map_id": map_id,
                        "sample_id": sample_id,
                        "dicom_id": dicom_id,
                        "question_id": question_id,
                        "term": "answer",
                        "source": "answer",
                        "method": "attention",
                    }
                )
                metrics.append(
                    {
                        "map_id": map_id,
                        "inside_body": rng.uniform(0.5, 1),
                        "border_fraction": rng.uniform(0, 0.1),
                        "entropy": rng.uniform(2, 5.5),
                        "entropy_normalised": rng.uniform(0.4, 1),
                        "focus": rng.uniform(0.05, 0.5),
                        "focus_max": rng.uniform(0.004, 0.2),
                        "left_right": rng.uniform(0, 1),
                        "apical_basal": rng.uniform(0, 1),
                    }
                )
    return {
        "answers": pd.DataFrame(answers),
        "maps": pd.DataFrame(maps),
        "metrics": pd.DataFrame(metrics),
        "arrays": arrays,
    }


def write_study(study: dict, folder) -> dict:
    """Write the tables as CSV and the arrays as two npz shards; return the paths."""
    paths = {
        "answers_csv": folder / "answers.csv",
        "maps_csv": folder / "maps.csv",
        "metrics_csv": folder / "metrics.csv",
    }
    study["answers"].to_csv(paths["answers_csv"], index=False)
    study["maps"].to_csv(paths["maps_csv"], index=False)
    study["metrics"].to_csv(paths["metrics_csv"], index=False)
    keys = sorted(study["arrays"])
    half = len(keys) // 2
    shards = [folder / "maps-0.npz", folder / "maps-1.npz"]
    np.savez(shards[0], **{k: study["arrays"][k] for k in keys[:half]})
    np.savez(shards[1], **{k: study["arrays"][k] for k in keys[half:]})
    paths["maps_npz"] = shards
    return paths


@pytest.fixture()
def synthetic_study() -> dict:
    return build_study()


@pytest.fixture()
def study_builder():
    return build_study


@pytest.fixture()
def study_writer():
    return write_study
