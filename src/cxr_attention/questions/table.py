"""The question table a study asks (``questions.csv``): from the bank or from a VQA table."""

from __future__ import annotations

import os
from typing import Any

import pandas as pd

from cxr_attention.grounding.phrases import phrase_question_table
from cxr_attention.io import ConfigError, write_csv
from cxr_attention.questions.bank import build_question_table, load_question_bank
from cxr_attention.questions.vqa import read_vqa_table

__all__ = ["study_question_table", "write_question_table"]


def study_question_table(
    settings: dict[str, Any],
    *,
    ms_cxr_phrases: str | os.PathLike | None = None,
    phrase_question: str = "",
) -> pd.DataFrame:
    """The question table a study asks, from its ``questions`` config section.

    ``source: bank`` asks the bank's questions about the configured findings and strategies;
    ``source: vqa_table`` reads the user's VQA table (findings inferred from the bank);
    ``source: bank_and_vqa_table`` asks both (the bank's rows first). ``ms_cxr_phrases``, an
    MS-CXR-format file (``grounding.ms_cxr_phrases``), adds one question per image and phrase,
    ``phrase_question`` filled with the phrase, after them
    (:func:`cxr_attention.grounding.phrases.phrase_question_table`).
    """
    bank = load_question_bank(settings["bank"])
    tables = []
    if settings["source"] in ("bank", "bank_and_vqa_table"):
        tables.append(
            build_question_table(
                bank, findings=settings.get("findings"), strategies=settings["strategies"]
            )
        )
    if settings["source"] in ("vqa_table", "bank_and_vqa_table"):
        if not settings.get("vqa_table"):
            raise ConfigError(
                f"questions.vqa_table: source is {settings['source']} but no table is given"
            )
        tables.append(read_vqa_table(settings["vqa_table"], bank))
    if ms_cxr_phrases:
        tables.append(phrase_question_table(ms_cxr_phrases, phrase_question, bank))
    return pd.concat(tables, ignore_index=True) if len(tables) > 1 else tables[0]


def write_question_table(
    *,
    settings: dict[str, Any],
    out_csv: str | os.PathLike,
    ms_cxr_phrases: str | os.PathLike | None = None,
    phrase_question: str = "",
) -> None:
    """Write :func:`study_question_table` atomically to ``out_csv``."""
    table = study_question_table(
        settings, ms_cxr_phrases=ms_cxr_phrases, phrase_question=phrase_question
    )
    write_csv(table, out_csv)
