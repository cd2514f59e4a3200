"""One inference shard end to end: answers table, capture arrays, resume after a crash, failures.

The model loads once per job. Every image's questions are answered together (image prefix or
vision features shared, see ``capture``); each finished (image, question) is written at once,
atomically, into a checkpoint folder beside the output (``<out_dir>.partial/``, which Snakemake
does not own and so does not delete after a crash): a rerun skips what is there. The writes run on
background threads while the model goes on (see `SampleWriter`). When the shard is done, the
capture files move into ``out_dir`` and the answers table is written.

Settings of a run (``params``, every key required; defaults only in config/config.schema.json):
the config's ``inference`` section (keys below), ``seed``, ``min_free_gpu_gb`` (``model``) and the
label policies ``uncertain`` and ``blank`` (``questions``; applied by
``questions.labels.expand_samples``).

``layers``
    Capture the last ``k`` decoder layers (an int), or the listed decoder layers (0-based).
``min_yes_no_mass``
    A sample whose yes + no probability mass at the first answer token is below this gets
    ``low_yes_no_mass`` True in the answers table (its P(yes) is a ratio of small numbers).
``max_new_tokens``
    Tokens generated per question (greedy decoding only: captures must be reproducible).
``batch_size``
    (image, question) rows per generation batch; halved on out-of-memory, down to 1. A batch whose
    padded prompts do not fit a captured sliding layer's window is halved too: at batch size 1 the
    question that is too long gets a failures row (``prompt_too_long``) and the others go on.
``images_per_batch``
    Images answered together: their questions are cut into batches as one list, so a batch may
    hold several images' questions (on an H100, image first, 4 images per batch answer 2.3x the
    questions per second of 1: a decoding step is bound by kernel launches, not arithmetic). Set
    ``batch_size`` to ``images_per_batch`` times the questions per image.
``image_first``
    Image before the question in the user turn (the MedGemma model card puts the question first;
    image first lets every question reuse the image prefix's cache).
``share``
    Encode each image once for all its questions.
``prompt_image_rows``
    ``"text"`` computes and stores only the prompt rows after the image in
    ``prompt_image_attention`` (about 20x smaller files; with the question first, no image rows
    to compute per question). See ``writing.capture_arrays``.
``prompt_template``
    Text of the user turn; ``{question}`` is replaced by the question. The reference study sent
    ``"Question: {question}\nAnswer with only 'yes' or 'no'."`` (config/paper.yaml).
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import torch

from cxr_attention.inference.batching import capture_answers, capture_images
from cxr_attention.inference.capture import Capture, PromptTooLongError
from cxr_attention.inference.writing import ANSWER_COLUMNS, SampleWriter, save_sample
from cxr_attention.io import (
    ConfigError,
    Failure,
    InputError,
    read_table,
    write_csv,
    write_failures,
)
from cxr_attention.preprocessed import read_grey
from cxr_attention.progress import Progress
from cxr_attention.questions.labels import expand_samples

__all__ = ["PARAMS", "answer_one", "is_out_of_memory", "run_inference_shard"]

log = logging.getLogger(__name__)

STAGE = "inference"

#: The keys of ``run_inference_shard``'s ``params`` (see the module docstring).
PARAMS: tuple[str, ...] = (
    "layers",
    "min_yes_no_mass",
    "max_new_tokens",
    "batch_size",
    "images_per_batch",
    "image_first",
    "share",
    "prompt_image_rows",
    "prompt_template",
    "seed",
    "min_free_gpu_gb",
    "uncertain",
    "blank",
)


def is_out_of_memory(error: BaseException) -> bool:
    """True for CUDA out-of-memory errors (typed, or the RuntimeError some kernels raise)."""
    if isinstance(error, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(error, RuntimeError) and "out of memory" in str(error).lower()


def answer_one(
    loaded,
    image,
    question: str,
    *,
    layers: int,
    max_new_tokens: int,
    image_first: bool,
    include_pixel_values: bool,
) -> Capture:
    """Answer one question about one image with attention capture (``cxr-attention explain``).

    Every prompt row's image attention is kept (``prompt_image_rows="all"``): one sample's file
    is small, and terms asked before the image need their rows.

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
        ``questions.answers.parse_answer(capture.generated_text)``.
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
        share=True,
        prompt_image_rows="all",
        include_pixel_values=include_pixel_values,
    )
    return capture


def _load_image(path: Path):
    """The preprocessed radiograph as a greyscale PIL image (InputError naming a bad file)."""
    from PIL import Image

    return Image.fromarray(read_grey(path, "image"))


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
    params: dict,
    device: str = "auto",
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
        The run's settings, every key of `PARAMS` (see the module docstring).
    device : str
        Where the model runs: ``"auto"`` (the freest GPU, else the CPU), ``"cpu"`` or
        ``"cuda[:N]"`` (see ``model.choose_device``).
    progress : bool
        Show a tqdm progress bar (on stderr).
    load : callable, optional
        ``load(model_id, device=..., min_free_gpu_gb=...) -> LoadedModel``; defaults to
        ``model.load_model`` (tests inject a counting loader).
    """
    from tqdm.auto import tqdm

    from cxr_attention.inference.model import load_model

    settings = _checked_params(params)
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
            model_id, device=device, min_free_gpu_gb=float(settings["min_free_gpu_gb"])
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
    # The bar goes to the job's log; every tenth of the way also to the console.
    console = Progress(f"inference shard {shard}", total=len(todo), unit="questions")

    def advance(count: int = 1) -> None:
        bar.update(count)
        console.step(count)

    with SampleWriter(advance, max_pending=2 * batch_size) as writer:
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
                    advance(unfinished)
                    continue
                try:
                    images[dicom_id] = (_load_image(Path(path)), path)
                except InputError as error:
                    failures.append(Failure.from_exception(STAGE, dicom_id, path, error))
                    advance(unfinished)
                    continue
                rows += image_samples
            pending = _unfinished_batches(rows, done, batch_size)
            if pending:
                failures += _answer_images(
                    loaded, images, pending, done, partial, out_dir, settings, advance, writer
                )
    bar.close()
    _finish(samples, partial, out_dir, out_csv)
    write_failures(failures, failures_csv)


def _checked_params(params: dict) -> dict:
    """``params`` with every key of `PARAMS` and no other (a typo would be ignored silently)."""
    missing = [key for key in PARAMS if key not in params]
    unknown = sorted(set(params) - set(PARAMS))
    if missing or unknown:
        raise ConfigError(
            f"inference settings: missing keys {missing}, unknown keys {unknown} "
            f"(expected {list(PARAMS)})"
        )
    return dict(params)


def _layers_setting(value) -> int | list[int]:
    """``inference.layers``: the last k layers (an int) or the listed ones."""
    if isinstance(value, int | str):
        return int(value)
    return [int(layer) for layer in value]


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
    advance,
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
                save_sample,
                sample,
                capture,
                seconds / len(captures),
                partial,
                out_dir,
                settings["prompt_image_rows"],
                float(settings["min_yes_no_mass"]),
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
                layers=_layers_setting(settings["layers"]),
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
            advance()
    return failures


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
