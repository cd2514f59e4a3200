"""P(yes) from the first answer token, teacher-forced, in float32.

MedGemma answers in free text, so the answer word is not always the first token. The probability of
"yes" is read instead from the distribution of the *first* answer token given the prompt (the
logits at the last prompt position): the variants of "yes" and "no" that the tokenizer holds as
single tokens are summed,

    p_yes = sum P(yes variants) / (sum P(yes variants) + sum P(no variants)),

which is defined even when the generated text hedges (AUROC needs a score for every sample).

Variants tried: ``yes``, ``Yes``, ``YES`` and the same with a leading space (Gemma's ``▁yes``),
likewise for ``no``. A surface form counts only when the tokenizer encodes both its yes and its no
version as exactly one token, so the two sets have the same forms (a form on one side only, say
`` no`` without `` yes``, would tilt P(yes) towards that side); in Gemma's real vocabulary all
eight lower/capitalised forms are single tokens, in the tiny model's vocabulary ``yes``, ``Yes``,
``no``, ``No`` are (`` no`` is, `` yes`` is not, so neither counts).

The yes + no probability mass at the same step (:func:`yes_no_mass_from_logits`) says how much
the model meant to answer with one of these words at all; it is stored beside P(yes).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = [
    "YesNoTokens",
    "p_yes_from_logits",
    "score_p_yes",
    "yes_no_margin_from_logits",
    "yes_no_mass_from_logits",
    "yes_no_tokens",
]

YES_VARIANTS = ("yes", "Yes", "YES", " yes", " Yes", " YES")
NO_VARIANTS = ("no", "No", "NO", " no", " No", " NO")


@dataclass(frozen=True)
class YesNoTokens:
    """Single-token ids of the yes and no variants, and the strings they stand for."""

    yes_ids: tuple[int, ...]
    no_ids: tuple[int, ...]
    yes_strings: tuple[str, ...]
    no_strings: tuple[str, ...]


def yes_no_tokens(tokenizer) -> YesNoTokens:
    """The yes/no surface forms whose yes and no versions are both single tokens of ``tokenizer``.

    Raises
    ------
    ValueError
        When no form qualifies (P(yes) would be undefined).
    """

    def single(text):
        encoded = tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(encoded) == 1 and encoded[0] != tokenizer.unk_token_id:
            return int(encoded[0])
        return None

    yes_ids, no_ids, yes_strings, no_strings = [], [], [], []
    for yes, no in zip(YES_VARIANTS, NO_VARIANTS, strict=True):
        yes_id, no_id = single(yes), single(no)
        if yes_id is None or no_id is None or yes_id in yes_ids or no_id in no_ids:
            continue  # both forms or neither: the sets keep the same surface forms
        yes_ids.append(yes_id)
        no_ids.append(no_id)
        yes_strings.append(yes)
        no_strings.append(no)
    if not yes_ids:
        raise ValueError(
            f"the tokenizer has no surface form of yes/no whose two versions are single tokens "
            f"(tried {YES_VARIANTS} with {NO_VARIANTS})"
        )
    return YesNoTokens(tuple(yes_ids), tuple(no_ids), tuple(yes_strings), tuple(no_strings))


def p_yes_from_logits(logits: torch.Tensor, tokens: YesNoTokens) -> torch.Tensor:
    """P(yes) from next-token logits, in float32.

    Parameters
    ----------
    logits : Tensor of shape (batch, vocab)
        Unnormalised next-token scores at the last prompt position.
    tokens : YesNoTokens

    Returns
    -------
    Tensor of shape (batch,), float32
    """
    # yes / (yes + no) == sigmoid(log yes - log no); stable when both are tiny.
    return torch.sigmoid(yes_no_margin_from_logits(logits.float(), tokens))


def yes_no_margin_from_logits(logits: torch.Tensor, tokens: YesNoTokens) -> torch.Tensor:
    """The decision margin: log P(yes variants) - log P(no variants), differentiable.

    With one variant each this is exactly logit(yes) - logit(no) (the softmax normaliser cancels);
    with several it is the same difference of log-sum-exps, so ``sigmoid(margin)`` is P(yes).
    Every gradient-based map and the faithfulness curves score this one quantity at the decision
    step (the position whose next token is the first answer token). It keeps the logits' dtype.

    Parameters
    ----------
    logits : Tensor of shape (batch, vocab)
        Unnormalised next-token scores at the decision step.
    tokens : YesNoTokens

    Returns
    -------
    Tensor of shape (batch,)
    """
    log_yes = torch.logsumexp(logits[:, list(tokens.yes_ids)], dim=-1)
    log_no = torch.logsumexp(logits[:, list(tokens.no_ids)], dim=-1)
    return log_yes - log_no


def yes_no_mass_from_logits(logits: torch.Tensor, tokens: YesNoTokens) -> torch.Tensor:
    """P(any yes variant) + P(any no variant) at the decision step, in float32.

    A small mass means the model was about to say something else (a sentence, a hedge), so its
    P(yes) is a ratio of two tiny numbers; the study flags such samples.

    Returns
    -------
    Tensor of shape (batch,), float32
    """
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    ids = list(tokens.yes_ids) + list(tokens.no_ids)
    return torch.logsumexp(log_probs[:, ids], dim=-1).exp()


@torch.no_grad()
def score_p_yes(model, inputs, tokens: YesNoTokens) -> torch.Tensor:
    """Teacher-forced P(yes) of a prepared batch: one forward pass over the prompt.

    ``generate`` gives the same numbers from its first step (``capture`` reads them there, with no
    extra pass); this function is the stand-alone form.

    Parameters
    ----------
    model : Gemma3ForConditionalGeneration
    inputs : Mapping
        The processor's output (left-padded when batched).
    tokens : YesNoTokens

    Returns
    -------
    Tensor of shape (batch,), float32
    """
    inputs = {k: v.to(model.device) for k, v in inputs.items()}
    if "pixel_values" in inputs:
        inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
    if "attention_mask" in inputs and "position_ids" not in inputs:
        # Positions count real tokens only, as ``generate`` numbers them in a left-padded batch.
        mask = inputs["attention_mask"]
        inputs["position_ids"] = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)
    logits = model(**inputs, use_cache=False, logits_to_keep=1).logits[:, -1, :]
    return p_yes_from_logits(logits, tokens)
