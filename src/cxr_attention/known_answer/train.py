"""Train the known-answer model on the CPU: yes/no to a nodule question, from planted films.

Design (see ``docs/known_answer.md`` for what worked and what did not):

- **Paired batches.** Each step takes a few films and shows each one three times: clean, with a
  lesion in the patient's left lung and with one in the right, all with the same question. The
  only difference between the three images is the lesion, so every step's gradient points at it
  rather than at whatever else tells films apart.
- **One question per step**, cycling over the three questions and both orders of image and
  question in the user turn; the batch then needs no padding.
- **Loss on the answer only**: the first answer token (``yes`` or ``no``, single tokens of the
  tiny vocabulary) and the ``<end_of_turn>`` after it, so that greedy generation answers one word
  and stops.
- **Curriculum**: the lesion radius shrinks from `START_RADIUS` to the evaluation radius over the
  first half of training, contrast is drawn around the evaluation contrast.
- Films are squashed to the processor's 224 x 224 once (as the processor would) and their lung
  masks computed there; lesions are planted at that size each step and the pixels go through the
  processor's own image processor. Nothing the real path would not compute is precomputed.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cxr_attention.known_answer.model import IMAGE_SIZE, QUESTIONS, build_untrained_model
from cxr_attention.known_answer.plant import DEFAULT_CONTRAST, DEFAULT_RADIUS, plant_lesion

__all__ = [
    "Film",
    "demo_films",
    "evaluate_known_answer_model",
    "load_films",
    "train_known_answer_model",
    "training_losses",
]

START_RADIUS = 0.09
TRAINING_STEPS = 600
HELD_OUT_EVERY = 4
ANSWERS = ("no", "yes")


@dataclass(frozen=True)
class Film:
    """One training film at the processor's size, with its lung labels."""

    name: str
    image: np.ndarray  # uint8 (224, 224)
    lungs: np.ndarray  # uint8 (224, 224), 1 patient right, 2 patient left


def load_films(paths: Sequence[str | os.PathLike]) -> list[Film]:
    """Decode, squash to 224 x 224 (bilinear, as the processor), find the lungs; drop duplicates.

    A film whose two lungs cannot each hold a lesion of the evaluation radius is left out, as is
    a film whose 224 px pixels equal an earlier one's (the demo data copies some real films).
    """
    from PIL import Image

    from cxr_attention.preprocess.decode import decode_image
    from cxr_attention.preprocess.masks import lung_mask

    films, seen = [], set()
    for path in paths:
        image, _ = decode_image(path, max_side=2048)
        small = np.asarray(
            Image.fromarray(image).resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR)
        )
        digest = hashlib.sha256(small[::8, ::8].tobytes()).hexdigest()
        if digest in seen:
            continue
        lungs = lung_mask(small)
        film = Film(Path(path).stem, small, lungs)
        if all(_fits(film, side, DEFAULT_RADIUS) for side in ("left", "right")):
            seen.add(digest)
            films.append(film)
    return films


def _fits(film: Film, side: str, radius: float) -> bool:
    try:
        plant_lesion(film.image, side=side, radius=radius, lungs=film.lungs)
    except ValueError:
        return False
    return True


def _planted(film: Film, side: str, radius: float, contrast: float, seed: int) -> np.ndarray:
    """``film`` with a lesion in ``side``; the radius shrinks towards the evaluation's to fit."""
    while True:
        try:
            return plant_lesion(
                film.image,
                side=side,
                seed=seed,
                radius=radius,
                contrast=contrast,
                lungs=film.lungs,
            )[0]
        except ValueError:
            if radius <= DEFAULT_RADIUS:
                raise
            radius = max(DEFAULT_RADIUS, radius * 0.8)


def _prompt(processor, question: str, image_first: bool) -> dict[str, torch.Tensor]:
    """Token ids and token types of one prompt (they do not depend on the image's pixels)."""
    from cxr_attention.inference.prompting import build_inputs

    blank = np.zeros((IMAGE_SIZE, IMAGE_SIZE), np.uint8)
    inputs = build_inputs(processor, blank, question, image_first=image_first)
    return {key: inputs[key] for key in ("input_ids", "token_type_ids")}


