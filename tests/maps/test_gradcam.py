"""Grad-CAM on the vision tower: captum's LayerGradCam as the oracle, no parameter gradients, hook
release, projector pooling, a planted case and activation norms."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from maps_helpers import (
    linearise_vision_tower,
    load_tiny,
    marked_pixels,
    model_inputs_from_capture,
    prompt_inputs,
)
from torch import nn

from cxr_attention.geometry import pool_patches_to_grid
from cxr_attention.maps.activation import activation_norm_grid, activation_norm_map
from cxr_attention.maps.gradcam import TokenLogitsTarget, VisionGradCAM, teacher_forcing
from cxr_attention.maps.grid import MapUnavailable, normalise_map
from cxr_attention.maps.hooks import (
    LayerActivations,
    VisionEncodings,
    vision_layers,
)

CELLS = [(1, 12), (1, 13), (9, 2), (14, 7)]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return load_tiny(tiny_model_dir, eager=False)


@pytest.fixture(scope="module")
def prompt(tiny):
    _, processor = tiny
    inputs = prompt_inputs(processor, "Is there a pleural effusion?")
    return inputs["input_ids"][0].numpy(), inputs["pixel_values"]


class _ChannelsFirst(nn.Module):
    """Identity seen by captum as a (B, channels, patches) layer: captum pools over dims >= 2."""

    def forward(self, hidden):
        return hidden.transpose(1, 2)


class _ExposeChannelsFirst(nn.Module):
    def __init__(self, layer):
        super().__init__()
        self.layer = layer
        self.channels_first = _ChannelsFirst()

    def forward(self, *args, **kwargs):
        return self.channels_first(self.layer(*args, **kwargs)).transpose(1, 2)


def _captum_grid(model, input_ids, pixel_values, following, positions, score=None):
    from captum.attr import LayerGradCam

    model = copy.deepcopy(model)
    layers = model.model.vision_tower.encoder.layers
    layers[-1] = _ExposeChannelsFirst(layers[-1])
    continuation, keep, target = teacher_forcing(following, positions, score)
    inputs = model_inputs_from_capture(model, input_ids, pixel_values, continuation)
    for parameter in model.parameters():
        parameter.requires_grad_(False)

    def score(pixels, ids, mask, token_types):
        out = model(
            pixel_values=pixels,
            input_ids=ids,
            attention_mask=mask,
            token_type_ids=token_types,
            use_cache=False,
            logits_to_keep=keep,
        )
        return target(out.logits).unsqueeze(-1)

    attribution = LayerGradCam(score, layers[-1].channels_first).attribute(
        inputs["pixel_values"],
        target=0,
        additional_forward_args=(
            inputs["input_ids"],
            inputs["attention_mask"],
            inputs["token_type_ids"],
        ),
        relu_attributions=True,
    )
    return pool_patches_to_grid(attribution[0, 0].detach().numpy(), 16)


@pytest.mark.parametrize("cached", [False, True], ids=["tower", "cached_encoding"])
@pytest.mark.parametrize(
    ("following", "positions"), [([300, 301, 302], [1, 2]), ([310], [0]), ([5, 6, 7, 8], [3])]
)
def test_gradcam_equals_captum_layer_gradcam(tiny, prompt, following, positions, cached):
    model, _ = tiny
    input_ids, pixel_values = prompt
    encodings = VisionEncodings() if cached else None
    ours = VisionGradCAM(model, encodings=encodings)(input_ids, pixel_values, following, positions)
    oracle = _captum_grid(model, input_ids, pixel_values, following, positions)
    assert ours.max() > 0
    np.testing.assert_allclose(ours, oracle, rtol=1e-5, atol=1e-7 * ours.max())


def test_no_parameter_gradients_and_hooks_released(tiny, prompt):
    model, _ = tiny
    input_ids, pixel_values = prompt
    flags = [p.requires_grad for p in model.parameters()]
    layer = model.model.vision_tower.encoder.layers[-1]
    VisionGradCAM(model)(input_ids, pixel_values, [300], [0])
    assert all(p.grad is None for p in model.parameters())
    assert [p.requires_grad for p in model.parameters()] == flags
    assert not layer._forward_hooks


def test_teacher_forcing_reads_each_logit_where_it_is_predicted(tiny, prompt):
    model, _ = tiny
    input_ids, pixel_values = prompt
    following = [300, 301, 302, 303]
    continuation, keep, target = teacher_forcing(following, [1, 3])
    assert continuation.tolist() == [300, 301, 302] and keep == 4
    inputs = model_inputs_from_capture(model, input_ids, pixel_values, continuation)
    with torch.no_grad():
        kept = model(**inputs, use_cache=False, logits_to_keep=keep).logits
        full = model(
            **model_inputs_from_capture(model, input_ids, pixel_values, following),
            use_cache=False,
        ).logits
    prompt_len = len(input_ids)
    # Logit predicting following[j] sits at sequence index prompt_len - 1 + j.
    expected = full[0, prompt_len + 0, 301] + full[0, prompt_len + 2, 303]
    assert target(kept).item() == pytest.approx(expected.item(), rel=1e-5)
    assert isinstance(target, TokenLogitsTarget)


def test_planted_gradcam_lands_on_the_marked_patches(tiny_model_dir, prompt):
    """Vision tower reduced to a linear patch read-out: only marked patches carry activation, so
    Grad-CAM can only point there, through the projector's pooling, at the right cells."""
    model, _ = load_tiny(tiny_model_dir, eager=False)
    linearise_vision_tower(model)
    input_ids, _ = prompt
    pixels = marked_pixels(CELLS)
    mask = np.zeros((16, 16), dtype=bool)
    mask[tuple(zip(*CELLS, strict=True))] = True
    found = 0
    # ReLU keeps the classes whose logit rises with the marker; try a few target tokens.
    for token in range(300, 320):
        try:
            grid = normalise_map(VisionGradCAM(model)(input_ids, pixels, [token], [0]))
        except MapUnavailable:
            continue
        found += 1
        assert grid[mask].sum() >= 0.9
    assert found >= 3


