"""The known-answer model's films: which demo films are held out, loading at 224 px, planting.

Held-out films (`demo_films`): every fourth demo film in name order. Training films
(`training_films`): the other demo films and, when present, the real films beside the repository,
less any near-copy of a held-out film (the demo data copies some real films, re-encoded).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cxr_attention.known_answer.benchmark import IMAGE_SIZE
from cxr_attention.known_answer.plant import DEFAULT_RADIUS, NoRoomForLesion, plant_lesion

__all__ = ["Film", "demo_films", "load_films", "planted", "training_films"]

HELD_OUT_EVERY = 4
# Mean absolute difference (grey levels, 32 px thumbnails) below which two films are one film
# re-encoded: the demo's copies of real films differ by about 0.2, distinct films by tens.
NEAR_COPY = 3.0


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
    except NoRoomForLesion:
        return False
    return True


def planted(film: Film, side: str, radius: float, contrast: float, stripes: float, seed: int):
    """``film`` with a lesion in ``side`` and its record; the radius shrinks towards the
    evaluation's to fit."""
    while True:
        try:
            return plant_lesion(
                film.image,
                side=side,
                seed=seed,
                radius=radius,
                contrast=contrast,
                stripes=stripes,
                lungs=film.lungs,
            )
        except NoRoomForLesion:
            if radius <= DEFAULT_RADIUS:
                raise
            radius = max(DEFAULT_RADIUS, radius * 0.8)


def _thumbnail(path: str | os.PathLike) -> np.ndarray:
    """A 32 x 32 float thumbnail of a film (squashed, as the processor squashes)."""
    from PIL import Image

    from cxr_attention.preprocess.decode import decode_image

    image, _ = decode_image(path, max_side=2048)
    return np.asarray(Image.fromarray(image).resize((32, 32), Image.Resampling.BOX), np.float64)


def training_films(
    root: str | os.PathLike | None = None, extra: str | os.PathLike | None = None
) -> list[Path]:
    """The films the committed model was trained on: the demo's training films and, when
    present, the real test films beside the repository (``../shared/data/real_cxr/images``),
    less any near-copy of a held-out film (the demo copies some of them).

    Parameters
    ----------
    root : path, optional
        The repository (as in `demo_films`).
    extra : path, optional
        Folder of further PNG films (default: the shared real films, when present).
    """
    root = Path(root) if root is not None else Path(__file__).resolve().parents[3]
    training, held_out = demo_films(root)
    extra = Path(extra) if extra is not None else root.parent / "shared/data/real_cxr/images"
    if not extra.is_dir():
        return training
    held = [_thumbnail(path) for path in held_out]
    for path in sorted(extra.glob("*.png")):
        thumbnail = _thumbnail(path)
        if all(np.abs(thumbnail - other).mean() > NEAR_COPY for other in held):
            training.append(path)
    return training


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
