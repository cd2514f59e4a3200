"""The seeded subsample the faithfulness and reliance jobs work on (torch-free)."""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["SAMPLE_KEYS", "subsample"]

#: The identifiers every per-sample faithfulness and reliance row carries.
SAMPLE_KEYS = ["sample_id", "dicom_id", "subject_id", "question_id"]


def subsample(answers: pd.DataFrame, max_samples: int | None, seed: int) -> pd.DataFrame:
    """At most ``max_samples`` rows, drawn with ``default_rng(seed)``, in ``sample_id`` order."""
    answers = answers.sort_values("sample_id").reset_index(drop=True)
    if max_samples is None or len(answers) <= max_samples:
        return answers
    picked = np.random.default_rng(seed).choice(len(answers), size=max_samples, replace=False)
    return answers.iloc[np.sort(picked)].reset_index(drop=True)
