"""Generation that records, for every generated token, its attention to the 256 image tokens.

How it works
------------
A custom attention function is registered with transformers' ``AttentionInterface`` (and the
matching mask function with ``AttentionMaskInterface``, without which a custom function receives no
mask). On every layer it computes the output with ``sdpa``, exactly as the fast path does, so the
model's answers do not change. On the captured layers only (the last ``k`` by default) it also
computes the attention probabilities in float32 from the same query, keys and mask, and keeps only
the rows the study needs:

- on the prompt pass: the prompt rows' probabilities on the image columns
  (``prompt_image_attention``; every row, or with ``prompt_image_rows="text"`` only the rows
  after the image, which is all the workflow stores) and the full row of the last prompt token
  (row 0);
- on each decoding step: the full row of the single query (rows 1, 2, ...).

Row 0 is the attention of the last prompt token, the query whose output produced the first
generated token; row ``i`` is the attention of generated token ``i - 1``, which produced token
``i``. Key/value heads are expanded to the 8 query heads as in eager attention (GQA).

Sharing work between questions about one image
----------------------------------------------
With the image first, every question shares the tokens up to the end of the image (chat prefix,
``<start_of_image>``, 256 soft tokens, ``<end_of_image>``, and whatever else the tokenizer keeps
in common). Image tokens attend only to each other and to earlier tokens, never to later text, so
the prefix's keys and values are the same for every question. `capture_images` runs the vision
tower and the prefix once per image (the images of a call as one batch), gives every row of a
batch its image's cache and lays the questions out as ``[prefix][padding][question]``: padding
*between* prefix and question keeps the prefix at the same positions for every row and aligns
the last prompt tokens, and position ids from the cumulative attention mask give every real token
the position it has in an unpadded prompt. With the question first, prompts differ before the
image; the vision tower still runs once per image and its output is passed to the prompt pass of
each of the image's questions.

A batch may hold the questions of several images (every image's prefix has the same tokens and
length, so their caches stack along the batch): a GPU decoding step of 42 rows is bound by kernel
launches, not arithmetic, so more images per batch means more questions per second (on an H100,
2.3x at 4 images per batch; bench/RESULTS.md).

Sliding-window layers
---------------------
Gemma 3's sliding layers keep only the last ``sliding_window`` keys. If a captured sliding layer
could lose a prompt column during generation, the capture would silently misplace columns, so it
refuses instead (`PromptTooLongError`).
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from cxr_attention.inference.prompting import (
    build_inputs,
    image_token_positions,
    prompt_token_ids,
    render_prompts,
)
from cxr_attention.inference.scoring import YesNoTokens, p_yes_from_logits, yes_no_tokens

__all__ = [
    "CAPTURE_ATTENTION",
    "AttentionRecorder",
    "Capture",
    "PromptTooLongError",
    "attention_probabilities",
    "capture_answers",
    "capture_batch",
    "capture_images",
    "enable_capture",
    "last_layers",
    "prompt_image_start",
]

CAPTURE_ATTENTION = "cxr_capture"

_ACTIVE_RECORDER: contextvars.ContextVar[AttentionRecorder | None] = contextvars.ContextVar(
    "cxr_attention_recorder", default=None
)
# Query rows per chunk when computing prompt-pass probabilities (bounds the float32 scratch memory).
_ROW_CHUNK = 256


class PromptTooLongError(ValueError):
    """A prompt (plus the tokens to generate) does not fit a captured sliding layer's window."""


