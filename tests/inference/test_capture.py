"""Attention capture against transformers' own eager ``output_attentions`` (the oracle)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from inference_helpers import capture_answers, capture_images
from PIL import Image

from cxr_attention.attention_hooks import last_layers
from cxr_attention.inference.capture import PromptTooLongError
from cxr_attention.inference.prompting import build_inputs
from cxr_attention.inference.writing import capture_arrays

QUESTIONS = [
    "Is there a pleural effusion?",
    "Is there fluid around the lungs in this chest X-ray, on the left or on the right?",
    "Cardiomegaly?",
]
NEW_TOKENS = 4


@pytest.fixture(scope="module")
def processor(tiny_model_dir):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(tiny_model_dir)


def _load(folder, implementation, dtype=torch.float32):
    from transformers import AutoModelForImageTextToText

    return AutoModelForImageTextToText.from_pretrained(
        folder, attn_implementation=implementation, dtype=dtype, use_safetensors=True
    ).eval()


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    return _load(tiny_model_dir, "sdpa")


@pytest.fixture(scope="module")
def eager_model(tiny_model_dir):
    return _load(tiny_model_dir, "eager")


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(7)
    return Image.fromarray(rng.integers(0, 256, (160, 130), dtype=np.uint8))


def _eager_reference(eager_model, processor, image, questions, image_first, layers=None):
    """Generate with eager attention and output_attentions; return per-sample oracle arrays."""
    inputs = build_inputs(processor, image, questions, image_first=image_first)
    out = eager_model.generate(
        **inputs,
        max_new_tokens=NEW_TOKENS,
        do_sample=False,
        output_attentions=True,
        return_dict_in_generate=True,
    )
    steps = out.attentions
    assert len(steps) == NEW_TOKENS and len(steps[0]) == 6
    assert steps[0][0].shape[-1] > 0, "eager attentions came back empty"
    layers = last_layers(eager_model, 3) if layers is None else layers
    image_id = eager_model.config.image_token_id
    references = []
    for row in range(len(questions)):
        prompt_cols = torch.nonzero(inputs["attention_mask"][row]).flatten()
        ids = inputs["input_ids"][row, prompt_cols]
        image_cols = prompt_cols[ids == image_id]
        generated_rows = []  # per layer: (heads, steps, kv) with the kv of the longest step
        for layer in layers:
            per_step = [steps[0][layer][row, :, -1, :]]
            per_step += [steps[k][layer][row, :, 0, :] for k in range(1, NEW_TOKENS)]
            width = per_step[-1].shape[-1]
            per_step = [torch.nn.functional.pad(r, (0, width - r.shape[-1])) for r in per_step]
            generated_rows.append(torch.stack(per_step, dim=1))
        generated_rows = torch.stack(generated_rows)  # (layers, heads, steps, kv)
        text = generated_rows[..., prompt_cols].clone()
        text[..., ids == image_id] = 0
        prompt_image = torch.stack(
            [steps[0][layer][row][:, prompt_cols][:, :, image_cols] for layer in layers]
        )
        references.append(
            {
                "input_ids": ids.numpy(),
                "generated_ids": out.sequences[row, inputs["input_ids"].shape[1] :].numpy(),
                "attention": generated_rows[..., image_cols].numpy(),
                "text_attention": text.numpy(),
                "prompt_image_attention": prompt_image.numpy(),
            }
        )
    return references


def _assert_matches(capture, reference, tolerance=1e-5):
    np.testing.assert_array_equal(capture.input_ids, reference["input_ids"])
    np.testing.assert_array_equal(capture.generated_ids, reference["generated_ids"])
    for key in ("attention", "text_attention", "prompt_image_attention"):
        got = getattr(capture, key)
        assert got.dtype == np.float32
        assert got.shape == reference[key].shape, key
        assert np.abs(got - reference[key]).max() <= tolerance, key


@pytest.mark.parametrize("image_first", [False, True])
def test_single_question_equals_eager_output_attentions(
    model, eager_model, processor, image, image_first
):
    (capture,) = capture_answers(
        model,
        processor,
        image,
        QUESTIONS[:1],
        image_first=image_first,
        max_new_tokens=NEW_TOKENS,
        share=False,
    )
    (reference,) = _eager_reference(eager_model, processor, image, QUESTIONS[:1], image_first)
    _assert_matches(capture, reference)
    assert capture.attention.shape == (3, 8, NEW_TOKENS, 256)
    # Row 0 attends only to the prompt: image mass + other prompt mass is the whole row.
    row0 = capture.attention[:, :, 0].sum(-1) + capture.text_attention[:, :, 0].sum(-1)
    np.testing.assert_allclose(row0, 1.0, atol=1e-5)
    # Image tokens come from input_ids, and are where the processor put them.
    positions = np.flatnonzero(capture.input_ids == model.config.image_token_id)
    np.testing.assert_array_equal(capture.image_token_positions, positions)


def test_listed_layers_reach_the_last_global_layer_and_equal_eager_attentions(
    model, eager_model, processor, image
):
    """``inference.layers`` as a list: any layers, e.g. a global one below sliding ones."""
    types = model.config.get_text_config().layer_types
    last_global = max(i for i, kind in enumerate(types) if kind == "full_attention")
    listed = [last_global, 1]  # unsorted on purpose: the capture keeps decoder order
    (capture,) = capture_answers(
        model,
        processor,
        image,
        QUESTIONS[:1],
        layers=listed,
        image_first=False,
        max_new_tokens=NEW_TOKENS,
    )
    assert capture.layers.tolist() == sorted(listed)
    (reference,) = _eager_reference(
        eager_model, processor, image, QUESTIONS[:1], False, layers=sorted(listed)
    )
    _assert_matches(capture, reference)
    for bad in ([1, 1], [len(types)], []):
        with pytest.raises(ValueError, match=r"inference\.layers"):
            capture_answers(model, processor, image, QUESTIONS[:1], layers=bad, image_first=False)


def test_left_padded_batch_equals_eager_output_attentions(model, eager_model, processor, image):
    questions = QUESTIONS[:2]  # lengths differ: the shorter prompt is left-padded
    captures = capture_answers(
        model,
        processor,
        image,
        questions,
        image_first=False,
        max_new_tokens=NEW_TOKENS,
        batch_size=2,
        share=False,
    )
    references = _eager_reference(eager_model, processor, image, questions, False)
    assert len(references[0]["input_ids"]) != len(references[1]["input_ids"])
    for capture, reference in zip(captures, references, strict=True):
        _assert_matches(capture, reference)


@pytest.mark.parametrize("image_first", [True, False])
def test_shared_batched_equals_one_question_at_a_time(model, processor, image, image_first):
    alone = [
        capture_answers(
            model,
            processor,
            image,
            [q],
            image_first=image_first,
            max_new_tokens=NEW_TOKENS,
            share=False,
        )[0]
        for q in QUESTIONS
    ]
    shared = capture_answers(
        model,
        processor,
        image,
        QUESTIONS,
        image_first=image_first,
        max_new_tokens=NEW_TOKENS,
        batch_size=2,
        share=True,
    )
    for one, many in zip(alone, shared, strict=True):
        np.testing.assert_array_equal(one.input_ids, many.input_ids)
        np.testing.assert_array_equal(one.generated_ids, many.generated_ids)
        assert one.generated_text == many.generated_text
        assert abs(one.p_yes - many.p_yes) <= 1e-5
        for key in ("attention", "text_attention", "prompt_image_attention"):
            assert np.abs(getattr(one, key) - getattr(many, key)).max() <= 1e-5, key
    if image_first:  # the prefix's prompt rows are one array for the whole image, not copies
        assert len({id(c.prompt_image_parts[0]) for c in shared[:2]}) == 1


@pytest.mark.parametrize("image_first", [True, False])
def test_several_images_per_batch_equal_each_question_alone(model, processor, image, image_first):
    """Batches that span images (4 rows over 2 images of 3 questions) give every row its own
    image: captures equal one-question-at-a-time ones, pixels included."""
    other = Image.fromarray(np.random.default_rng(8).integers(0, 256, (90, 120), dtype=np.uint8))
    requests = [(image, QUESTIONS), (other, QUESTIONS[::-1])]
    together = capture_images(
        model,
        processor,
        requests,
        image_first=image_first,
        max_new_tokens=NEW_TOKENS,
        batch_size=4,
        include_pixel_values=True,
    )
    assert [c.question for c in together] == QUESTIONS + QUESTIONS[::-1]
    alone = [
        capture_answers(
            model,
            processor,
            picture,
            [question],
            image_first=image_first,
            max_new_tokens=NEW_TOKENS,
            share=False,
            include_pixel_values=True,
        )[0]
        for picture, questions in requests
        for question in questions
    ]
    for one, many in zip(alone, together, strict=True):
        np.testing.assert_array_equal(one.input_ids, many.input_ids)
        np.testing.assert_array_equal(one.generated_ids, many.generated_ids)
        np.testing.assert_array_equal(one.pixel_values, many.pixel_values)
        assert abs(one.p_yes - many.p_yes) <= 1e-5
        for key in ("attention", "text_attention", "prompt_image_attention"):
            assert np.abs(getattr(one, key) - getattr(many, key)).max() <= 1e-5, key
    assert not np.array_equal(together[0].pixel_values, together[-1].pixel_values)
    assert np.abs(together[0].attention - together[-1].attention).max() > 1e-3  # images differ


def _eager_image_norms(eager_model, processor, image, question, image_first, layers):
    """The oracle: the eager model's own ``output_hidden_states`` for one unpadded prompt;
    ``hidden_states[L]`` enters decoder layer L. Norms at the image tokens, (layers, 256)."""
    inputs = build_inputs(processor, image, question, image_first=image_first)
    with torch.no_grad():
        hidden = eager_model(**inputs, output_hidden_states=True, use_cache=False).hidden_states
    at_image = inputs["input_ids"][0] == eager_model.config.image_token_id
    return np.stack([hidden[layer][0, at_image].norm(dim=-1).numpy() for layer in layers])


@pytest.mark.parametrize(
    ("image_first", "share", "compact"),
    [
        (True, True, True),  # the shared image prefix's pass
        (False, True, True),  # question first: the prompt pass, the vision features shared
        (True, False, True),  # every row from its pixels
        (True, True, False),  # transformers' generate instead of the compacting decoder
        (False, False, False),
    ],
)
def test_image_hidden_norms_equal_eager_hidden_states(
    model, eager_model, processor, image, image_first, share, compact
):
    """Batches of 4 rows spanning two images; layers 0 (the scaled embeddings), 2 and 5."""
    other = Image.fromarray(np.random.default_rng(8).integers(0, 256, (90, 120), dtype=np.uint8))
    requests = [(image, QUESTIONS), (other, QUESTIONS[::-1])]
    layers = [0, 2, 5]
    captures = capture_images(
        model,
        processor,
        requests,
        image_first=image_first,
        share=share,
        compact_finished_rows=compact,
        layers=layers,
        max_new_tokens=NEW_TOKENS,
        batch_size=4,
    )
    asked = [(picture, question) for picture, questions in requests for question in questions]
    for capture, (picture, question) in zip(captures, asked, strict=True):
        expected = _eager_image_norms(
            eager_model, processor, picture, question, image_first, layers
        )
        assert capture.image_hidden_norms.dtype == np.float32
        assert capture.image_hidden_norms.shape == (3, 256)
        np.testing.assert_allclose(capture.image_hidden_norms, expected, rtol=1e-5, atol=1e-5)
        written = capture_arrays(capture)["image_hidden_norms"]
        np.testing.assert_array_equal(written, capture.image_hidden_norms)
    # the images differ, so do their norms (a row given another row's image would fail above)
    assert np.abs(captures[0].image_hidden_norms - captures[-1].image_hidden_norms).max() > 1e-3


def test_chosen_prompt_rows_equal_those_of_the_joined_array(model, processor, image):
    captures = capture_answers(
        model, processor, image, QUESTIONS, image_first=True, max_new_tokens=2, batch_size=3
    )
    for capture in captures:
        assert len(capture.prompt_image_parts) == 2  # shared prefix, then the question's own
        joined = capture.prompt_image_attention
        assert joined.shape[2] == len(capture.input_ids)
        text_rows = np.setdiff1d(np.arange(joined.shape[2]), capture.image_token_positions)
        for rows in (text_rows, [0, joined.shape[2] - 1], capture.image_token_positions[:3]):
            np.testing.assert_array_equal(capture.prompt_image_rows(rows), joined[:, :, rows])


def test_prompt_longer_than_a_captured_sliding_window_is_refused(tiny_model_dir, processor, image):
    from transformers import AutoConfig, AutoModelForImageTextToText

    config = AutoConfig.from_pretrained(tiny_model_dir)
    config.text_config.sliding_window = 200  # shorter than the ~280-token prompts
    short_window = AutoModelForImageTextToText.from_pretrained(
        tiny_model_dir, config=config, use_safetensors=True
    ).eval()
    with pytest.raises(PromptTooLongError, match="sliding window"):
        capture_answers(
            short_window,
            processor,
            image,
            QUESTIONS[:1],
            image_first=True,
            max_new_tokens=2,
            layers=3,
        )
    # The last layer is a full-attention layer: capturing it alone is safe.
    last = config.text_config.num_hidden_layers - 1
    assert config.text_config.layer_types[last] == "full_attention"
    (capture,) = capture_answers(
        short_window,
        processor,
        image,
        QUESTIONS[:1],
        image_first=True,
        max_new_tokens=2,
        layers=[last],
    )
    assert capture.attention.shape == (1, 8, 2, 256)


def test_bfloat16_model_gives_float32_probabilities(tiny_model_dir, model, processor, image):
    bf16 = _load(tiny_model_dir, "sdpa", dtype=torch.bfloat16)
    (low,) = capture_answers(
        bf16, processor, image, QUESTIONS[:1], image_first=True, max_new_tokens=1
    )
    (high,) = capture_answers(
        model, processor, image, QUESTIONS[:1], image_first=True, max_new_tokens=1
    )
    assert low.attention.dtype == np.float32
    assert np.abs(low.attention - high.attention).max() < 0.05
    np.testing.assert_allclose(
        low.attention[:, :, 0].sum(-1) + low.text_attention[:, :, 0].sum(-1), 1.0, atol=1e-5
    )


@pytest.mark.parametrize("image_first", [True, False])
def test_prompt_ids_without_pixels_equal_the_processor_ids(processor, image, image_first):
    from cxr_attention.inference.prompting import prompt_token_ids, render_prompts

    questions = [
        *QUESTIONS,
        "  Is there an effusion?\nAnswer yes or no.  ",
        "Épanchement pleural ? (±)",
    ]
    prompts = render_prompts(processor, questions, image_first=image_first)
    for question, got in zip(questions, prompt_token_ids(processor, prompts), strict=True):
        expected = build_inputs(processor, image, question, image_first=image_first)
        assert torch.equal(got, expected["input_ids"][0]), question


def test_sliding_window_boundary(tiny_model_dir, model, processor, image):
    """A window exactly as long as prompt + new tokens - 1 captures; one token less is refused."""
    from transformers import AutoConfig, AutoModelForImageTextToText

    (reference,) = capture_answers(
        model, processor, image, QUESTIONS[:1], image_first=True, max_new_tokens=NEW_TOKENS
    )
    needed = len(reference.input_ids) + NEW_TOKENS - 1
    for window, fits in ((needed, True), (needed - 1, False)):
        config = AutoConfig.from_pretrained(tiny_model_dir)
        config.text_config.sliding_window = window
        windowed = AutoModelForImageTextToText.from_pretrained(
            tiny_model_dir, config=config, use_safetensors=True
        ).eval()

        def run(m=windowed):
            return capture_answers(
                m, processor, image, QUESTIONS[:1], image_first=True, max_new_tokens=NEW_TOKENS
            )

        if fits:
            (capture,) = run()
            np.testing.assert_array_equal(capture.generated_ids, reference.generated_ids)
            assert np.abs(capture.attention - reference.attention).max() <= 1e-5
        else:
            with pytest.raises(PromptTooLongError):
                run()


def test_generation_stops_at_end_of_turn_and_keeps_its_row(tiny_model_dir, processor, image):
    """The row that produced the end token is kept; rows after it are not."""
    fresh = _load(tiny_model_dir, "sdpa")
    (free,) = capture_answers(
        fresh, processor, image, QUESTIONS[:1], image_first=True, max_new_tokens=NEW_TOKENS
    )
    # Declare the second generated token an end token (the random model never emits one).
    stop = int(free.generated_ids[1])
    fresh.generation_config.eos_token_id = [stop]
    (stopped,) = capture_answers(
        fresh, processor, image, QUESTIONS[:1], image_first=True, max_new_tokens=NEW_TOKENS
    )
    n = int(np.flatnonzero(free.generated_ids == stop)[0]) + 1
    np.testing.assert_array_equal(stopped.generated_ids, free.generated_ids[:n])
    assert stopped.attention.shape[2] == stopped.text_attention.shape[2] == n
    np.testing.assert_allclose(stopped.attention, free.attention[:, :, :n], atol=1e-6)


@pytest.mark.parametrize(("image_first", "share"), [(True, True), (False, True), (True, False)])
def test_text_prompt_rows_are_the_rows_after_the_image_of_a_whole_capture(
    model, processor, image, image_first, share
):
    """Computing only the prompt rows after the image changes nothing else: those rows equal the
    whole capture's, and so do answers and every other array."""

    options = dict(image_first=image_first, max_new_tokens=NEW_TOKENS, batch_size=2, share=share)
    whole = capture_answers(model, processor, image, QUESTIONS, **options)
    text = capture_answers(model, processor, image, QUESTIONS, prompt_image_rows="text", **options)
    for full, part in zip(whole, text, strict=True):
        after_image = int(full.image_token_positions.max()) + 1
        assert part.prompt_image_start == after_image and full.prompt_image_start == 0
        np.testing.assert_array_equal(
            part.prompt_image_positions, np.arange(after_image, len(full.input_ids))
        )
        np.testing.assert_allclose(
            part.prompt_image_attention, full.prompt_image_attention[:, :, after_image:], atol=1e-6
        )
        np.testing.assert_array_equal(part.generated_ids, full.generated_ids)
        assert part.p_yes == full.p_yes
        for key in ("attention", "text_attention"):
            np.testing.assert_array_equal(getattr(part, key), getattr(full, key))
        with pytest.raises(ValueError, match="were not captured"):
            part.prompt_image_rows([after_image - 1])
        # Written as the workflow writes them, the two captures give the same arrays; the rows
        # that were not captured cannot be written.
        written, expected = (
            capture_arrays(part, prompt_image_rows="text"),
            capture_arrays(full, prompt_image_rows="text"),
        )
        assert written.keys() == expected.keys()
        for key, array in written.items():
            if array.dtype.kind == "f":  # float16: equal float32 values may round one ulp apart
                np.testing.assert_allclose(array, expected[key], atol=1e-3, err_msg=key)
            else:
                np.testing.assert_array_equal(array, expected[key], err_msg=key)
        with pytest.raises(ValueError, match="were not captured"):
            capture_arrays(part, prompt_image_rows="all")
        # Without a choice, a capture writes the rows it holds.
        np.testing.assert_array_equal(
            capture_arrays(part)["prompt_image_positions"], part.prompt_image_positions
        )
    # With the question first only the turn's end follows the image; image first, the question.
    kept_tokens = "".join(text[0].input_tokens[p] for p in text[0].prompt_image_positions)
    assert ("effusion" in kept_tokens) == image_first
    with pytest.raises(ValueError, match="prompt_image_rows"):
        capture_answers(model, processor, image, QUESTIONS, prompt_image_rows="some", **options)
