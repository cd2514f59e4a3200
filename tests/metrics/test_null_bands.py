"""JS bands calibrated on planted null distributions: paraphrase noise and other images."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.spatial.distance import jensenshannon

from cxr_attention.metrics.map_stats import js_pairs_table
from cxr_attention.metrics.null_bands import calibrate_entropy, calibrate_js_bands, js_null_table


def _study():
    """Four images; per image a baseline, two paraphrases and a plain question.

    Paraphrases are planted as small perturbations of their image's baseline map; the plain
    question's map is another image's map, so it changes as much as changing the image.
    """
    rng = np.random.default_rng(1)
    base = "edema.baseline.0"
    image_maps = [rng.dirichlet(np.full(256, 0.2)) for _ in range(4)]
    answers, maps, arrays = [], [], {}
    for index, image_map in enumerate(image_maps):
        dicom_id = f"d{index}"
        questions = [
            (base, "baseline", "", "is there edema?", image_map),
            ("edema.hard.1", "hard_positive", base, "edema present?", image_map * 1.02),
            ("edema.hard.2", "hard_positive", base, "any edema?", image_map * 0.98 + 1e-4),
            ("edema.plain.0", "plain", "", "fluid in lungs?", image_maps[(index + 2) % 4]),
        ]
        for question_id, strategy, baseline, text, values in questions:
            sample_id = f"{dicom_id}__{question_id}"
            answers.append(
                {
                    "sample_id": sample_id,
                    "dicom_id": dicom_id,
                    "subject_id": f"s{index}",
                    "question_id": question_id,
                    "question": text,
                    "finding": "edema",
                    "strategy": strategy,
                    "baseline_question_id": baseline,
                    "variant_kind": "",
                }
            )
            map_id = f"{sample_id}__answer"
            arrays[map_id] = (values / values.sum()).reshape(16, 16)
            maps.append(
                {
                    "map_id": map_id,
                    "sample_id": sample_id,
                    "dicom_id": dicom_id,
                    "term": "answer",
                    "source": "answer",
                    "method": "attention",
                    "rows": "decision",
                    "entropy": 5.0 if index else 1.0,
                }
            )
    return pd.DataFrame(answers), pd.DataFrame(maps), arrays


def test_null_pairs_and_calibrated_bands():
    answers, maps, arrays = _study()
    nulls = js_null_table(answers, maps, arrays)
    counts = nulls["null"].value_counts().to_dict()
    # Other images: 4 questions x a ring of 4 images; paraphrases: one pair per image.
    assert counts == {"other_image": 16, "paraphrase": 4}
    for row in nulls.itertuples(index=False):
        p, q = arrays[row.map_id_a].ravel(), arrays[row.map_id_b].ravel()
        assert row.js_divergence == pytest.approx(jensenshannon(p, q, base=2) ** 2, rel=1e-9)
    pairs = calibrate_js_bands(js_pairs_table(answers, maps, arrays), nulls)
    paraphrase = nulls.loc[nulls["null"] == "paraphrase", "js_divergence"]
    image = nulls.loc[nulls["null"] == "other_image", "js_divergence"]
    q95, median = np.quantile(paraphrase, 0.95), np.median(image)
    assert pairs["paraphrase_q95"].iloc[0] == pytest.approx(q95)
    assert pairs["image_median"].iloc[0] == pytest.approx(median)
    # The plain question's map is another image's: as large a change as changing the image.
    assert set(pairs.loc[pairs["strategy_b"] == "plain", "band_calibrated"]) == {"image_level"}
    for row in pairs[pairs["strategy_b"] == "hard_positive"].itertuples(index=False):
        assert row.js_divergence < median
        expected = "paraphrase_level" if row.js_divergence <= q95 else "between"
        assert row.band_calibrated == expected
    assert (pairs["band_calibrated"] == "paraphrase_level").sum() >= 4  # the identical ones


def test_entropy_band_against_the_same_question_on_other_images():
    answers, maps, _ = _study()
    table = calibrate_entropy(maps, answers).set_index("map_id")
    first = table.loc["d0__edema.baseline.0__answer"]
    assert first["entropy_band_calibrated"] == "focused" and first["null_n"] == 3
    assert table.loc["d1__edema.baseline.0__answer", "entropy_band_calibrated"] == "typical"