def _radius_at(step: int, steps: int, radius: float) -> float:
    """Curriculum: from `START_RADIUS` (or ``radius`` if larger) down to ``radius`` by half-way."""
    progress = min(1.0, step / max(1, steps // 2))
    start = max(START_RADIUS, radius)
    return start + (radius - start) * progress


def training_losses(
    films: Sequence[Film],
    *,
    seed: int = 0,
    steps: int = 600,
    films_per_step: int = 2,
    learning_rate: float = 2e-3,
    radius: float = DEFAULT_RADIUS,
    contrast: float = DEFAULT_CONTRAST,
    progress: Callable[[int, float], None] | None = None,
):
    """Train a fresh model; return it, its processor and the loss of every step.

    Parameters
    ----------
    films : sequence of Film
        Training films (`load_films`).
    seed : int
        Seeds the weights, the films drawn, the lesions and the question order.
    steps, films_per_step : int
        Each step shows ``films_per_step`` films three times (clean, left, right).
    learning_rate : float
        AdamW's peak rate (linear warm-up over the first 5% of steps, then cosine decay).
    radius, contrast : float
        The lesion's final radius and its mean contrast (as in `plant_lesion`).
    progress : callable, optional
        Called with (step, loss) after each step.

    Returns
    -------
    model, processor, losses : Gemma3ForConditionalGeneration, Gemma3Processor, list of float
    """
    if not films:
        raise ValueError("no training films")
    model, processor, token_ids = build_untrained_model(seed)
    tokenizer = processor.tokenizer
    answer_ids = torch.tensor([tokenizer.convert_tokens_to_ids(a) for a in ANSWERS])
    end_of_turn = token_ids["<end_of_turn>"]
    prompts = {
        (key, first): _prompt(processor, question, first)
        for key, question in QUESTIONS.items()
        for first in (False, True)
    }
    rng = np.random.default_rng(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.0)
    warmup = max(1, steps // 20)

    def rate(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + np.cos(np.pi * (step - warmup) / max(1, steps - warmup)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, rate)
    model.train()
    losses = []
    for step in range(steps):
        key = ("any", "left", "right")[step % 3]
        image_first = bool((step // 3) % 2)
        size_now = _radius_at(step, steps, radius)
        images, answers = [], []
        for film_index in rng.choice(len(films), size=films_per_step, replace=False):
            film = films[int(film_index)]
            for side in (None, "left", "right"):
                if side is None:
                    images.append(film.image)
                else:
                    strength = min(1.0, float(rng.uniform(0.8, 1.2) * contrast))
                    size = float(rng.uniform(0.85, 1.15) * size_now)
                    images.append(_planted(film, side, size, strength, int(rng.integers(2**31))))
                answers.append(side is not None and key in ("any", side))
        loss = _step_loss(
            model, processor, prompts[key, image_first], images, answers, answer_ids, end_of_turn
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        losses.append(float(loss.detach()))
        if progress is not None:
            progress(step, losses[-1])
    model.eval()
    return model, processor, losses


def _step_loss(model, processor, prompt, images, answers, answer_ids, end_of_turn):
    """Cross-entropy of the answer token and of ``<end_of_turn>`` after it."""
    from PIL import Image

    count = len(images)
    pixels = processor.image_processor(
        images=[Image.fromarray(image).convert("RGB") for image in images], return_tensors="pt"
    )["pixel_values"]
    targets = answer_ids[torch.tensor([int(a) for a in answers])]
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


def train_known_answer_model(
    out_dir: str | os.PathLike,
    *,
    films: Sequence[str | os.PathLike],
    seed: int = 0,
    steps: int = 600,
    films_per_step: int = 2,
    learning_rate: float = 2e-3,
    progress: Callable[[int, float], None] | None = None,
) -> Path:
    """Train the known-answer model and save it like MedGemma (Auto classes, one folder).

    Parameters
    ----------
    out_dir : path
        Destination folder (model, processor and ``training_log.json``).
    films : sequence of paths
        Training radiographs (DICOM, JPEG or PNG); held-out films must not be among them.
    seed, steps, films_per_step, learning_rate, progress
        As in `training_losses`.

    Returns
    -------
    Path
        ``out_dir``.
    """
    from cxr_attention.io import write_json

    loaded = load_films(films)
    model, processor, losses = training_losses(
        loaded,
        seed=seed,
        steps=steps,
        films_per_step=films_per_step,
        learning_rate=learning_rate,
        progress=progress,
    )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    processor.save_pretrained(out_dir)
    write_json(
        {
            "seed": seed,
            "steps": steps,
            "films_per_step": films_per_step,
            "learning_rate": learning_rate,
            "films": [film.name for film in loaded],
            "losses": losses,
        },
        out_dir / "training_log.json",
    )
    return out_dir


def evaluate_known_answer_model(
    model,
    processor,
    images: Sequence[np.ndarray],
    *,
    seed: int = 0,
    plants_per_side: int = 1,
    radius: float = DEFAULT_RADIUS,
    contrast: float = DEFAULT_CONTRAST,
) -> dict[str, float]:
    """Accuracy of the first answer token on clean and planted full-size films.

    Each image is asked the three questions clean and with ``plants_per_side`` lesions (of
    ``radius`` and ``contrast``, planted at full size by `plant_lesion`) in each lung; an image
    whose lung has no room is asked clean only. Inputs go through the processor's chat template.

    Returns
    -------
    dict
        ``any_clean``, ``any_planted``, ``side`` accuracies and the number of ``cases``.
    """
    from cxr_attention.inference.prompting import build_inputs
    from cxr_attention.preprocess.masks import lung_mask

    yes, no = (processor.tokenizer.convert_tokens_to_ids(a) for a in ("yes", "no"))
    results = {"any_clean": [], "any_planted": [], "side": []}
    for index, image in enumerate(images):
        lungs = lung_mask(image)
        cases = [(image, None)]
        for side in ("left", "right"):
            for k in range(plants_per_side):
                try:
                    planted, _ = plant_lesion(
                        image,
                        side=side,
                        seed=seed + 1000 * index + k,
                        radius=radius,
                        contrast=contrast,
                        lungs=lungs,
                    )
                except ValueError:
                    continue
                cases.append((planted, side))
        for picture, side in cases:
            inputs = build_inputs(processor, picture, list(QUESTIONS.values()), image_first=False)
            with torch.no_grad():
                logits = model(**inputs, logits_to_keep=1, use_cache=False).logits[:, -1]
            said_yes = (logits.argmax(-1) == yes).tolist()
            said_no = (logits.argmax(-1) == no).tolist()
            for key, is_yes, is_no in zip(QUESTIONS, said_yes, said_no, strict=True):
                truth = side is not None and key in ("any", side)
                correct = is_yes if truth else is_no
                if key == "any":
                    results["any_planted" if side else "any_clean"].append(correct)
                elif side is not None:
                    results["side"].append(correct)
    summary = {
        name: float(np.mean(values)) if values else float("nan") for name, values in results.items()
    }
    summary["cases"] = sum(len(values) for values in results.values())
    return summary


def demo_films(root: str | os.PathLike | None = None) -> tuple[list[Path], list[Path]]:
    """The demo's JPEG films as (training, held out): every fourth in name order is held out.

    Parameters
    ----------
    root : path, optional
        The repository (default: the one this package is installed from).
    """
    root = Path(root) if root is not None else Path(__file__).resolve().parents[3]
    paths = sorted((root / "data" / "demo" / "mimic-cxr-jpg" / "files").rglob("*.jpg"))
    if not paths:
        raise FileNotFoundError(f"no demo films under {root / 'data' / 'demo'}")
    held_out = paths[HELD_OUT_EVERY - 1 :: HELD_OUT_EVERY]
    return [path for path in paths if path not in held_out], held_out
