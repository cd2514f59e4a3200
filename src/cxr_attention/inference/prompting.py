"""The model inputs of (image, question) pairs, built in one step by the processor's chat template.

``processor.apply_chat_template(..., tokenize=True, return_dict=True)`` renders the template,
expands the image placeholder into ``<start_of_image>`` + 256 soft tokens + ``<end_of_image>``,
tokenizes without adding a second ``<bos>`` and preprocesses the image, so that prompt text,
token ids and pixels can never disagree. Image token positions are read from
``input_ids == config.image_token_id``, never assumed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

__all__ = [
    "build_inputs",
    "chat_messages",
    "image_token_positions",
    "prompt_token_ids",
    "render_prompts",
    "to_pil",
]


def to_pil(image: Image.Image | np.ndarray) -> Image.Image:
    """A PIL image from a PIL image or an 8-bit grayscale or RGB array (the processor makes RGB)."""
    if isinstance(image, Image.Image):
        return image
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise ValueError(f"expected an 8-bit image array, got dtype {array.dtype}")
    if array.ndim not in (2, 3):
        raise ValueError(f"expected a 2-D (gray) or 3-D (RGB) array, got shape {array.shape}")
    return Image.fromarray(array)


def chat_messages(image: Image.Image | np.ndarray, question: str, *, image_first: bool) -> list:
    """One user turn holding the image and the question, in the order ``image_first`` asks for.

    The MedGemma model card and the reference runner put the question first; putting the image
    first makes everything up to the question identical across questions (see ``capture``).
    """
    parts = [{"type": "image", "image": to_pil(image)}, {"type": "text", "text": question}]
    if not image_first:
        parts.reverse()
    return [{"role": "user", "content": parts}]


def build_inputs(processor, image, question: str | list[str], *, image_first: bool):
    """Token ids, attention mask, ``token_type_ids`` and pixels of one or several questions.

    Parameters
    ----------
    processor : transformers.Gemma3Processor
    image : PIL.Image or ndarray of uint8
        Grayscale (H, W) or RGB (H, W, 3).
    question : str or list of str
        Several questions about the same image make a left-padded batch (the tokenizer's padding
        side), each with its own copy of the image.
    image_first : bool
        Order of the image and the question in the user turn.

    Returns
    -------
    transformers.BatchFeature
        ``input_ids``, ``attention_mask``, ``token_type_ids`` (1 on the image soft tokens),
        ``pixel_values``; tensors, batch first.
    """
    questions = [question] if isinstance(question, str) else list(question)
    pil = to_pil(image)
    conversations = [chat_messages(pil, q, image_first=image_first) for q in questions]
    return processor.apply_chat_template(
        conversations if len(conversations) > 1 else conversations[0],
        add_generation_prompt=True,
        tokenize=True,
        return_dict=True,
        return_tensors="pt",
        processor_kwargs={"padding": len(conversations) > 1},
    )


def render_prompts(processor, questions: Sequence[str], *, image_first: bool) -> list[str]:
    """The prompts as text, the image shown as the template's single ``<start_of_image>`` marker.

    Rendered as one batch: one template call costs about what 42 separate calls cost, ten times
    what their rendering does.
    """
    placeholder = Image.new("L", (1, 1))
    conversations = [chat_messages(placeholder, q, image_first=image_first) for q in questions]
    return list(
        processor.apply_chat_template(conversations, add_generation_prompt=True, tokenize=False)
    )


def prompt_token_ids(processor, prompts: Sequence[str]) -> list[torch.Tensor]:
    """The token ids of rendered prompts (`render_prompts`), without preprocessing any pixels.

    The ids do not depend on the image: the processor renders the template, replaces the image
    marker with ``processor.full_image_sequence`` (``\\n\\n<start_of_image>`` + soft tokens +
    ``<end_of_image>\\n\\n``) and tokenizes without special tokens; this does the same without
    the image preprocessing, which costs far more than the tokenizing when dozens of questions are
    asked of one image, and tokenizes them as one batch. Callers check it against `build_inputs`
    on one question (``capture`` does, on every image) so that a processor that expands
    differently is caught, not trusted.

    Returns
    -------
    list of LongTensor (prompt_len,), one per prompt
    """
    marker = processor.image_token
    expanded = []
    for text in prompts:
        if text.count(marker) != 1:
            raise ValueError(f"expected one image marker {marker!r} in the rendered prompt")
        expanded.append(text.replace(marker, processor.full_image_sequence))
    ids = processor.tokenizer(expanded, add_special_tokens=False)["input_ids"]
    return [torch.tensor(row, dtype=torch.long) for row in ids]


def image_token_positions(input_ids: torch.Tensor, image_token_id: int) -> torch.Tensor:
    """Positions of the image soft tokens in a 1-D prompt; checks they form one contiguous run."""
    positions = torch.nonzero(input_ids == image_token_id).flatten()
    if len(positions) == 0:
        raise ValueError("the prompt holds no image token")
    if not torch.equal(
        positions, positions[0] + torch.arange(len(positions), device=positions.device)
    ):
        raise ValueError("the image tokens of the prompt are not contiguous (several images?)")
    return positions
