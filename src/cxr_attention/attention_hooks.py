"""Attention hooks: record the attention probabilities of chosen decoder layers, with or without
gradients.

How it works
------------
A custom attention function is registered with transformers' ``AttentionInterface`` (and the
matching mask function with ``AttentionMaskInterface``, without which a custom function receives no
mask: it would return wrong weights with no error). `enable_hooks` routes a model's attention
through it. While no recorder is active (`recording`), every layer runs ``sdpa`` exactly as the
fast path does. On the layers an active recorder wants, the function also computes the attention
probabilities in float32 from the same query, keys and mask (`attention_probabilities`, eager
attention's formula) and hands them to the recorder, which keeps what it needs:

- `GenerationRecorder` (no gradients; ``generate`` runs under ``no_grad``): per pass, the rows a
  capture stores (the prompt pass's last rows at the image columns and its last full row, then one
  full row per decoding step). The output still comes from ``sdpa``, so answers do not change.
- `AttentionWeights`: the probabilities of one forward pass, optionally for chosen query rows and
  key positions. In gradient mode (``gradients=True``) the layer's output is computed from the
  recorded probabilities (``probabilities @ values``, eager attention's product), so the recorded
  tensors are in the autograd graph: `AttentionWeights.gradients` gives d(score)/d(attention) per
  layer, what gradient-weighted attention (Chefer et al. 2021's relevancy) needs beside the
  attention itself.

Key/value heads are expanded to the query heads as in eager attention (GQA). The recorder is held
in a context variable, so one registered function serves every model and thread.

`ImageHiddenNorms` is no attention hook: forward pre-hooks on chosen decoder layers keep, from a
prompt pass, the norm of the hidden state entering each layer at the image tokens (what the maps
stage's attention-sink tokens are read from), at no cost beyond a norm over 256 positions.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from collections.abc import Iterator, Sequence

import numpy as np
import torch

__all__ = [
    "HOOKED_ATTENTION",
    "AttentionHook",
    "AttentionWeights",
    "GenerationRecorder",
    "ImageHiddenNorms",
    "attention_modules",
    "attention_probabilities",
    "enable_hooks",
    "last_layers",
    "recording",
]

#: The attention implementation name the hooked function is registered under.
HOOKED_ATTENTION = "cxr_capture"

_ACTIVE_HOOK: contextvars.ContextVar[AttentionHook | None] = contextvars.ContextVar(
    "cxr_attention_hook", default=None
)
# Query rows per chunk when computing prompt-pass probabilities (bounds the float32 scratch memory).
_ROW_CHUNK = 256


def last_layers(model, k: int) -> list[int]:
    """Indices of the last ``k`` decoder layers of ``model``'s language model (0: none)."""
    n_layers = model.config.get_text_config().num_hidden_layers
    if not 0 <= k <= n_layers:
        raise ValueError(f"layers must be between 0 and {n_layers}, got {k}")
    return list(range(n_layers - k, n_layers))


def attention_modules(model, layers: Sequence[int]) -> dict:
    """Attention module -> decoder layer index, for the chosen layers of the language model."""
    decoder_layers = model.model.language_model.layers
    return {decoder_layers[i].self_attn: i for i in layers}


