"""One generation batch that records, for every generated token, its attention to the image tokens.

How it works
------------
The model's attention runs through the hook layer (``cxr_attention.attention_hooks``): every layer
computes its output with ``sdpa``, exactly as the fast path does, so the model's answers do not
change; on the captured layers only (the last ``k`` by default) a `GenerationRecorder` also
computes the attention probabilities in float32 from the same query, keys and mask, and keeps only
the rows the study needs:

- on the prompt pass: the prompt rows' probabilities on the image columns
  (``prompt_image_attention``; every row, or with ``prompt_image_rows="text"`` only the rows
  after the image, which is all the workflow stores) and the full row of the last prompt token
  (row 0);
- on each decoding step: the full row of the single query (rows 1, 2, ...).

The prompt pass also keeps, per captured layer, the norm of the hidden state entering the layer
at the image tokens (``image_hidden_norms``, ``attention_hooks.ImageHiddenNorms``): the maps stage
reads its attention-sink tokens from them instead of running the prompt again.

Row 0 is the attention of the last prompt token, the query whose output produced the first
generated token; row ``i`` is the attention of generated token ``i - 1``, which produced token
``i``. Key/value heads are expanded to the 8 query heads as in eager attention (GQA).

`capture_batch` answers one batch; ``batching.capture_images`` cuts many questions about several
images into batches and shares each image's work (``prefix``).

Finished rows leave the batch
-----------------------------
Most answers are a word, a few are sentences. `capture_batch` decodes greedily with its own loop
(`_decode_compacting`), which feeds the model what transformers' ``generate`` does but drops each
row from the batch (input, mask, positions, KV cache) as soon as it has produced its end token,
so that finished rows cost no decoding; ``compact_finished_rows=False`` runs ``generate`` itself,
which decodes every row until the last one ends (the reference the tests compare against).

Sliding-window layers
---------------------
Gemma 3's sliding layers keep only the last ``sliding_window`` keys. If a captured sliding layer
could lose a prompt column during generation, the capture would silently misplace columns, so it
refuses instead (`PromptTooLongError`).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from cxr_attention.attention_hooks import (
    GenerationRecorder,
    ImageHiddenNorms,
    attention_modules,
    recording,
)
from cxr_attention.inference.prompting import image_token_positions
from cxr_attention.inference.scoring import (
    YesNoTokens,
    p_yes_from_logits,
    yes_no_mass_from_logits,
)

if TYPE_CHECKING:
    from cxr_attention.inference.prefix import ImagePrefix

__all__ = [
    "Capture",
    "PromptTooLongError",
    "capture_batch",
    "prompt_image_start",
]


class PromptTooLongError(ValueError):
    """A prompt (plus the tokens to generate) does not fit a captured sliding layer's window."""


@dataclass
class Capture:
    """One (image, question) pair: prompt, answer and captured attention.

    Array shapes follow docs/architecture.md ("Capture arrays"): ``attention`` is
    ``[layers, heads, generated, 256]``, ``text_attention`` ``[layers, heads, generated,
    prompt_len]`` (image columns 0), ``prompt_image_attention`` ``[layers, heads, rows, 256]``,
    ``image_hidden_norms`` ``[layers, 256]`` (float32; with a shared image prefix, the prefix's
    array, the same for every question of the image).

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
    # P(yes variants) + P(no variants) at the first step: how much P(yes) is worth (scoring.py)
    yes_no_mass: float = float("nan")
    # Norm of the hidden state entering each captured layer at the image tokens
    image_hidden_norms: np.ndarray | None = None

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
    """A logits processor that reads P(yes) and the yes + no mass from the first generation step
    and changes nothing."""

    def __init__(self, tokens: YesNoTokens):
        self.tokens = tokens
        self.p_yes: torch.Tensor | None = None
        self.yes_no_mass: torch.Tensor | None = None

    def __call__(self, input_ids, scores):
        if self.p_yes is None:
            self.p_yes = p_yes_from_logits(scores, self.tokens)
            self.yes_no_mass = yes_no_mass_from_logits(scores, self.tokens)
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
    prefix: ImagePrefix | None = None,
    prefix_rows: torch.Tensor | None = None,
    prompt_image_rows: str,
    compact_finished_rows: bool = True,
) -> list[Capture]:
    """Generate greedily for a batch and return one `Capture` per row.

    The model must have had ``attention_hooks.enable_hooks`` applied. Exactly one image source:
    ``pixel_values`` (one image per row), ``image_features`` (the projector's output, one per row)
    or ``prefix``
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
    compact_finished_rows : bool
        Decode with `_decode_compacting`, which drops each row from the batch once it has
        answered, so finished rows cost no more decoding (the same tokens and attention).
        ``False`` runs transformers' ``generate``, which decodes every row until the last one
        ends: the reference to compare against.

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
    eos_ids = _eos_ids(generation_config)
    recorder = GenerationRecorder(
        attention_modules(model, layers), image_columns, prompt_rows=max(call_rows_needed)
    )
    # Without a prefix the prompt pass holds the image (its columns are its query positions);
    # with one, the prefix's pass recorded the image's norms.
    hidden_norms = None if prefix is not None else ImageHiddenNorms(model, layers, image_columns)
    with (
        recording(recorder),
        contextlib.nullcontext() if hidden_norms is None else hidden_norms.recording(),
    ):
        if compact_finished_rows:
            generated, first_logits = _decode_compacting(
                model,
                generate_kwargs,
                past_length=prefix_length,
                max_new_tokens=max_new_tokens,
                eos_ids=eos_ids,
                recorder=recorder,
            )
            p_yes_tensor = p_yes_from_logits(first_logits, yes_no)
            yes_no_mass_tensor = yes_no_mass_from_logits(first_logits, yes_no)
        else:
            p_yes_reader = _FirstStepPYes(yes_no)
            sequences = model.generate(
                **generate_kwargs,
                generation_config=generation_config,
                logits_processor=LogitsProcessorList([p_yes_reader]),
            )
            generated = sequences[:, full_ids.shape[1] :]
            p_yes_tensor, yes_no_mass_tensor = p_yes_reader.p_yes, p_yes_reader.yes_no_mass
    generated = generated.cpu()
    p_yes = p_yes_tensor.cpu().numpy()
    yes_no_mass = yes_no_mass_tensor.cpu().numpy()
    if hidden_norms is None:
        row_norms = [prefix.image_hidden_norms[int(image)] for image in prefix_rows]
    else:
        row_norms = list(hidden_norms.norms())
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
                yes_no_mass=float(yes_no_mass[row]),
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
                image_hidden_norms=row_norms[row],
            )
        )
    return captures


