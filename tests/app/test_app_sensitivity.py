"""The app's prompt-sensitivity tab, called over HTTP as a browser would call it (gradio_client).

Oracles: `cxr_attention.explain.explain` run directly on each phrasing (answer, P(yes)), scipy's
Jensen-Shannon distance squared on the answer maps explain itself wrote, and the study's rule
that identical phrasings agree and move the map by nothing.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy.spatial.distance import jensenshannon

from cxr_attention.app import build_app
from cxr_attention.app_sensitivity import PROMPT_SENSITIVITY_API_NAME, answer_map
from tests.app.app_helpers import explain_directly, explain_settings, served

PHRASINGS = ("Is there a pleural effusion?", "Is there fluid in the pleural space?")


@pytest.fixture(scope="module")
def direct(loaded, tiny_model_dir, radiograph, tmp_path_factory):
    """explain() of each phrasing outside the app: (result, answer map grid, its method)."""
    outcomes = []
    for question in PHRASINGS:
        out = tmp_path_factory.mktemp("direct")
        result = explain_directly(radiograph, question, out, loaded, tiny_model_dir)
        maps = pd.read_csv(out / "maps.csv", keep_default_na=False)
        decision = maps[(maps["source"] == "answer") & (maps["rows"] == "decision")]
        with np.load(out / "maps.npz") as arrays:
            grid = arrays[decision["map_id"].iloc[0]].astype(np.float64)
        outcomes.append((result, grid, decision["method"].iloc[0]))
    return outcomes


def _predict(client, radiograph, first, second, third=""):
    from gradio_client import handle_file

    return client.predict(
        handle_file(str(radiograph)), first, second, third, api_name=PROMPT_SENSITIVITY_API_NAME
    )


def test_two_phrasings_show_what_explain_computes(client, direct, radiograph):
    status, answers, overlays, difference, js, pairs, consistent, null_band = _predict(
        client, radiograph, *PHRASINGS
    )
    table = pd.DataFrame(answers["data"], columns=answers["headers"])
    assert table["question"].tolist() == list(PHRASINGS)
    for row, (result, _, _) in zip(table.to_dict("records"), direct, strict=True):
        assert row["answer"] == result.answer
        assert float(row["p_yes"]) == pytest.approx(result.p_yes, abs=1e-6)

    (_, map_a, _), (_, map_b, _) = direct
    expected = jensenshannon(map_a.ravel(), map_b.ravel(), base=2) ** 2
    assert expected > 1e-6  # the two phrasings' maps differ, so the check below can fail
    assert js == pytest.approx(expected, rel=1e-6, abs=1e-12)
    pair_table = pd.DataFrame(pairs["data"], columns=pairs["headers"])
    assert float(pair_table["js_divergence"].iloc[0]) == pytest.approx(expected, rel=1e-6)

    answered = [result.answer for result, _, _ in direct]
    assert consistent == (answered[0] == answered[1] and answered[0] in {"yes", "no"})
    assert "No null band loaded" in null_band
    assert f"= {expected:.4f}" in status
    assert len(overlays) == 2
    assert Image.open(difference).size[0] > Image.open(difference).size[1]  # three panels


def test_identical_phrasings_give_js_zero(client, direct, radiograph):
    _, answers, _, _, js, _, consistent, _ = _predict(
        client, radiograph, PHRASINGS[0], PHRASINGS[0]
    )
    table = pd.DataFrame(answers["data"], columns=answers["headers"])
    assert table["answer"].nunique() == 1
    assert js == pytest.approx(0.0, abs=1e-9)
    # the study's rule: the same yes or no is consistent, unclear never is
    assert consistent == (table["answer"].iloc[0] in {"yes", "no"})


def test_one_phrasing_is_refused(client, radiograph):
    status, answers, *_ = _predict(client, radiograph, PHRASINGS[0], "  ")
    assert status == "Type at least two phrasings of the question."
    assert answers is None or not answers.get("data")


def test_answer_map_names_the_folder_without_an_answer_map(tmp_path):
    pd.DataFrame({"map_id": ["m"], "source": ["term"], "rows": ["decision"]}).to_csv(
        tmp_path / "maps.csv", index=False
    )
    with pytest.raises(ValueError, match=r"maps\.csv: no answer map"):
        answer_map(tmp_path)


def test_consistency_follows_the_study_rule():
    from cxr_attention.app_sensitivity import _consistent

    assert _consistent(["yes", "yes"]) and _consistent(["no", "no", "no"])
    assert not _consistent(["yes", "no"]) and not _consistent(["unclear", "unclear"])


def test_the_runs_null_band_places_the_pair(loaded, tiny_model_dir, direct, radiograph, tmp_path):
    """A run whose paraphrase null lies below this pair's JS and whose other-image null lies
    above it: the pair is ``between`` the two, with the run's thresholds shown."""

    (_, map_a, method), (_, map_b, _) = direct
    expected = jensenshannon(map_a.ravel(), map_b.ravel(), base=2) ** 2
    paraphrase, image = expected / 2, min(1.0, expected * 3)
    # the map's own method: the schema's default "cascade" names the first method that worked
    key = {"term": "", "source": "answer", "method": method, "rows": "decision"}
    nulls = pd.DataFrame(
        [{"null": "paraphrase", **key, "js_divergence": paraphrase}] * 3
        + [{"null": "other_image", **key, "js_divergence": image}] * 3
    )
    (tmp_path / "metrics").mkdir()
    nulls.to_csv(tmp_path / "metrics" / "js_null.csv", index=False)

    page = build_app(loaded, str(tiny_model_dir), explain_settings(), results_dir=tmp_path)
    with served(page) as page_client:
        outputs = _predict(page_client, radiograph, *PHRASINGS)
    null_band = outputs[-1]
    assert null_band.startswith("between ")
    assert f"{paraphrase:.4f}" in null_band and f"{image:.4f}" in null_band
