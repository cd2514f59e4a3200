"""What the decoder-side methods share: the scored, teacher-forced forward of one target.

The methods ``rollout``, ``relevancy``, ``decoder_gradcam``, ``integrated_gradients``, ``rise``
and ``relative_attention`` rerun the language model on one sample and score one target:

- the answer: the decision margin, log P(yes) - log P(no)
  (:func:`~cxr_attention.inference.scoring.yes_no_margin_from_logits`) at the decision step, the
  last prompt position (its next token is the first answer token), signed by the model's own
  answer (`decision_sign`): the map explains the answer given, "no" as well as "yes";
- a term: the sum of the logits of the term's tokens, teacher-forced (the generated text up to
  the term, or the term's tokens forced as the start of the answer), each read at the position
  that predicts it: Grad-CAM's term target (:func:`cxr_attention.maps.gradcam.teacher_forcing`).

The *query rows* of a target are the positions whose next token is scored (the decision step;
the rows predicting the term's tokens); the attention-based methods read their rows there.

The image tokens can be fed as features (``(B, image tokens, hidden)``, the projector's output),
so that a method perturbs them (integrated gradients, RISE) without rerunning the vision tower.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from cxr_attention.maps.grid import MapUnavailable, normalise_map
from cxr_attention.maps.methods.base import MapInputs, MapMethod, MapResult, Unavailable
from cxr_attention.maps.targets import MapTarget

__all__ = [
    "DecoderMethod",
    "ScoredTarget",
    "decision_sign",
    "decoder_layer_indices",
    "failure",
    "image_features",
    "image_rows_to_grid",
    "per_target",
    "recorded_attention",
    "run_model",
    "scored_target",
]


@dataclass(frozen=True)
class ScoredTarget:
    """One target's teacher-forced input and score.

    Attributes
    ----------
    ids : ndarray of int, (length,)
        The prompt, then the teacher-forced continuation (none for the answer).
    query_rows : tuple of int
        Positions in ``ids`` whose next token is scored.
    logits_to_keep : int
        How many last logits the score reads.
    score : callable
        Kept logits ``(B, logits_to_keep, vocab)`` -> ``(B,)`` float32.
    image_positions : ndarray of int
        Positions of the image tokens in ``ids`` (grid order).
    """

    ids: np.ndarray
    query_rows: tuple[int, ...]
    logits_to_keep: int
    score: Callable
    image_positions: np.ndarray


def scored_target(inputs: MapInputs, target: MapTarget) -> ScoredTarget:
    """The teacher-forced input and score of ``target`` (MapUnavailable when there is none)."""
    from cxr_attention.maps.gradcam import teacher_forcing

    capture = inputs.capture
    prompt = np.asarray(capture.input_ids, dtype=np.int64).reshape(-1)
    image_positions = np.asarray(capture.image_token_positions, dtype=np.int64).reshape(-1)
    if target.source == "answer":
        from cxr_attention.inference.scoring import yes_no_margin_from_logits

        tokens = _yes_no_tokens(inputs)
        sign = decision_sign(inputs, tokens)

        def margin(logits):
            return sign * yes_no_margin_from_logits(logits[:, -1].float(), tokens)

        return ScoredTarget(prompt, (prompt.size - 1,), 1, margin, image_positions)
    if target.source == "generated":
        following = np.asarray(capture.generated_ids, dtype=np.int64).reshape(-1)
        positions = target.generated_positions
    else:  # only in the prompt, or absent: its tokens forced as the start of the answer
        following = np.asarray(target.forced_ids, dtype=np.int64)
        positions = range(following.size)
    continuation, keep, token_target = teacher_forcing(following, positions)
    rows = tuple(prompt.size - 1 + int(p) for p in sorted(set(positions)))
    return ScoredTarget(
        np.concatenate([prompt, continuation]), rows, keep, token_target, image_positions
    )


def decision_sign(inputs: MapInputs, tokens) -> float:
    """+1 when the model leans to yes at the decision step (margin >= 0), -1 when to no.

    Answer maps score the margin times this sign, so that every method explains the answer the
    model gave (a map of the raw margin would show, for a "no", where the evidence against it
    lies). One forward of the prompt per sample and set of ``tokens`` (cached).
    """
    key = ("decision_sign", tokens.yes_ids, tokens.no_ids)
    if key not in inputs.shared:
        import torch

        from cxr_attention.inference.scoring import yes_no_margin_from_logits

        model, _ = inputs.model_and_pixels()
        prompt = np.asarray(inputs.capture.input_ids, dtype=np.int64).reshape(-1)
        with torch.no_grad():
            logits = run_model(model, prompt, image_features(inputs), logits_to_keep=1).logits
        margin = float(yes_no_margin_from_logits(logits[:, -1].float(), tokens)[0])
        inputs.shared[key] = 1.0 if margin >= 0 else -1.0
    return inputs.shared[key]


def _yes_no_tokens(inputs: MapInputs):
    """The yes/no token ids of the sample's tokenizer (computed once per sample)."""
    if "yes_no_tokens" not in inputs.shared:
        tokenizer = getattr(inputs.vision, "tokenizer", None)
        if tokenizer is None:
            raise MapUnavailable("no tokenizer for the decision margin")
        from cxr_attention.inference.scoring import yes_no_tokens

        try:
            inputs.shared["yes_no_tokens"] = yes_no_tokens(tokenizer)
        except ValueError as error:
            raise MapUnavailable(str(error)) from error
    return inputs.shared["yes_no_tokens"]


