"""The one selector of the map that stands for a sample, checked on a hand-made maps table."""

from __future__ import annotations

import pandas as pd
import pytest

from cxr_attention.metrics.selection import select_maps


def _maps() -> pd.DataFrame:
    rows = []
    # s1: answer maps by two methods, a prompt term by two methods, a generated term.
    for source, term, methods in (
        ("answer", "", ("gradcam", "attention")),
        ("prompt", "effusion", ("uniform", "activation_norm")),
        ("generated", "fluid", ("attention",)),
    ):
        for method in methods:
            rows.append(("s1", term, source, method))
    # s2: no answer map; two prompt terms (the first in sorted order is chosen).
    for term in ("pleura", "effusion"):
        for method in ("gradcam", "gated_answer"):
            rows.append(("s2", term, "prompt", method))
    frame = pd.DataFrame(rows, columns=["sample_id", "term", "source", "method"])
    frame["map_id"] = [f"m{i:02d}" for i in range(len(frame))]
    return frame.sample(frac=1.0, random_state=3)  # the input order must not matter


def _keys(frame: pd.DataFrame) -> list[tuple]:
    return list(frame[["sample_id", "term", "source", "method"]].itertuples(index=False, name=None))


def test_one_map_per_term_keeps_the_preferred_method():
    chosen = select_maps(_maps())
    assert _keys(chosen) == [
        ("s1", "", "answer", "attention"),
        ("s1", "effusion", "prompt", "activation_norm"),
        ("s1", "fluid", "generated", "attention"),
        ("s2", "effusion", "prompt", "gated_answer"),
        ("s2", "pleura", "prompt", "gated_answer"),
    ]
    prompt_only = [k for k in _keys(chosen) if k[2] == "prompt"]
    assert _keys(select_maps(_maps(), source="prompt")) == prompt_only


def test_one_map_per_sample_prefers_the_answer_source_then_the_first_term():
    assert _keys(select_maps(_maps(), one_per="sample")) == [
        ("s1", "", "answer", "attention"),
        ("s2", "effusion", "prompt", "gated_answer"),
    ]
    # Restricted to one source, the first term of each sample.
    assert _keys(select_maps(_maps(), source="prompt", one_per="sample")) == [
        ("s1", "effusion", "prompt", "activation_norm"),
        ("s2", "effusion", "prompt", "gated_answer"),
    ]


def test_every_method_of_the_chosen_map_in_preference_order():
    assert _keys(select_maps(_maps(), one_per="sample_every_method")) == [
        ("s1", "", "answer", "attention"),
        ("s1", "", "answer", "gradcam"),
        ("s2", "effusion", "prompt", "gated_answer"),
        ("s2", "effusion", "prompt", "gradcam"),
    ]


def test_unknown_mode_and_empty_table():
    with pytest.raises(ValueError, match="one_per"):
        select_maps(_maps(), one_per="image")
    assert select_maps(_maps().iloc[:0], one_per="sample_every_method").empty
