"""The capture file of one (image, question): its typed arrays, written, read, checked and found.

The one owner of capture files (torch-free): the inference stage writes them
(:func:`write_capture`), the maps stage and ``reference_compat`` read them (:func:`load_capture`,
:func:`locate_capture`). The arrays are described in docs/architecture.md ("Capture arrays").
"""

from __future__ import annotations

import dataclasses
import os
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cxr_attention.io import InputError, write_npz

__all__ = [
    "REQUIRED_CAPTURE_KEYS",
    "Capture",
    "as_capture",
    "capture_problem",
    "load_capture",
    "locate_capture",
    "write_capture",
]

REQUIRED_CAPTURE_KEYS = (
    "attention",
    "text_attention",
    "layers",
    "input_ids",
    "generated_ids",
    "image_token_positions",
)


@dataclass(frozen=True, eq=False)
class Capture(Mapping):
    """The arrays of one capture file (docs/architecture.md, "Capture arrays").

    Fields are in the order the file stores them. The optional ones are None when the file lacks
    them. A capture is also a read-only mapping of its present arrays (``capture["attention"]``,
    ``"grid_shape" in capture``, ``dict(capture)``), the form :func:`write_capture` stores and
    the form code not yet moved to the fields (``reference_compat``) reads.

    Attributes
    ----------
    attention : ndarray, (layers, heads, generated, image tokens)
    text_attention : ndarray, (layers, heads, generated, prompt_len)
    prompt_image_attention : ndarray or None, (layers, heads, rows, image tokens)
    prompt_image_positions : ndarray or None, (rows,)
    layers : ndarray, (layers,)
    input_ids : ndarray, (prompt_len,)
    generated_ids : ndarray, (generated,)
    image_token_positions : ndarray, (image tokens,)
    image_hidden_norms : ndarray or None, (layers, image tokens)
        Float32 norm of the hidden state entering each captured layer at each image token (the
        maps stage's attention sinks); None in captures written before it was recorded.
    grid_shape : ndarray or None, (2,)
    input_tokens, generated_tokens : ndarray of str or None
    pixel_values : ndarray or None
        What the model saw (``cxr-attention explain`` only).
    """

    attention: np.ndarray
    text_attention: np.ndarray
    prompt_image_attention: np.ndarray | None = None
    prompt_image_positions: np.ndarray | None = None
    layers: np.ndarray | None = None
    input_ids: np.ndarray | None = None
    generated_ids: np.ndarray | None = None
    image_token_positions: np.ndarray | None = None
    image_hidden_norms: np.ndarray | None = None
    grid_shape: np.ndarray | None = None
    input_tokens: np.ndarray | None = None
    generated_tokens: np.ndarray | None = None
    pixel_values: np.ndarray | None = None

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> Capture:
        """From a mapping of capture arrays (keys of no field are dropped); not checked."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in arrays.items() if key in names})

    def __getitem__(self, key: str) -> np.ndarray:
        value = getattr(self, key, None) if key in _FIELD_NAMES else None
        if value is None:
            raise KeyError(key)
        return value

    def __iter__(self) -> Iterator[str]:
        return (name for name in _FIELD_NAMES if getattr(self, name) is not None)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    @property
    def grid(self) -> tuple[int, int] | None:
        """``(rows, cols)`` of the image-token grid, or None when the capture does not say."""
        if self.grid_shape is None:
            return None
        rows, cols = (int(v) for v in np.asarray(self.grid_shape).reshape(-1)[:2])
        return rows, cols

    @property
    def aspect_ratio(self) -> float:
        """Width / height of the token grid (1.0 when unknown), so factor_to_grid reproduces it."""
        grid = self.grid
        return 1.0 if grid is None else grid[1] / grid[0]


_FIELD_NAMES = tuple(f.name for f in dataclasses.fields(Capture))


def as_capture(value: Capture | Mapping[str, np.ndarray]) -> Capture:
    """A :class:`Capture` as is; a mapping of capture arrays as one (unchecked)."""
    return value if isinstance(value, Capture) else Capture.from_arrays(value)


def capture_problem(capture: Mapping[str, np.ndarray]) -> str | None:
    """Why capture arrays break the contract (missing keys, disagreeing shapes), or None."""
    missing = [key for key in REQUIRED_CAPTURE_KEYS if key not in capture]
    if missing:
        return f"capture lacks {missing}"
    attention, text = capture["attention"], capture["text_attention"]
    n_generated = capture["generated_ids"].reshape(-1).size
    prompt_len = capture["input_ids"].reshape(-1).size
    if (
        attention.ndim != 4
        or attention.shape[:3] != text.shape[:3]
        or attention.shape[2] != n_generated
        or text.shape[3] != prompt_len
        or attention.shape[3] != capture["image_token_positions"].size
    ):
        return (
            f"capture shapes disagree: attention {attention.shape}, text_attention {text.shape}, "
            f"{n_generated} generated, prompt {prompt_len}"
        )
    prompt_image = capture.get("prompt_image_attention")
    positions = capture.get("prompt_image_positions")
    if (
        prompt_image is not None
        and positions is not None
        and (prompt_image.ndim != 4 or prompt_image.shape[2] != positions.size)
    ):
        return (
            f"prompt_image_attention {prompt_image.shape} disagrees with its "
            f"{positions.size} prompt_image_positions"
        )
    norms = capture.get("image_hidden_norms")
    expected = (capture["layers"].size, capture["image_token_positions"].size)
    if norms is not None and norms.shape != expected:
        return (
            f"image_hidden_norms {norms.shape} disagrees with the {expected[0]} layers and "
            f"{expected[1]} image_token_positions"
        )
    return None


def load_capture(path: str | os.PathLike) -> Capture:
    """Read a capture ``.npz`` fully into memory and check its contract.

    Raises
    ------
    InputError
        Missing or unreadable file, missing keys, or shapes that disagree.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "capture file missing", error_type="missing_capture")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise InputError(path, f"unreadable capture: {error}", error_type="bad_capture") from error
    problem = capture_problem(arrays)
    if problem is not None:
        raise InputError(path, problem, error_type="bad_capture")
    return Capture.from_arrays(arrays)


def write_capture(path: str | os.PathLike, capture: Capture | Mapping[str, np.ndarray]) -> None:
    """Write a capture's present arrays, in field order, atomically.

    The zip-of-``.npy`` format ``np.savez_compressed`` writes, at zlib level 1
    (:func:`cxr_attention.io.write_npz`): equal arrays give equal bytes.
    """
    write_npz(path, **dict(as_capture(capture)))


def locate_capture(value: str | os.PathLike, captures_dir: str | os.PathLike) -> Path:
    """The file of an answers table's ``capture`` entry.

    As given when it exists or is absolute; else the file of that name in ``captures_dir`` (the
    table may have been written where the shard's folder had another path).
    """
    path = Path(value)
    if path.is_file() or path.is_absolute():
        return path
    return Path(captures_dir) / path.name
