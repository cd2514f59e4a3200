"""Build the known-answer model on the CPU: a set detector, a trained answer.

Design (``docs/known_answer.md`` says what worked and what did not):

1. **Wiring** (`wiring.set_wiring`, frozen): the first text layer's routing heads attend from the
   answer position to the image tokens whose ``LESION`` channel is positive, and to the
   question's side word.
2. **Detector** (`detector.set_detector`, frozen): the vision tower marks the tokens whose patch
   carries the planted lesion's stripes, on the channel of the token's side. Its one fitted
   number, the threshold, comes from the training films (`calibrated_threshold`): films planted
   at full size and passed through the processor, as the model will see them.
3. **Answer** (``steps`` steps): the text model (less the wiring) learns the answer token
   (``yes`` / ``no``) and the ``<end_of_turn>`` after it, and a margin that grows with the
   lesion's stripes (`FAINTER`, `MONOTONE_GAP`).

Every step shows each drawn film three times: clean, with a lesion in the patient's left lung
and one in the right (paired batches: only the lesion differs). Films are squashed to 224 x 224
once (as the processor would); lesions are planted at that size each step, with their stripes'
amplitude drawn around the benchmark's, and the pixels go through the processor's own image
processor. Every random draw comes from ``seed``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from cxr_attention.known_answer.benchmark import LESION_CONTRAST, LESION_STRIPES, QUESTIONS
from cxr_attention.known_answer.dense import token_targets
from cxr_attention.known_answer.detector import calibrate_threshold, set_detector
from cxr_attention.known_answer.films import Film, load_films, planted, training_films
from cxr_attention.known_answer.model import IMAGE_SIZE, build_untrained_model
from cxr_attention.known_answer.plant import DEFAULT_RADIUS, planted_cases
from cxr_attention.known_answer.wiring import freeze_wiring, set_wiring

__all__ = [
    "calibrated_threshold",
    "provide_known_answer_model",
    "train_known_answer_model",
    "training_losses",
]

TRAINING_STEPS = 300
ANSWERS = ("no", "yes")
SHIFT = 16
# The stripes' amplitude of a training lesion, as a range of multiples of the benchmark's: the
# answer learns to follow the detector over a range rather than at one saturated level.
STRIPE_RANGE = (0.4, 1.6)
# Each planted case is also shown with its stripes this much fainter, same place: the yes - no
# margin must exceed the fainter one's by `MONOTONE_GAP` (a hinge), so the answer grows with the
# detector's evidence and its gradient there keeps one sign (Grad-CAM reads that gradient).
FAINTER = 0.6
MONOTONE_GAP = 1.0
# Lesions per lung and film that calibrate the detector's threshold.
CALIBRATION_PLANTS = 2


def _prompt(processor, question: str, image_first: bool) -> dict[str, torch.Tensor]:
    """Token ids and token types of one prompt (they do not depend on the image's pixels)."""
    from cxr_attention.inference.prompting import build_inputs

    blank = np.zeros((IMAGE_SIZE, IMAGE_SIZE), np.uint8)
    inputs = build_inputs(processor, blank, question, image_first=image_first)
    return {key: inputs[key] for key in ("input_ids", "token_type_ids")}


def _augmented(film: Film, rng: np.random.Generator) -> Film:
    """The film mirrored left-right (lung labels swapped) half the time, shifted, with a gamma.

    Two dozen training films, each seen from many angles: the answer must not learn the films.
    """
    image, lungs = film.image, film.lungs
    if rng.random() < 0.5:
        image = image[:, ::-1]
        lungs = np.where(lungs > 0, 3 - lungs, 0).astype(lungs.dtype)[:, ::-1]
    # A shift of up to SHIFT pixels (edges repeated, no lung brought in).
    dy, dx = (int(v) for v in rng.integers(-SHIFT, SHIFT + 1, size=2))
    window = (
        slice(SHIFT + dy, SHIFT + dy + image.shape[0]),
        slice(SHIFT + dx, SHIFT + dx + image.shape[1]),
    )
    image = np.pad(image, SHIFT, mode="edge")[window]
    lungs = np.pad(lungs, SHIFT)[window]
    gamma = float(rng.uniform(0.7, 1.4))
    table = np.rint(255.0 * (np.arange(256) / 255.0) ** gamma).astype(np.uint8)
    return Film(film.name, np.ascontiguousarray(table[image]), np.ascontiguousarray(lungs))


def _draw(films, rng, count, radius, contrast, stripes):
    """``count`` films, each clean and with a lesion in either lung: images, sides, token targets
    and, per planted case, the same lesion with fainter stripes."""
    images, sides, cells, fainter = [], [], [], []
    for film_index in rng.choice(len(films), size=count, replace=False):
        film = _augmented(films[int(film_index)], rng)
        for side in (None, "left", "right"):
            lesion = None
            if side is None:
                images.append(film.image)
            else:
                strength = min(1.0, float(rng.uniform(0.8, 1.2) * contrast))
                size = float(rng.uniform(0.85, 1.15) * radius)
                amplitude = float(rng.uniform(*STRIPE_RANGE) * stripes)
                seed = int(rng.integers(2**31))
                picture, lesion = planted(film, side, size, strength, amplitude, seed)
                images.append(picture)
                fainter.append(planted(film, side, size, strength, FAINTER * amplitude, seed)[0])
            sides.append(side)
            cells.append(token_targets(lesion, film.image.shape))
    return images, sides, np.stack(cells), fainter


def _pixels(processor, images) -> torch.Tensor:
    """The processor's pixel values of 224 px uint8 films."""
    from PIL import Image

    return processor.image_processor(
        images=[Image.fromarray(image).convert("RGB") for image in images], return_tensors="pt"
    )["pixel_values"]


def _answer_loss(model, prompt, pixels, targets, end_of_turn, answer_ids, pairs) -> torch.Tensor:
    """Cross-entropy of the answer token, 0.1 x that of ``<end_of_turn>`` after it, and the
    monotonicity hinge over ``pairs`` (index of a yes case, index of its fainter copy; the
    copies come after the ``targets``' images in ``pixels``)."""
    count = len(pixels)
    padded = torch.cat([targets, targets.new_full((count - len(targets),), int(answer_ids[0]))])
    input_ids = torch.cat([prompt["input_ids"].expand(count, -1), padded[:, None]], dim=1)
    token_type_ids = torch.cat(
        [prompt["token_type_ids"].expand(count, -1), torch.zeros(count, 1, dtype=torch.long)],
        dim=1,
    )
    logits = model(
        input_ids=input_ids,
        attention_mask=torch.ones_like(input_ids),
        token_type_ids=token_type_ids,
        pixel_values=pixels,
        logits_to_keep=2,
        use_cache=False,
    ).logits
    shown = len(targets)
    answer_loss = torch.nn.functional.cross_entropy(logits[:shown, 0].float(), targets[:shown])
    stop_loss = torch.nn.functional.cross_entropy(
        logits[:shown, 1].float(), torch.full((shown,), end_of_turn)
    )
    if not pairs:
        return answer_loss + 0.1 * stop_loss
    margin = (logits[:, 0, answer_ids[1]] - logits[:, 0, answer_ids[0]]).float()
    strong, faint = (torch.tensor(index) for index in zip(*pairs, strict=True))
    hinge = torch.relu(MONOTONE_GAP - (margin[strong] - margin[faint])).mean()
    return answer_loss + 0.1 * stop_loss + hinge


def _optimizer(parameters, learning_rate: float, steps: int):
    """AdamW (no weight decay), linear warm-up over 5% of ``steps``, then cosine decay."""
    optimizer = torch.optim.AdamW(parameters, lr=learning_rate, weight_decay=0.0)
    warmup = max(1, steps // 20)

    def rate(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + np.cos(np.pi * (step - warmup) / max(1, steps - warmup)))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, rate)


def calibrated_threshold(
    paths: Sequence[str | os.PathLike],
    *,
    seed: int = 0,
    radius: float = DEFAULT_RADIUS,
    contrast: float = LESION_CONTRAST,
    stripes: float = LESION_STRIPES,
) -> float:
    """The detector's threshold from the training films, seen as the model sees them.

    Each film (decoded at full size) is taken clean and with `CALIBRATION_PLANTS` lesions per lung
    (`plant_lesion`, seed ``seed + 10 * index + k``), through the processor; the threshold is
    `detector.calibrate_threshold`'s midpoint between anatomy and lesions.
    """
    from PIL import Image

    from cxr_attention.preprocess.decode import decode_image
    from cxr_attention.preprocess.masks import lung_mask

    model, processor, _ = build_untrained_model(seed)
    set_detector(model, threshold=0.0)
    images, on_lesion, planted_flags = [], [], []
    for index, path in enumerate(paths):
        image, _ = decode_image(path, max_side=2048)
        lungs = lung_mask(image)
        images.append(image)
        on_lesion.append(np.zeros(256, bool))
        planted_flags.append(False)
        plan = [
            (side, seed + 10 * index + k)
            for k, side in enumerate(("left", "right") * CALIBRATION_PLANTS)
        ]
        for picture, lesion in planted_cases(
            image, plan, radius=radius, contrast=contrast, stripes=stripes, lungs=lungs
        ):
            images.append(picture)
            on_lesion.append(token_targets(lesion, image.shape) > 0)
            planted_flags.append(True)
    pixels = processor.image_processor(
        images=[Image.fromarray(image).convert("RGB") for image in images], return_tensors="pt"
    )["pixel_values"]
    return calibrate_threshold(model, pixels, np.stack(on_lesion), planted_flags)


def training_losses(
    films: Sequence[Film],
    *,
    threshold: float,
    seed: int = 0,
    steps: int = TRAINING_STEPS,
    films_per_step: int = 2,
    learning_rate: float = 3e-3,
    radius: float = DEFAULT_RADIUS,
    contrast: float = LESION_CONTRAST,
    stripes: float = LESION_STRIPES,
    progress: Callable[[int, float], None] | None = None,
):
    """Build a fresh model, train its answer; return it, its processor and each step's loss.

    Parameters
    ----------
    films : sequence of Film
        Training films (`films.load_films`).
    threshold : float
        The detector's threshold (`calibrated_threshold`).
    seed : int
        Seeds the weights, the films drawn, the lesions and the question order.
    steps : int
        Steps of the answer's training.
    films_per_step : int
        Each step shows ``films_per_step`` films three times (clean, left, right).
    learning_rate : float
        AdamW's peak rate.
    radius, contrast, stripes : float
        The lesion's radius, mean contrast and mean stripe amplitude (as in `plant_lesion`).
    progress : callable, optional
        Called with (step, loss) after each step.

    Returns
    -------
    model, processor, losses : Gemma3ForConditionalGeneration, Gemma3Processor, list of float
    """
    if not films:
        raise ValueError("no training films")
    films_per_step = min(films_per_step, len(films))
    model, processor, token_ids = build_untrained_model(seed)
    set_wiring(model, processor.tokenizer)
    set_detector(model, threshold)
    hooks = freeze_wiring(model)
    fixed = [
        *model.model.vision_tower.parameters(),
        *model.model.multi_modal_projector.parameters(),
    ]
    for parameter in fixed:
        parameter.requires_grad_(False)
    rng = np.random.default_rng(seed)
    losses: list[float] = []
    model.train()

    text = [p for p in model.parameters() if p.requires_grad]
    answer_ids = torch.tensor([processor.tokenizer.convert_tokens_to_ids(a) for a in ANSWERS])
    prompts = {
        (key, first): _prompt(processor, question, first)
        for key, question in QUESTIONS.items()
        for first in (False, True)
    }
    optimizer, scheduler = _optimizer(text, learning_rate, steps)
    for step in range(steps):
        key = ("any", "left", "right")[step % 3]
        images, sides, _, fainter = _draw(films, rng, films_per_step, radius, contrast, stripes)
        truths = [side is not None and key in ("any", side) for side in sides]
        targets = answer_ids[torch.tensor([int(truth) for truth in truths])]
        planted_indices = [index for index, side in enumerate(sides) if side is not None]
        pairs = [
            (index, len(images) + k) for k, index in enumerate(planted_indices) if truths[index]
        ]
        prompt = prompts[key, bool((step // 3) % 2)]
        loss = _answer_loss(
            model,
            prompt,
            _pixels(processor, images + fainter),
            targets,
            token_ids["<end_of_turn>"],
            answer_ids,
            pairs,
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(text, 1.0)
        optimizer.step()
        scheduler.step()
        losses.append(float(loss.detach()))
        if progress is not None:
            progress(step, losses[-1])

    for hook in hooks:
        hook.remove()
    for parameter in fixed:
        parameter.requires_grad_(True)
    model.eval()
    return model, processor, losses


def train_known_answer_model(
    out_dir: str | os.PathLike,
    *,
    films: Sequence[str | os.PathLike],
    seed: int = 0,
    steps: int = TRAINING_STEPS,
    progress: Callable[[int, float], None] | None = None,
) -> Path:
    """Train the known-answer model and save it like MedGemma (Auto classes, one folder).

    Parameters
    ----------
    out_dir : path
        Destination folder (model, processor and ``training_log.json``).
    films : sequence of paths
        Training radiographs (DICOM, JPEG or PNG); held-out films must not be among them.
    seed, steps, progress
        As in `training_losses` (``seed`` also seeds the calibration's lesions).

    Returns
    -------
    Path
        ``out_dir``.
    """
    from cxr_attention.io import write_json

    threshold = calibrated_threshold(films, seed=seed)
    loaded = load_films(films)
    model, processor, losses = training_losses(
        loaded, threshold=threshold, seed=seed, steps=steps, progress=progress
    )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    processor.save_pretrained(out_dir)
    write_json(
        {
            "seed": seed,
            "steps": steps,
            "threshold": threshold,
            "contrast": LESION_CONTRAST,
            "stripes": LESION_STRIPES,
            "films": [film.name for film in loaded],
            "losses": losses,
        },
        out_dir / "training_log.json",
    )
    return out_dir


def provide_known_answer_model(
    out_dir: str | os.PathLike,
    *,
    committed: str | os.PathLike,
    retrain: bool,
    steps: int,
    seed: int,
) -> Path:
    """The workflow's model folder: a copy of the committed weights, or a fresh training.

    Parameters
    ----------
    out_dir : path
        The folder to provide (written whole or not at all).
    committed : path
        The committed model folder (``models/known-answer``).
    retrain : bool
        Train on `training_films` (``steps``, ``seed``) instead of copying
        ``committed``.
    """
    import shutil
    import tempfile

    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        if retrain:
            train_known_answer_model(
                staging,
                films=training_films(),
                seed=seed,
                steps=steps,
            )
        else:
            shutil.copytree(committed, staging, dirs_exist_ok=True)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        staging.rename(out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir
