"""Parse MedGemma's free-text answer to a yes/no question into ``yes``, ``no`` or ``unclear``.

MedGemma rarely answers with a bare "Yes" or "No"; it writes a sentence or a short report ("Based
on the chest X-ray provided, there is no clear evidence of a significant pleural effusion."). The
rules, in order (details and known limits in ``docs/questions.md``):

0. Line breaks end sentences; sentences ending in "?" (the model echoing the question) are
   dropped.
1. **Explicit answer word.** The first "yes", or the first "no" closed by punctuation or the end
   of the text ("No. The lungs are clear.", "**Answer:** No", "Based on the image, the answer is
   no."), decides. A "no" followed by a word ("No pleural effusion is seen") is a negation cue
   instead, handled by rule 2.
2. **Mentions with NegEx-style scope.** The text is cut into clauses at sentence ends, ";", and
   scope-breaking words ("but", "however", "although", "except", ...). Each mention of a target
   term (or, when no term is given or found, each clause) is classified as
   - *uncertain* when a hedging cue is in its clause ("possible", "may", "cannot be excluded",
     "cannot rule out", "difficult to say", "I cannot provide a diagnosis", ...);
   - else *negated* when a pre-negation cue ("no", "not", "without", "negative for", "free of",
     "no evidence of", ...) precedes it within 8 words, or a post-negation cue ("is absent",
     "unremarkable", "within normal limits", "is normal", "are clear", "not seen", ...) follows it
     within 6 words;
   - else *affirmed* (for a clause without terms: only when it has an affirmation cue such as
     "there is", "present", "consistent with", "enlarged", "shows").
   Double negations ("not without", "cannot be excluded", "not ruled out") and pseudo-negations
   ("no change", "not only", "no interval change") are recognised before single cues. A heading
   mention ("**Pleural effusion:** absent.") takes the status of the text after its colon,
   unless that text names the finding again.
3. **Aggregation** (as the CheXpert labeler aggregates mentions): any affirmed mention -> ``yes``;
   else any uncertain mention -> ``unclear``; else any negated mention -> ``no``; else ``unclear``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from cxr_attention.questions.answer_cues import ABNORMALITY_TERMS, CUES

__all__ = ["ANSWERS", "parse_answer"]

#: The three parsed answers.
ANSWERS: tuple[str, ...] = ("yes", "no", "unclear")

_PRE_WINDOW = 8  # words a pre-negation cue reaches forward (NegEx uses 5; lists need more)
_POST_WINDOW = 6  # words a post-negation cue reaches backward


_PUNCTUATION = {".", "!", "?", ";", ":", ","}
_SENTENCE_END = {".", "!", "?", ";"}
# Words that start a new clause after "and" / "," ("no effusion, and the heart is enlarged").
_CLAUSE_STARTERS = {"the", "there", "a", "an", "it", "this", "these", "heart", "lungs", "lung"}
_TOKEN = re.compile(r"[a-z0-9]+(?:[-'][a-z0-9]+)*|[.!?;:,]")


def _tokenise(text: str) -> list[str]:
    text = text.casefold().replace("\u2019", "'").replace("\u2018", "'")
    text = re.sub(r"[*_`#>\"]", " ", text)  # markdown and quotes
    text = re.sub(r"\s*\n\s*", " . ", text)  # a line (list item, heading) ends a sentence
    text = re.sub(r"\bcannot\b", "can not", text)
    text = re.sub(r"\bcan't\b", "can not", text)
    text = re.sub(r"\bwon't\b", "will not", text)
    text = re.sub(r"n't\b", " not", text)
    text = text.replace("i'm", "i m")
    # Decimal points and abbreviations would cut sentences; neither matters to the answer.
    text = re.sub(r"(\d)\.(\d)", r"\1\2", text)
    return _TOKEN.findall(text)


def _stem(word: str) -> str:
    """Crude plural folding, applied alike to terms and text (effusions -> effusion)."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "is", "us")):
        return word[:-1]
    return word


_CUE_PHRASES: list[tuple[tuple[str, ...], str]] = sorted(
    (
        (tuple(_tokenise(phrase)), category)
        for category, phrases in CUES.items()
        for phrase in phrases
    ),
    key=lambda item: -len(item[0]),
)


