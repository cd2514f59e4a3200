"""One inference shard end to end: answers table, capture arrays, resume after a crash, failures.

The model loads once per job. Every image's questions are answered together (image prefix or
vision features shared, see ``capture``); each finished (image, question) is written at once,
atomically, into a checkpoint folder beside the output (``<out_dir>.partial/``, which Snakemake
does not own and so does not delete after a crash): a rerun skips what is there. The writes run on
background threads while the model goes on (see `SampleWriter`). When the shard is done, the
capture files move into ``out_dir`` and the answers table is written.

Parameters of a run (``params``; defaults in `DEFAULT_PARAMS`):

``layers`` (3)
    Capture the last ``k`` decoder layers.
``max_new_tokens`` (12)
    Tokens generated per question (greedy).
``batch_size`` (8)
    (image, question) rows per generation batch; halved on out-of-memory, down to 1. A batch whose
    padded prompts do not fit a captured sliding layer's window is halved too: at batch size 1 the
    question that is too long gets a failures row (``prompt_too_long``) and the others go on.
``images_per_batch`` (1)
    Images answered together: their questions are cut into batches as one list, so a batch may
    hold several images' questions (on an H100, image first, 4 images per batch answer 2.3x the
    questions per second of 1: a decoding step is bound by kernel launches, not arithmetic). Set
    ``batch_size`` to ``images_per_batch`` times the questions per image.
``image_first`` (False)
    Image before the question in the user turn (the MedGemma model card puts the question first;
    image first lets every question reuse the image prefix's cache).
``share`` (True)
    Encode each image once for all its questions.
``do_sample`` (False)
    Only greedy decoding is supported (captures must be reproducible); True is refused.
``prompt_image_rows`` ("all")
    ``"text"`` computes and stores only the prompt rows after the image in
    ``prompt_image_attention`` (about 20x smaller files; with the question first, no image rows
    to compute per question). See `capture_arrays`.
``prompt_template`` ("{question}")
    Text of the user turn; ``{question}`` is replaced by the question. The reference study sent
    ``"Question: {question}\nAnswer with only 'yes' or 'no'."`` (config/paper.yaml).
``seed`` (0), ``min_free_gpu_gb`` (15.0), ``device`` ("auto")
``uncertain`` ("exclude"), ``blank`` ("exclude")
    Label policies, applied by ``questions.expand_samples`` / ``expected_answer``.
"""

from __future__ import annotations

import collections
import itertools
import json
import logging
import os
import shutil
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from cxr_attention.captures import write_capture as write_capture_file
from cxr_attention.inference.capture import (
    Capture,
    PromptTooLongError,
    capture_answers,
    capture_images,
    prompt_image_start,
)
from cxr_attention.inference.questions import (
    NO_FINDING,
    SAMPLE_QUESTION_COLUMNS,
    expand_samples,
)
from cxr_attention.io import (
    ConfigError,
    Failure,
    InputError,
    atomic_path,
    read_table,
    write_csv,
    write_failures,
)

__all__ = [
    "ANSWER_COLUMNS",
    "DEFAULT_PARAMS",
    "SampleWriter",
    "answer_one",
    "capture_arrays",
    "is_out_of_memory",
    "run_inference_shard",
    "write_capture",
]

log = logging.getLogger(__name__)

STAGE = "inference"
GRID_SHAPE = (16, 16)

DEFAULT_PARAMS: dict[str, Any] = {
    "layers": 3,
    "max_new_tokens": 12,
    "batch_size": 8,
    "images_per_batch": 1,
    "image_first": False,
    "share": True,
    "do_sample": False,
    "seed": 0,
    "min_free_gpu_gb": 15.0,
    "device": "auto",
    "uncertain": "exclude",
    "blank": "exclude",
    "prompt_image_rows": "all",
    "prompt_template": "{question}",
}

ANSWER_COLUMNS = [
    *SAMPLE_QUESTION_COLUMNS,
    "prompt",
    "generated_text",
    "answer",
    "p_yes",
    "label",
    "expected",
    "correct",
    "n_generated_tokens",
    "seconds",
    "capture",
]