def test_pooling_matches_the_projector(tiny):
    model, _ = tiny
    projector = model.model.multi_modal_projector
    patches = torch.randn(1, projector.patches_per_image**2, 3)
    reshaped = patches.transpose(1, 2).reshape(1, 3, projector.patches_per_image, -1)
    pooled = projector.avg_pool(reshaped).flatten(2).transpose(1, 2)  # (1, 256, 3)
    ours = pool_patches_to_grid(patches[0].T.numpy(), 16).reshape(3, 256).T
    np.testing.assert_allclose(ours, pooled[0].numpy(), rtol=1e-5, atol=1e-6)


def test_activation_norm_is_the_pooled_channel_norm(tiny, prompt):
    model, _ = tiny
    _, pixel_values = prompt
    with torch.no_grad():
        hidden = model.model.vision_tower(pixel_values=pixel_values, output_hidden_states=True)
    # hidden_states[i + 1] is encoder layer i's output (hidden_states[0]: embeddings).
    layer_output = hidden.hidden_states[1][0].numpy()
    expected = pool_patches_to_grid(np.linalg.norm(layer_output, axis=-1), 16)
    grid = activation_norm_map(model, pixel_values, layer=0)
    np.testing.assert_allclose(grid, expected / expected.sum(), rtol=1e-5)
    np.testing.assert_allclose(activation_norm_grid(layer_output), expected)


def test_activation_norm_on_planted_patches(tiny_model_dir):
    model, _ = load_tiny(tiny_model_dir, eager=False)
    linearise_vision_tower(model)
    grid = activation_norm_map(model, marked_pixels(CELLS))
    mask = np.zeros((16, 16), dtype=bool)
    mask[tuple(zip(*CELLS, strict=True))] = True
    assert grid[mask].sum() == pytest.approx(1.0)


def test_bfloat16_model_gives_the_float32_maps(tiny_model_dir, tiny, prompt):
    """On CUDA the model runs in bfloat16: pixels follow its dtype, maps are computed in float32."""
    from transformers import AutoModelForImageTextToText

    model, _ = tiny
    half = AutoModelForImageTextToText.from_pretrained(tiny_model_dir, dtype=torch.bfloat16).eval()
    input_ids, pixel_values = prompt
    ours = VisionGradCAM(half)(input_ids, pixel_values, [300, 301], [0, 1])
    reference = VisionGradCAM(model)(input_ids, pixel_values, [300, 301], [0, 1])
    assert np.corrcoef(ours.ravel(), reference.ravel())[0, 1] > 0.99
    norms = activation_norm_map(half, pixel_values)
    assert norms.dtype == np.float32
    np.testing.assert_allclose(
        norms, activation_norm_map(model, pixel_values), rtol=1e-2
    )  # bfloat16: 8 mantissa bits


def test_batched_gradcam_equals_one_target_at_a_time(tiny, prompt, monkeypatch):
    """Targets of 1, 2, 3 and 5 forced tokens (right-padded rows), one forward + backward: each
    row's map is the single call's, and a bad request is that request's failure only."""
    model, _ = tiny
    input_ids, pixel_values = prompt
    requests = [
        ([300, 301, 302], [1, 2]),
        ([310], [0]),
        ([5, 6, 7, 8, 9], [3]),
        ([400, 401], [0, 1]),
        ([300], [4]),  # outside the forced tokens
    ]
    gradcam = VisionGradCAM(model)
    singles = [gradcam(input_ids, pixel_values, *request) for request in requests[:-1]]
    hooks = dict(gradcam.target_layer._forward_hooks)  # transformers may keep its own there

    def no_single_calls(*args, **kwargs):
        raise AssertionError("the batched pass fell back to one target at a time")

    monkeypatch.setattr(VisionGradCAM, "__call__", no_single_calls)
    batched = gradcam.batched(input_ids, pixel_values, requests, max_rows=3)
    assert len(batched) == len(requests)
    for grid, single in zip(batched, singles, strict=False):
        assert single.max() > 0
        assert grid.dtype == single.dtype and grid.shape == single.shape
        np.testing.assert_allclose(normalise_map(grid), normalise_map(single), rtol=0, atol=1e-6)
        np.testing.assert_allclose(grid, single, rtol=1e-4, atol=1e-7 * single.max())
    assert isinstance(batched[-1], MapUnavailable) and "outside" in batched[-1].reason
    assert all(p.grad is None for p in model.parameters())
    assert dict(gradcam.target_layer._forward_hooks) == hooks


