"""Train the known-answer model on the CPU: yes/no to a nodule question, from planted films.

Design (``docs/known_answer.md`` says what worked and what did not):

1. **Wiring** (`wiring.set_wiring`, frozen): the first text layer's routing heads attend from the
   answer position to the image tokens whose ``LESION`` channel is positive, and to the
   question's side word.
2. **Detector** (`DETECTOR_STEPS` steps): the vision tower and projector learn, per image token
   (`dense.token_targets`), the ``LESION`` channel (does the token's cell show the lesion: a
   weighted logistic loss) and the ``SIDE`` channel (patient's left or right, on lesion tokens).
   A curriculum shrinks the lesion from `START_RADIUS` and fades it from `START_CONTRAST` to
   the evaluation's size and contrast over the first `CURRICULUM_SHARE` of these steps.
3. **Answer** (``steps`` steps): with the vision tower frozen, the text model (less the wiring)
   learns the answer token (``yes`` / ``no``) and the ``<end_of_turn>`` after it.

Every step shows each drawn film three times: clean, with a lesion in the patient's left lung
and one in the right (paired batches: only the lesion differs). Films are squashed to 224 x 224
once (as the processor would); lesions are planted at that size each step and the pixels go
through the processor's own image processor. Every random draw comes from ``seed``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from cxr_attention.known_answer.benchmark import LESION_CONTRAST, QUESTIONS
from cxr_attention.known_answer.dense import projected_features, token_targets
from cxr_attention.known_answer.films import Film, load_films, planted, training_films
from cxr_attention.known_answer.model import IMAGE_SIZE, build_untrained_model
from cxr_attention.known_answer.plant import DEFAULT_RADIUS
from cxr_attention.known_answer.wiring import Channel, freeze_wiring, set_wiring

__all__ = [
    "provide_known_answer_model",
    "train_known_answer_model",
    "training_losses",
]

START_RADIUS = 0.09
START_CONTRAST = 0.7
CURRICULUM_SHARE = 0.6
DETECTOR_STEPS = 1500
TRAINING_STEPS = 300
ANSWERS = ("no", "yes")
# A lesion covers about 4 of 256 tokens: its tokens weigh this much more in the detector's loss.
LESION_TOKEN_WEIGHT = 2.0
SHIFT = 16


def _prompt(processor, question: str, image_first: bool) -> dict[str, torch.Tensor]:
    """Token ids and token types of one prompt (they do not depend on the image's pixels)."""
    from cxr_attention.inference.prompting import build_inputs

    blank = np.zeros((IMAGE_SIZE, IMAGE_SIZE), np.uint8)
    inputs = build_inputs(processor, blank, question, image_first=image_first)
    return {key: inputs[key] for key in ("input_ids", "token_type_ids")}


def _curriculum(step: int, steps: int, start: float, end: float) -> float:
    """From ``start`` (or ``end`` if larger) linearly down to ``end`` by `CURRICULUM_SHARE`."""
    progress = min(1.0, step / max(1, int(steps * CURRICULUM_SHARE)))
    start = max(start, end)
    return start + (end - start) * progress


def _augmented(film: Film, rng: np.random.Generator) -> Film:
    """The film mirrored left-right (lung labels swapped) half the time, shifted, with a gamma.

    With two dozen training films the detector otherwise learns the films: it marked bright
    structures of unseen films (a marker at the top edge, the aortic knob) as lesions.
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


def _draw(films, rng, count, radius, contrast):
    """``count`` films, each clean and with a lesion in either lung: images and token targets."""
    images, sides, cells = [], [], []
    for film_index in rng.choice(len(films), size=count, replace=False):
        film = _augmented(films[int(film_index)], rng)
        for side in (None, "left", "right"):
            lesion = None
            if side is None:
                images.append(film.image)
            else:
                strength = min(1.0, float(rng.uniform(0.8, 1.2) * contrast))
                size = float(rng.uniform(0.85, 1.15) * radius)
                picture, lesion = planted(film, side, size, strength, int(rng.integers(2**31)))
                images.append(picture)
            sides.append(side)
            cells.append(token_targets(lesion, film.image.shape))
    return images, sides, np.stack(cells)


def _pixels(processor, images) -> torch.Tensor:
    """The processor's pixel values of 224 px uint8 films."""
    from PIL import Image

    return processor.image_processor(
        images=[Image.fromarray(image).convert("RGB") for image in images], return_tensors="pt"
    )["pixel_values"]


def _detector_loss(features: torch.Tensor, cells: np.ndarray) -> torch.Tensor:
    """Logistic losses of the ``LESION`` channel and of ``SIDE`` (on lesion tokens).

    ``LESION`` is scored per token and, since the routing reads its maximum, per image as well:
    the largest value off the lesion must be negative (hard negatives: a bright rib end, the
    aortic knob) and the largest on it positive.
    """
    from torch.nn.functional import binary_cross_entropy_with_logits as logistic

    classes = torch.from_numpy(cells)
    on_lesion = classes > 0
    lesion = features[..., Channel.LESION].float()
    token_loss = logistic(lesion, on_lesion.float(), pos_weight=torch.tensor(LESION_TOKEN_WEIGHT))
    off_max = lesion.masked_fill(on_lesion, -torch.inf).amax(-1)
    image_loss = logistic(off_max, torch.zeros_like(off_max))
    planted = on_lesion.any(-1)
    if not planted.any():
        return token_loss + image_loss
    on_max = lesion.masked_fill(~on_lesion, -torch.inf).amax(-1)[planted]
    image_loss = image_loss + logistic(on_max, torch.ones_like(on_max))
    side_loss = logistic(
        features[..., Channel.SIDE][on_lesion].float(), (classes[on_lesion] == 2).float()
    )
    return token_loss + image_loss + side_loss


def _answer_loss(model, prompt, pixels, targets, end_of_turn) -> torch.Tensor:
    """Cross-entropy of the answer token and 0.1 x that of ``<end_of_turn>`` after it."""
    count = len(targets)
    input_ids = torch.cat([prompt["input_ids"].expand(count, -1), targets[:, None]], dim=1)
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
    answer_loss = torch.nn.functional.cross_entropy(logits[:, 0].float(), targets)
    stop_loss = torch.nn.functional.cross_entropy(
        logits[:, 1].float(), torch.full((count,), end_of_turn)
    )
    return answer_loss + 0.1 * stop_loss


def _optimizer(parameters, learning_rate: float, steps: int):
    """AdamW (no weight decay), linear warm-up over 5% of ``steps``, then cosine decay."""
    optimizer = torch.optim.AdamW(parameters, lr=learning_rate, weight_decay=0.0)
    warmup = max(1, steps // 20)

    def rate(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + np.cos(np.pi * (step - warmup) / max(1, steps - warmup)))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, rate)


def training_losses(
    films: Sequence[Film],
    *,
    seed: int = 0,
    steps: int = TRAINING_STEPS,
    detector_steps: int = DETECTOR_STEPS,
    films_per_step: int = 2,
    learning_rate: float = 3e-3,
    radius: float = DEFAULT_RADIUS,
    contrast: float = LESION_CONTRAST,
    progress: Callable[[int, float], None] | None = None,
):
    """Train a fresh model; return it, its processor and the loss of every step.

    Parameters
    ----------
    films : sequence of Film
        Training films (`films.load_films`).
    seed : int
        Seeds the weights, the films drawn, the lesions and the question order.
    steps, detector_steps : int
        Steps of the answer phase and, before it, of the detector phase.
    films_per_step : int
        Each step shows ``films_per_step`` films three times (clean, left, right).
    learning_rate : float
        AdamW's peak rate of each phase.
    radius, contrast : float
        The lesion's final radius and its mean contrast (as in `plant_lesion`).
    progress : callable, optional
        Called with (step, loss) after each step (detector steps first).

    Returns
    -------
    model, processor, losses : Gemma3ForConditionalGeneration, Gemma3Processor, list of float
        ``losses``: the detector steps' losses, then the answer steps'.
    """
    if not films:
        raise ValueError("no training films")
    films_per_step = min(films_per_step, len(films))
    model, processor, token_ids = build_untrained_model(seed)
    set_wiring(model, processor.tokenizer)
    hooks = freeze_wiring(model)
    rng = np.random.default_rng(seed)
    losses: list[float] = []
    model.train()

    def update(loss, optimizer, scheduler, parameters):
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        scheduler.step()
        losses.append(float(loss.detach()))
        if progress is not None:
            progress(len(losses) - 1, losses[-1])

    vision = [
        *model.model.vision_tower.parameters(),
        model.model.multi_modal_projector.mm_input_projection_weight,
    ]
    optimizer, scheduler = _optimizer(vision, learning_rate, detector_steps)
    for step in range(detector_steps):
        images, _, cells = _draw(
            films,
            rng,
            films_per_step,
            _curriculum(step, detector_steps, START_RADIUS, radius),
            _curriculum(step, detector_steps, START_CONTRAST, contrast),
        )
        with projected_features(model) as features:
            model.model.get_image_features(pixel_values=_pixels(processor, images))
        update(_detector_loss(features[0], cells), optimizer, scheduler, vision)

    for parameter in vision:
        parameter.requires_grad_(False)
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
        images, sides, _ = _draw(films, rng, films_per_step, radius, contrast)
        truths = [side is not None and key in ("any", side) for side in sides]
        targets = answer_ids[torch.tensor([int(truth) for truth in truths])]
        prompt = prompts[key, bool((step // 3) % 2)]
        loss = _answer_loss(
            model, prompt, _pixels(processor, images), targets, token_ids["<end_of_turn>"]
        )
        update(loss, optimizer, scheduler, text)

    for hook in hooks:
        hook.remove()
    for parameter in vision:
        parameter.requires_grad_(True)
    model.eval()
    return model, processor, losses


def train_known_answer_model(
    out_dir: str | os.PathLike,
    *,
    films: Sequence[str | os.PathLike],
    seed: int = 0,
    steps: int = TRAINING_STEPS,
    detector_steps: int = DETECTOR_STEPS,
    progress: Callable[[int, float], None] | None = None,
) -> Path:
    """Train the known-answer model and save it like MedGemma (Auto classes, one folder).

    Parameters
    ----------
    out_dir : path
        Destination folder (model, processor and ``training_log.json``).
    films : sequence of paths
        Training radiographs (DICOM, JPEG or PNG); held-out films must not be among them.
    seed, steps, detector_steps, progress
        As in `training_losses`.

    Returns
    -------
    Path
        ``out_dir``.
    """
    from cxr_attention.io import write_json

    loaded = load_films(films)
    model, processor, losses = training_losses(
        loaded, seed=seed, steps=steps, detector_steps=detector_steps, progress=progress
    )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    processor.save_pretrained(out_dir)
    write_json(
        {
            "seed": seed,
            "steps": steps,
            "detector_steps": detector_steps,
            "contrast": LESION_CONTRAST,
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
    detector_steps: int,
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
        Train on `training_films` (``steps``, ``detector_steps``, ``seed``) instead of copying
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
                detector_steps=detector_steps,
            )
        else:
            shutil.copytree(committed, staging, dirs_exist_ok=True)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        staging.rename(out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir
