"""Locate target terms ("effusion", "pleural effusion", ...) in token sequences by text offsets.

A term is never looked up as one id sequence: the same word is tokenised differently at the start
of a sentence, after a space (``▁effusion``), capitalised (``E`` + ``ff`` + ``usion``) or in
byte-fallback pieces. Instead the token ids are decoded to text, each token is given the character
span it contributes to that text, the term is matched in the text (case-insensitive, every
occurrence) and the matched character span is mapped back to every token that overlaps it.

Matching rule (whole-word-ish)
------------------------------
- A match must start at a word start: the character before it is not a letter, digit or ``_``.
  ``effusion`` is not found inside ``noneffusion``; ``image`` is not found inside the special
  token ``<start_of_image>``.
- A match must end at a word end, optionally after a plural or possessive suffix: ``s``, ``es``,
  ``'s`` (straight or typographic apostrophe). ``effusion`` matches ``effusions`` and
  ``Effusion's``; ``mass`` does *not* match ``massive`` and ``edema`` does not match
  ``edematous``. Irregular plurals
  (``opacities``, ``pneumothoraces``) are synonyms to list in the question bank.
- Whitespace inside a multi-word term matches any run of whitespace (``pleural effusion`` matches
  ``pleural\\neffusion``); hyphens are literal.
- Overlapping terms are all reported (``pleural effusion`` and ``effusion`` both match
  ``pleural effusion``), each occurrence once per term.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "TermMatch",
    "decode_with_offsets",
    "find_term_positions",
    "find_terms_in_text",
    "term_pattern",
]

_PLURAL_OR_POSSESSIVE = "(?:['\u2019]s|es|s)?"


@dataclass(frozen=True)
class TermMatch:
    """One occurrence of a term.

    Attributes
    ----------
    term : str
        The term as the caller passed it.
    start_char, end_char : int
        Span ``[start_char, end_char)`` of the occurrence (suffix included) in the decoded text.
    token_positions : tuple of int
        Indices into the token sequence of every token overlapping the span, ascending.
    """

    term: str
    start_char: int
    end_char: int
    token_positions: tuple[int, ...]


def term_pattern(term: str) -> re.Pattern[str]:
    """The compiled, case-insensitive regular expression implementing the matching rule above."""
    words = term.strip().split()
    if not words:
        raise ValueError("empty term")
    body = r"\s+".join(re.escape(word) for word in words)
    return re.compile(rf"(?<!\w){body}{_PLURAL_OR_POSSESSIVE}(?!\w)", re.IGNORECASE)


def decode_with_offsets(tokenizer, token_ids: Sequence[int]) -> tuple[str, list[tuple[int, int]]]:
    """Decode ``token_ids`` and give each token the character span it adds to the text.

    The tokenizer's own decoder decides every character (special tokens kept, no clean-up of
    spaces): leading-space markers (``▁``, ``Ġ``), a decoder that strips the first space,
    byte-fallback pieces. Token ``i`` spans what appending it to ``token_ids[:i]`` adds to the
    decoded text, from the first character it changes to the end. A byte-fallback piece that
    completes a multi-byte character therefore spans that character, and a piece that decodes
    to nothing has an empty span.

    Parameters
    ----------
    tokenizer : transformers tokenizer
        Anything with ``decode(ids, skip_special_tokens=..., clean_up_tokenization_spaces=...)``.
    token_ids : sequence of int

    Returns
    -------
    text : str
        The decoded text of the whole sequence.
    spans : list of (start, end)
        One character span per token.

    Notes
    -----
    Decoding every prefix in full costs O(n^2) characters, slow with a few hundred tokens. A
    decoder only looks a few tokens back (a byte-fallback character spans at most 4 pieces; a
    stripped first space only concerns the first token), so each token's text is read from the
    difference between two decodes of a short window ending at it. The assembled text is checked
    against one full decode, and the exact prefix method is used if they ever differ.
    """
    ids = [int(i) for i in np.asarray(token_ids).reshape(-1)]
    text, spans = _decode_windowed(tokenizer, ids)
    if text != _decode(tokenizer, ids):
        text, spans = _decode_prefixes(tokenizer, ids)
    return text, spans


_WINDOW = 8


def _decode(tokenizer, ids: list[int]) -> str:
    return tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)


def _decode_windowed(tokenizer, ids: list[int]) -> tuple[str, list[tuple[int, int]]]:
    text = ""
    spans: list[tuple[int, int]] = []
    for end in range(1, len(ids) + 1):
        start_token = max(0, end - _WINDOW)
        before = _decode(tokenizer, ids[start_token : end - 1])
        after = _decode(tokenizer, ids[start_token:end])
        shared = _common_prefix_length(before, after)
        # Characters of the window the new token rewrote (an unfinished byte sequence completed).
        text = text[: len(text) - (len(before) - shared)] + after[shared:]
        spans.append((len(text) - (len(after) - shared), len(text)))
    return text, spans


def _decode_prefixes(tokenizer, ids: list[int]) -> tuple[str, list[tuple[int, int]]]:
    spans: list[tuple[int, int]] = []
    previous = ""
    for end in range(1, len(ids) + 1):
        current = _decode(tokenizer, ids[:end])
        start = _common_prefix_length(previous, current)
        spans.append((start, len(current)))
        previous = current
    return previous, spans


def find_terms_in_text(
    text: str, spans: Sequence[tuple[int, int]], terms: Sequence[str]
) -> list[TermMatch]:
    """Find every occurrence of each term in ``text`` and map it to the tokens of ``spans``.

    Parameters
    ----------
    text : str
    spans : sequence of (start, end)
        Character span of each token in ``text`` (from :func:`decode_with_offsets`).
    terms : sequence of str
        Terms and synonyms; duplicates (ignoring case) are searched once.

    Returns
    -------
    list of TermMatch
        Ordered by start character, then term order. Occurrences whose span no token covers are
        dropped.
    """
    starts = np.array([s for s, _ in spans], dtype=np.int64)
    ends = np.array([e for _, e in spans], dtype=np.int64)
    matches: list[TermMatch] = []
    seen: set[str] = set()
    for term in terms:
        key = " ".join(term.lower().split())
        if not key or key in seen:
            continue
        seen.add(key)
        for found in term_pattern(term).finditer(text):
            overlap = (starts < found.end()) & (ends > found.start())
            positions = tuple(int(p) for p in np.flatnonzero(overlap))
            if positions:
                matches.append(TermMatch(term, found.start(), found.end(), positions))
    order = {t: i for i, t in enumerate(terms)}
    return sorted(matches, key=lambda m: (m.start_char, order[m.term]))


def find_term_positions(
    tokenizer, token_ids: Sequence[int], terms: Sequence[str]
) -> list[TermMatch]:
    """Locate every occurrence of each term in a token sequence.

    Parameters
    ----------
    tokenizer : transformers tokenizer
        The model's tokenizer (``processor.tokenizer``).
    token_ids : sequence of int
        Generated ids or prompt ids.
    terms : sequence of str
        The finding's target terms and synonyms from the question bank.

    Returns
    -------
    list of TermMatch
        See :func:`find_terms_in_text`; ``token_positions`` index ``token_ids``.
    """
    text, spans = decode_with_offsets(tokenizer, token_ids)
    return find_terms_in_text(text, spans, terms)


def _common_prefix_length(first: str, second: str) -> int:
    """Number of leading characters two strings share."""
    length = min(len(first), len(second))
    for index in range(length):
        if first[index] != second[index]:
            return index
    return length