def image_features(inputs: MapInputs):
    """The image tokens' embeddings ``(1, image tokens, hidden)`` (projector output), no graph.

    Computed once per sample (from the job's shared vision encodings when there are some).
    """
    if "image_features" not in inputs.shared:
        import torch

        from cxr_attention.maps.hooks import model_pixels

        model, pixel_values = inputs.model_and_pixels()
        with torch.no_grad():
            encodings = getattr(inputs.vision, "encodings", None)
            if encodings is not None:
                tower = model.model.vision_tower
                last = encodings.output(model, pixel_values, -1)
                features = model.model.multi_modal_projector(tower.post_layernorm(last))
            else:
                features = model.model.get_image_features(
                    model_pixels(model, pixel_values)
                ).pooler_output
        inputs.shared["image_features"] = features.detach()
    return inputs.shared["image_features"]


def run_model(
    model, ids: np.ndarray, features, *, logits_to_keep: int, rows: int | None = None, **kwargs
):
    """The model's outputs for ``rows`` copies of ``ids`` with the image tokens' ``features``.

    Parameters
    ----------
    model : Gemma3ForConditionalGeneration
    ids : ndarray of int, (length,)
    features : Tensor, (rows, image tokens, hidden)
        The image tokens' embeddings, one set per row (a gradient may flow through them).
    logits_to_keep : int
    rows : int, optional
        Default: ``features``' first dimension.
    **kwargs
        Passed to the model (``output_hidden_states=True``, say).
    """
    import torch
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    rows = features.shape[0] if rows is None else rows
    device = next(model.parameters()).device
    ids_tensor = torch.as_tensor(np.asarray(ids, dtype=np.int64), device=device)
    ids_tensor = ids_tensor.reshape(1, -1).expand(rows, -1)
    return model(
        input_ids=ids_tensor,
        attention_mask=torch.ones_like(ids_tensor),
        token_type_ids=(ids_tensor == model.config.image_token_id).long(),
        mm_encoder_outputs={"image": BaseModelOutputWithPooling(pooler_output=features)},
        use_cache=False,
        logits_to_keep=logits_to_keep,
        **kwargs,
    )


