"""``relative_attention`` ("MLLMs know where to look", Zhang et al., ICLR 2025,
https://arxiv.org/abs/2502.17422): attention for the question divided by attention for a
generic prompt on the same image.

Two forwards over the same image tokens: the sample's prompt, and the same prompt with the
question's words replaced by :data:`GENERIC_PROMPT` (the chat template and the image block kept).
Each gives the image attention, averaged over the heads and ``maps.relative_attention_layers``
(default every decoder layer), at the decision step (for a term: at the rows predicting the
term's tokens, teacher-forced, in the question's forward). The map is their ratio per image
token; the generic attention is floored at 1e-3 of its mean, so a token the generic prompt
ignores cannot dominate. What the generic prompt also attends to (sinks, borders, the image's
salient content) cancels; what the question adds remains.
"""

from __future__ import annotations

import numpy as np

from cxr_attention.maps.grid import MapUnavailable
from cxr_attention.maps.methods.base import MapInputs, MapResult
from cxr_attention.maps.methods.decoder_forward import (
    DecoderMethod,
    ScoredTarget,
    recorded_attention,
    scored_target,
)
from cxr_attention.maps.targets import MapTarget

__all__ = ["GENERIC_PROMPT", "RelativeAttention", "generic_prompt_ids"]

GENERIC_PROMPT = "Write a general description of the image."
"""The generic instruction of Zhang et al. (2025)."""

_FLOOR = 1e-3


def generic_prompt_ids(tokenizer, input_ids, image_token_id: int) -> np.ndarray:
    """The prompt with the question's words replaced by :data:`GENERIC_PROMPT`.

    The question is the user turn's span of non-blank tokens outside the image block (from
    ``<start_of_image>`` to ``<end_of_image>``); the turn runs from after ``<start_of_turn>user``
    to the first ``<end_of_turn>``.
    """
    ids = np.asarray(input_ids, dtype=np.int64).reshape(-1)
    tokens = tokenizer.convert_ids_to_tokens(ids.tolist())
    try:
        turn_start = tokens.index("<start_of_turn>") + 2
        turn_end = tokens.index("<end_of_turn>", turn_start)
    except ValueError:
        raise MapUnavailable("no user turn in the prompt to replace the question in") from None
    image = np.flatnonzero(ids == image_token_id)
    block = set(range(int(image.min()) - 1, int(image.max()) + 2)) if image.size else set()
    words = [
        i
        for i in range(turn_start, turn_end)
        if i not in block and tokenizer.decode([int(ids[i])]).strip()
    ]
    if not words:
        raise MapUnavailable("no question tokens in the prompt")
    generic = tokenizer(GENERIC_PROMPT, add_special_tokens=False)["input_ids"]
    return np.concatenate([ids[: words[0]], np.asarray(generic, np.int64), ids[words[-1] + 1 :]])


class RelativeAttention(DecoderMethod):
    name = "relative_attention"
    label = "relative attention"
    colour = "#AA4499"
    description = (
        "attention to the image for the question divided by that for a generic prompt on the "
        "same image (Zhang et al. 2025)"
    )

    def attribute_one(self, inputs: MapInputs, target: MapTarget) -> MapResult:
        layers = inputs.params.relative_attention_layers
        question = scored_target(inputs, target)
        generic = inputs.shared.get(self.name)
        if generic is None:  # the generic prompt's map: once per sample
            generic = inputs.shared[self.name] = self._generic_attention(inputs, layers)
        specific, used = _image_attention(inputs, question, layers)
        floor = _FLOOR * generic.mean()
        grid = (specific / np.maximum(generic, floor)).reshape(inputs.grid_shape)
        return MapResult(grid, layers="|".join(str(layer) for layer in used))

    @staticmethod
    def _generic_attention(inputs: MapInputs, layers) -> np.ndarray:
        model, _ = inputs.model_and_pixels()
        tokenizer = getattr(inputs.vision, "tokenizer", None)
        if tokenizer is None:
            raise MapUnavailable("no tokenizer for the generic prompt")
        image_token_id = model.config.image_token_id
        ids = generic_prompt_ids(tokenizer, inputs.capture.input_ids, image_token_id)
        scored = ScoredTarget(ids, (ids.size - 1,), 1, None, np.flatnonzero(ids == image_token_id))
        attention, _ = _image_attention(inputs, scored, layers)
        return attention


def _image_attention(inputs: MapInputs, scored: ScoredTarget, layers):
    """Image attention ``(image tokens,)`` at the query rows, mean over layers and heads."""
    recorder, _, used = recorded_attention(inputs, scored, layers, gradients=False)
    rows = list(scored.query_rows)
    per_layer = [
        weights[0][:, rows][..., scored.image_positions].float().mean(dim=(0, 1)).cpu().numpy()
        for weights in recorder.weights().values()
    ]
    return np.mean(per_layer, axis=0).astype(np.float64), used
