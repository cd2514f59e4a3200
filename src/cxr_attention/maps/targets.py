"""What a map explains: the answer, or one term located in the generated text or the prompt."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from cxr_attention.maps.records import ANSWER_SLUG
from cxr_attention.maps.terms import decode_with_offsets, find_terms_in_text

if TYPE_CHECKING:
    from cxr_attention.inference.scoring import YesNoTokens  # torch: figures import targets

__all__ = [
    "ALL_ROWS_SLUG",
    "ROWS",
    "SOURCES",
    "MapTarget",
    "layer_targets",
    "locate_targets",
    "term_slug",
]

SOURCES = ("answer", "generated", "prompt", "absent")
"""Where a target was found (:attr:`MapTarget.source`)."""

ROWS = ("decision", "all", "term")
"""Which decoding steps a map explains (:attr:`MapTarget.rows`, the maps table's ``rows``):
``decision`` the step that chose the first answer token (row 0, the primary answer map), ``all``
every generated row (the answer's variant: mostly the template prose of a long answer), ``term``
the term's own tokens."""

ALL_ROWS_SLUG = "answer_all_rows"
"""The map-id slug of the answer's every-row variant (the decision map keeps ``answer``)."""


@dataclass(frozen=True)
class MapTarget:
    """What a map explains.

    Attributes
    ----------
    term : str
        The term ("" for the answer map).
    source : str
        ``answer`` (all generated tokens), ``generated`` (term in the generated text), ``prompt``
        (term only in the prompt) or ``absent`` (term found in neither).
    generated_positions : tuple of int
        Indices into ``generated_ids`` (every occurrence).
    prompt_positions : tuple of int
        Indices into ``input_ids`` (every occurrence).
    forced_ids : tuple of int
        Tokens Grad-CAM teacher-forces as the start of the answer when the term was not
        generated: its first occurrence's tokens in the prompt, or the term tokenised alone.
    rows : str
        One of :data:`ROWS`: ``decision`` and ``all`` for the answer, ``term`` for a term.
    yes_no : YesNoTokens, optional
        The answer's decision margin tokens (gradient methods score the margin at the
        decision step); None for terms.
    layer : int, optional
        A per-layer variant of the decision map: this one decoder layer alone.
    """

    term: str
    source: str
    generated_positions: tuple[int, ...] = ()
    prompt_positions: tuple[int, ...] = ()
    forced_ids: tuple[int, ...] = ()
    rows: str = "term"
    yes_no: YesNoTokens | None = None
    layer: int | None = None

    @property
    def token_positions(self) -> tuple[int, ...]:
        return self.prompt_positions if self.source == "prompt" else self.generated_positions

    @property
    def counterfactual(self) -> bool:
        """A term map whose term is not in the answer (its map explains words not said)."""
        return self.source in ("prompt", "absent")

    @property
    def variant(self) -> bool:
        """The every-row or a per-layer variant of the answer map (attention only, no cascade)."""
        return self.rows == "all" or self.layer is not None

    @property
    def slug(self) -> str:
        """The target's part of a map id: the term's slug, ``answer`` (the decision map),
        ``answer_all_rows`` or ``answer_layer<L>``."""
        if self.source != "answer":
            return term_slug(self.term)
        if self.layer is not None:
            return f"{ANSWER_SLUG}_layer{self.layer}"
        return ALL_ROWS_SLUG if self.rows == "all" else ANSWER_SLUG


def term_slug(term: str) -> str:
    """File-name-safe slug of a term (``"pleural effusion"`` -> ``"pleural_effusion"``)."""
    slug = re.sub(r"[^0-9a-z]+", "_", term.lower()).strip("_")
    return slug or ANSWER_SLUG


def locate_targets(
    tokenizer, input_ids: np.ndarray, generated_ids: np.ndarray, terms: Sequence[str]
) -> list[MapTarget]:
    """The answer's decision target and its every-row variant, then one target per term
    (synonyms are separate terms).

    Terms with the same slug (:func:`term_slug`) are searched once, under the first spelling.
    A term found in the generated text is a ``generated`` target even if the prompt has it too.
    """
    generated_ids = np.asarray(generated_ids).reshape(-1)
    input_ids = np.asarray(input_ids).reshape(-1)
    every_row = tuple(range(generated_ids.size))
    targets = [
        MapTarget(
            "",
            "answer",
            generated_positions=every_row[:1],
            rows="decision",
            yes_no=_margin_tokens(tokenizer),
        ),
        MapTarget("", "answer", generated_positions=every_row, rows="all"),
    ]
    # Decode each sequence once; every term is then matched in the same text.
    answer_text = decode_with_offsets(tokenizer, generated_ids)
    prompt_text = decode_with_offsets(tokenizer, input_ids)
    # a term slugged like an answer map would collide with its map id
    seen = {ANSWER_SLUG, ALL_ROWS_SLUG}
    for term in terms:
        slug = term_slug(term)
        if not term.strip() or slug in seen:
            continue  # one target per map id: "pleural-effusion" and "Pleural effusion" are one
        if slug.startswith(f"{ANSWER_SLUG}_layer"):
            continue
        seen.add(slug)
        in_answer = find_terms_in_text(*answer_text, [term])
        in_prompt = find_terms_in_text(*prompt_text, [term])
        prompt_positions = tuple(sorted({p for m in in_prompt for p in m.token_positions}))
        if in_answer:
            positions = tuple(sorted({p for m in in_answer for p in m.token_positions}))
            first = in_answer[0].token_positions
            targets.append(
                MapTarget(
                    term,
                    "generated",
                    generated_positions=positions,
                    prompt_positions=prompt_positions,
                    forced_ids=tuple(int(generated_ids[p]) for p in first),
                )
            )
        elif in_prompt:
            first = in_prompt[0].token_positions
            targets.append(
                MapTarget(
                    term,
                    "prompt",
                    prompt_positions=prompt_positions,
                    forced_ids=tuple(int(input_ids[p]) for p in first),
                )
            )
        else:
            forced = tokenizer(term, add_special_tokens=False)["input_ids"]
            targets.append(MapTarget(term, "absent", forced_ids=tuple(int(i) for i in forced)))
    return targets


def layer_targets(decision: MapTarget, layers: Sequence[int]) -> list[MapTarget]:
    """Per-layer variants of the decision map: one target per captured decoder layer."""
    return [replace(decision, layer=int(layer), yes_no=None) for layer in layers]


def _margin_tokens(tokenizer) -> YesNoTokens | None:
    """The yes/no tokens of the decision margin; None when the tokenizer has none (the
    gradient methods then say so)."""
    from cxr_attention.inference.scoring import yes_no_tokens

    try:
        return yes_no_tokens(tokenizer)
    except ValueError:
        return None
