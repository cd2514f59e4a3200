"""What the known-answer benchmark asks and plants: torch-free, read by the data, scores and model.

The workflow's planting and scoring rules run without torch, so these live apart from the model.
"""

from __future__ import annotations

__all__ = ["LESION_CONTRAST", "QUESTIONS"]

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
