"""Measure the known-answer model through the real path: accuracy and Grad-CAM pointing.

Every case is a full-size film (clean, or with a lesion planted at full size by `plant_lesion`),
asked through the processor's chat template (question first, as the demo asks), and the answer is
the first generated token (greedy: the arg-max of the first answer token's logits). Grad-CAM is
the project's engine (`cxr_attention.maps.gradcam.VisionGradCAM`, the vision tower's last layer)
with the decision margin (`yes_no_margin_from_logits`) as its target; a hit is a map whose
maximum cell lies in the planted box mapped onto the 16 x 16 token grid
(`cxr_attention.geometry.image_to_grid` of the box's mask).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from cxr_attention.known_answer.benchmark import LESION_CONTRAST, LESION_STRIPES, QUESTIONS
from cxr_attention.known_answer.plant import DEFAULT_RADIUS, planted_cases

__all__ = ["box_cells", "evaluate_known_answer_model", "margin_gradcam"]


def box_cells(x: int, y: int, w: int, h: int, shape: tuple[int, int]) -> np.ndarray:
    """Cells of the 16 x 16 token grid that a box (pixels of an image of ``shape``) touches."""
    from cxr_attention.geometry import image_to_grid

    mask = np.zeros(shape, bool)
    mask[y : y + h, x : x + w] = True
    return image_to_grid(mask) > 0


class _MarginTarget:
    """Grad-CAM target: the decision margin at the last kept logit row (the decision step)."""

    def __init__(self, tokens):
        self.tokens = tokens

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        from cxr_attention.inference.scoring import yes_no_margin_from_logits

        return yes_no_margin_from_logits(logits[:, -1].float(), self.tokens)


def margin_gradcam(model, processor, inputs) -> np.ndarray:
    """Grad-CAM (16 x 16) of the decision margin for one prepared prompt (``build_inputs``).

    Raises
    ------
    cxr_attention.maps.grid.MapUnavailable
        Non-finite or all-zero gradients.
    """
    from cxr_attention.geometry import pool_patches_to_grid
    from cxr_attention.inference.scoring import yes_no_tokens
    from cxr_attention.maps.gradcam import VisionGradCAM

    gradcam = VisionGradCAM(model)
    target = _MarginTarget(yes_no_tokens(processor.tokenizer))
    (cam,) = gradcam._patch_cams(  # the engine's own pass, with the margin as target
        inputs["input_ids"][0].numpy(),
        inputs["pixel_values"],
        [(np.zeros(0, np.int64), target)],
    )
    if isinstance(cam, Exception):
        raise cam
    return pool_patches_to_grid(cam, gradcam.grid_side)


def evaluate_known_answer_model(
    model,
    processor,
    images: Sequence[np.ndarray],
    *,
    seed: int = 0,
    plants_per_side: int = 1,
    radius: float = DEFAULT_RADIUS,
    contrast: float = LESION_CONTRAST,
    stripes: float = LESION_STRIPES,
    gradcam: bool = True,
) -> dict[str, float]:
    """Accuracy of the first answer token and Grad-CAM pointing on clean and planted films.

    Each image is asked the three questions clean and with ``plants_per_side`` lesions (of
    ``radius``, ``contrast`` and ``stripes``, planted at full size by `plant_lesion`, seed
    ``seed + 1000 * index + k``) in each lung; an image whose lung has no room is asked clean
    only.

    Parameters
    ----------
    model, processor
        As loaded with ``AutoModelForImageTextToText`` / ``AutoProcessor``.
    images : sequence of ndarray
        uint8 grayscale full-size films (held out from training).
    gradcam : bool
        Also compute Grad-CAM of the margin for the questions whose true answer is yes.

    Returns
    -------
    dict
        ``any_clean``, ``any_planted`` (``Is there a nodule?`` right on clean / planted films),
        ``side_clean``, ``side_planted`` (the two side questions), ``side`` (both together), the
        counts ``clean_films`` and ``planted_films``, and with ``gradcam`` the pointing-game hit
        rates ``gradcam_pointing_any`` (planted films, ``Is there a nodule?``),
        ``gradcam_pointing_side`` (the side question of the lesion's side) and
        ``gradcam_pointing`` (both together).
    """
    from cxr_attention.inference.prompting import build_inputs
    from cxr_attention.preprocess.masks import lung_mask

    yes, no = (processor.tokenizer.convert_tokens_to_ids(a) for a in ("yes", "no"))
    keys = list(QUESTIONS)
    results: dict[str, list[bool]] = {
        name: []
        for name in (
            "any_clean",
            "any_planted",
            "side_clean",
            "side_planted",
            "gradcam_pointing_any",
            "gradcam_pointing_side",
        )
    }
    for index, image in enumerate(images):
        lungs = lung_mask(image)
        plan = [
            (side, seed + 1000 * index + k)
            for side in ("left", "right")
            for k in range(plants_per_side)
        ]
        planted = planted_cases(
            image, plan, radius=radius, contrast=contrast, stripes=stripes, lungs=lungs
        )
        cases = [(image, None), *planted]
        for picture, lesion in cases:
            side = None if lesion is None else lesion.side
            inputs = build_inputs(processor, picture, list(QUESTIONS.values()), image_first=False)
            with torch.no_grad():
                logits = model(**inputs, logits_to_keep=1, use_cache=False).logits[:, -1]
            answers = logits.argmax(-1).tolist()
            kind = "planted" if lesion is not None else "clean"
            for key, answer in zip(keys, answers, strict=True):
                truth = side is not None and key in ("any", side)
                results[f"{'any' if key == 'any' else 'side'}_{kind}"].append(
                    answer == (yes if truth else no)
                )
            if gradcam and lesion is not None:
                cells = box_cells(lesion.x, lesion.y, lesion.w, lesion.h, image.shape)
                for key in ("any", side):
                    single = build_inputs(processor, picture, QUESTIONS[key], image_first=False)
                    grid = margin_gradcam(model, processor, single)
                    hit = bool(cells.reshape(-1)[int(np.argmax(grid))]) and grid.max() > 0
                    name = "any" if key == "any" else "side"
                    results[f"gradcam_pointing_{name}"].append(hit)
    results["side"] = results["side_clean"] + results["side_planted"]
    results["gradcam_pointing"] = results["gradcam_pointing_any"] + results["gradcam_pointing_side"]
    summary = {
        name: float(np.mean(values)) if values else float("nan")
        for name, values in results.items()
        if values or not name.startswith("gradcam") or gradcam
    }
    summary["clean_films"] = len(results["any_clean"])
    summary["planted_films"] = len(results["any_planted"])
    return summary
