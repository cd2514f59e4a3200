"""The capture file of one (image, question): read it and check its contract.

Written by the inference stage (``inference.runner.write_capture``), read by the maps stage and
by ``reference_compat``; the arrays are described in docs/architecture.md ("Capture arrays").
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

from cxr_attention.io import InputError

__all__ = ["REQUIRED_CAPTURE_KEYS", "load_capture"]

REQUIRED_CAPTURE_KEYS = (
    "attention",
    "text_attention",
    "layers",
    "input_ids",
    "generated_ids",
    "image_token_positions",
)


def load_capture(path: str | os.PathLike) -> dict[str, np.ndarray]:
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
            capture = {key: archive[key] for key in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise InputError(path, f"unreadable capture: {error}", error_type="bad_capture") from error
    missing = [key for key in REQUIRED_CAPTURE_KEYS if key not in capture]
    if missing:
        raise InputError(path, f"capture lacks {missing}", error_type="bad_capture")
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
        raise InputError(
            path,
            f"capture shapes disagree: attention {attention.shape}, text_attention {text.shape}, "
            f"{n_generated} generated, prompt {prompt_len}",
            error_type="bad_capture",
        )
    prompt_image = capture.get("prompt_image_attention")
    positions = capture.get("prompt_image_positions")
    if (
        prompt_image is not None
        and positions is not None
        and (prompt_image.ndim != 4 or prompt_image.shape[2] != positions.size)
    ):
        raise InputError(
            path,
            f"prompt_image_attention {prompt_image.shape} disagrees with its "
            f"{positions.size} prompt_image_positions",
            error_type="bad_capture",
        )
    return capture
