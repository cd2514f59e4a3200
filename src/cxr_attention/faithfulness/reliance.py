"""Does the answer depend on the image? The same question asked of four stand-ins for it.

Conditions (`RELIANCE_CONDITIONS`):

- ``original``: the radiograph;
- ``blank``: a mid-grey image of the same size;
- ``swapped``: another patient's image of the same view whose label for the finding is the
  opposite (chosen by `reliance_tables.swap_partners`);
- ``occluded``: the radiograph with the lungs (the preprocessed lung mask) painted mid-grey;
- ``text_only``: the question with no image at all.

Each is scored teacher-forced at the decision step, as the faithfulness curves are: the margin
log P(yes) - log P(no), P(yes) its sigmoid, and the answer ``yes`` when P(yes) >= 0.5. No text is
generated, so the answers are the model's first-token decision, not the parsed free text.
"""

from __future__ import annotations

import numpy as np
import torch

from cxr_attention.faithfulness.scoring import DecisionScorer
from cxr_attention.inference.prompting import build_inputs

__all__ = [
    "MID_GREY",
    "RELIANCE_CONDITIONS",
    "condition_images",
    "reliance_scores",
    "text_only_inputs",
]

RELIANCE_CONDITIONS = ("original", "blank", "swapped", "occluded", "text_only")
MID_GREY = 128


def condition_images(
    image: np.ndarray, lungs: np.ndarray | None, swap_image: np.ndarray | None
) -> dict[str, np.ndarray | None]:
    """The image of each image condition (None: the condition cannot be built for this sample).

    Parameters
    ----------
    image : ndarray (H, W), uint8
    lungs : ndarray (H, W) or None
        Lung labels (non-zero inside a lung); None: no ``occluded`` image.
    swap_image : ndarray or None
        The swap partner's image; None: no ``swapped`` image.
    """
    image = np.asarray(image)
    occluded = None
    if lungs is not None:
        lungs = np.asarray(lungs)
        if lungs.shape != image.shape:
            raise ValueError(f"lung mask {lungs.shape} does not match the image {image.shape}")
        occluded = np.where(lungs > 0, np.uint8(MID_GREY), image).astype(np.uint8)
    return {
        "original": image,
        "blank": np.full_like(image, MID_GREY, dtype=np.uint8),
        "swapped": None if swap_image is None else np.asarray(swap_image, dtype=np.uint8),
        "occluded": occluded,
    }


def text_only_inputs(processor, question: str):
    """The chat-template inputs of the question alone (no image, no image tokens)."""
    messages = [{"role": "user", "content": [{"type": "text", "text": question}]}]
    return processor.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )


def reliance_scores(
    model,
    processor,
    image: np.ndarray,
    question: str,
    *,
    image_first: bool,
    lungs: np.ndarray | None = None,
    swap_image: np.ndarray | None = None,
    batch_size: int = 8,
) -> list[dict]:
    """One row per condition: ``condition, answer, p_yes, margin`` (NaN and blank when unbuilt).

    The image conditions share one prompt (the image tokens do not depend on the pixels), so
    their pixels go through the model as one batch.
    """
    images = condition_images(image, lungs, swap_image)
    built = [name for name, array in images.items() if array is not None]
    inputs = build_inputs(processor, images["original"], question, image_first=image_first)
    pixels = [
        build_inputs(processor, images[name], question, image_first=image_first)["pixel_values"]
        for name in built
    ]
    scorer = DecisionScorer(model, processor.tokenizer, inputs, batch_size=batch_size)
    margins = dict(zip(built, scorer.pixel_margins(torch.cat(pixels)), strict=True))
    text_scorer = DecisionScorer(
        model, processor.tokenizer, text_only_inputs(processor, question), batch_size=1
    )
    margins["text_only"] = text_scorer.original()
    rows = []
    for condition in RELIANCE_CONDITIONS:
        margin = float(margins.get(condition, np.nan))
        p_yes = float(torch.sigmoid(torch.tensor(margin))) if np.isfinite(margin) else np.nan
        answer = "" if not np.isfinite(margin) else ("yes" if margin >= 0 else "no")
        rows.append({"condition": condition, "answer": answer, "p_yes": p_yes, "margin": margin})
    return rows