@dataclass
class Capture:
    """One (image, question) pair: prompt, answer and captured attention.

    Array shapes follow docs/architecture.md ("Capture arrays"): ``attention`` is
    ``[layers, heads, generated, 256]``, ``text_attention`` ``[layers, heads, generated,
    prompt_len]`` (image columns 0), ``prompt_image_attention`` ``[layers, heads, rows, 256]``.

    ``prompt_image_attention`` holds the rows of prompt positions ``prompt_image_start`` to the
    end (0: every row; after the image with ``prompt_image_rows="text"``). It is kept as
    consecutive blocks of rows (``prompt_image_parts``) and joined on demand: with a shared image
    prefix, the prefix's rows are one array for every question of the image, not a copy per
    question.
    """

    question: str
    prompt: str
    input_ids: np.ndarray
    generated_ids: np.ndarray
    generated_text: str
    p_yes: float
    layers: np.ndarray
    image_token_positions: np.ndarray
    attention: np.ndarray
    text_attention: np.ndarray
    prompt_image_parts: tuple[np.ndarray, ...] = field(repr=False)
    input_tokens: list[str] = field(default_factory=list)
    generated_tokens: list[str] = field(default_factory=list)
    pixel_values: np.ndarray | None = None
    prompt_image_start: int = 0

    @property
    def n_generated_tokens(self) -> int:
        return len(self.generated_ids)

    @property
    def prompt_image_positions(self) -> np.ndarray:
        """The prompt positions of `prompt_image_attention`'s rows."""
        return np.arange(self.prompt_image_start, len(self.input_ids))

    @property
    def prompt_image_attention(self) -> np.ndarray:
        """Prompt rows' attention to the image tokens, ``[layers, heads, rows, 256]`` (rows:
        `prompt_image_positions`)."""
        if len(self.prompt_image_parts) == 1:
            return self.prompt_image_parts[0]
        return np.concatenate(self.prompt_image_parts, axis=2)

    def prompt_image_rows(self, positions: Sequence[int] | np.ndarray) -> np.ndarray:
        """The rows of chosen prompt positions (increasing) of `prompt_image_attention`, without
        joining the others."""
        positions = np.asarray(positions, dtype=np.int64)
        if positions.size and positions.min() < self.prompt_image_start:
            raise ValueError(
                f"prompt rows before position {self.prompt_image_start} were not captured "
                "(captured with prompt_image_rows='text')"
            )
        rows = positions - self.prompt_image_start
        picked, start = [], 0
        for part in self.prompt_image_parts:
            stop = start + part.shape[2]
            picked.append(part[:, :, rows[(rows >= start) & (rows < stop)] - start])
            start = stop
        return np.concatenate(picked, axis=2)


def last_layers(model, k: int) -> list[int]:
    """Indices of the last ``k`` decoder layers of ``model``'s language model (0: none)."""
    n_layers = model.config.get_text_config().num_hidden_layers
    if not 0 <= k <= n_layers:
        raise ValueError(f"layers must be between 0 and {n_layers}, got {k}")
    return list(range(n_layers - k, n_layers))


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
        rows = torch.arange(q_len, device=logits.device)[:, None] + (kv_len - q_len)
        visible = torch.arange(kv_len, device=logits.device)[None, :] <= rows
        logits = logits.masked_fill(~visible, lowest)
    elif attention_mask.dtype == torch.bool:
        logits = logits.masked_fill(~attention_mask, lowest)
    else:
        logits = logits + attention_mask.float()
    return torch.softmax(logits, dim=-1)


class AttentionRecorder:
    """Collects the needed attention rows of chosen attention modules during one batch.

    Parameters
    ----------
    modules : dict
        Attention module -> decoder layer index.
    image_columns : LongTensor (batch, n_image)
        Key columns of the image tokens for each batch row (in the cache's column space).
    prompt_rows : int, optional
        How many of the prompt pass's last query rows to keep image columns of (default: all).
        Only those and the last row are computed.
    """

    def __init__(self, modules: dict, image_columns: torch.Tensor, prompt_rows: int | None = None):
        self._layer_of = {id(module): layer for module, layer in modules.items()}
        self.image_columns = image_columns
        self.prompt_rows = prompt_rows
        self.prompt_image_rows: dict[int, torch.Tensor] = {}
        self.rows: dict[int, list[torch.Tensor]] = {layer: [] for layer in modules.values()}

    def wants(self, module) -> bool:
        return id(module) in self._layer_of

    def record(self, module, query, key, attention_mask, *, scaling, softcap=None) -> None:
        layer = self._layer_of[id(module)]
        if layer not in self.prompt_image_rows:
            self._record_prompt(layer, query, key, attention_mask, scaling, softcap)
            return
        if query.shape[2] != 1:
            raise RuntimeError("expected one query per decoding step after the prompt pass")
        probs = attention_probabilities(
            query, key, attention_mask, scaling=scaling, softcap=softcap
        )
        self.rows[layer].append(probs[:, :, 0, :])

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


