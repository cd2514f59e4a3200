"""What a map explains: the answer, or one term located in the generated text or the prompt."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cxr_attention.maps.records import ANSWER_SLUG
from cxr_attention.maps.terms import decode_with_offsets, find_terms_in_text

__all__ = ["SOURCES", "MapTarget", "locate_targets", "term_slug"]

SOURCES = ("answer", "generated", "prompt", "absent")
"""Where a target was found (:attr:`MapTarget.source`)."""


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
    """

    term: str
    source: str
    generated_positions: tuple[int, ...] = ()
    prompt_positions: tuple[int, ...] = ()
    forced_ids: tuple[int, ...] = ()

    @property
    def token_positions(self) -> tuple[int, ...]:
        return self.prompt_positions if self.source == "prompt" else self.generated_positions

    @property
    def slug(self) -> str:
        """The target's part of a map id: the term's slug, or ``answer``."""
        return term_slug(self.term) if self.source != "answer" else ANSWER_SLUG


def term_slug(term: str) -> str:
    """File-name-safe slug of a term (``"pleural effusion"`` -> ``"pleural_effusion"``)."""
    slug = re.sub(r"[^0-9a-z]+", "_", term.lower()).strip("_")
    return slug or ANSWER_SLUG


def locate_targets(
    tokenizer, input_ids: np.ndarray, generated_ids: np.ndarray, terms: Sequence[str]
) -> list[MapTarget]:
    """The answer target, then one target per term (synonyms are separate terms).

    Terms with the same slug (:func:`term_slug`) are searched once, under the first spelling.
    A term found in the generated text is a ``generated`` target even if the prompt has it too.
    """
    generated_ids = np.asarray(generated_ids).reshape(-1)
    input_ids = np.asarray(input_ids).reshape(-1)
    targets = [MapTarget("", "answer", generated_positions=tuple(range(generated_ids.size)))]
    # Decode each sequence once; every term is then matched in the same text.
    answer_text = decode_with_offsets(tokenizer, generated_ids)
    prompt_text = decode_with_offsets(tokenizer, input_ids)
    seen = {ANSWER_SLUG}  # a term slugged "answer" would collide with the answer map's id
    for term in terms:
        slug = term_slug(term)
        if not term.strip() or slug in seen:
            continue  # one target per map id: "pleural-effusion" and "Pleural effusion" are one
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
