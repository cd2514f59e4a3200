"""Term location by text offsets, on two tokenizers with different decoders.

The oracle for every match is the tokenizer itself: decoding the matched tokens must give text
that contains the term, and the number of matches must equal the number of occurrences a plain
regular expression finds in the source text.
"""

from __future__ import annotations

import re

import pytest

from cxr_attention.maps.terms import (
    _decode_prefixes,
    decode_with_offsets,
    find_term_positions,
    find_terms_in_text,
    term_pattern,
)

CORPUS = [
    "Is there a pleural effusion? No pleural effusion is seen.",
    "Effusions are absent. The effusion is small.",
    "Is there a pneumothorax or a mass? The heart is massive.",
    "Frontal view of the chest. The lungs are clear.",
]


@pytest.fixture(scope="module")
def gemma_like_tokenizer():
    """The tiny model's tokenizer: SentencePiece-style ``▁`` pieces with byte fallback."""
    from cxr_attention.models.tiny import build_tiny_tokenizer

    return build_tiny_tokenizer()


@pytest.fixture(scope="module")
def byte_level_tokenizer():
    """A GPT-2-style byte-level BPE (``Ġ`` space marker), trained on a few lines."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=["<bos>"],
    )
    tokenizer.train_from_iterator(CORPUS * 3, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<bos>")


TOKENIZERS = ["gemma_like_tokenizer", "byte_level_tokenizer"]


def _ids(tokenizer, text):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


@pytest.mark.parametrize("name", TOKENIZERS)
def test_decoded_text_and_spans_cover_the_sequence(name, request):
    tokenizer = request.getfixturevalue(name)
    text = "Effusion, effusions. Pneumothorax è"
    ids = _ids(tokenizer, text)
    decoded, spans = decode_with_offsets(tokenizer, ids)
    assert decoded == tokenizer.decode(ids)
    assert decoded == text
    assert len(spans) == len(ids)
    assert spans[-1][1] == len(decoded)
    assert all(start <= end for start, end in spans)
    # The windowed decoding equals decoding every prefix in full.
    assert (decoded, spans) == _decode_prefixes(tokenizer, ids)


@pytest.mark.parametrize("name", TOKENIZERS)
@pytest.mark.parametrize(
    ("text", "term", "expected"),
    [
        # every occurrence, any case, plural counts, inside another word does not
        ("Effusion, effusions. No pleural effusion; noneffusion.", "effusion", 3),
        # 'mass' is not inside 'massive'
        ("Is there a mass? The heart is massive.", "mass", 1),
        # multi-word term across a line break
        ("A pleural\neffusion and a Pleural effusion.", "pleural effusion", 2),
        ("The lungs are clear.", "effusion", 0),
    ],
)
def test_every_occurrence_is_found_and_decodes_to_the_term(name, request, text, term, expected):
    tokenizer = request.getfixturevalue(name)
    ids = _ids(tokenizer, text)
    matches = find_term_positions(tokenizer, ids, [term])
    assert len(matches) == expected
    assert len(matches) == len(term_pattern(term).findall(text))
    words = term.lower().split()
    for match in matches:
        piece = tokenizer.decode([ids[p] for p in match.token_positions]).lower()
        assert re.search(r"\s+".join(words), piece), (piece, term)
        assert list(match.token_positions) == list(
            range(match.token_positions[0], match.token_positions[-1] + 1)
        )


def test_a_word_split_into_several_tokens_maps_to_all_of_them(gemma_like_tokenizer):
    tokenizer = gemma_like_tokenizer
    ids = _ids(tokenizer, "Effusion and effusion")
    pieces = tokenizer.convert_ids_to_tokens(ids)
    # The capitalised word is byte-fallback 'E' + 'ff' + 'usion'; the lower-case one a single
    # '▁effusion' piece: a single id sequence could never find both.
    assert pieces[:3] == ["<0x45>", "ff", "usion"]
    matches = find_term_positions(tokenizer, ids, ["EFFUSION"])
    assert [m.token_positions for m in matches] == [(0, 1, 2), (pieces.index("▁effusion"),)]
    assert [m.term for m in matches] == ["EFFUSION", "EFFUSION"]


def test_synonyms_and_overlapping_terms_are_all_reported(gemma_like_tokenizer):
    tokenizer = gemma_like_tokenizer
    ids = _ids(tokenizer, "Is there fluid or a pleural effusion?")
    matches = find_term_positions(tokenizer, ids, ["effusion", "fluid", "pleural effusion"])
    assert [m.term for m in matches] == ["fluid", "pleural effusion", "effusion"]
    pleural, effusion = matches[1], matches[2]
    assert set(effusion.token_positions) < set(pleural.token_positions)


def test_term_inside_special_tokens_is_not_matched(tiny_model_dir):
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Any image?"}]}
    ]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    ids = processor.tokenizer(text, add_special_tokens=False)["input_ids"]
    # '<start_of_image>' holds 'image' after '_': not a word start. Only the question's word counts.
    matches = find_term_positions(processor.tokenizer, ids, ["image"])
    assert len(matches) == 1
    assert processor.tokenizer.decode([ids[p] for p in matches[0].token_positions]).strip() == (
        "image"
    )


def test_multibyte_characters_next_to_a_term_keep_offsets_right(gemma_like_tokenizer):
    tokenizer = gemma_like_tokenizer
    text = "è effusion è"
    ids = _ids(tokenizer, text)
    matches = find_term_positions(tokenizer, ids, ["effusion"])
    assert len(matches) == 1
    assert text[matches[0].start_char : matches[0].end_char] == "effusion"


def test_text_matching_without_a_tokenizer():
    text = "no Effusion's here"
    spans = [(0, 2), (2, 11), (11, 13), (13, 18)]
    (match,) = find_terms_in_text(text, spans, ["effusion", "Effusion"])  # case-duplicate once
    assert (match.start_char, match.end_char, match.token_positions) == (3, 13, (1, 2))
    with pytest.raises(ValueError, match="empty term"):
        term_pattern("  ")