def _causal_rows(start: int, stop: int, q_len: int, kv_len: int, device) -> torch.Tensor:
    """Boolean causal mask of query rows ``start:stop`` (queries at the end of the keys)."""
    rows = torch.arange(start, stop, device=device)[:, None] + (kv_len - q_len)
    return (torch.arange(kv_len, device=device)[None, :] <= rows)[None, None]


def _capture_attention(
    module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs
):
    """sdpa for the output; float32 probabilities on the side for the modules being recorded."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    recorder = _ACTIVE_RECORDER.get()
    if recorder is not None and recorder.wants(module):
        recorder.record(
            module,
            query,
            key,
            attention_mask,
            scaling=scaling if scaling is not None else module.head_dim**-0.5,
            softcap=kwargs.get("softcap"),
        )
    return sdpa_attention_forward(
        module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
    )


def enable_capture(model) -> None:
    """Route ``model``'s attention through the capturing function (sdpa when nothing records)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(CAPTURE_ATTENTION, _capture_attention)
    # The capturing function must receive the same masks as sdpa: the same mask builder.
    AttentionMaskInterface.register(CAPTURE_ATTENTION, sdpa_mask)
    if model.config._attn_implementation != CAPTURE_ATTENTION:
        model.set_attn_implementation(CAPTURE_ATTENTION)


@contextlib.contextmanager
def _recording(recorder: AttentionRecorder) -> Iterator[AttentionRecorder]:
    token = _ACTIVE_RECORDER.set(recorder)
    try:
        yield recorder
    finally:
        _ACTIVE_RECORDER.reset(token)


def _attention_modules(model, layers: Sequence[int]) -> dict:
    decoder_layers = model.model.language_model.layers
    return {decoder_layers[i].self_attn: i for i in layers}


def _check_windows(model, layers: Sequence[int], total_columns: int) -> None:
    """Refuse when a captured sliding layer would drop keys before generation ends."""
    text_config = model.config.get_text_config()
    window = text_config.sliding_window
    sliding = [i for i in layers if text_config.layer_types[i] == "sliding_attention"]
    # At the last step the keys are all columns but the last generated token's successor.
    if sliding and window is not None and total_columns - 1 > window:
        raise PromptTooLongError(
            f"prompt columns plus new tokens ({total_columns - 1}) exceed the sliding window "
            f"({window}) of captured layer(s) {sliding}: their attention would lose prompt "
            "columns; capture fewer layers, shorten the prompt or lower max_new_tokens"
        )


class _FirstStepPYes:
    """A logits processor that reads P(yes) from the first generation step and changes nothing."""

    def __init__(self, tokens: YesNoTokens):
        self.tokens = tokens
        self.p_yes: torch.Tensor | None = None

    def __call__(self, input_ids, scores):
        if self.p_yes is None:
            self.p_yes = p_yes_from_logits(scores, self.tokens)
        return scores


def _greedy_config(model, max_new_tokens: int):
    """Greedy decoding with the model's special tokens.

    Built fresh rather than copied: MedGemma's own generation config samples (top-k 64, top-p 0.95).
    """
    from transformers import GenerationConfig

    own = model.generation_config
    text_config = model.config.get_text_config()
    return GenerationConfig(
        bos_token_id=own.bos_token_id if own.bos_token_id is not None else text_config.bos_token_id,
        eos_token_id=own.eos_token_id if own.eos_token_id is not None else text_config.eos_token_id,
        pad_token_id=own.pad_token_id if own.pad_token_id is not None else text_config.pad_token_id,
        do_sample=False,
        num_beams=1,
        max_new_tokens=max_new_tokens,
    )