def _decode_compacting(
    model,
    generate_kwargs: dict,
    *,
    past_length: int,
    max_new_tokens: int,
    eos_ids: set[int],
    recorder: GenerationRecorder,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy decoding that drops rows from the batch as they finish.

    The model receives what transformers' ``generate`` gives it (5.x's greedy ``_sample`` with a
    dynamic cache): position ids from the cumulative attention mask, the mask itself unless it is
    all ones, ``token_type_ids`` and the image only on the prompt pass, ``logits_to_keep=1``. Only
    the batch differs: after each step the rows that produced an end-of-sequence token leave the
    input ids, the mask, the positions and the cache (``batch_select_indices``), and
    ``recorder.active_rows`` says which rows the next passes hold. A row's attention and logits do
    not depend on the other rows of the batch, so the kept rows' tokens and attention stay those of
    the uncompacted batch (up to the float rounding of a smaller matrix product).

    Parameters
    ----------
    model
    generate_kwargs : dict
        What `capture_batch` would pass to ``generate``: ``input_ids`` (the whole prompt, prefix
        included), ``attention_mask`` (same width), optionally ``cache`` (already holding the
        first ``past_length`` columns), ``token_type_ids``, ``pixel_values`` or
        ``mm_encoder_outputs``.
    past_length : int
        Columns already in ``cache`` (0 without one).
    max_new_tokens : int
    eos_ids : set of int
    recorder : GenerationRecorder
        Active (``recording``); its ``active_rows`` is set here.

    Returns
    -------
    generated : LongTensor (batch, steps)
        Each row's tokens up to and including its end-of-sequence token, then padding (the token
        the row ended with); ``steps`` is the longest row's length.
    first_logits : Tensor (batch, vocab), float32
        The prompt pass's next-token logits (what P(yes) is read from).
    """
    from transformers import DynamicCache

    kwargs = dict(generate_kwargs)
    input_ids = kwargs.pop("input_ids")
    attention_mask = kwargs.pop("attention_mask")
    cache = kwargs.pop("cache", None)
    if cache is None:
        cache = DynamicCache(config=model.config.get_text_config(decoder=True))
    device = input_ids.device
    batch = input_ids.shape[0]
    eos = torch.tensor(sorted(eos_ids), dtype=torch.long, device=device)
    positions = (attention_mask.long().cumsum(-1) - 1).masked_fill(attention_mask == 0, 0)
    # generate passes no mask when there is no padding (sdpa's causal path): so does this.
    mask = None if bool((attention_mask == 1).all()) else attention_mask

    outputs = model(
        input_ids=input_ids[:, past_length:],
        attention_mask=mask,
        position_ids=positions[:, past_length:],
        cache=cache,
        use_cache=True,
        logits_to_keep=1,
        return_dict=True,
        **kwargs,  # the image (or its features) and token_type_ids: the prompt pass only
    )
    first_logits = outputs.logits[:, -1].to(dtype=torch.float32, copy=True)
    del outputs
    next_tokens = torch.argmax(first_logits, dim=-1)
    next_positions = positions[:, -1] + 1
    generated = torch.empty(batch, max_new_tokens, dtype=torch.long, device=device)
    active = torch.arange(batch, device=device)  # the batch row of each row still decoding
    finished_at = torch.full((batch,), max_new_tokens, dtype=torch.long, device=device)
    steps = max_new_tokens
    for step in range(max_new_tokens):
        generated[active, step] = next_tokens
        ended = torch.isin(next_tokens, eos)
        finished_at[active[ended]] = step + 1
        if step + 1 == max_new_tokens:
            break
        if bool(ended.all()):
            steps = step + 1
            break
        if bool(ended.any()):
            keep = torch.nonzero(~ended).flatten()
            active, next_tokens = active[keep], next_tokens[keep]
            next_positions = next_positions[keep]
            cache.batch_select_indices(keep)
            if mask is not None:
                mask = mask[keep]
            recorder.active_rows = active
        if mask is not None:
            mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
        outputs = model(
            input_ids=next_tokens[:, None],
            attention_mask=mask,
            position_ids=next_positions[:, None],
            cache=cache,
            use_cache=True,
            logits_to_keep=1,
            return_dict=True,
        )
        next_tokens = torch.argmax(outputs.logits[:, -1].float(), dim=-1)
        del outputs
        next_positions = next_positions + 1
    generated = generated[:, :steps]
    # After its end a row repeats its last token, which the capture never reads (it cuts there).
    after_end = torch.arange(steps, device=device)[None] >= finished_at[:, None]
    last = generated.gather(1, (finished_at - 1)[:, None])
    return torch.where(after_end, last, generated), first_logits


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
