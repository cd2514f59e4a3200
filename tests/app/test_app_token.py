"""The app's token-conditioned tab, called over HTTP as a browser would call it (gradio_client).

The oracle is `cxr_attention.explain.explain` run directly with the same image, question and
term and ``--method all``: the page must show exactly the maps it wrote (``maps.csv`` /
``maps.npz``), each labelled with its method and the cascade's reasons, and every method it
could not run with its reason. Each generated token's map is checked against its capture row
averaged by hand.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cxr_attention.app_token import (
    TOKEN_API_NAME,
    TOKEN_PICK_API_NAME,
    cascade_label,
    render_map,
    term_map_title,
    token_choices,
)
from cxr_attention.maps.records import MapRecord
from cxr_attention.maps.registry import METHODS
from cxr_attention.settings import schema_defaults
from tests.app.app_helpers import explain_directly

# A question that names no finding of the bank, so explain maps the answer and the term alone.
QUESTION = "Does this radiograph look unusual?"
ABSENT_TERM = "lung"  # in neither the question nor the tiny model's (byte-noise) answer
PICKED_WORD = "radiograph"  # a word of the question, picked from the page's choices


@pytest.fixture(scope="module")
def direct(loaded, tiny_model_dir, radiograph, tmp_path_factory):
    """explain(--method all) of each term outside the app: term -> (result, its folder)."""
    outcomes = {}
    for term in (ABSENT_TERM, PICKED_WORD):
        out = tmp_path_factory.mktemp("direct")
        result = explain_directly(
            radiograph, QUESTION, out, loaded, tiny_model_dir, terms=[term], method="all"
        )
        outcomes[term] = (result, out)
    return outcomes


def _frame(table) -> pd.DataFrame:
    return pd.DataFrame(table["data"], columns=table["headers"])


def _term_rows(out) -> pd.DataFrame:
    maps = pd.read_csv(out / "maps.csv", dtype=str, keep_default_na=False)
    return maps[maps["source"] != "answer"]


def _check_term(term, direct, tmp_path, shown_maps, shown_methods) -> pd.DataFrame:
    """The page's gallery and method table of ``term`` against explain's own files."""
    _, out = direct[term]
    expected = _term_rows(out)
    assert set(expected["term"]) == {term}
    table = _frame(shown_methods)
    assert table["method"].tolist() == list(METHODS)  # every method, in the registry's order
    made = table[table["map_id"] != ""]
    assert made["map_id"].tolist() == expected["map_id"].tolist()
    assert made["method"].tolist() == expected["method"].tolist()
    assert made["cascade"].tolist() == (expected["cascade"] == "True").tolist()
    # a method explain gave no map of the term: the reason the last resort's row lists for it
    uniform = expected.set_index("method").loc["uniform", "fallback_reason"]
    for row in table[table["map_id"] == ""].itertuples():
        assert row.reason.startswith("no map: ")
        assert f"{row.method}: {row.reason.removeprefix('no map: ')}" in uniform

    # one overlay per map, in explain's order, each labelled with its method; the pixels are
    # explain's grid drawn over explain's preprocessed image
    assert len(shown_maps) == len(expected)
    with np.load(out / "maps.npz") as arrays:
        for item, record in zip(shown_maps, expected.itertuples(), strict=True):
            caption = item["caption"]
            assert caption.split(" ")[0] == record.method
            title = term_map_title(term, record.method, record.cascade == "True")
            redrawn = render_map(out, arrays[record.map_id], title, tmp_path / "expected.png")
            shown = np.asarray(Image.open(item["image"]).convert("RGB"))
            assert np.array_equal(shown, np.asarray(Image.open(redrawn).convert("RGB")))
    return expected


def test_a_typed_term_shows_every_methods_map_and_the_cascades_reasons(
    client, direct, radiograph, tmp_path
):
    from gradio_client import handle_file

    status, answer, p_yes, tokens, term_maps, methods, token_maps, token_table = client.predict(
        handle_file(str(radiograph)), QUESTION, ABSENT_TERM, api_name=TOKEN_API_NAME
    )
    result, out = direct[ABSENT_TERM]
    assert answer == result.answer and p_yes == pytest.approx(result.p_yes, abs=1e-6)
    assert repr(result.generated_text) in status

    expected = _check_term(ABSENT_TERM, direct, tmp_path, term_maps, methods)
    # not in the question or the answer: attention finds no term, and the page says so
    pick = expected[expected["cascade"] == "True"].iloc[0]
    assert pick["source"] == "absent" and pick["counterfactual"] == "True"
    assert pick["fallback_reason"].startswith("attention: term not found")
    caption = next(i["caption"] for i in term_maps if i["caption"].startswith(pick["method"]))
    assert f"attention -> {pick['method']}" in caption and "attention: term not found" in caption
    table = _frame(methods).set_index("method")
    assert "attention: term not found" in table.loc[pick["method"], "reason"]
    assert table.loc["attention", "reason"] == "no map: term not found"

    # each generated token's map: its capture row averaged over layers and heads, by hand
    with np.load(out / "attention.npz") as capture:
        rows = capture["attention"].astype(np.float64).mean(axis=(0, 1))
    masses = rows.sum(axis=1)
    shown = _frame(token_table)
    assert shown["position"].tolist() == list(range(len(rows))) and len(token_maps) == len(rows)
    min_mass = schema_defaults()["maps"]["min_image_mass"]
    for row, mass in zip(shown.itertuples(), masses, strict=True):
        if mass >= min_mass:
            assert row.method == "attention"
            assert float(row.image_mass) == pytest.approx(mass, rel=1e-4)
        else:
            assert row.method == "uniform" and "below min_image_mass" in row.fallback_reason
    # the token choices: the question's words, then the answer's tokens that have one
    values = [value for _, value in tokens["choices"]]
    assert values[:5] == ["Does", "this", "radiograph", "look", "unusual"]


def test_picking_a_question_word_maps_it(client, direct, radiograph, tmp_path):
    from gradio_client import handle_file

    term, status, _, _, tokens, term_maps, methods, _, _ = client.predict(
        handle_file(str(radiograph)), QUESTION, PICKED_WORD, api_name=TOKEN_PICK_API_NAME
    )
    assert term == PICKED_WORD and tokens["value"] == PICKED_WORD
    expected = _check_term(PICKED_WORD, direct, tmp_path, term_maps, methods)
    assert set(expected["source"]) == {"prompt"}  # in the question only
    assert f"`{PICKED_WORD}` (prompt)" in status


def test_without_a_term_the_answer_and_its_tokens_are_shown(client, radiograph):
    from gradio_client import handle_file

    status, answer, _, tokens, term_maps, methods, token_maps, token_table = client.predict(
        handle_file(str(radiograph)), QUESTION, "  ", api_name=TOKEN_API_NAME
    )
    assert "Type a term, or pick a word" in status
    assert answer in {"yes", "no", "unclear"}
    assert not term_maps and not (methods or {}).get("data")  # no term: nothing to compare
    assert len(token_maps) == len(_frame(token_table)) > 0
    assert len(tokens["choices"]) >= 5


def test_a_text_file_is_refused_in_the_page(client, tmp_path):
    from gradio_client import handle_file

    notes = tmp_path / "notes.txt"
    notes.write_text("not a radiograph\n")
    status, answer, p_yes, *_ = client.predict(
        handle_file(str(notes)), QUESTION, ABSENT_TERM, api_name=TOKEN_API_NAME
    )
    assert status.startswith("Cannot use notes.txt: ") and answer == "" and p_yes is None


def test_a_term_explain_makes_no_target_of_is_said_so(client, radiograph):
    from gradio_client import handle_file

    status, *_, term_maps, methods, _, _ = client.predict(
        handle_file(str(radiograph)), QUESTION, "?!", api_name=TOKEN_API_NAME
    )
    assert "No map of `?!`: explain makes no target of it." in status
    assert not term_maps
    assert (_frame(methods)["map_id"] == "").all()


def test_the_cascade_label_names_the_path_or_says_why_there_is_none():
    def label(method, cascade, reason=""):
        return cascade_label({"method": method, "cascade": cascade, "fallback_reason": reason})

    assert label("rollout", "False") == "rollout"
    assert label("attention", "True") == "attention (the cascade's pick: its first choice)"
    reason = "attention: term not found; term_attention: term not in the prompt"
    assert label("gradcam", True, reason) == (
        "gradcam (the cascade's pick: attention -> term_attention -> gradcam; " + reason + ")"
    )
    assert label("uniform", "True", reason) == (
        "uniform (the cascade's pick: no other method gave a map)"
    )


def test_the_choices_are_the_questions_words_then_the_answers_word_tokens():
    def token(position, text):
        record = MapRecord(
            "m", "s", "", "", text, "generated", (position,), "attention", "", "", "", 0.5, 0
        )
        return record, None

    tokens = [token(0, " No"), token(1, ","), token(2, " it's"), token(3, "<end_of_turn>")]
    assert token_choices("Is there a pleural-effusion?", tokens) == [
        ("question: Is", "Is"),
        ("question: there", "there"),
        ("question: a", "a"),
        ("question: pleural-effusion", "pleural-effusion"),
        ("answer 0: No", "No"),
        ("answer 2: it's", "it's"),
        ("answer 3: <end_of_turn>", "<end_of_turn>"),
    ]