def _eos_ids(generation_config) -> set[int]:
    eos = generation_config.eos_token_id
    if eos is None:
        return set()
    return {int(e) for e in (eos if isinstance(eos, list | tuple) else [eos])}


@dataclass
class _Prefix:
    """The image prefix of one or several images, already run through the model (batch: images).

    The prefix's token ids are the same for every image (image tokens are placeholders); its keys,
    values and prompt rows are not.
    """

    input_ids: torch.Tensor  # (P,)
    cache: object  # one row per image
    # Per image, (layers, heads, rows, n_image) on the host for the prefix's last rows (those
    # kept, see `prompt_image_start`): one array shared by the image's captures.
    prompt_image_rows: list[np.ndarray]


@torch.no_grad()
def _run_prefix(model, prefix_ids, pixel_values, token_type_ids, layers, start) -> _Prefix:
    """Run the prefix of every image in ``pixel_values`` (images, 3, S, S) as one batch, keeping
    the prompt rows of positions ``start`` onwards."""
    from transformers import DynamicCache

    device = model.device
    n_images = pixel_values.shape[0]
    prefix_ids = prefix_ids.to(device)
    image_columns = image_token_positions(prefix_ids, model.config.image_token_id)
    cache = DynamicCache(config=model.config.get_text_config())
    recorder = AttentionRecorder(
        _attention_modules(model, layers),
        image_columns[None].expand(n_images, -1),
        prompt_rows=len(prefix_ids) - start,
    )
    with _recording(recorder):
        model(
            input_ids=prefix_ids[None].expand(n_images, -1),
            pixel_values=pixel_values.to(device, model.dtype),
            token_type_ids=token_type_ids[None].expand(n_images, -1).to(device),
            attention_mask=torch.ones(n_images, len(prefix_ids), dtype=torch.long, device=device),
            cache=cache,
            use_cache=True,
            logits_to_keep=1,
        )
    if layers:
        rows = torch.stack([recorder.prompt_image_rows[layer] for layer in layers]).cpu()
        per_image = [np.ascontiguousarray(rows[:, image].numpy()) for image in range(n_images)]
    else:  # nothing captured
        rows = len(prefix_ids) - start
        per_image = [np.zeros((0, 0, rows, len(image_columns)), np.float32)] * n_images
    return _Prefix(prefix_ids, cache, per_image)


