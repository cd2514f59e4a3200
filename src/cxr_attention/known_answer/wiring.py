"""The known-answer model's evidence path, set by hand: which tokens the answer position reads.

Training alone did not teach the tiny text model to route a few image tokens to the answer
(``docs/known_answer.md``). So the routing is set, and frozen, in the first text layer; the
vision tower (`detector`, also set) marks the lesion's tokens in reserved channels; everything
else (the values read, the MLPs, the second layer, the output) is trained on the yes/no answer.

Reserved channels of the 64-wide residual stream (`Channel`):

- ``LESION``: on image tokens, the detector's value (positive where the token's patch shows the
  lesion, `detector`); on every text token -1.
- ``SIDE``: on a lesion's image tokens, positive in the patient's left lung and negative in the
  right; 0 on every other token.
- ``TEXT``: +1 on every text token, 0 on image tokens (the projector's column is zero).
- ``ASKED_SIDE``: +1 on the question's ``left`` word, -1 on ``right``, 0 elsewhere.
- ``SIDE_WORD``: +1 on those two words, -1 on every other text token, 0 on image tokens.

Routing heads of layer 0 (query and key rows zero except dimension 7 of the head, the RoPE pair
that turns slowest: 0.1 rad over 300 positions, so the score hardly depends on distance):

- query heads 0 and 1 (key/value head 0): query = ``TEXT``, key = ``LESION``. After Gemma's
  per-head RMSNorm of queries and keys, the score is ``+-ROUTING_SCORE`` by the sign of
  ``LESION`` (a steep tanh of it: the norm's epsilon sets a width of about 0.004 after the
  layer's input norm): the answer position attends to the tokens the detector marks and, when
  none is marked, to the least negative ones, or evenly when all are clearly negative.
- query heads 2 and 3 (key/value head 1): query = ``TEXT``, key = ``SIDE_WORD``: the answer
  position reads the side word of the question, or spreads over the image (key 0, above the text
  tokens' -1) when the question names no side.

Frozen by `freeze_wiring` (gradient hooks zero the gradient of the set entries).
"""

from __future__ import annotations

import math
from enum import IntEnum

import torch

__all__ = ["ROUTING_SCORE", "SIDE_WORDS", "Channel", "freeze_wiring", "set_wiring"]


class Channel(IntEnum):
    LESION = 0
    SIDE = 1
    TEXT = 2
    ASKED_SIDE = 3
    SIDE_WORD = 4


#: Tokens of the questions' side words (the tiny tokenizer splits ``left`` as ``▁l`` + ``eft``).
SIDE_WORDS = {"eft": 1.0, "▁right": -1.0}
# Attention logit of a marked token (minus that of an unmarked one): e^-72 leaves nothing to them.
ROUTING_SCORE = 36.0
_SLOW_DIM = 7  # last dimension of the first half of a 16-wide head: RoPE's lowest frequency
_LESION_HEADS = (0, 1)  # query heads; key/value head 0
_QUESTION_HEADS = (2, 3)  # query heads; key/value head 1


def _norm_gain(head_dim: int, scaling: float) -> float:
    """RMSNorm weight (Gemma adds 1) giving a query-key score of ROUTING_SCORE at one dimension."""
    # q and k after the norm: sqrt(head_dim) * (1 + w) at that dimension; score = q k scaling.
    return math.sqrt(ROUTING_SCORE / scaling) / math.sqrt(head_dim) - 1.0


def _masks(model) -> dict[str, tuple[torch.nn.Parameter, torch.Tensor]]:
    """Parameter and boolean mask of every entry the wiring sets."""
    language = model.model.language_model
    attention = language.layers[0].self_attn
    head_dim = attention.head_dim
    channels = torch.zeros(language.config.hidden_size, dtype=torch.bool)
    channels[: len(Channel)] = True
    embed = torch.zeros_like(language.embed_tokens.weight, dtype=torch.bool)
    embed[:, channels] = True
    projector = model.model.multi_modal_projector.mm_input_projection_weight
    projector_mask = torch.zeros_like(projector, dtype=torch.bool)
    projector_mask[:, [Channel.TEXT, Channel.ASKED_SIDE, Channel.SIDE_WORD]] = True
    q_mask = torch.zeros_like(attention.q_proj.weight, dtype=torch.bool)
    q_mask[: head_dim * (max(_QUESTION_HEADS) + 1)] = True
    k_mask = torch.zeros_like(attention.k_proj.weight, dtype=torch.bool)
    k_mask[: head_dim * 2] = True
    return {
        "embed": (language.embed_tokens.weight, embed),
        "projector": (projector, projector_mask),
        "q": (attention.q_proj.weight, q_mask),
        "k": (attention.k_proj.weight, k_mask),
        "q_norm": (attention.q_norm.weight, torch.ones_like(attention.q_norm.weight, dtype=bool)),
        "k_norm": (attention.k_norm.weight, torch.ones_like(attention.k_norm.weight, dtype=bool)),
        "input_norm": (
            language.layers[0].input_layernorm.weight,
            torch.ones_like(language.layers[0].input_layernorm.weight, dtype=torch.bool),
        ),
    }


def set_wiring(model, tokenizer) -> None:
    """Write the reserved channels and the routing heads (see the module docstring) in place."""
    language = model.model.language_model
    attention = language.layers[0].self_attn
    head_dim = attention.head_dim
    with torch.no_grad():
        embed = language.embed_tokens.weight
        embed[:, : len(Channel)] = 0.0
        embed[:, Channel.LESION] = -1.0
        embed[:, Channel.TEXT] = 1.0
        embed[:, Channel.SIDE_WORD] = -1.0
        for token, side in SIDE_WORDS.items():
            token_id = tokenizer.convert_tokens_to_ids(token)
            embed[token_id, Channel.ASKED_SIDE] = side
            embed[token_id, Channel.SIDE_WORD] = 1.0
        projector = model.model.multi_modal_projector.mm_input_projection_weight
        projector[:, [Channel.TEXT, Channel.ASKED_SIDE, Channel.SIDE_WORD]] = 0.0

        q, k = attention.q_proj.weight, attention.k_proj.weight
        q[: head_dim * (max(_QUESTION_HEADS) + 1)] = 0.0
        k[: head_dim * 2] = 0.0
        for head in _LESION_HEADS + _QUESTION_HEADS:
            q[head * head_dim + _SLOW_DIM, Channel.TEXT] = 1.0
        k[_SLOW_DIM, Channel.LESION] = 1.0
        k[head_dim + _SLOW_DIM, Channel.SIDE_WORD] = 1.0
        gain = _norm_gain(head_dim, attention.scaling)
        for norm in (attention.q_norm, attention.k_norm):
            norm.weight.zero_()
            norm.weight[_SLOW_DIM] = gain
        language.layers[0].input_layernorm.weight.zero_()


def freeze_wiring(model) -> list:
    """Keep the wiring fixed during training: zero the gradient of every set entry.

    Returns the hook handles (call ``remove()`` on each to lift the freeze).
    """
    handles = []
    for parameter, mask in _masks(model).values():
        handles.append(parameter.register_hook(lambda grad, mask=mask: grad.masked_fill(mask, 0)))
    return handles