def attention_probabilities(
    query: torch.Tensor,
    key: torch.Tensor,
    attention_mask: torch.Tensor | None,
    *,
    scaling: float,
    softcap: float | None = None,
) -> torch.Tensor:
    """Attention probabilities in float32, as transformers' eager attention computes them.

    Parameters
    ----------
    query : Tensor (batch, heads, q_len, head_dim)
    key : Tensor (batch, kv_heads, kv_len, head_dim)
        Key/value heads are repeated to the query heads (GQA).
    attention_mask : Tensor or None
        Boolean (True = attend) or additive float mask broadcastable to (batch, 1, q_len, kv_len);
        None means plain causal with the queries at the end of the keys (sdpa's ``is_causal``).
    scaling : float
    softcap : float, optional
        The model's logit soft cap (None: none).

    Returns
    -------
    Tensor (batch, heads, q_len, kv_len), float32
    """
    batch, heads, q_len, head_dim = query.shape
    kv_heads, kv_len = key.shape[1], key.shape[2]
    # Query head h reads key/value head h // groups (transformers' repeat_kv): group the query
    # heads of each key head instead of copying the keys.
    grouped = query.float().reshape(batch, kv_heads, (heads // kv_heads) * q_len, head_dim)
    logits = torch.matmul(grouped, key.float().transpose(2, 3)) * scaling
    logits = logits.reshape(batch, heads, q_len, kv_len)
    if softcap is not None:
        logits = torch.tanh(logits / softcap) * softcap
    lowest = torch.finfo(torch.float32).min
    if attention_mask is None:
        logits = logits.masked_fill(~_causal_rows(0, q_len, q_len, kv_len, logits.device), lowest)
    elif attention_mask.dtype == torch.bool:
        logits = logits.masked_fill(~attention_mask, lowest)
    else:
        logits = logits + attention_mask.float()
    return torch.softmax(logits, dim=-1)


def _causal_rows(start: int, stop: int, q_len: int, kv_len: int, device) -> torch.Tensor:
    """Boolean causal mask of query rows ``start:stop`` (queries at the end of the keys)."""
    rows = torch.arange(start, stop, device=device)[:, None] + (kv_len - q_len)
    return (torch.arange(kv_len, device=device)[None, :] <= rows)[None, None]


class AttentionHook:
    """What the hooked attention function asks of a recorder (subclasses implement `record`).

    Parameters
    ----------
    modules : dict
        Attention module -> decoder layer index (`attention_modules`).
    """

    def __init__(self, modules: dict):
        self._layer_of = {id(module): layer for module, layer in modules.items()}
        self.layers = list(modules.values())

    def wants(self, module) -> bool:
        return id(module) in self._layer_of

    def layer_of(self, module) -> int:
        return self._layer_of[id(module)]

    def record(
        self, module, query, key, attention_mask, *, scaling, softcap=None
    ) -> torch.Tensor | None:
        """Keep what is needed of one attention call. Return the full probabilities (batch, heads,
        q_len, kv_len) when the layer's output must be computed from them (gradient mode), else
        None (the output comes from sdpa)."""
        raise NotImplementedError


class GenerationRecorder(AttentionHook):
    """Collects the attention rows a capture stores, over the passes of one ``generate`` call.

    The first pass of each layer is the prompt pass: it keeps the image columns of its last
    ``prompt_rows`` query rows (`prompt_image_rows`, only those are computed) and the full row of
    its last query. Every later pass is one decoding step: its single query row, in full.

    Parameters
    ----------
    modules : dict
        Attention module -> decoder layer index.
    image_columns : LongTensor (batch, n_image)
        Key columns of the image tokens for each batch row (in the cache's column space).
    prompt_rows : int, optional
        How many of the prompt pass's last query rows to keep image columns of (None: all).

    Attributes
    ----------
    active_rows : LongTensor or None
        The batch rows the decoding passes hold, in order, when finished rows have been dropped
        from the batch (``capture``'s compacting decoder); None: every row. Each step's rows are
        kept in the full batch's row space either way, a dropped row's left as zeros (its capture
        ended before).
    """

    def __init__(self, modules: dict, image_columns: torch.Tensor, prompt_rows: int | None = None):
        super().__init__(modules)
        self.image_columns = image_columns
        self.prompt_rows = prompt_rows
        self.active_rows: torch.Tensor | None = None
        self.prompt_image_rows: dict[int, torch.Tensor] = {}
        self.rows: dict[int, list[torch.Tensor]] = {layer: [] for layer in modules.values()}

    def record(self, module, query, key, attention_mask, *, scaling, softcap=None) -> None:
        layer = self.layer_of(module)
        if layer not in self.prompt_image_rows:
            self._record_prompt(layer, query, key, attention_mask, scaling, softcap)
            return None
        if query.shape[2] != 1:
            raise RuntimeError("expected one query per decoding step after the prompt pass")
        probs = attention_probabilities(
            query, key, attention_mask, scaling=scaling, softcap=softcap
        )
        row = probs[:, :, 0, :]
        if self.active_rows is not None:
            full = row.new_zeros((self.image_columns.shape[0], *row.shape[1:]))
            full[self.active_rows.to(row.device)] = row
            row = full
        self.rows[layer].append(row)
        return None

    def _record_prompt(self, layer, query, key, attention_mask, scaling, softcap) -> None:
        batch, heads, q_len, _ = query.shape
        image_columns = self.image_columns.to(query.device)
        n_image = image_columns.shape[1]
        kept = q_len if self.prompt_rows is None else min(self.prompt_rows, q_len)
        first_kept = q_len - kept
        image_rows = torch.empty(batch, heads, kept, n_image, device=query.device)
        last_row = None
        for start in range(min(first_kept, q_len - 1), q_len, _ROW_CHUNK):
            stop = min(start + _ROW_CHUNK, q_len)
            mask = attention_mask
            if mask is not None and mask.shape[2] != 1:
                mask = mask[:, :, start:stop]
            elif mask is None:
                mask = _causal_rows(start, stop, q_len, key.shape[2], query.device)
            probs = attention_probabilities(
                query[:, :, start:stop], key, mask, scaling=scaling, softcap=softcap
            )
            low = max(start, first_kept)
            if stop > low:
                index = image_columns[:, None, None, :].expand(batch, heads, stop - low, n_image)
                image_rows[:, :, low - first_kept : stop - first_kept] = torch.gather(
                    probs[:, :, low - start :], 3, index
                )
            last_row = probs[:, :, -1, :]
        self.prompt_image_rows[layer] = image_rows
        self.rows[layer].append(last_row)


class AttentionWeights(AttentionHook):
    """The attention probabilities of chosen decoder layers in one forward pass.

    Parameters
    ----------
    model : Gemma3ForConditionalGeneration
        `enable_hooks` must have been applied.
    layers : sequence of int
        Decoder layers to record.
    gradients : bool
        Gradient mode: the layers' outputs are computed from the recorded probabilities, which
        therefore stay in the autograd graph (run the forward with gradients enabled); then
        `gradients` gives d(score)/d(attention). Without, the probabilities are recorded under
        ``no_grad`` beside an unchanged sdpa output.
    query_rows, key_positions : sequence of int, optional
        The query rows and key positions (absolute, in the pass's key space) that `weights` and
        `gradients` return; None: all. The whole rows are recorded either way (a gradient is
        taken on the tensor the output was computed from), these only select.

    Examples
    --------
    >>> enable_hooks(model)
    >>> recorder = AttentionWeights(model, [3, 4, 5], gradients=True)
    >>> with recording(recorder):
    ...     logits = model(**inputs, use_cache=False).logits
    >>> attention = recorder.weights()
    >>> relevance = recorder.gradients(logits[0, -1, yes_id])
    """

    def __init__(
        self,
        model,
        layers: Sequence[int],
        *,
        gradients: bool,
        query_rows: Sequence[int] | None = None,
        key_positions: Sequence[int] | None = None,
    ):
        super().__init__(attention_modules(model, layers))
        self.gradient_mode = gradients
        self.query_rows = None if query_rows is None else list(query_rows)
        self.key_positions = None if key_positions is None else list(key_positions)
        self._recorded: dict[int, torch.Tensor] = {}

    def record(
        self, module, query, key, attention_mask, *, scaling, softcap=None
    ) -> torch.Tensor | None:
        layer = self.layer_of(module)
        if layer in self._recorded:
            raise RuntimeError(
                f"layer {layer} was already recorded: AttentionWeights holds one forward pass"
            )
        with contextlib.nullcontext() if self.gradient_mode else torch.no_grad():
            probs = attention_probabilities(
                query, key, attention_mask, scaling=scaling, softcap=softcap
            )
        self._recorded[layer] = probs
        return probs if self.gradient_mode else None

    def _select(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.query_rows is not None:
            tensor = tensor[:, :, self.query_rows]
        if self.key_positions is not None:
            tensor = tensor[..., self.key_positions]
        return tensor

    def _tensors(self) -> list[torch.Tensor]:
        missing = [layer for layer in self.layers if layer not in self._recorded]
        if missing:
            raise RuntimeError(f"layers {missing} were not recorded (no forward pass ran?)")
        return [self._recorded[layer] for layer in self.layers]

    def weights(self) -> dict[int, torch.Tensor]:
        """Layer -> probabilities (batch, heads, rows, keys), float32, on the model's device."""
        return {
            layer: self._select(t) for layer, t in zip(self.layers, self._tensors(), strict=True)
        }

    def gradients(
        self, score: torch.Tensor, *, retain_graph: bool = False
    ) -> dict[int, torch.Tensor]:
        """Layer -> d(score)/d(probabilities) (batch, heads, rows, keys), float32.

        Parameters
        ----------
        score : Tensor
            A scalar computed from the forward pass (e.g. one logit, or a margin); a tensor of
            several values is summed (the gradient of a sum of independent rows' scores is each
            row's own gradient).
        retain_graph : bool
            Keep the graph for another backward pass.
        """
        if not self.gradient_mode:
            raise RuntimeError("gradients need AttentionWeights(..., gradients=True)")
        tensors = self._tensors()
        grads = torch.autograd.grad(score.sum(), tensors, retain_graph=retain_graph)
        return {layer: self._select(g) for layer, g in zip(self.layers, grads, strict=True)}


class ImageHiddenNorms:
    """The L2 norms (float32) of the hidden states entering chosen decoder layers at the image
    tokens, from the first pass of each layer inside `recording` (the prompt pass; decoding steps
    hold no image token). ``hidden_states[L]`` of transformers' ``output_hidden_states``.

    Parameters
    ----------
    model : Gemma3ForConditionalGeneration
    layers : sequence of int
        Decoder layers (absolute indices).
    image_positions : LongTensor (batch, n_image)
        The image tokens' positions in the recorded pass's input, per batch row.
    """

    def __init__(self, model, layers: Sequence[int], image_positions: torch.Tensor):
        self._decoder_layers = model.model.language_model.layers
        self.layers = list(layers)
        self.image_positions = image_positions
        self._norms: dict[int, torch.Tensor] = {}

    @contextlib.contextmanager
    def recording(self) -> Iterator[ImageHiddenNorms]:
        """Record inside the block (pre-hooks on the layers, removed on leaving)."""
        handles = [
            self._decoder_layers[layer].register_forward_pre_hook(
                functools.partial(self._record, layer), with_kwargs=True
            )
            for layer in self.layers
        ]
        try:
            yield self
        finally:
            for handle in handles:
                handle.remove()

    def _record(self, layer: int, module, args, kwargs) -> None:
        if layer in self._norms:
            return
        hidden = args[0] if args else kwargs["hidden_states"]  # (batch, q_len, hidden)
        index = self.image_positions.to(hidden.device)[:, :, None]
        image = torch.gather(hidden, 1, index.expand(-1, -1, hidden.shape[-1]))
        self._norms[layer] = image.float().norm(dim=-1)

    def norms(self) -> np.ndarray:
        """``(batch, layers, n_image)`` float32 on the host, layers in the given order."""
        missing = [layer for layer in self.layers if layer not in self._norms]
        if missing:
            raise RuntimeError(f"layers {missing} were not recorded (no forward pass ran?)")
        batch, n_image = self.image_positions.shape
        if not self.layers:
            return np.zeros((batch, 0, n_image), dtype=np.float32)
        return torch.stack([self._norms[layer] for layer in self.layers], dim=1).cpu().numpy()


def _output_from(module, probs: torch.Tensor, value: torch.Tensor, dropout: float) -> torch.Tensor:
    """Eager attention's output, ``probabilities @ values``, shaped (batch, q_len, heads, dim)."""
    batch, heads, q_len, kv_len = probs.shape
    kv_heads, head_dim = value.shape[1], value.shape[3]
    weights = probs.to(value.dtype)
    weights = torch.nn.functional.dropout(weights, p=dropout, training=module.training)
    # Grouped as in `attention_probabilities`: query head h reads value head h // groups.
    grouped = weights.reshape(batch, kv_heads, (heads // kv_heads) * q_len, kv_len)
    output = torch.matmul(grouped, value).reshape(batch, heads, q_len, head_dim)
    return output.transpose(1, 2).contiguous()


def _hooked_attention(
    module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs
):
    """sdpa for the output; float32 probabilities for the active recorder's layers (and, in
    gradient mode, the output computed from them)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    hook = _ACTIVE_HOOK.get()
    if hook is not None and hook.wants(module):
        probs = hook.record(
            module,
            query,
            key,
            attention_mask,
            scaling=scaling if scaling is not None else module.head_dim**-0.5,
            softcap=kwargs.get("softcap"),
        )
        if probs is not None:
            return _output_from(module, probs, value, dropout), probs
    return sdpa_attention_forward(
        module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
    )


def enable_hooks(model) -> None:
    """Route ``model``'s attention through the hooked function (sdpa when nothing records)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(HOOKED_ATTENTION, _hooked_attention)
    # The hooked function must receive the same masks as sdpa: the same mask builder.
    AttentionMaskInterface.register(HOOKED_ATTENTION, sdpa_mask)
    if model.config._attn_implementation != HOOKED_ATTENTION:
        model.set_attn_implementation(HOOKED_ATTENTION)


@contextlib.contextmanager
def recording(hook: AttentionHook) -> Iterator[AttentionHook]:
    """Make ``hook`` the active recorder inside the block (on this thread / context)."""
    token = _ACTIVE_HOOK.set(hook)
    try:
        yield hook
    finally:
        _ACTIVE_HOOK.reset(token)