def _tag_cues(tokens: list[str], protected: set[int]) -> list[tuple[int, int, str]]:
    """Longest-match cue phrases as (start, end, category), skipping ``protected`` positions."""
    tags = []
    position = 0
    while position < len(tokens):
        for phrase, category in _CUE_PHRASES:
            end = position + len(phrase)
            if tuple(tokens[position:end]) == phrase and not protected.intersection(
                range(position, end)
            ):
                tags.append((position, end, category))
                position = end
                break
        else:
            position += 1
    return tags


def _drop_questions(tokens: list[str]) -> list[str]:
    """Remove sentences ending in "?": an echoed question states nothing."""
    kept, sentence = [], []
    for token in tokens:
        sentence.append(token)
        if token in _SENTENCE_END:
            if token != "?":
                kept.extend(sentence)
            sentence = []
    return kept + sentence


def _explicit_answer(tokens: list[str]) -> str:
    """The first explicit answer word: "yes", or "no" closed by punctuation ("No.", "... is no")."""
    for position, token in enumerate(tokens):
        if token == "yes":
            return "yes"
        closed = position + 1 == len(tokens) or tokens[position + 1] in _PUNCTUATION
        if token == "no" and closed:
            return "no"
    return ""


def _clauses(tokens: list[str], tags: list[tuple[int, int, str]]) -> list[tuple[int, int]]:
    """Split token positions into clauses at sentence ends, ":", stop cues and ", and <clause>"."""
    cuts = {i for i, token in enumerate(tokens) if token in _SENTENCE_END or token == ":"}
    cuts.update(start for start, _end, category in tags if category == "stop")
    for i, token in enumerate(tokens[:-1]):
        if token == "and" and tokens[i + 1] in _CLAUSE_STARTERS:
            cuts.add(i)
    bounds, start = [], 0
    for cut in sorted(cuts):
        if cut > start:
            bounds.append((start, cut))
        start = cut + 1
    if start < len(tokens):
        bounds.append((start, len(tokens)))
    return bounds


def _find_mentions(
    tokens: list[str], terms: Sequence[str], *, taken: set[int]
) -> list[tuple[int, int]]:
    """Non-overlapping spans of ``terms`` (longest first, plural-folded) outside ``taken``."""
    stems = [_stem(t) for t in tokens]
    patterns = sorted(
        {tuple(_stem(t) for t in _tokenise(term)) for term in terms if _tokenise(term)},
        key=lambda p: -len(p),
    )
    mentions, taken = [], set(taken)
    for pattern in patterns:
        for start in range(len(stems) - len(pattern) + 1):
            end = start + len(pattern)
            if tuple(stems[start:end]) == pattern and not taken.intersection(range(start, end)):
                mentions.append((start, end))
                taken.update(range(start, end))
    return sorted(mentions)


def _classify_span(
    start: int,
    end: int,
    clause: tuple[int, int],
    tags: list[tuple[int, int, str]],
    words: list[int],
) -> str:
    """Status of tokens ``start:end`` within ``clause``: uncertain, negated, affirmed or neutral.

    ``words`` maps each token position to its word index (punctuation does not count as a word).
    """
    low, high = clause
    inside = [t for t in tags if low <= t[0] and t[1] <= high]
    if any(category == "hedge" for _s, _e, category in inside):
        return "uncertain"
    for cue_start, cue_end, category in inside:
        before = category in {"pre", "both"} and cue_end <= start
        if before and words[start] - words[cue_end - 1] <= _PRE_WINDOW:
            return "negated"
        after = category in {"post", "both"} and cue_start >= end
        if after and words[cue_start] - words[end - 1] <= _POST_WINDOW:
            return "negated"
    return "affirmed"


