"""Writing a finished sample: its capture arrays (``<sample_id>.npz``) and its answers row.

`write_capture` is the one place a capture file is written (docs/architecture.md, "Capture
arrays"). `SampleWriter` runs the writes on background threads while the model answers the next
questions: on a GPU, compressing a capture takes about as long as computing it.
"""

from __future__ import annotations

import collections
import json
import logging
import os
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from cxr_attention import captures
from cxr_attention.inference.capture import Capture, prompt_image_start
from cxr_attention.io import atomic_path
from cxr_attention.questions.bank import NO_FINDING
from cxr_attention.questions.labels import SAMPLE_QUESTION_COLUMNS

__all__ = [
    "ANSWER_COLUMNS",
    "GRID_SHAPE",
    "SampleWriter",
    "capture_arrays",
    "save_sample",
    "write_capture",
]

log = logging.getLogger(__name__)

GRID_SHAPE = (16, 16)

ANSWER_COLUMNS = [
    *SAMPLE_QUESTION_COLUMNS,
    "prompt",
    "generated_text",
    "answer",
    "p_yes",
    "yes_no_mass",
    "low_yes_no_mass",
    "label",
    "expected",
    "correct",
    "n_generated_tokens",
    "seconds",
    "capture",
]


def capture_arrays(
    capture: Capture,
    *,
    dtype=np.float16,
    include_pixel_values: bool = False,
    prompt_image_rows: str | None = None,
) -> dict[str, np.ndarray]:
    """The arrays of docs/architecture.md ("Capture arrays") for one capture.

    ``prompt_image_attention`` holds the rows of the prompt positions ``prompt_image_positions``:
    every position with ``prompt_image_rows="all"``; with ``"text"``, only the positions after the
    image: the only text that can attend to it (attention is causal), such as a target term asked
    after the image. The image tokens' own 256 rows are ~95% of a sample's bytes. A capture made
    with ``prompt_image_rows="text"`` holds only those rows and can be written only so; None
    writes the rows the capture holds.
    """
    if prompt_image_rows is None:
        start = capture.prompt_image_start
    else:
        start = prompt_image_start(capture.image_token_positions, prompt_image_rows)
    positions = np.arange(start, len(capture.input_ids))
    prompt_image = capture.prompt_image_rows(positions).astype(dtype)  # refuses rows not captured
    arrays = {
        "attention": capture.attention.astype(dtype),
        "text_attention": capture.text_attention.astype(dtype),
        "prompt_image_attention": prompt_image,
        "prompt_image_positions": positions.astype(np.int64),
        "layers": np.asarray(capture.layers, dtype=np.int64),
        "input_ids": np.asarray(capture.input_ids, dtype=np.int64),
        "generated_ids": np.asarray(capture.generated_ids, dtype=np.int64),
        "image_token_positions": np.asarray(capture.image_token_positions, dtype=np.int64),
        "grid_shape": np.asarray(GRID_SHAPE, dtype=np.int64),
        # The token strings the rows and columns belong to (plain unicode arrays: no pickle).
        "input_tokens": np.asarray(capture.input_tokens, dtype=str),
        "generated_tokens": np.asarray(capture.generated_tokens, dtype=str),
    }
    if capture.image_hidden_norms is not None:
        arrays["image_hidden_norms"] = np.asarray(capture.image_hidden_norms, dtype=np.float32)
    if include_pixel_values:
        if capture.pixel_values is None:
            raise ValueError("the capture has no pixel_values (capture with include_pixel_values)")
        arrays["pixel_values"] = np.asarray(capture.pixel_values, dtype=np.float32)
    return arrays


def write_capture(
    capture: Capture,
    path: str | os.PathLike,
    *,
    dtype=np.float16,
    include_pixel_values: bool = False,
    prompt_image_rows: str | None = None,
) -> None:
    """Write a capture's arrays to ``path`` (compressed ``.npz``, atomically).

    Parameters
    ----------
    capture : Capture
    path : path
    dtype : numpy dtype
        Of the attention arrays: float16 in the workflow, float32 for ``cxr-attention explain``.
    include_pixel_values : bool
        Add ``pixel_values`` (float32, exactly what the model saw).
    prompt_image_rows : {"all", "text"} or None
        See `capture_arrays` (None: the rows the capture holds).
    """
    arrays = capture_arrays(
        capture,
        dtype=dtype,
        include_pixel_values=include_pixel_values,
        prompt_image_rows=prompt_image_rows,
    )
    captures.write_capture(path, arrays)