@torch.no_grad()
def capture_batch(
    model,
    processor,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    questions: Sequence[str],
    prompts: Sequence[str],
    layers: Sequence[int],
    max_new_tokens: int,
    yes_no: YesNoTokens,
    pixel_values: torch.Tensor | None = None,
    token_type_ids: torch.Tensor | None = None,
    image_features: torch.Tensor | None = None,
    prefix: _Prefix | None = None,
    prefix_rows: torch.Tensor | None = None,
    prompt_image_rows: str = "all",
) -> list[Capture]:
    """Generate greedily for a batch and return one `Capture` per row.

    The model must have had `enable_capture` applied. Exactly one image source: ``pixel_values``
    (one image per row), ``image_features`` (the projector's output, one per row) or ``prefix``
    (the image is inside an already-run prefix; ``input_ids`` then hold only the part after it,
    padded between prefix and question; ``prefix_rows`` gives each row's image in the prefix).

    Parameters
    ----------
    model, processor
    input_ids, attention_mask : Tensor (batch, length)
        Left-padded prompts (after the prefix when ``prefix`` is given).
    questions, prompts : sequences of str
        Per row, carried into the captures.
    layers : sequence of int
        Decoder layers to capture.
    max_new_tokens : int
    yes_no : YesNoTokens
    pixel_values, token_type_ids, image_features, prefix, prefix_rows
        See above.
    prompt_image_rows : {"all", "text"}
        Prompt rows whose image attention is computed and kept: every row, or only the rows
        after the image (the only text that can attend to it; all the workflow stores).

    Returns
    -------
    list of Capture
    """
    from transformers import LogitsProcessorList
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    device = model.device
    batch, call_length = input_ids.shape
    prefix_length = 0 if prefix is None else len(prefix.input_ids)
    _check_windows(model, layers, prefix_length + call_length + max_new_tokens)
    input_ids = input_ids.to(device)
    attention_mask = attention_mask.to(device)
    image_token_id = model.config.image_token_id

    # Per row: the columns (in the cache's column space) of its real prompt tokens.
    prompt_columns = []
    for row in range(batch):
        real = torch.nonzero(attention_mask[row]).flatten() + prefix_length
        if prefix is not None:
            real = torch.cat([torch.arange(prefix_length, device=device), real])
        prompt_columns.append(real)
    full_ids = (
        input_ids
        if prefix is None
        else torch.cat([prefix.input_ids.to(device)[None].expand(batch, -1), input_ids], dim=1)
    )
    prompt_ids = [full_ids[row, prompt_columns[row]] for row in range(batch)]
    image_positions = [image_token_positions(ids, image_token_id) for ids in prompt_ids]
    image_columns = torch.stack([prompt_columns[row][image_positions[row]] for row in range(batch)])
    starts = [prompt_image_start(positions, prompt_image_rows) for positions in image_positions]
    # Prompt rows each batch row needs from this call (the prefix's are already kept); left
    # padding puts them at the end, so the recorder keeps the call's last ``max`` rows.
    call_rows_needed = [
        len(prompt_columns[row]) - max(starts[row], prefix_length) for row in range(batch)
    ]

    generate_kwargs: dict = {}
    if prefix is not None:
        cache = copy.deepcopy(prefix.cache)
        cache.batch_select_indices(prefix_rows.to(device))  # each row its image's keys, values
        generate_kwargs["cache"] = cache
        generate_kwargs["input_ids"] = full_ids
        generate_kwargs["attention_mask"] = torch.cat(
            [
                torch.ones(batch, prefix_length, dtype=attention_mask.dtype, device=device),
                attention_mask,
            ],
            dim=1,
        )
    else:
        generate_kwargs["input_ids"] = input_ids
        generate_kwargs["attention_mask"] = attention_mask
        generate_kwargs["token_type_ids"] = token_type_ids.to(device)
        if image_features is not None:
            features = image_features.to(device, model.dtype)
            generate_kwargs["mm_encoder_outputs"] = {
                "image": BaseModelOutputWithPooling(pooler_output=features)
            }
        else:
            generate_kwargs["pixel_values"] = pixel_values.to(device, model.dtype)

    generation_config = _greedy_config(model, max_new_tokens)
    p_yes_reader = _FirstStepPYes(yes_no)
    recorder = AttentionRecorder(
        _attention_modules(model, layers), image_columns, prompt_rows=max(call_rows_needed)
    )
    with _recording(recorder):
        sequences = model.generate(
            **generate_kwargs,
            generation_config=generation_config,
            logits_processor=LogitsProcessorList([p_yes_reader]),
        )
    generated = sequences[:, full_ids.shape[1] :].cpu()
    eos_ids = _eos_ids(generation_config)
    p_yes = p_yes_reader.p_yes.cpu().numpy()
    arrays = _gather_rows(
        recorder,
        prefix,
        prefix_rows,
        layers,
        prompt_columns,
        image_columns,
        image_positions,
        batch,
        model.config.get_text_config().num_attention_heads,
        call_rows_needed,
        generated.shape[1],
    )
    captures = []
    tokenizer = processor.tokenizer
    for row in range(batch):
        tokens = generated[row].tolist()
        n_tokens = next((i + 1 for i, t in enumerate(tokens) if t in eos_ids), len(tokens))
        tokens = tokens[:n_tokens]
        prompt_len = len(prompt_columns[row])
        ids = prompt_ids[row].cpu()
        captures.append(
            Capture(
                question=questions[row],
                prompt=prompts[row],
                input_ids=ids.numpy(),
                generated_ids=np.asarray(tokens, dtype=np.int64),
                generated_text=tokenizer.decode(tokens, skip_special_tokens=True),
                p_yes=float(p_yes[row]),
                layers=np.asarray(layers, dtype=np.int64),
                image_token_positions=image_positions[row].cpu().numpy(),
                attention=np.ascontiguousarray(arrays["attention"][:, row, :, :n_tokens]),
                text_attention=np.ascontiguousarray(
                    arrays["text_attention"][:, row, :, :n_tokens, :prompt_len]
                ),
                prompt_image_parts=arrays["prompt_image"](row),
                input_tokens=tokenizer.convert_ids_to_tokens(ids.tolist()),
                generated_tokens=tokenizer.convert_ids_to_tokens(tokens),
                prompt_image_start=starts[row],
            )
        )
    return captures