def test_batched_gradcam_that_fails_whole_is_redone_one_target_at_a_time(
    tiny, prompt, monkeypatch, caplog
):
    """A pass that fails as a whole (out of memory, say) loses no map: its rows are redone one
    at a time, each giving the single call's map, and the fallback is logged."""
    model, _ = tiny
    input_ids, pixel_values = prompt
    requests = [([300, 301, 302], [1, 2]), ([310], [0]), ([400, 401], [0, 1]), ([5, 6, 7], [2])]
    gradcam = VisionGradCAM(model)
    singles = [gradcam(input_ids, pixel_values, *request) for request in requests]
    one_row_pass = VisionGradCAM._patch_cams

    def out_of_memory(self, input_ids, pixel_values, rows):
        if len(rows) > 1:
            raise torch.OutOfMemoryError(f"planted: no room for {len(rows)} rows")
        return one_row_pass(self, input_ids, pixel_values, rows)

    monkeypatch.setattr(VisionGradCAM, "_patch_cams", out_of_memory)
    with caplog.at_level("WARNING", logger="cxr_attention.maps.gradcam"):
        batched = gradcam.batched(input_ids, pixel_values, requests, max_rows=2)
    for grid, single in zip(batched, singles, strict=True):
        np.testing.assert_array_equal(grid, single)
    fallbacks = [r.getMessage() for r in caplog.records]
    assert len(fallbacks) == 2  # one per pass of max_rows targets
    assert "OutOfMemoryError: planted" in fallbacks[0] and "one at a time" in fallbacks[0]


def test_an_images_vision_encoding_is_computed_once_and_gives_the_same_maps(tiny, prompt):
    """With the last layer as target, the tower runs once per pixel object, for single and
    batched passes alike; other pixels or another target layer do not use the entry."""
    model, _ = tiny
    input_ids, pixel_values = prompt
    requests = [([300, 301, 302], [1, 2]), ([310], [0]), ([400, 401], [0, 1])]
    tower = VisionGradCAM(model)
    expected = [tower(input_ids, pixel_values, *r) for r in requests]
    expected += tower.batched(input_ids, pixel_values, requests, max_rows=2)

    encodings = VisionEncodings()
    cached = VisionGradCAM(model, encodings=encodings)
    runs = []
    handle = model.model.vision_tower.register_forward_hook(lambda *args: runs.append(1))
    try:
        got = [cached(input_ids, pixel_values, *r) for r in requests]
        got += cached.batched(input_ids, pixel_values, requests, max_rows=2)
        assert len(runs) == 1  # 3 single and 2 batched passes over one image
        cached(input_ids, pixel_values.clone(), *requests[0])  # equal values, another object
        assert len(runs) == 2
        middle = VisionGradCAM(model, vision_layers(model)[0], encodings=encodings)
        assert middle.encodings is None  # only the last layer is followed by the projector alone
    finally:
        handle.remove()
    for grid, want in zip(got, expected, strict=True):
        np.testing.assert_allclose(grid, want, rtol=1e-5, atol=1e-7 * want.max())
    assert all(p.grad is None for p in model.parameters())


def test_gradient_of_the_rows_sum_is_each_rows_own_gradient():
    """The repeated layer output is one leaf per row: d(sum_b s_b)/dA_b equals ds_b/dA alone."""
    torch.manual_seed(0)
    first, second = nn.Linear(4, 4), nn.Linear(4, 3)
    model = nn.Sequential(first, nn.Tanh(), second, nn.Tanh())
    inputs = torch.randn(1, 5, 4)
    weights = torch.randn(3, 5, 3)  # a different score per row

    with LayerActivations(first, requires_grad=True, repeat=3) as kept:
        scores = (model(inputs) * weights).sum(dim=(1, 2))
        (batched,) = torch.autograd.grad(scores.sum(), kept.activations)
    assert kept.activations.shape == (3, 5, 4)
    assert not first._forward_hooks
    for row in range(3):
        with LayerActivations(first, requires_grad=True) as alone:
            score = (model(inputs) * weights[row]).sum()
            (single,) = torch.autograd.grad(score, alone.activations)
        torch.testing.assert_close(batched[row], single[0])


def test_an_all_zero_cam_is_unavailable_with_the_reason_not_an_error():
    # ReLU(cam) is zero everywhere when no patch raises the score (seen on the known-answer
    # model's demo run): the cascade must get a reason to fall back on, the shard no exception.
    from cxr_attention.maps.methods.base import Unavailable
    from cxr_attention.maps.methods.gradcam import _result

    outcome = _result(np.zeros((16, 16)), "vision:1")
    assert isinstance(outcome, Unavailable)
    assert "all-zero" in outcome.reason
    assert not isinstance(_result(np.eye(16), "vision:1"), Unavailable)