def decoder_layer_indices(model, spec) -> list[int]:
    """Decoder layer indices from a method's ``*_layers`` setting.

    Parameters
    ----------
    spec : "all", "last_global", int or sequence of int
        ``all``: every decoder layer; ``last_global``: the last full-attention (global) layer;
        integers: absolute indices, or negative from the last layer.
    """
    config = model.config.get_text_config()
    n_layers = int(config.num_hidden_layers)
    if spec == "all":
        return list(range(n_layers))
    if spec == "last_global":
        types = list(getattr(config, "layer_types", None) or ["full_attention"] * n_layers)
        global_layers = [i for i, kind in enumerate(types) if kind == "full_attention"]
        if not global_layers:  # small models may hold sliding-window layers only
            raise MapUnavailable(f"no global (full-attention) layer among the model's {n_layers}")
        return [global_layers[-1]]
    values = [spec] if isinstance(spec, int) else list(spec)
    if not values or any(not -n_layers <= int(v) < n_layers for v in values):
        raise MapUnavailable(f"decoder layers {values} outside the model's {n_layers}")
    return sorted({int(v) % n_layers for v in values})


def failure(error: Exception) -> Unavailable:
    """A MapUnavailable's reason as is; any other failure of a forward/backward as such."""
    if isinstance(error, MapUnavailable):
        return Unavailable(error.reason)
    return Unavailable(f"model failure: {type(error).__name__}: {error}")


def per_target(
    method: Callable[[MapInputs, MapTarget], MapResult],
    inputs: MapInputs,
    targets: Sequence[MapTarget],
) -> list[MapResult | Unavailable]:
    """``method`` on each target, its grid checked and normalised; every failure recorded as an
    Unavailable, never raised."""
    results: list[MapResult | Unavailable] = []
    for target in targets:
        try:
            result = method(inputs, target)
            results.append(dataclasses.replace(result, grid=normalise_map(result.grid)))
        except Exception as error:  # the cascade records each target's own failure
            results.append(failure(error))
    return results


class DecoderMethod(MapMethod):
    """A decoder-side method: reruns the language model on the sample for each target (the
    answer's decision margin, or a term's token logits); implement :meth:`attribute_one`.
    Every failure becomes that target's Unavailable (:func:`per_target`)."""

    needs = "vision"
    term_conditioned = True

    def attribute(
        self, inputs: MapInputs, targets: Sequence[MapTarget]
    ) -> list[MapResult | Unavailable]:
        return per_target(self.attribute_one, inputs, targets)

    def attribute_one(self, inputs: MapInputs, target: MapTarget) -> MapResult:
        """The (unnormalised) map of one target; any exception is recorded as the reason."""
        raise NotImplementedError


def recorded_attention(inputs: MapInputs, scored: ScoredTarget, layers, *, gradients: bool):
    """One forward of the target with every chosen decoder layer's attention recorded in full.

    Returns
    -------
    recorder : AttentionWeights
        Its ``weights()`` are ``(1, heads, length, length)`` per layer; with ``gradients`` it
        also gives ``gradients(score)``.
    score : Tensor (1,) or None
        The target's score, in the autograd graph (``gradients`` only).
    layer_indices : list of int
    """
    import torch

    from cxr_attention.attention_hooks import AttentionWeights, enable_hooks, recording
    from cxr_attention.maps.hooks import frozen_parameters

    model, _ = inputs.model_and_pixels()
    indices = decoder_layer_indices(model, layers)
    features = image_features(inputs)
    previous = model.config._attn_implementation
    enable_hooks(model)
    recorder = AttentionWeights(model, indices, gradients=gradients)
    try:
        with frozen_parameters(model), torch.set_grad_enabled(gradients), recording(recorder):
            if gradients:  # the attention's graph starts at the image tokens (parameters frozen)
                features = features.clone().requires_grad_(True)
            outputs = run_model(model, scored.ids, features, logits_to_keep=scored.logits_to_keep)
            score = scored.score(outputs.logits) if gradients else None
    finally:  # the caller's model keeps its attention implementation (eager, say)
        if previous != model.config._attn_implementation:
            model.set_attn_implementation(previous)
    return recorder, score, indices


def image_rows_to_grid(inputs: MapInputs, matrix, scored: ScoredTarget):
    """Mean of ``matrix``'s query rows at the image columns, as a grid (float64, unnormalised)."""
    rows = np.asarray(matrix, dtype=np.float64)[list(scored.query_rows)][:, scored.image_positions]
    return rows.mean(axis=0).reshape(inputs.grid_shape)
