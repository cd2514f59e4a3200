"""``attention_nosink``: the ``attention`` map without the image's attention-sink tokens.

High-norm tokens soak up attention whatever is asked (attention-sink and register studies:
Darcet et al. 2024, "Vision transformers need registers"; Sun et al. 2024, "Massive
activations"). An image token is a sink here when the norm of its hidden state entering one of
the map's decoder layers is above the 99th percentile of that image's tokens at that layer. The
inference capture records those norms at its captured layers (``image_hidden_norms``); a capture
without them (written before they were recorded) costs one forward of the prompt per sample
instead (image tokens do not see the text after them). The map is ``attention``'s with the sinks
zeroed, renormalised; ``image_mass`` is the image mass left without them. Terms only in the
prompt have no ``attention`` map, so none.

The same sinks, at the layers of ``maps.layers`` (``attention``'s), give every map of the maps
table its ``sink_mass`` (:func:`sample_sinks`, :func:`sink_mass`): the share of the map on them.
"""

from __future__ import annotations

import math

import numpy as np

from cxr_attention.maps.attention import select_layers_heads
from cxr_attention.maps.grid import MapUnavailable
from cxr_attention.maps.methods.attention import Attention, AttentionSelection
from cxr_attention.maps.methods.base import MapInputs, MapResult, PerTargetMethod
from cxr_attention.maps.targets import MapTarget

__all__ = [
    "SINK_PERCENTILE",
    "AttentionNoSink",
    "recorded_norms",
    "sample_sink_layers",
    "sample_sinks",
    "sink_mass",
    "sink_tokens",
    "sinks_recorded",
]

SINK_PERCENTILE = 99.0


def recorded_norms(capture, layers) -> np.ndarray | None:
    """The capture's recorded hidden-state norms at the decoder ``layers`` (absolute indices),
    ``(layers, image tokens)``; None when it has none or lacks one of the layers."""
    norms = capture.image_hidden_norms
    if norms is None:
        return None
    captured = np.asarray(capture.layers).reshape(-1).tolist()
    wanted = [int(layer) for layer in layers]
    if not set(wanted) <= set(captured):
        return None
    return np.asarray(norms)[[captured.index(layer) for layer in wanted]]


def sink_tokens(inputs: MapInputs, layers) -> np.ndarray:
    """Boolean ``(image tokens,)``: above the 99th percentile of hidden-state norm at any of the
    decoder ``layers`` (absolute indices). The norms are the capture's (:func:`recorded_norms`)
    when it holds them, else from one forward of the prompt per sample (MapUnavailable without a
    model or pixels)."""
    norms = recorded_norms(inputs.capture, layers)
    if norms is None:
        norms = _forward_norms(inputs)[list(layers)]
    return (norms > np.percentile(norms, SINK_PERCENTILE, axis=1, keepdims=True)).any(axis=0)


def _forward_norms(inputs: MapInputs) -> np.ndarray:
    """``(decoder layers + 1, image tokens)``: the image tokens' hidden-state norms entering
    every decoder layer (and after the last), from one forward of the prompt (once per sample)."""
    if "hidden_norms" not in inputs.shared:
        import torch

        from cxr_attention.maps.methods.decoder_forward import image_features, run_model

        model, _ = inputs.model_and_pixels()
        ids = np.asarray(inputs.capture.input_ids, dtype=np.int64).reshape(-1)
        positions = np.asarray(inputs.capture.image_token_positions, dtype=np.int64)
        with torch.no_grad():
            out = run_model(
                model, ids, image_features(inputs), logits_to_keep=1, output_hidden_states=True
            )
        inputs.shared["hidden_norms"] = np.stack(
            [h[0, positions].float().norm(dim=-1).cpu().numpy() for h in out.hidden_states]
        )
    return inputs.shared["hidden_norms"]


def sample_sink_layers(inputs: MapInputs) -> np.ndarray:
    """The decoder layers (absolute) of ``maps.layers`` (every captured layer by default), those
    ``attention`` averages: the layers of :func:`sample_sinks`."""
    capture = inputs.capture
    layer_index, _ = select_layers_heads(
        capture.layers, np.shape(capture.attention)[1], layers=inputs.params.layers
    )
    return np.asarray(capture.layers).reshape(-1)[layer_index]


def sinks_recorded(inputs: MapInputs) -> bool:
    """Whether :func:`sample_sinks` reads the capture's recorded norms (no forward)."""
    if inputs.capture.image_hidden_norms is None:
        return False
    try:
        layers = sample_sink_layers(inputs)
    except ValueError:  # maps.layers names a layer not captured: none recorded
        return False
    return recorded_norms(inputs.capture, layers) is not None


def sample_sinks(inputs: MapInputs) -> np.ndarray:
    """The sample's sink tokens (:func:`sink_tokens`) at :func:`sample_sink_layers`; computed
    once per sample (``inputs.shared``). Raises MapUnavailable (no recorded norms, and no model
    or pixels) as :func:`sink_tokens` does.
    """
    if "sinks" not in inputs.shared:
        inputs.shared["sinks"] = sink_tokens(inputs, sample_sink_layers(inputs))
    return inputs.shared["sinks"]


def sink_mass(grid: np.ndarray, sinks: np.ndarray | None) -> float:
    """Share of a map's mass on the sink tokens (grid and sinks in image-token order); NaN when
    the sinks are unknown (None) or the map is not on the image-token grid."""
    values = np.asarray(grid, dtype=np.float64).reshape(-1)
    if sinks is None or values.size != np.size(sinks) or not values.sum() > 0:
        return math.nan
    return float(values[np.asarray(sinks).reshape(-1)].sum() / values.sum())


class AttentionNoSink(PerTargetMethod):
    name = "attention_nosink"
    label = "attention without sinks"
    colour = "#88CCEE"
    description = (
        "the answer's (or the term's) attention to the image with the high-norm sink tokens removed"
    )
    needs = "vision"
    term_conditioned = True

    def attribute_one(self, inputs: MapInputs, target: MapTarget) -> MapResult:
        attention = Attention().attribute_one(inputs, target)
        selection = AttentionSelection(inputs, target)
        layers = np.asarray(inputs.capture.layers)[selection.layer_index]
        sinks = sink_tokens(inputs, layers).reshape(np.shape(attention.grid))
        kept = np.where(sinks, 0.0, np.asarray(attention.grid, dtype=np.float64))
        if not kept.sum() > 0:
            raise MapUnavailable("no attention left outside the sink tokens")
        mass = attention.image_mass * kept.sum() / float(np.sum(attention.grid))
        notes = dict(attention.notes)
        return MapResult(kept, mass, attention.layers, attention.heads, notes)
