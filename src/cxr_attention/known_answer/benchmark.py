"""What the known-answer benchmark asks and plants: torch-free, read by the data, scores and model.

The workflow's planting and scoring rules run without torch, so these live apart from the model.
"""

from __future__ import annotations

__all__ = ["IMAGE_SIZE", "LESION_CONTRAST", "QUESTIONS"]

# The known-answer model's input side in pixels (16 x 16 patches of 14 px, one image token each);
# its training films are prepared at this size.
IMAGE_SIZE = 224

# The lesion contrast the model is trained and measured at: more conspicuous than `plant`'s
# default (0.35), which the detector did not learn to tell from bright structures of unseen films
# within the budget (docs/known_answer.md). The demo plants its known-answer films at this.
LESION_CONTRAST = 0.6

# The three questions the model answers, keyed by what they ask about ("any", or the patient's
# side).
QUESTIONS = {
    "any": "Is there a nodule?",
    "left": "Is there a nodule in the left lung?",
    "right": "Is there a nodule in the right lung?",
}