def is_out_of_memory(error: BaseException) -> bool:
    """True for CUDA out-of-memory errors (typed, or the RuntimeError some kernels raise)."""
    if isinstance(error, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(error, RuntimeError) and "out of memory" in str(error).lower()


def capture_arrays(
    capture: Capture,
    *,
    dtype=np.float16,
    include_pixel_values: bool = False,
    prompt_image_rows: str = "all",
) -> dict[str, np.ndarray]:
    """The arrays of docs/architecture.md ("Capture arrays") for one capture.

    ``prompt_image_attention`` holds the rows of the prompt positions ``prompt_image_positions``:
    every position with ``prompt_image_rows="all"``; with ``"text"``, only the positions after the
    image: the only text that can attend to it (attention is causal), such as a target term asked
    after the image. The image tokens' own 256 rows are ~95% of a sample's bytes. A capture made
    with ``prompt_image_rows="text"`` holds only those rows and can be written only so.
    """
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
    prompt_image_rows: str = "all",
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
    prompt_image_rows : {"all", "text"}
        See `capture_arrays`.
    """
    arrays = capture_arrays(
        capture,
        dtype=dtype,
        include_pixel_values=include_pixel_values,
        prompt_image_rows=prompt_image_rows,
    )
    write_capture_file(path, arrays)


def answer_one(
    loaded,
    image,
    question: str,
    *,
    layers: int = 3,
    max_new_tokens: int = 12,
    image_first: bool = False,
    include_pixel_values: bool = True,
) -> Capture:
    """Answer one question about one image with attention capture (``cxr-attention explain``).

    Parameters
    ----------
    loaded : LoadedModel
    image : PIL.Image or ndarray of uint8
    question : str
    layers : int
        The last ``k`` decoder layers.
    max_new_tokens : int
    image_first : bool
    include_pixel_values : bool

    Returns
    -------
    Capture
        ``p_yes`` from the first answer token; the answer itself is parsed by
        ``answers.parse_answer(capture.generated_text)``.
    """
    (capture,) = capture_answers(
        loaded.model,
        loaded.processor,
        image,
        [question],
        image_first=image_first,
        layers=layers,
        max_new_tokens=max_new_tokens,
        batch_size=1,
        include_pixel_values=include_pixel_values,
    )
    return capture


def _load_image(path: Path):
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as handle:
            handle.load()
            return handle.copy()
    except FileNotFoundError as error:
        raise InputError(path, "preprocessed image not found", error_type="missing_file") from error
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise InputError(
            path, f"cannot read image: {error}", error_type="unreadable_image"
        ) from error


def _shard_samples(manifest_csv, questions_csv, preprocess_csv, shard: int, params) -> tuple:
    # The manifest's label columns stay numeric (1.0, 0.0, -1.0, NaN); the other tables are text.
    manifest = read_table(manifest_csv, required=("dicom_id", "shard"))
    manifest = manifest[manifest["shard"].astype(int) == int(shard)]
    questions = read_table(questions_csv, required=("question_id", "question"), text=True)
    images = read_table(preprocess_csv, required=("dicom_id", "image"), text=True)
    image_paths = dict(zip(images["dicom_id"], images["image"], strict=True))
    samples = expand_samples(
        manifest, questions, uncertain=params["uncertain"], blank=params["blank"]
    )
    return samples, image_paths


def _sample_row(sample: dict, capture: Capture, seconds: float, capture_path: str) -> dict:
    from cxr_attention.inference.answers import parse_answer

    # The finding's own names judge the answer (questions.py's ``answer_terms``); the broader
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


def run_inference_shard(
    *,
    manifest_csv: str | os.PathLike,
    questions_csv: str | os.PathLike,
    preprocess_csv: str | os.PathLike,
    shard: int,
    model_id: str | os.PathLike,
    out_csv: str | os.PathLike,
    out_dir: str | os.PathLike,
    failures_csv: str | os.PathLike,
    params: dict | None = None,
    progress: bool = True,
    load: Callable | None = None,
) -> None:
    """Answer every (image, question) of one shard and capture attention.

    Parameters
    ----------
    manifest_csv, questions_csv, preprocess_csv : path
        Run tables (docs/architecture.md); images come from the preprocess table's ``image``
        column (paths relative to the working directory, i.e. the repository root).
    shard : int
    model_id : str or path
        Model folder or hub id.
    out_csv : path
        Answers table (`ANSWER_COLUMNS`).
    out_dir : path
        One ``<sample_id>.npz`` per sample (float16 arrays).
    failures_csv : path
        ``Failure`` rows (stage ``inference``): unreadable images, samples still out of memory at
        batch size 1.
    params : dict
        See the module docstring; missing keys take `DEFAULT_PARAMS`.
    progress : bool
        Show a tqdm progress bar (on stderr).
    load : callable, optional
        ``load(model_id, device=..., min_free_gpu_gb=...) -> LoadedModel``; defaults to
        ``model.load_model`` (tests inject a counting loader).
    """
    from tqdm.auto import tqdm

    from cxr_attention.inference.model import load_model

    settings = {**DEFAULT_PARAMS, **(params or {})}
    if settings["do_sample"]:
        raise ConfigError("inference.do_sample: only greedy decoding (false) is supported")
    torch.manual_seed(int(settings["seed"]))
    samples, image_paths = _shard_samples(
        manifest_csv, questions_csv, preprocess_csv, shard, settings
    )
    out_dir = Path(out_dir)
    partial = out_dir.with_name(out_dir.name + ".partial")
    partial.mkdir(parents=True, exist_ok=True)
    failures: list[Failure] = []

    # Finished: its record exists and its arrays are in the checkpoint (or already moved).
    done = {
        p.stem
        for p in partial.glob("*.json")
        if (partial / f"{p.stem}.npz").exists() or (out_dir / f"{p.stem}.npz").exists()
    }
    todo = samples[~samples["sample_id"].isin(done)]
    log.info("shard %s: %d samples, %d already done", shard, len(samples), len(samples) - len(todo))

    loaded = None
    if len(todo):
        loaded = (load or load_model)(
            model_id, device=settings["device"], min_free_gpu_gb=float(settings["min_free_gpu_gb"])
        )
    bar = tqdm(
        total=len(samples),
        initial=len(samples) - len(todo),
        disable=not progress,
        desc=f"inference shard {shard}",
        unit="question",
    )
    batch_size = max(1, int(settings["batch_size"]))
    images_per_batch = max(1, int(settings["images_per_batch"]))
    by_image = [group.to_dict("records") for _, group in samples.groupby("dicom_id", sort=False)]
    with SampleWriter(lambda: bar.update(1), max_pending=2 * batch_size) as writer:
        # Fixed groups of images, so that a resumed job batches every question as a whole one did.
        for start in range(0, len(by_image), images_per_batch):
            group = by_image[start : start + images_per_batch]
            if all(s["sample_id"] in done for image_samples in group for s in image_samples):
                continue
            images, rows = {}, []
            for image_samples in group:
                dicom_id = image_samples[0]["dicom_id"]
                unfinished = sum(s["sample_id"] not in done for s in image_samples)
                path = image_paths.get(dicom_id)
                if path is None:
                    log.warning("%s: not in the preprocess table (failed there); skipped", dicom_id)
                    bar.update(unfinished)
                    continue
                try:
                    images[dicom_id] = (_load_image(Path(path)), path)
                except InputError as error:
                    failures.append(Failure.from_exception(STAGE, dicom_id, path, error))
                    bar.update(unfinished)
                    continue
                rows += image_samples
            pending = _unfinished_batches(rows, done, batch_size)
            if pending:
                failures += _answer_images(
                    loaded, images, pending, done, partial, out_dir, settings, bar, writer
                )
    bar.close()
    _finish(samples, partial, out_dir, out_csv)
    write_failures(failures, failures_csv)


def _unfinished_batches(samples: list[dict], done: set[str], batch_size: int) -> list[dict]:
    """The image's samples in the batches that hold an unfinished one, whole and in order.

    Batches are cut from the image's full question list, so a resumed job asks each question in
    the same company as an uninterrupted one: padding, and with it every float, stays the same.
    The finished samples of such a batch are computed again but not written.
    """
    batches = [samples[i : i + batch_size] for i in range(0, len(samples), batch_size)]
    return [s for batch in batches if any(x["sample_id"] not in done for x in batch) for s in batch]


def _answer_images(
    loaded,
    images: dict,
    samples: list[dict],
    done: set[str],
    partial: Path,
    out_dir: Path,
    settings,
    bar,
    writer: SampleWriter,
) -> list[Failure]:
    """Answer the pending samples of a group of images (``images``: dicom_id -> (image, path));
    halve the batch on out-of-memory or a long prompt."""
    failures = []
    pending = list(samples)
    batch_size = max(1, int(settings["batch_size"]))

    def save(batch_samples, captures, seconds):
        for sample, capture in zip(batch_samples, captures, strict=True):
            if sample["sample_id"] in done:
                continue
            writer.submit(
                _save_sample,
                sample,
                capture,
                seconds / len(captures),
                partial,
                out_dir,
                settings["prompt_image_rows"],
            )

    while pending:
        finished: list[dict] = []

        def on_batch(captures, seconds, _finished=finished, _pending=pending):
            start = len(_finished)
            batch = _pending[start : start + len(captures)]
            save(batch, captures, seconds)
            _finished.extend(batch)

        # Samples come grouped by image: one request per run of the same image.
        requests = []
        for dicom_id, run in itertools.groupby(pending, key=lambda s: s["dicom_id"]):
            prompts = [settings["prompt_template"].format(question=s["question"]) for s in run]
            requests.append((images[dicom_id][0], prompts))
        try:
            capture_images(
                loaded.model,
                loaded.processor,
                requests,
                image_first=bool(settings["image_first"]),
                layers=int(settings["layers"]),
                max_new_tokens=int(settings["max_new_tokens"]),
                batch_size=batch_size,
                share=bool(settings["share"]),
                prompt_image_rows=settings["prompt_image_rows"],
                on_batch=on_batch,
            )
            pending = []
        except Exception as error:
            # Padding makes a batch as long as its longest prompt, so a smaller batch can fit a
            # sliding window that a larger one does not; alone, the question itself is too long.
            too_long = isinstance(error, PromptTooLongError)
            if not too_long and not is_out_of_memory(error):
                raise
            pending = pending[len(finished) :]
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            if batch_size > 1:
                batch_size //= 2
                cause = "prompt too long" if too_long else "out of memory"
                log.warning("%s: batch size halved to %d", cause, batch_size)
                continue
            failed = pending.pop(0)
            if failed["sample_id"] in done:  # finished before a restart: nothing is lost
                continue
            error_type = "prompt_too_long" if too_long else "out_of_memory"
            reason = str(error) if too_long else f"out of memory at batch size 1: {error}"
            failures.append(
                Failure(
                    STAGE,
                    failed["dicom_id"],
                    str(images[failed["dicom_id"]][1]),
                    error_type,
                    f"{failed['sample_id']}: {reason}",
                )
            )
            bar.update(1)
    return failures


def _save_sample(
    sample: dict, capture: Capture, seconds: float, partial: Path, out_dir: Path, rows: str
) -> None:
    sample_id = sample["sample_id"]
    write_capture(capture, partial / f"{sample_id}.npz", prompt_image_rows=rows)
    row = _sample_row(sample, capture, seconds, str(out_dir / f"{sample_id}.npz"))
    # The .json is written last: its presence marks the sample as finished.
    with atomic_path(partial / f"{sample_id}.json") as tmp:
        tmp.write_text(json.dumps(row, default=_json_value) + "\n")


def _json_value(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(type(value).__name__)


def _finish(samples: pd.DataFrame, partial: Path, out_dir: Path, out_csv) -> None:
    """Move finished captures into ``out_dir`` and write the answers table in sample order."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for sample_id in samples["sample_id"]:
        record = partial / f"{sample_id}.json"
        if not record.exists():
            continue  # failed: it has a failures row
        rows.append(json.loads(record.read_text()))
        source = partial / f"{sample_id}.npz"
        if source.exists():
            os.replace(source, out_dir / f"{sample_id}.npz")
    table = pd.DataFrame(rows, columns=ANSWER_COLUMNS)
    write_csv(table, out_csv)
    shutil.rmtree(partial, ignore_errors=True)