def _gather_rows(
    recorder,
    prefix,
    prefix_rows,
    layers,
    prompt_columns,
    image_columns,
    image_positions,
    batch,
    heads,
    call_rows_needed,
    steps,
) -> dict:
    """Turn recorded rows (cache column space) into per-sample arrays (prompt coordinates).

    Vectorised over the batch on the recording device, then copied to the host once.
    """
    device = image_columns.device
    n_layers, n_image = len(layers), image_columns.shape[1]
    widest = max(len(c) for c in prompt_columns)
    if not layers:  # nothing captured: empty arrays of the right shapes
        return {
            "attention": np.zeros((0, batch, heads, steps, n_image), dtype=np.float32),
            "text_attention": np.zeros((0, batch, heads, steps, widest), dtype=np.float32),
            "prompt_image": lambda row: (
                np.zeros((0, heads, call_rows_needed[row], n_image), dtype=np.float32),
            ),
        }
    # (layers, batch, heads, steps, total_columns); rows right-padded with zeros.
    rows = torch.stack([torch.stack(_pad_rows(recorder.rows[layer]), dim=2) for layer in layers])
    steps = rows.shape[3]
    index = image_columns[None, :, None, None, :].expand(n_layers, batch, heads, steps, n_image)
    attention = torch.gather(rows, 4, index)
    # Prompt columns of every row, padded at the end to the longest prompt (pads read column 0
    # and are cut off per row).
    columns = torch.zeros(batch, widest, dtype=torch.long, device=device)
    is_image = torch.zeros(batch, widest, dtype=torch.bool, device=device)
    for row, row_columns in enumerate(prompt_columns):
        columns[row, : len(row_columns)] = row_columns
        is_image[row, image_positions[row]] = True
    index = columns[None, :, None, None, :].expand(n_layers, batch, heads, steps, widest)
    text = torch.gather(rows, 4, index).masked_fill(is_image[None, :, None, None, :], 0.0)
    # Prompt rows: the prefix's rows (shared) followed by each row's own prompt-pass rows, which
    # are the last ones kept of the call (left padding puts a row's real tokens at the end).
    call_rows = torch.stack([recorder.prompt_image_rows[layer] for layer in layers]).cpu()
    kept = call_rows.shape[3]

    def prompt_image(row: int) -> tuple[np.ndarray, ...]:
        # A copy: a view would keep the whole batch's rows alive as long as any one capture.
        part = np.ascontiguousarray(call_rows[:, row, :, kept - call_rows_needed[row] :].numpy())
        if prefix is None:
            return (part,)
        return (prefix.prompt_image_rows[int(prefix_rows[row])], part)

    return {
        "attention": attention.cpu().numpy(),
        "text_attention": text.cpu().numpy(),
        "prompt_image": prompt_image,
    }


