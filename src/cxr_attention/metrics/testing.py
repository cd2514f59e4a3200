"""Tests on clustered data: values aggregated to the patient first, p-values corrected per family.

Maps of one image are nearly identical and patients have several images, so no test here treats
maps (or images) as independent: each side's values are first averaged per patient
(:func:`patient_means`), and a p-value is corrected for the other tests of its *family* (the tests
one question of the study asks at once, named in each table's ``family`` column) with Holm's
method (``statsmodels.stats.multitest.multipletests``), which controls the family-wise error rate
without assuming independence between the tests.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from statsmodels.stats.multitest import multipletests

__all__ = ["CORRECTION", "adjust_families", "patient_means"]

#: The multiple-testing correction (a ``multipletests`` method name).
CORRECTION = "holm"


def patient_means(
    frame: pd.DataFrame,
    values: Sequence[str],
    *,
    by: Sequence[str] = (),
    patient: str = "subject_id",
) -> pd.DataFrame:
    """The mean of each column of ``values`` per patient (and per ``by``), NaN values left out
    (a patient without a finite value of a column has NaN there)."""
    keys = [patient, *by]
    return frame.groupby(keys, sort=True, as_index=False)[list(values)].mean()


def adjust_families(
    table: pd.DataFrame,
    family: Sequence[str],
    *,
    p_column: str = "p_value",
    method: str = CORRECTION,
) -> pd.DataFrame:
    """``table`` with ``family`` (the joined values of the ``family`` columns) and ``p_adjusted``.

    Within each family the finite p-values are corrected together with ``method``; a NaN p-value
    (no test possible) stays NaN and does not count as a test.
    """
    names = pd.Series("", index=table.index, dtype=object)
    for position, column in enumerate(family):
        names = names + ("/" if position else "") + table[column].astype(str)
    adjusted = pd.Series(np.nan, index=table.index, dtype=np.float64)
    for _, index in names.groupby(names, sort=True).groups.items():
        p_values = table.loc[index, p_column].astype(float)
        finite = p_values[np.isfinite(p_values)]
        if len(finite):
            adjusted[finite.index] = multipletests(finite.to_numpy(), method=method)[1]
    return table.assign(family=names, p_adjusted=adjusted)
