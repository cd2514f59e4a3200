"""The maps table: its columns, one row (:class:`MapRecord`), a sample's keys and a map's id."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

__all__ = ["ANSWER_SLUG", "MAP_COLUMNS", "NOTE_COLUMNS", "MapRecord", "SampleKey", "map_id"]

ANSWER_SLUG = "answer"

NOTE_COLUMNS = {"n_gating_positions": 0}
"""Columns a method fills through its result's ``notes``, with the value when it says nothing."""

MAP_COLUMNS = [
    "map_id",
    "sample_id",
    "dicom_id",
    "question_id",
    "term",
    "source",
    "token_positions",
    "method",
    "fallback_reason",
    "layers",
    "heads",
    "image_mass",
    "sink_mass",
    *NOTE_COLUMNS,
    "rows",
    "counterfactual",
    "cascade",
    "per_layer",
]
"""``rows``: ``decision`` (row 0, the primary answer map), ``all`` (every generated row, the
answer's variant) or ``term`` (the term's own tokens); ``counterfactual``: a term map whose term
is not in the answer; ``cascade``: the map the fallback cascade picks for its target (one per
target); ``per_layer``: a one-layer variant of the decision map (``layers`` names the layer);
``sink_mass``: the share of the map on the sample's attention-sink tokens (image tokens whose
hidden-state norm is above the 99th percentile of the image's tokens,
:func:`~cxr_attention.maps.methods.attention_nosink.sample_sinks`), NaN where the sinks are not
computed (no method in play runs the model; no model or pixels) or the map is not on the
image-token grid."""


@dataclass(frozen=True)
class SampleKey:
    """Identifiers of one (image, question) sample."""

    sample_id: str
    dicom_id: str = ""
    question_id: str = ""


def map_id(sample_id: str, slug: str, source: str, method: str) -> str:
    """``<sample_id>__<term slug>__<source>__<method>``: unique within a run."""
    return f"{sample_id}__{slug}__{source}__{method}"


@dataclass
class MapRecord:
    """One row of the maps table (``docs/architecture.md``)."""

    map_id: str
    sample_id: str
    dicom_id: str
    question_id: str
    term: str
    source: str
    token_positions: tuple[int, ...]
    method: str
    fallback_reason: str
    layers: str
    heads: str
    image_mass: float
    n_gating_positions: int
    rows: str = "term"
    counterfactual: bool = False
    cascade: bool = False
    per_layer: bool = False
    sink_mass: float = math.nan

    @property
    def is_answer_decision_map(self) -> bool:
        """The answer's primary map: its decision row over every captured layer, one per method
        (not the every-row or per-layer variants)."""
        return self.source == "answer" and self.rows == "decision" and not self.per_layer

    def to_row(self) -> dict:
        """The table row: positions ``"|"``-joined, every column of :data:`MAP_COLUMNS`."""
        row = {f.name: getattr(self, f.name) for f in fields(self)}
        row["token_positions"] = "|".join(str(p) for p in self.token_positions)
        return row
