"""What the known-answer benchmark asks and plants: torch-free, read by the data, scores and model.

The workflow's planting and scoring rules run without torch, so these live apart from the model.
"""

from __future__ import annotations

__all__ = ["IMAGE_SIZE", "LESION_CONTRAST", "LESION_STRIPES", "QUESTIONS"]

# The known-answer model's input side in pixels (16 x 16 patches of 14 px, one image token each);
# its training films are prepared at this size.
IMAGE_SIZE = 224

# The lesion the model finds and is measured on: a soft opacity (contrast as `plant`'s default)
# carrying vertical stripes of this peak amplitude in grey levels (`plant.STRIPE_CYCLES`). A plain
# opacity could not be told from bright anatomy of unseen films by a detector trained on two
# dozen films; the stripes make the evidence one that anatomy lacks (docs/known_answer.md). The
# demo plants its known-answer films so.
LESION_CONTRAST = 0.3
LESION_STRIPES = 100.0

# The three questions the model answers, keyed by what they ask about ("any", or the patient's
# side).
QUESTIONS = {
    "any": "Is there a nodule?",
    "left": "Is there a nodule in the left lung?",
    "right": "Is there a nodule in the right lung?",
}