def prompt_image_start(image_positions, prompt_image_rows: str) -> int:
    """The first prompt position whose image attention is kept: 0 for ``"all"``; for ``"text"``
    the one after the last image token (``image_positions``, increasing), since earlier text
    cannot attend to the image and the image's own rows are not wanted."""
    if prompt_image_rows == "all":
        return 0
    if prompt_image_rows == "text":
        return int(image_positions[-1]) + 1
    raise ValueError(f"prompt_image_rows must be 'all' or 'text', got {prompt_image_rows!r}")


def _pad_rows(rows: list[torch.Tensor]) -> list[torch.Tensor]:
    """Right-pad (batch, heads, kv) rows of growing kv length to the longest one."""
    width = max(r.shape[-1] for r in rows)
    return [torch.nn.functional.pad(r, (0, width - r.shape[-1])) for r in rows]


def _common_prefix_length(sequences: Sequence[torch.Tensor]) -> int:
    shortest = min(len(s) for s in sequences)
    first = sequences[0][:shortest]
    same = torch.ones(shortest, dtype=torch.bool)
    for other in sequences[1:]:
        same &= other[:shortest] == first
    different = torch.nonzero(~same).flatten()
    return int(different[0]) if len(different) else shortest


def _pad_between(
    suffixes: Sequence[torch.Tensor], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad variable-length suffixes into (ids, mask) of the longest length."""
    width = max(len(s) for s in suffixes)
    ids = torch.full((len(suffixes), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(suffixes), width), dtype=torch.long)
    for row, suffix in enumerate(suffixes):
        ids[row, width - len(suffix) :] = suffix
        mask[row, width - len(suffix) :] = 1
    return ids, mask


def capture_answers(
    model, processor, image, questions: Sequence[str], **options: Any
) -> list[Capture]:
    """Ask every question about one image; capture attention for each.

    `capture_images` with one image; ``options`` are its keyword arguments (``image_first`` is
    required).
    """
    return capture_images(model, processor, [(image, questions)], **options)


@torch.no_grad()
def capture_images(
    model,
    processor,
    requests: Sequence[tuple[object, Sequence[str]]],
    *,
    image_first: bool,
    layers: int | Sequence[int] = 3,
    max_new_tokens: int = 8,
    batch_size: int = 8,
    share: bool = True,
    include_pixel_values: bool = False,
    prompt_image_rows: str = "all",
    on_batch: Callable[[list[Capture], float], None] | None = None,
) -> list[Capture]:
    """Ask questions about several images; capture attention for each (image, question).

    The questions of all the images are answered in order, ``batch_size`` at a time, so that a
    batch may hold several images' questions: on a GPU a decoding step costs about the same for
    42 rows as for 84, so several images per batch raise the questions per second.

    Parameters
    ----------
    model : Gemma3ForConditionalGeneration
        `enable_capture` is applied if needed.
    processor : Gemma3Processor
    requests : sequence of (image, questions)
        Image: PIL.Image or ndarray of uint8; questions: sequence of str (at least one).
    image_first : bool
        Order in the user turn.
    layers : int or sequence of int
        The last ``k`` decoder layers, or explicit indices.
    max_new_tokens : int
    batch_size : int
        (image, question) rows per generation batch.
    share : bool
        Encode each image once for all its questions (see the module docstring). ``False`` runs
        every row from its own pixels (the reference to compare against).
    include_pixel_values : bool
        Keep ``pixel_values`` (float32, what the model saw) in each capture.
    prompt_image_rows : {"all", "text"}
        Prompt rows of ``prompt_image_attention``: every one, or those after the image (see
        `capture_batch`; with the question first, "text" spares computing and copying 42
        prompts' 256 image rows per batch).
    on_batch : callable, optional
        Called after each batch with its captures (in order) and the seconds it took (the shared
        image work is counted in the first batch), so that callers can save results as soon as
        they exist.

    Returns
    -------
    list of Capture
        In order: the first image's questions, then the second's, ...
    """
    started = time.perf_counter()
    prompt_image_start([0], prompt_image_rows)  # checks the value before any work
    enable_capture(model)
    layer_list = last_layers(model, layers) if isinstance(layers, int) else list(layers)
    yes_no = yes_no_tokens(processor.tokenizer)
    if any(not list(questions) for _, questions in requests):
        raise ValueError("every image needs at least one question")
    questions = [q for _, image_questions in requests for q in image_questions]
    row_image = torch.tensor([i for i, (_, qs) in enumerate(requests) for _ in qs])
    prompts = render_prompts(processor, questions, image_first=image_first)
    # Each image is preprocessed once, with its first question; the prompts are tokenized
    # without pixels, after checking on that question that this gives the processor's own ids.
    ids = prompt_token_ids(processor, prompts)
    pixels, first_row = [], 0
    for image, image_questions in requests:
        first = build_inputs(processor, image, image_questions[0], image_first=image_first)
        if not torch.equal(ids[first_row], first["input_ids"][0]):
            for offset, question in enumerate(image_questions):
                inputs = build_inputs(processor, image, question, image_first=image_first)
                ids[first_row + offset] = inputs["input_ids"][0]
        pixels.append(first["pixel_values"])
        first_row += len(image_questions)
    pixel_values = torch.cat(pixels)
    pad_id = processor.tokenizer.pad_token_id

    prefix = None
    features = None
    if share and image_first:
        # The shared prefix ends with the image's closing token, whatever the questions share
        # after it: a prefix that depended on the questions asked together would make one
        # question's floats depend on its company (and a resumed job differ from a whole one).
        image_positions = image_token_positions(ids[0], model.config.image_token_id)
        length = int(image_positions[-1]) + 2
        if _common_prefix_length(ids) < length or min(len(i) for i in ids) <= length:
            raise RuntimeError("questions do not share the image prefix; cannot share it")
        prefix_token_types = (ids[0][:length] == model.config.image_token_id).long()
        start = prompt_image_start(image_positions, prompt_image_rows)
        prefix = _run_prefix(
            model, ids[0][:length], pixel_values, prefix_token_types, layer_list, start
        )
    elif share:
        features = model.get_image_features(
            pixel_values.to(model.device, model.dtype), return_dict=True
        ).pooler_output

    seen = pixel_values.float().cpu().numpy() if include_pixel_values else None
    captures: list[Capture] = []
    for start in range(0, len(questions), batch_size):
        chunk = list(range(start, min(start + batch_size, len(questions))))
        images = row_image[chunk]
        if prefix is not None:
            batch_ids, batch_mask = _pad_between(
                [ids[i][len(prefix.input_ids) :] for i in chunk], pad_id
            )
            extra = {"prefix": prefix, "prefix_rows": images}
        else:
            batch_ids, batch_mask = _pad_between([ids[i] for i in chunk], pad_id)
            token_types = (batch_ids == model.config.image_token_id).long()
            extra = {"token_type_ids": token_types}
            if features is not None:
                extra["image_features"] = features[images.to(features.device)]
            else:
                extra["pixel_values"] = pixel_values[images]
        batch = capture_batch(
            model,
            processor,
            batch_ids,
            batch_mask,
            questions=[questions[i] for i in chunk],
            prompts=[prompts[i] for i in chunk],
            layers=layer_list,
            max_new_tokens=max_new_tokens,
            yes_no=yes_no,
            prompt_image_rows=prompt_image_rows,
            **extra,
        )
        if seen is not None:
            for capture, image in zip(batch, images.tolist(), strict=True):
                capture.pixel_values = seen[image]
        if on_batch is not None:
            now = time.perf_counter()
            on_batch(batch, now - started)
            started = now
        captures += batch
    return captures
