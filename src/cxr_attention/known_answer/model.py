"""The known-answer model: a small ``Gemma3ForConditionalGeneration`` with the demo's tokenizer.

Same class, tokenizer, chat template and 256 image tokens as the demo's random tiny model
(`cxr_attention.models.tiny`), with a wider vision tower so that it can learn a local
cue, at 224 px (16 x 16 patches of 14 px, one image token each, no pooling): at the demo's 448 px a
training step cost four times as much on the CPU (see ``docs/known_answer.md``). Its weights are
trained by `cxr_attention.known_answer.train`.
"""

from __future__ import annotations

import torch

from cxr_attention.known_answer.benchmark import IMAGE_SIZE, LESION_CONTRAST, QUESTIONS
from cxr_attention.models.gemma3 import gemma3_config, reinit_projector
from cxr_attention.models.tiny import (
    TINY_TEXT_OPTIONS,
    build_tiny_processor,
    build_tiny_tokenizer,
    tiny_token_ids,
)

__all__ = [
    "IMAGE_SIZE",
    "LESION_CONTRAST",
    "QUESTIONS",
    "build_untrained_model",
    "known_answer_config",
]

# Two text layers: the answer position must learn to read the question's side word and the
# lesion's image tokens; every extra layer is depth the gradient must route through.
TEXT_LAYERS = 2


def known_answer_config(vocab_size: int, token_ids: dict[str, int]):
    """The known-answer model's ``Gemma3Config`` (text as the demo's; vision 64 wide)."""
    return gemma3_config(
        vocab_size=vocab_size,
        token_ids=token_ids,
        num_text_layers=TEXT_LAYERS,
        # Gemma's own initializer range: the trained model needs no sharpened random attention.
        text_options={**TINY_TEXT_OPTIONS, "initializer_range": 0.02},
        vision_options={
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "image_size": IMAGE_SIZE,
        },
    )


def build_untrained_model(seed: int):
    """The model before training, its processor and the special token ids.

    Returns
    -------
    model : transformers.Gemma3ForConditionalGeneration
        Random weights from ``seed``, the projector re-initialised (transformers zeroes it, which
        would give every vision weight a zero gradient).
    processor : transformers.Gemma3Processor
    token_ids : dict
        As `tiny_token_ids`.
    """
    from transformers import Gemma3ForConditionalGeneration, GenerationConfig

    tokenizer = build_tiny_tokenizer()
    token_ids = tiny_token_ids(tokenizer)
    config = known_answer_config(len(tokenizer), token_ids)
    torch.manual_seed(seed)
    model = Gemma3ForConditionalGeneration(config)
    reinit_projector(model, torch.Generator().manual_seed(seed + 1))
    model.generation_config = GenerationConfig(
        bos_token_id=token_ids["<bos>"],
        eos_token_id=[token_ids["<eos>"], token_ids["<end_of_turn>"]],
        pad_token_id=token_ids["<pad>"],
        do_sample=False,
    )
    return model, build_tiny_processor(tokenizer, image_size=IMAGE_SIZE), token_ids
