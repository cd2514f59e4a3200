"""A tiny, randomly initialised MedGemma look-alike that builds offline (for tests and the demo).

The tiny model is a real ``Gemma3ForConditionalGeneration`` saved the way ``google/medgemma-4b-it``
is (safetensors, ``config.json``, ``generation_config.json``, tokenizer and processor files), so
that every code path that loads MedGemma loads it too, through ``AutoProcessor`` and
``AutoModelForImageTextToText``. It keeps the traits the study's code depends on:

- grouped-query attention: 8 query heads sharing 4 key/value heads;
- sliding and full attention layers in Gemma 3's pattern (every sixth layer full). With 6 layers
  the last three are sliding, sliding, full, so capturing the last three layers exercises both
  kinds (MedGemma 4B's last three layers are all sliding; its last full layer is layer 29). The
  sliding window (512) covers every prompt the tests build (about 300 tokens);
- a SigLIP vision tower at 448 px with 14 px patches (32 x 32 patches) that Gemma 3's projector
  average-pools 2 x 2 into the 16 x 16 = 256 image tokens (MedGemma: 896 px, 64 x 64, pooled 4 x 4);
- a BPE tokenizer with byte fallback, trained deterministically on embedded radiology question and
  answer text, with a vocabulary small enough that many medical words ("effusion",
  "cardiomegaly") split into several sub-word tokens, as rarer words do in Gemma's real vocabulary;
- Gemma 3's own chat template and special tokens, and a ``Gemma3Processor`` whose
  ``image_seq_length`` equals ``mm_tokens_per_image``.

Weights are random: the tiny model answers nonsense (greedy decoding usually repeats one token and
never emits an end-of-turn). It exists to check shapes, positions and equalities against
transformers' own eager attention, never to check medical behaviour.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from cxr_attention.models.gemma3 import MM_TOKENS_PER_IMAGE, gemma3_config, reinit_projector

__all__ = [
    "CHAT_TEMPLATE",
    "TINY_SLIDING_WINDOW",
    "TINY_TEXT_LAYERS",
    "TINY_TEXT_OPTIONS",
    "build_tiny_model",
    "build_tiny_processor",
    "build_tiny_tokenizer",
    "tiny_config",
    "tiny_token_ids",
]

# Gemma 3's chat template, as published in google/gemma-3-4b-it's and google/medgemma-4b-it's
# tokenizer configuration. An image item renders as ``<start_of_image>``, which the processor then
# expands into ``\n\n<start_of_image>`` + 256 soft tokens + ``<end_of_image>\n\n``.
CHAT_TEMPLATE = (
    "{{ bos_token }}\n"
    "{%- if messages[0]['role'] == 'system' -%}\n"
    "    {%- if messages[0]['content'] is string -%}\n"
    "        {%- set first_user_prefix = messages[0]['content'] + '\\n\\n' -%}\n"
    "    {%- else -%}\n"
    "        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\\n\\n' -%}\n"
    "    {%- endif -%}\n"
    "    {%- set loop_messages = messages[1:] -%}\n"
    "{%- else -%}\n"
    '    {%- set first_user_prefix = "" -%}\n'
    "    {%- set loop_messages = messages -%}\n"
    "{%- endif -%}\n"
    "{%- for message in loop_messages -%}\n"
    "    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}\n"
    '        {{ raise_exception("Conversation roles must alternate '
    'user/assistant/user/assistant/...") }}\n'
    "    {%- endif -%}\n"
    "    {%- if (message['role'] == 'assistant') -%}\n"
    '        {%- set role = "model" -%}\n'
    "    {%- else -%}\n"
    "        {%- set role = message['role'] -%}\n"
    "    {%- endif -%}\n"
    "    {{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else \"\") }}\n"
    "    {%- if message['content'] is string -%}\n"
    "        {{ message['content'] | trim }}\n"
    "    {%- elif message['content'] is iterable -%}\n"
    "        {%- for item in message['content'] -%}\n"
    "            {%- if item['type'] == 'image' -%}\n"
    "                {{ '<start_of_image>' }}\n"
    "            {%- elif item['type'] == 'text' -%}\n"
    "                {{ item['text'] | trim }}\n"
    "            {%- endif -%}\n"
    "        {%- endfor -%}\n"
    "    {%- else -%}\n"
    '        {{ raise_exception("Invalid content type") }}\n'
    "    {%- endif -%}\n"
    "    {{ '<end_of_turn>\\n' }}\n"
    "{%- endfor -%}\n"
    "{%- if add_generation_prompt -%}\n"
    "    {{'<start_of_turn>model\\n'}}\n"
    "{%- endif -%}\n"
)

# Gemma's order for the first ids (pad 0, eos 1, bos 2, unk 3, mask 4), then the chat and image
# markers. The real vocabulary places the image markers elsewhere (255999, 256000, 262144); code
# must read every id from the config or tokenizer, never assume it.
SPECIAL_TOKENS = [
    "<pad>",
    "<eos>",
    "<bos>",
    "<unk>",
    "<mask>",
    "<start_of_turn>",
    "<end_of_turn>",
    "<start_of_image>",
    "<end_of_image>",
    "<image_soft_token>",
]
BYTE_TOKENS = [f"<0x{value:02X}>" for value in range(256)]
# Learned sub-words on top of the specials and the 256 byte-fallback tokens: small on purpose, so
# that long medical words stay split into pieces.
TINY_LEARNED_VOCAB = 420

TINY_SLIDING_WINDOW = 512
TINY_IMAGE_SIZE = 448

_FINDINGS = [
    ("atelectasis", "a collapsed part of the lung"),
    ("cardiomegaly", "an enlarged heart"),
    ("consolidation", "a dense area in the lung"),
    ("edema", "fluid in the lungs"),
    ("enlarged cardiomediastinum", "a widened middle of the chest"),
    ("fracture", "a broken bone"),
    ("lung lesion", "a spot on the lung"),
    ("lung opacity", "a cloudy area in the lung"),
    ("pleural effusion", "fluid around the lungs"),
    ("pleural other", "another problem of the lung lining"),
    ("pneumonia", "a lung infection"),
    ("pneumothorax", "a collapsed lung with air around it"),
    ("support devices", "tubes or wires"),
    ("no finding", "a normal chest"),
]
_QUESTION_FORMS = [
    "Is there {t}?",
    "Is there any {t} in this chest X-ray?",
    "Does the image show {t}?",
    "Can you see {t} on this radiograph?",
]
_ANSWERS = [
    "Yes, there is {t}.",
    "No, there is no {t}.",
    "yes",
    "no",
    "Based on the chest X-ray provided, there is no clear evidence of {t}.",
    "The findings are consistent with {t}.",
    "There may be {t}, but it is uncertain.",
    "The lungs are clear. No.",
    "Yes. The heart size is normal.",
]


def _training_corpus() -> list[str]:
    """Deterministic radiology question/answer lines that the tiny tokenizer is trained on."""
    lines = []
    for technical, plain in _FINDINGS:
        for term in (technical, plain):
            article = "" if technical == "no finding" else "a "
            for form in _QUESTION_FORMS:
                lines.append(form.format(t=term))
            for answer in _ANSWERS:
                lines.append(answer.format(t=f"{article}{term}" if term == technical else term))
    lines += [
        # The chat template's role names, each followed by a newline.
        "user\n",
        "model\n",
        "user\nmodel\n",
        "You are an expert radiologist.",
        "Answer yes or no. Yes or no?",
        "The chest X-ray shows the lungs, the heart, the ribs and the diaphragm.",
        "Frontal view of the chest. The patient is upright.",
        "Left lower lobe and right upper lobe, left and right lung bases and apices.",
    ]
    return lines


def build_tiny_tokenizer():
    """Train the tiny BPE vocabulary and wrap it in transformers' ``GemmaTokenizer``.

    The trainer sees the corpus with spaces replaced by ``▁`` and split before each ``▁`` (words
    keep their leading space marker, as in SentencePiece). The resulting ``GemmaTokenizer`` uses
    Gemma's own normalizer, byte fallback and decoder.

    Returns
    -------
    transformers.GemmaTokenizer
    """
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import AddedToken, GemmaTokenizer

    trainer_tokenizer = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    trainer_tokenizer.normalizer = normalizers.Replace(" ", "▁")
    trainer_tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split("▁", behavior="merged_with_next"),
            pre_tokenizers.Split(Regex(r"[\n.,?!:;\-]"), behavior="isolated"),
        ]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=TINY_LEARNED_VOCAB,
        min_frequency=2,
        show_progress=False,
        special_tokens=[],
    )
    trainer_tokenizer.train_from_iterator(_training_corpus(), trainer=trainer)
    trained = json.loads(trainer_tokenizer.to_str())["model"]

    vocab: dict[str, int] = {}
    for token in [*SPECIAL_TOKENS, *BYTE_TOKENS]:
        vocab[token] = len(vocab)
    for token, _ in sorted(trained["vocab"].items(), key=lambda item: item[1]):
        vocab.setdefault(token, len(vocab))
    merges = [
        tuple(pair) if isinstance(pair, list) else tuple(pair.split(" "))
        for pair in trained["merges"]
    ]

    tokenizer = GemmaTokenizer(
        vocab=vocab,
        merges=merges,
        extra_special_tokens={
            "boi_token": "<start_of_image>",
            "eoi_token": "<end_of_image>",
            "image_token": "<image_soft_token>",
        },
    )
    # The chat and image markers must never be split into sub-words: make them added tokens (they
    # keep the ids they already have in the vocabulary).
    tokenizer.add_tokens(
        [AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS[5:]],
        special_tokens=True,
    )
    return tokenizer


TINY_TEXT_LAYERS = 6
#: The tiny language model's sizes (``Gemma3TextConfig`` arguments besides the shared traits).
TINY_TEXT_OPTIONS = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "head_dim": 16,
    # Gemma 3 scales attention logits by query_pre_attn_scalar ** -0.5 with the scalar equal to
    # head_dim (256 in MedGemma), which keeps the tiny model's attention far from uniform.
    "query_pre_attn_scalar": 16,
    "sliding_window": TINY_SLIDING_WINDOW,
    "max_position_embeddings": 4096,
    # Ten times Gemma's 0.02: with 64-wide layers this keeps hidden states, and so attention rows,
    # clearly input-dependent instead of near-uniform (a sharper test of column order).
    "initializer_range": 0.2,
}


def tiny_config(vocab_size: int, token_ids: dict[str, int]):
    """The tiny model's ``Gemma3Config``.

    Parameters
    ----------
    vocab_size : int
        Size of the tokenizer's vocabulary (the embedding rows).
    token_ids : dict
        Ids of ``<pad>``, ``<eos>``, ``<bos>``, ``<start_of_image>``, ``<end_of_image>`` and
        ``<image_soft_token>`` in that vocabulary.

    Returns
    -------
    transformers.Gemma3Config
    """
    return gemma3_config(
        vocab_size=vocab_size,
        token_ids=token_ids,
        num_text_layers=TINY_TEXT_LAYERS,
        text_options=TINY_TEXT_OPTIONS,
        vision_options={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "image_size": TINY_IMAGE_SIZE,
        },
    )


def build_tiny_processor(tokenizer=None, *, image_size: int = TINY_IMAGE_SIZE):
    """A ``Gemma3Processor`` with the tiny tokenizer and MedGemma's image preprocessing.

    Parameters
    ----------
    tokenizer : GemmaTokenizer, optional
        Defaults to `build_tiny_tokenizer`'s.
    image_size : int
        Square side the images are resized to (448 for the tiny model, 896 for MedGemma).

    Returns
    -------
    transformers.Gemma3Processor
        ``image_seq_length`` 256; mean and std 0.5 (MedGemma's ``preprocessor_config.json``).
    """
    from transformers import Gemma3ImageProcessorPil, Gemma3Processor

    image_processor = Gemma3ImageProcessorPil(
        size={"height": image_size, "width": image_size},
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
        resample=2,  # bilinear, as MedGemma's preprocessor_config.json
        do_convert_rgb=True,
    )
    return Gemma3Processor(
        image_processor=image_processor,
        tokenizer=tokenizer if tokenizer is not None else build_tiny_tokenizer(),
        chat_template=CHAT_TEMPLATE,
        image_seq_length=MM_TOKENS_PER_IMAGE,
    )


def tiny_token_ids(tokenizer=None) -> dict[str, int]:
    """Ids of the special tokens in the tiny vocabulary (keys: the token strings)."""
    tokenizer = tokenizer if tokenizer is not None else build_tiny_tokenizer()
    return {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}


def build_tiny_model(out_dir: str | os.PathLike, *, seed: int) -> Path:
    """Build the tiny model folder: same bytes on every build with the same seed.

    Parameters
    ----------
    out_dir : path
        Destination folder (created; existing files of the same names are replaced).
    seed : int
        Seed of the random weights (the study's ``seed``).

    Returns
    -------
    Path
        ``out_dir``, loadable with ``AutoProcessor.from_pretrained`` and
        ``AutoModelForImageTextToText.from_pretrained`` like ``google/medgemma-4b-it``.
    """
    from transformers import Gemma3ForConditionalGeneration, GenerationConfig

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    tokenizer = build_tiny_tokenizer()
    token_ids = tiny_token_ids(tokenizer)
    config = tiny_config(len(tokenizer), token_ids)

    torch.manual_seed(seed)
    model = Gemma3ForConditionalGeneration(config).eval()
    reinit_projector(model, torch.Generator().manual_seed(seed + 1))
    # MedGemma's generation config samples by default (top-k 64, top-p 0.95): the tiny model keeps
    # that trap so that the study's code must ask for greedy decoding explicitly.
    model.generation_config = GenerationConfig(
        bos_token_id=token_ids["<bos>"],
        eos_token_id=[token_ids["<eos>"], token_ids["<end_of_turn>"]],
        pad_token_id=token_ids["<pad>"],
        do_sample=True,
        top_k=64,
        top_p=0.95,
    )
    model.save_pretrained(out_dir, safe_serialization=True)

    processor = build_tiny_processor(tokenizer)
    processor.save_pretrained(out_dir)
    return out_dir