def parse_answer(text: str, *, terms: Sequence[str] = (), asks_normal: bool = False) -> str:
    """Classify a free-text answer to a yes/no question.

    Parameters
    ----------
    text : str
        The model's generated text.
    terms : sequence of str, optional
        The finding's target terms (e.g. ``("pleural effusion", "effusion", "fluid")``). When
        given, negation and hedging are judged on the mentions of these terms only, so that
        "There is no pneumothorax. A small pleural effusion is present." answers ``yes`` to a
        pleural effusion question. Without terms every clause counts; when terms are given but
        none occurs, only denials and hedges count (an affirmation is about something else).
    asks_normal : bool, optional
        The question asks whether the image is normal (CheXpert "No Finding"): ``terms`` are then
        words of normality ("normal", "unremarkable"), every clause counts, and the answer is
        ``yes`` when abnormality is denied ("There are no acute cardiopulmonary abnormalities")
        and ``no`` when a finding is stated ("There is a small left pleural effusion").

    Returns
    -------
    str
        ``"yes"``, ``"no"`` or ``"unclear"``.

    Examples
    --------
    >>> parse_answer("No. The lungs are clear.")
    'no'
    >>> parse_answer("The heart is enlarged, consistent with cardiomegaly.", terms=["cardiomegaly"])
    'yes'
    >>> parse_answer("A small effusion cannot be excluded.", terms=["effusion"])
    'unclear'
    >>> parse_answer("No acute cardiopulmonary abnormality.", terms=["normal"], asks_normal=True)
    'yes'
    """
    tokens = _drop_questions(_tokenise(text or ""))
    if not tokens:
        return "unclear"
    explicit = _explicit_answer(tokens)
    if explicit:
        return explicit

    mentions = _find_mentions(tokens, terms, taken=set())
    taken = {i for start, end in mentions for i in range(start, end)}
    abnormal = _find_mentions(tokens, ABNORMALITY_TERMS, taken=taken) if asks_normal else []
    protected = taken | {i for start, end in abnormal for i in range(start, end)}
    tags = _tag_cues(tokens, protected)
    clauses = _clauses(tokens, tags)
    words, count = [], 0
    for token in tokens:
        words.append(count)
        count += token not in _PUNCTUATION

    def clause_of(position: int) -> tuple[int, int]:
        return next(c for c in clauses if c[0] <= position < c[1])

    def status(span: tuple[int, int]) -> str:
        return _classify_span(span[0], span[1], clause_of(span[0]), tags, words)

    if not asks_normal:
        if mentions:
            statuses = []
            for span in mentions:
                if span[1] < len(tokens) and tokens[span[1]] == ":":
                    statuses += _heading_statuses(span, mentions, clauses, tokens, tags)
                else:
                    statuses.append(status(span))
            return _aggregate(statuses)
        clause_statuses = [_clause_status(clause, tags) for clause in clauses]
        if terms:
            # The finding is not named: a general denial or hedge ("No acute abnormality.") still
            # answers, but an affirmation is about something else ("Air bronchograms are seen").
            clause_statuses = [c for c in clause_statuses if c != "affirmed"]
        return _aggregate(clause_statuses)

    # "Is it normal?": gather statements about an abnormality being present, then invert.
    flipped = {"affirmed": "negated", "negated": "affirmed", "uncertain": "uncertain"}
    abnormality = [flipped[status(span)] for span in mentions]
    abnormality += [status(span) for span in abnormal]
    for clause in clauses:
        if not any(clause[0] <= start < clause[1] for start, _end in mentions + abnormal):
            abnormality.append(_clause_status(clause, tags))
    return {"yes": "no", "no": "yes", "unclear": "unclear"}[_aggregate(abnormality)]


def _heading_statuses(
    span: tuple[int, int],
    mentions: list[tuple[int, int]],
    clauses: list[tuple[int, int]],
    tokens: list[str],
    tags: list[tuple[int, int, str]],
) -> list[str]:
    """Status of a heading mention ("**Pleural effusion:** absent."): the text after its colon.

    When that text names the finding again, those mentions speak and the heading says nothing.
    """
    after = span[1] + 1
    sentence_end = next(
        (i for i in range(after, len(tokens)) if tokens[i] in _SENTENCE_END), len(tokens)
    )
    if any(after <= start < sentence_end for start, _end in mentions):
        return []
    return [_clause_status(c, tags) for c in clauses if after <= c[0] and c[1] <= sentence_end]


def _clause_status(clause: tuple[int, int], tags: list[tuple[int, int, str]]) -> str:
    """Status of a clause without target terms: its cues alone."""
    low, high = clause
    inside = {category for start, end, category in tags if low <= start and end <= high}
    if "hedge" in inside:
        return "uncertain"
    if inside & {"pre", "post", "both"}:
        return "negated"
    if inside & {"positive", "affirm"}:
        return "affirmed"
    return "neutral"


def _aggregate(statuses: list[str]) -> str:
    """CheXpert-labeler style: affirmed beats uncertain beats negated; nothing -> unclear."""
    if "affirmed" in statuses:
        return "yes"
    if "uncertain" in statuses:
        return "unclear"
    if "negated" in statuses:
        return "no"
    return "unclear"
