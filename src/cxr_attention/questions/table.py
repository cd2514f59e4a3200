"""The question table a study asks (``questions.csv``): from the bank or from a VQA table."""

from __future__ import annotations

import os
from typing import Any

import pandas as pd

from cxr_attention.io import ConfigError, write_csv
from cxr_attention.questions.bank import build_question_table, load_question_bank
from cxr_attention.questions.vqa import read_vqa_table

__all__ = ["study_question_table", "write_question_table"]


def study_question_table(settings: dict[str, Any]) -> pd.DataFrame:
    """The question table a study asks, from its ``questions`` config section.

    ``source: bank`` asks the bank's questions about the configured findings and strategies;
    ``source: vqa_table`` reads the user's VQA table (findings inferred from the bank).
    """
    bank = load_question_bank(settings["bank"])
    if settings["source"] == "vqa_table":
        if not settings.get("vqa_table"):
            raise ConfigError("questions.vqa_table: source is vqa_table but no table is given")
        return read_vqa_table(settings["vqa_table"], bank)
    return build_question_table(
        bank, findings=settings.get("findings"), strategies=settings["strategies"]
    )


def write_question_table(*, settings: dict[str, Any], out_csv: str | os.PathLike) -> None:
    """Write ``study_question_table(settings)`` atomically to ``out_csv``."""
    write_csv(study_question_table(settings), out_csv)