def _sample_row(
    sample: dict, capture: Capture, seconds: float, capture_path: str, min_yes_no_mass: float
) -> dict:
    from cxr_attention.questions.answers import parse_answer

    # The finding's own names judge the answer (the question table's ``answer_terms``); the broader
    # ``target_terms`` are for the maps stage.
    source = sample.get("answer_terms") or sample.get("target_terms") or ""
    terms = [t for t in str(source).split("|") if t]
    answer = parse_answer(
        capture.generated_text, terms=terms, asks_normal=sample.get("finding") == NO_FINDING
    )
    expected = sample.get("expected") or ""
    return {
        **{k: sample[k] for k in ANSWER_COLUMNS if k in sample},
        "prompt": capture.prompt,
        "generated_text": capture.generated_text,
        "answer": answer,
        "p_yes": capture.p_yes,
        "yes_no_mass": capture.yes_no_mass,
        "low_yes_no_mass": bool(capture.yes_no_mass < min_yes_no_mass),
        "expected": expected,
        "correct": "" if not expected else answer == expected,
        "n_generated_tokens": capture.n_generated_tokens,
        "seconds": seconds,
        "capture": capture_path,
    }


class SampleWriter:
    """Writes finished samples on worker threads while the model goes on with the next batch.

    On a GPU, a batch of captures is computed about as fast as one core compresses them (about
    10 ms per sample); zlib and numpy's casts release the GIL, so threads overlap the writes with
    generation. At most ``max_pending`` samples wait, which bounds the memory they hold. Leaving
    the ``with`` block, on an error too, waits for every write already submitted, so no finished
    sample is dropped; the first write that failed is raised (at once if seen while submitting).

    Parameters
    ----------
    on_written : callable
        Called in the submitting thread with no argument once per sample written (progress).
    threads : int, optional
        Default: `default_threads`.
    max_pending : int
    """

    def __init__(
        self, on_written: Callable[[], object], *, threads: int | None = None, max_pending: int = 64
    ):
        if threads is None:
            threads = self.default_threads()
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="sample-writer")
        self._pending: collections.deque[Future] = collections.deque()
        self._on_written = on_written
        self._max_pending = max(1, max_pending)

    @staticmethod
    def default_threads() -> int:
        """One per available core but one (the model's), at most 4, at least 1."""
        return max(1, min(4, _available_cores() - 1))

    def submit(self, write: Callable, *args) -> None:
        """Run ``write(*args)`` on a worker thread."""
        self._pending.append(self._pool.submit(write, *args))
        while self._pending and (len(self._pending) > self._max_pending or self._pending[0].done()):
            self._pending.popleft().result()  # raises the write's error, if any
            self._on_written()

    def __enter__(self) -> SampleWriter:
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        self._pool.shutdown(wait=True)
        errors = [f.exception() for f in self._pending if f.exception() is not None]
        for _ in range(len(self._pending) - len(errors)):
            self._on_written()
        self._pending.clear()
        if errors and exc is None:
            raise errors[0]
        for error in errors:  # the job's own error propagates; these must not go unseen
            log.error("a finished sample could not be written: %s", error)


def _available_cores() -> int:
    """Cores this process may run on (a SLURM job's allocation, not the whole node)."""
    if hasattr(os, "sched_getaffinity"):  # Linux; macOS has only the machine's count
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def save_sample(
    sample: dict,
    capture: Capture,
    seconds: float,
    partial: Path,
    out_dir: Path,
    rows: str,
    min_yes_no_mass: float,
) -> None:
    """Write one finished sample into the checkpoint folder ``partial``: its capture arrays, then
    its answers row (``<sample_id>.json``, whose presence marks the sample as finished);
    ``min_yes_no_mass`` sets the row's ``low_yes_no_mass`` flag."""
    sample_id = sample["sample_id"]
    write_capture(capture, partial / f"{sample_id}.npz", prompt_image_rows=rows)
    row = _sample_row(sample, capture, seconds, str(out_dir / f"{sample_id}.npz"), min_yes_no_mass)
    # The .json is written last: its presence marks the sample as finished.
    with atomic_path(partial / f"{sample_id}.json") as tmp:
        tmp.write_text(json.dumps(row, default=_json_value) + "\n")


def _json_value(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(type(value).__name__)
