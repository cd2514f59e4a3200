"""Which two maps a comparison pairs: a variant with its own baseline, one method with itself."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.spatial.distance import jensenshannon

from cxr_attention.metrics.map_stats import js_pairs_table
from cxr_attention.metrics.tables import answer_correctness


def _answer(question_id: str, strategy: str, baseline: str = "", dicom_id: str = "d0") -> dict:
    return {
        "sample_id": f"{dicom_id}__{question_id}",
        "dicom_id": dicom_id,
        "subject_id": "s0",
        "question_id": question_id,
        "finding": "pleural_effusion",
        "strategy": strategy,
        "baseline_question_id": baseline,
        "variant_kind": "paraphrase" if baseline else "original",
        "answer": "yes",
        "expected": "yes",
    }


def _map(sample_id: str, method: str = "attention", rows: str = "decision", **extra) -> dict:
    return {
        "map_id": f"{sample_id}__answer__answer__{method}__{rows}",
        "sample_id": sample_id,
        "dicom_id": sample_id.split("__")[0],
        "term": "answer",
        "source": "answer",
        "method": method,
        "rows": rows,
        "counterfactual": False,
        **extra,
    }


def _distinct_maps(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.dirichlet(np.full(256, 0.3)).reshape(16, 16) for _ in range(n)]


def _table(answers: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(answers)
    frame["correctness"] = answer_correctness(frame)
    return frame


def test_a_variant_is_compared_with_its_own_baseline_question():
    # Two baseline questions about one image and finding (a VQA table can hold that); the
    # variant of the second is planted identical to it and far from the first.
    answers = _table(
        [
            _answer("vqa.0", "baseline"),
            _answer("vqa.1", "baseline"),
            _answer("vqa.2", "hard_positive", baseline="vqa.1"),
        ]
    )
    first, second = _distinct_maps(2)
    maps = pd.DataFrame([_map(row["sample_id"]) for row in answers.to_dict("records")])
    arrays = dict(zip(maps["map_id"], [first, second, second.copy()], strict=True))
    table = js_pairs_table(answers, maps, arrays)
    assert len(table) == 1
    row = table.iloc[0]
    assert (row["question_id_a"], row["question_id_b"]) == ("vqa.1", "vqa.2")
    assert row["js_divergence"] == pytest.approx(0.0, abs=1e-12)


def test_pairs_never_mix_methods_or_rows_and_skip_counterfactual_maps():
    answers = _table(
        [_answer("q.baseline.0", "baseline"), _answer("q.hard.1", "hard_positive", "q.baseline.0")]
    )
    base, variant = answers["sample_id"]
    # The variant has no attention map (the cascade fell back); both have Grad-CAM maps and
    # attention maps over all rows; a counterfactual map must not enter.
    records = [
        _map(base, "attention"),
        _map(base, "gradcam"),
        _map(variant, "gradcam"),
        _map(base, "attention", rows="all"),
        _map(variant, "attention", rows="all"),
        _map(variant, "attention", counterfactual=True),
    ]
    maps = pd.DataFrame(records)
    arrays = dict(zip(maps["map_id"], _distinct_maps(len(maps), seed=3), strict=True))
    table = js_pairs_table(answers, maps, arrays)
    assert sorted(zip(table["method"], table["rows"], strict=True)) == [
        ("attention", "all"),
        ("gradcam", "decision"),
    ]
    assert (table["method_a"] == table["method_b"]).all()
    for row in table.itertuples(index=False):
        expected = jensenshannon(arrays[row.map_id_a].ravel(), arrays[row.map_id_b].ravel(), base=2)
        assert row.js_divergence == pytest.approx(expected**2, rel=1e-9)


def test_per_layer_maps_are_not_paired_with_maps_over_all_layers():
    # stats-maps writes one decision map per captured layer (per_layer true) beside the map over
    # all captured layers: only the latter stands for the sample in a statistic.
    answers = _table(
        [_answer("q.baseline.0", "baseline"), _answer("q.hard.1", "hard_positive", "q.baseline.0")]
    )
    base, variant = answers["sample_id"]
    records = [
        _map(base, per_layer=False),
        _map(variant, per_layer=False),
        {**_map(base, per_layer=True), "map_id": f"{base}__answer__answer_layer5"},
        {**_map(variant, per_layer=True), "map_id": f"{variant}__answer__answer_layer5"},
    ]
    maps = pd.DataFrame(records)
    arrays = dict(zip(maps["map_id"], _distinct_maps(len(maps), seed=5), strict=True))
    table = js_pairs_table(answers, maps, arrays)
    assert len(table) == 1
    assert set(table[["map_id_a", "map_id_b"]].iloc[0]) == {
        records[0]["map_id"],
        records[1]["map_id"],
    }
