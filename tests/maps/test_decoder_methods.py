"""The decoder-side map methods against independent oracles: a hand-computed rollout, Chefer's
rule written again here on a tiny transformer and on the eager model's attentions, decoder
Grad-CAM from the eager model's hidden states, integrated gradients against captum (with
completeness), RISE on a model whose weights read one region only, relative attention from
the eager attentions of the processor's own generic prompt, and sinks from the eager hidden
states."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from maps_helpers import (
    forced_capture,
    grey_image,
    load_tiny,
    model_inputs_from_capture,
    prompt_inputs,
)
from torch import nn

from cxr_attention.captures import Capture
from cxr_attention.inference.batching import capture_answers
from cxr_attention.inference.scoring import yes_no_margin_from_logits, yes_no_tokens
from cxr_attention.maps.cascade import compute_sample_maps
from cxr_attention.maps.grid import MapUnavailable, normalise_map
from cxr_attention.maps.methods.attention import Attention
from cxr_attention.maps.methods.attention_nosink import AttentionNoSink
from cxr_attention.maps.methods.base import MapInputs, MapResult, VisionSource
from cxr_attention.maps.methods.decoder_forward import (
    decoder_layer_indices,
    image_features,
    run_model,
    scored_target,
)
from cxr_attention.maps.methods.decoder_gradcam import DecoderGradCAM
from cxr_attention.maps.methods.integrated_gradients import integrated_gradients
from cxr_attention.maps.methods.relative_attention import (
    GENERIC_PROMPT,
    RelativeAttention,
    generic_prompt_ids,
)
from cxr_attention.maps.methods.relevancy import Relevancy, relevancy_matrix
from cxr_attention.maps.methods.rise import Rise, rise_masks, rise_saliency
from cxr_attention.maps.methods.rollout import Rollout, attention_rollout
from cxr_attention.maps.params import MapParams
from cxr_attention.maps.records import SampleKey
from cxr_attention.maps.targets import MapTarget

ANSWER = MapTarget("", "answer", generated_positions=(0,))


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    model, processor = load_tiny(tiny_model_dir, eager=False)
    eager, _ = load_tiny(tiny_model_dir, eager=True)
    inputs = prompt_inputs(processor, "Is there a pleural effusion?")
    return model, eager, processor, inputs


def _inputs(model, processor, inputs, params=None, generated=(300, 301, 302)) -> MapInputs:
    ids = inputs["input_ids"][0].numpy()
    positions = np.flatnonzero(ids == model.config.image_token_id)
    capture = Capture(
        attention=np.zeros((1, 1, len(generated), positions.size), np.float32),
        text_attention=np.zeros((1, 1, len(generated), ids.size), np.float32),
        layers=np.array([0]),
        input_ids=ids,
        generated_ids=np.asarray(generated),
        image_token_positions=positions,
        grid_shape=np.array([16, 16]),
    )
    vision = VisionSource(lambda: (model, inputs["pixel_values"]), tokenizer=processor.tokenizer)
    return MapInputs(capture, params or MapParams(), SampleKey("s"), vision=vision)


def _eager_forward(eager, inputs, scored, **kwargs):
    ids = inputs["input_ids"][0].numpy()
    batch = model_inputs_from_capture(eager, ids, inputs["pixel_values"], scored.ids[ids.size :])
    return eager(**batch, use_cache=False, **kwargs)


def _grid(values, scored):
    rows = np.asarray(values, dtype=np.float64)[list(scored.query_rows)]
    return normalise_map(rows[:, scored.image_positions].mean(axis=0).reshape(16, 16))


def _answered(margin):
    """The margin for the answer the model gave (its forward is at the unperturbed input): a
    "no" is scored as -margin."""
    return margin if float(margin.detach()[0]) >= 0 else -margin


def test_answer_scores_explain_the_answer_given(tiny):
    # The tiny model leans to "no" on this prompt: the answer's score is -margin there, and is
    # positive at the unperturbed input whatever the lean (decision_sign).
    from cxr_attention.maps.methods.decoder_forward import decision_sign

    model, eager, processor, inputs = tiny
    sample = _inputs(model, processor, inputs)
    tokens = yes_no_tokens(processor.tokenizer)
    scored = scored_target(sample, ANSWER)
    with torch.no_grad():
        logits = _eager_forward(eager, inputs, scored).logits
    margin = float(yes_no_margin_from_logits(logits[:, -1], tokens)[0])
    assert decision_sign(sample, tokens) == (1.0 if margin >= 0 else -1.0)
    assert float(scored.score(logits)[0]) == pytest.approx(abs(margin), rel=1e-4)


def _result(results) -> np.ndarray:
    (result,) = results
    assert isinstance(result, MapResult), result
    return result.grid


# --- rollout ---------------------------------------------------------------------------------


def test_rollout_of_a_hand_computed_two_layer_example():
    # Two heads whose mean is A1 = [[1,0,0],[.5,.5,0],[.2,.3,.5]]; one layer of A2.
    layer1 = np.array(
        [
            [[1, 0, 0], [1, 0, 0], [0.4, 0.2, 0.4]],
            [[1, 0, 0], [0, 1, 0], [0, 0.4, 0.6]],
        ]
    )
    layer2 = np.array([[[1, 0, 0], [0.4, 0.6, 0], [0.1, 0.1, 0.8]]])
    # 0.5 A + 0.5 I: [[1,0,0],[.25,.75,0],[.1,.15,.75]] and [[1,0,0],[.2,.8,0],[.05,.05,.9]];
    # their product (layer 2 on the left), worked by hand:
    expected = np.array([[1, 0, 0], [0.4, 0.6, 0], [0.1525, 0.1725, 0.675]])
    np.testing.assert_allclose(attention_rollout([layer1, layer2]), expected, atol=1e-12)


def test_rollout_map_equals_rollout_of_the_eager_attentions(tiny):
    model, eager, processor, inputs = tiny
    for target in (ANSWER, MapTarget("x", "generated", generated_positions=(1, 2))):
        sample = _inputs(model, processor, inputs)
        ours = _result(Rollout().attribute(sample, [target]))
        scored = scored_target(sample, target)
        with torch.no_grad():
            attentions = _eager_forward(eager, inputs, scored, output_attentions=True).attentions
        oracle = attention_rollout([a[0].numpy() for a in attentions])
        np.testing.assert_allclose(normalise_map(ours), _grid(oracle, scored), atol=1e-5)


# --- relevancy -------------------------------------------------------------------------------


class _TinyTransformer(nn.Module):
    """Causal two-head self-attention layers with residuals; each layer's attention kept."""

    def __init__(self, dim=8, heads=2, layers=2, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.heads, self.dim = heads, dim
        self.qkv = nn.ModuleList(nn.Linear(dim, 3 * dim) for _ in range(layers))
        self.out = nn.Linear(dim, 1)
        self.attentions: list[torch.Tensor] = []

    def forward(self, x):
        length = x.shape[0]
        causal = torch.tril(torch.ones(length, length, dtype=torch.bool))
        self.attentions = []
        for qkv in self.qkv:
            q, k, v = qkv(x).reshape(length, 3, self.heads, -1).permute(1, 2, 0, 3)
            logits = q @ k.transpose(-1, -2) / (q.shape[-1] ** 0.5)
            attention = logits.masked_fill(~causal, -1e9).softmax(-1)
            attention.retain_grad()
            self.attentions.append(attention)
            x = x + (attention @ v).transpose(0, 1).reshape(length, self.dim)
        return self.out(x[-1]).squeeze()


def _chefer_relevancy(model, x):
    """Chefer et al.'s generic rule as their code writes it: R += mean_h (grad * A)^+ @ R."""
    model(x).backward()
    relevancy = torch.eye(x.shape[0])
    for attention in model.attentions:
        cam = (attention.grad * attention).clamp(min=0).mean(dim=0)
        relevancy = relevancy + cam @ relevancy
    return relevancy.detach().numpy()


def test_relevancy_rule_equals_an_independent_implementation_on_a_tiny_transformer():
    model = _TinyTransformer()
    x = torch.randn(6, 8, generator=torch.Generator().manual_seed(1))
    oracle = _chefer_relevancy(model, x)
    attentions = [a.detach().numpy() for a in model.attentions]
    gradients = [a.grad.numpy() for a in model.attentions]
    ours = relevancy_matrix(attentions, gradients)
    np.testing.assert_allclose(ours, oracle, rtol=1e-6, atol=1e-9)
    assert not np.allclose(ours, np.eye(6))  # the rule did propagate something


def test_relevancy_map_equals_chefer_on_the_eager_attentions(tiny):
    model, eager, processor, inputs = tiny
    tokens = yes_no_tokens(processor.tokenizer)
    for target in (ANSWER, MapTarget("x", "prompt", forced_ids=(300, 301))):
        sample = _inputs(model, processor, inputs)
        ours = _result(Relevancy().attribute(sample, [target]))
        scored = scored_target(sample, target)
        with torch.enable_grad():
            output = _eager_forward(eager, inputs, scored, output_attentions=True)
            if target.source == "answer":
                score = _answered(yes_no_margin_from_logits(output.logits[:, -1], tokens))
            else:  # the forced term's two token logits, where each is predicted
                start = len(inputs["input_ids"][0]) - 1
                score = output.logits[0, start, 300] + output.logits[0, start + 1, 301]
            grads = torch.autograd.grad(score.sum(), output.attentions)
        relevancy = torch.eye(scored.ids.size)
        for attention, grad in zip(output.attentions, grads, strict=True):
            cam = (grad[0] * attention[0]).clamp(min=0).mean(dim=0)
            relevancy = relevancy + cam @ relevancy
        oracle = _grid(relevancy.detach().numpy(), scored)
        np.testing.assert_allclose(normalise_map(ours), oracle, rtol=1e-3, atol=1e-6)


# --- decoder Grad-CAM ------------------------------------------------------------------------


def test_last_global_layer_of_a_model_without_one_is_unavailable_not_a_crash(tiny):
    # The known-answer model's two decoder layers are both sliding-window: "last_global" must be
    # a map with a reason, not a ValueError from an empty max().
    model = tiny[0]
    text_config = model.config.get_text_config()
    kinds = list(text_config.layer_types)
    last_full = max(i for i, kind in enumerate(kinds) if kind == "full_attention")
    assert decoder_layer_indices(model, "last_global") == [last_full]
    text_config.layer_types = ["sliding_attention"] * len(kinds)
    try:
        with pytest.raises(MapUnavailable, match="no global"):
            decoder_layer_indices(model, "last_global")
    finally:
        text_config.layer_types = kinds


@pytest.mark.parametrize("layer", ["last_global", (2, 4)])
def test_decoder_gradcam_equals_gradcam_of_the_eager_hidden_states(tiny, layer):
    model, eager, processor, inputs = tiny
    sample = _inputs(model, processor, inputs, MapParams(decoder_gradcam_layer=layer))
    result = DecoderGradCAM().attribute(sample, [ANSWER])[0]
    scored = scored_target(sample, ANSWER)
    layers = [5] if layer == "last_global" else list(layer)  # tiny: layer 5 is the full one
    assert result.layers == "|".join(map(str, layers))
    with torch.enable_grad():
        output = _eager_forward(eager, inputs, scored, output_hidden_states=True)
        score = _answered(
            yes_no_margin_from_logits(output.logits[:, -1], yes_no_tokens(processor.tokenizer))
        )
        # hidden_states[i] enters decoder layer i
        hidden = [output.hidden_states[i] for i in layers]
        grads = torch.autograd.grad(score.sum(), hidden)
    cams = []
    for h, g in zip(hidden, grads, strict=True):
        h, g = h[0, scored.image_positions].detach(), g[0, scored.image_positions]
        cams.append(torch.relu(h @ g.mean(dim=0)).numpy())
    oracle = normalise_map(np.mean(cams, axis=0).reshape(16, 16))
    np.testing.assert_allclose(result.grid, oracle, rtol=1e-3, atol=1e-6)


# --- integrated gradients --------------------------------------------------------------------


def test_integrated_gradients_equal_captum_and_are_complete(tiny):
    from captum.attr import IntegratedGradients as CaptumIG

    model, _, processor, inputs = tiny
    sample = _inputs(model, processor, inputs)
    scored = scored_target(sample, ANSWER)
    features = image_features(sample)
    ours = integrated_gradients(model, scored, features, steps=16, max_rows=5)

    def forward(path):
        return scored.score(run_model(model, scored.ids, path, logits_to_keep=1).logits)

    baseline = features.mean(dim=1, keepdim=True).expand_as(features)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    captum, delta = CaptumIG(forward).attribute(
        features,
        baselines=baseline,
        n_steps=16,
        method="riemann_middle",
        internal_batch_size=8,
        return_convergence_delta=True,
    )
    np.testing.assert_allclose(ours.numpy(), captum[0].numpy(), rtol=1e-3, atol=1e-6)
    with torch.no_grad():
        difference = (forward(features) - forward(baseline)).item()
    assert abs(difference) > 1e-3
    assert abs(ours.sum().item() - difference) <= 0.01 * abs(difference)
    assert abs(delta.item()) <= 0.01 * abs(difference)


# --- RISE ------------------------------------------------------------------------------------


class _RegionModel(nn.Module):
    """Margin = a linear read-out of the image tokens of one region only (weights set here)."""

    def __init__(self, image_token_id, vocab, yes_id, region, hidden=4):
        super().__init__()
        self.config = type("Config", (), {"image_token_id": image_token_id})()
        self.readout = nn.Linear(hidden, vocab, bias=False)
        with torch.no_grad():
            self.readout.weight.zero_()
            self.readout.weight[yes_id] = 1.0  # yes logit = sum of the region's channels
        self.region = torch.as_tensor(region)

    def forward(self, input_ids, mm_encoder_outputs, logits_to_keep, **_):
        features = mm_encoder_outputs["image"].pooler_output  # (B, tokens, hidden)
        pooled = features[:, self.region].sum(dim=1)
        return type("Out", (), {"logits": self.readout(pooled)[:, None]})()


def test_rise_finds_the_one_region_a_model_reads(tiny):
    model, _, processor, inputs = tiny
    tokens = yes_no_tokens(processor.tokenizer)
    grid = np.zeros((16, 16), bool)
    grid[10:14, 2:6] = True
    region = np.flatnonzero(grid)
    reader = _RegionModel(
        model.config.image_token_id, len(processor.tokenizer), tokens.yes_ids[0], region
    )
    sample = _inputs(reader, processor, inputs, MapParams(rise_masks=200, seed=3))
    features = torch.full((1, 256, 4), 0.0)
    features[0, region] = 1.0
    sample.shared["image_features"] = features  # what the reader's image encoder would give
    saliency = _result(Rise().attribute(sample, [ANSWER]))
    inside = saliency[grid].mean()
    assert inside > 3 * saliency[~grid].mean()
    assert grid.ravel()[np.argmax(saliency)]


def test_rise_saliency_and_masks_by_hand():
    masks = np.array([[[1.0, 0.0]], [[0.0, 1.0]], [[1.0, 1.0]]])
    # cell 0: (2*1 + 5*1) / 2 = 3.5; cell 1: (3 + 5) / 2 = 4; minus the minimum
    np.testing.assert_allclose(rise_saliency(masks, [2.0, 3.0, 5.0]), [[0.0, 0.5]])
    drawn = rise_masks(50, (16, 16), cells=4, keep=0.5, seed=0)
    assert drawn.shape == (50, 16, 16) and drawn.min() >= 0 and drawn.max() <= 1
    np.testing.assert_array_equal(drawn, rise_masks(50, (16, 16), cells=4, keep=0.5, seed=0))
    assert 0.3 < drawn.mean() < 0.7


# --- relative attention ----------------------------------------------------------------------


@pytest.mark.parametrize("image_first", [True, False])
def test_generic_prompt_is_the_templates_prompt_for_the_generic_question(tiny, image_first):
    model, _, processor, _ = tiny
    asked = prompt_inputs(processor, "Is there a pleural effusion?", image_first=image_first)
    generic = prompt_inputs(processor, GENERIC_PROMPT, image_first=image_first)
    ours = generic_prompt_ids(
        processor.tokenizer, asked["input_ids"][0].numpy(), model.config.image_token_id
    )
    np.testing.assert_array_equal(ours, generic["input_ids"][0].numpy())


def test_relative_attention_is_the_ratio_of_the_eager_attentions(tiny):
    model, eager, processor, inputs = tiny
    sample = _inputs(model, processor, inputs, MapParams(relative_attention_layers=(1, -1)))
    result = RelativeAttention().attribute(sample, [ANSWER])[0]
    assert result.layers == "1|5"
    generic = prompt_inputs(processor, GENERIC_PROMPT)
    ratios = []
    with torch.no_grad():
        for batch in (inputs, generic):
            out = eager(**batch, output_attentions=True, use_cache=False)
            image = batch["input_ids"][0] == model.config.image_token_id
            rows = [out.attentions[i][0, :, -1][:, image].mean(dim=0) for i in (1, 5)]
            ratios.append(torch.stack(rows).mean(dim=0).numpy().astype(np.float64))
    question, baseline = ratios
    oracle = question / np.maximum(baseline, 1e-3 * baseline.mean())
    np.testing.assert_allclose(result.grid, normalise_map(oracle.reshape(16, 16)), rtol=1e-3)


# --- sinks -----------------------------------------------------------------------------------


def _eager_sinks(model, eager, inputs, *, layers) -> np.ndarray:
    """The oracle's sink tokens: above the 99th percentile of the eager model's own hidden-state
    norm at any of ``layers`` (``hidden_states[layer]`` enters decoder layer ``layer``)."""
    with torch.no_grad():
        hidden = eager(**inputs, output_hidden_states=True, use_cache=False).hidden_states
    image = inputs["input_ids"][0] == model.config.image_token_id
    sinks = np.zeros(256, bool)
    for layer in layers:
        norms = hidden[layer][0, image].norm(dim=-1).numpy()
        sinks |= norms > np.percentile(norms, 99)
    return sinks


def test_attention_nosink_drops_the_high_norm_tokens_of_the_eager_hidden_states(tiny):
    model, eager, processor, inputs = tiny
    arrays = forced_capture(eager, inputs, [300, 301, 302], layers=(3, 5))
    vision = VisionSource(lambda: (model, inputs["pixel_values"]), tokenizer=processor.tokenizer)
    sample = MapInputs(Capture.from_arrays(arrays), MapParams(), SampleKey("s"), vision=vision)
    target = MapTarget("", "answer", generated_positions=(0, 1, 2))
    plain = Attention().attribute_one(sample, target)
    (result,) = AttentionNoSink().attribute(sample, [target])
    sinks = _eager_sinks(model, eager, inputs, layers=(3, 5))
    assert 0 < sinks.sum() <= 2 * 3  # the top 1% of 256 tokens at each of two layers
    expected = np.where(sinks.reshape(16, 16), 0.0, plain.grid)
    np.testing.assert_allclose(result.grid, expected, rtol=1e-4, atol=1e-8)  # the cascade
    # renormalises
    assert result.image_mass == pytest.approx(plain.image_mass * expected.sum(), rel=1e-4)


def test_sink_mass_is_each_maps_share_on_the_high_norm_tokens(tiny):
    model, eager, processor, inputs = tiny
    arrays = forced_capture(eager, inputs, [300, 301, 302], layers=(3, 5))
    vision = VisionSource(lambda: (model, inputs["pixel_values"]), tokenizer=processor.tokenizer)
    params = MapParams(method="methods", methods=("attention", "activation_norm", "uniform"))
    target = MapTarget("", "answer", generated_positions=(0, 1, 2))
    maps = compute_sample_maps(
        Capture.from_arrays(arrays), [target], SampleKey("s"), params, vision=vision
    )
    sinks = _eager_sinks(model, eager, inputs, layers=(3, 5))
    assert {record.method for record, _ in maps} == {"attention", "activation_norm", "uniform"}
    for record, grid in maps:
        expected = grid.reshape(-1).astype(np.float64)[sinks].sum() / grid.sum()
        assert record.sink_mass == pytest.approx(expected, rel=1e-5, abs=1e-9), record.method
    uniform = next(record for record, _ in maps if record.method == "uniform")
    assert uniform.sink_mass == pytest.approx(sinks.sum() / 256)

    # all attention on one sink token: that map is all sink
    sink = int(np.flatnonzero(sinks)[0])
    focused = dict(arrays)
    planted = np.zeros_like(arrays["attention"])
    planted[..., sink] = 0.5
    focused["attention"] = planted
    focused_maps = compute_sample_maps(
        Capture.from_arrays(focused), [target], SampleKey("s"), params, vision=vision
    )
    on_sink = next(record for record, _ in focused_maps if record.method == "attention")
    assert on_sink.sink_mass == pytest.approx(1.0)

    # A capture without recorded norms (as written before they were): with no model, or no
    # method in play that runs it (capture-only maps), no sinks
    assert "image_hidden_norms" not in arrays
    for settings, source in ((params, None), (MapParams(method="attention"), vision)):
        blind = compute_sample_maps(
            Capture.from_arrays(arrays), [target], SampleKey("s"), settings, vision=source
        )
        assert all(np.isnan(record.sink_mass) for record, _ in blind)


def test_sink_mass_from_the_captures_recorded_norms_needs_no_model(tiny, tiny_model_dir):
    """The inference capture's recorded hidden-state norms give the sinks the forward path (and
    the eager hidden states) give, in a capture-only maps run with no model at all."""
    model, eager, processor, inputs = tiny
    question = "Is there a pleural effusion?"
    capturer, _ = load_tiny(tiny_model_dir, eager=False)  # capturing hooks its attention
    (captured,) = capture_answers(
        capturer,
        processor,
        grey_image(),
        [question],
        image_first=True,
        layers=[3, 5],
        max_new_tokens=1,
        batch_size=1,
        share=True,
        prompt_image_rows="text",
    )
    np.testing.assert_array_equal(captured.input_ids, inputs["input_ids"][0].numpy())
    arrays = forced_capture(eager, inputs, [300, 301, 302], layers=(3, 5))
    recorded = {**arrays, "image_hidden_norms": captured.image_hidden_norms}
    target = MapTarget("", "answer", generated_positions=(0, 1, 2))
    vision = VisionSource(lambda: (model, inputs["pixel_values"]), tokenizer=processor.tokenizer)
    with_model = MapParams(method="methods", methods=("attention", "activation_norm", "uniform"))
    forward = compute_sample_maps(
        Capture.from_arrays(arrays), [target], SampleKey("s"), with_model, vision=vision
    )
    capture_only = MapParams(method="methods", methods=("attention", "uniform"))
    read = compute_sample_maps(
        Capture.from_arrays(recorded), [target], SampleKey("s"), capture_only, vision=None
    )
    sinks = _eager_sinks(model, eager, inputs, layers=(3, 5))
    by_method = {record.method: record for record, _ in forward}
    assert {record.method for record, _ in read} == {"attention", "uniform"}
    for record, grid in read:
        assert np.isfinite(record.sink_mass), record.method
        expected = grid.reshape(-1).astype(np.float64)[sinks].sum() / grid.sum()
        assert record.sink_mass == pytest.approx(expected, rel=1e-5, abs=1e-9), record.method
        assert record.sink_mass == pytest.approx(by_method[record.method].sink_mass, rel=1e-5)

    # attention_nosink reads the same recorded sinks: its map equals the forward path's
    nosink = MapParams(method="attention_nosink")
    (via_forward,) = AttentionNoSink().attribute(
        MapInputs(Capture.from_arrays(arrays), nosink, SampleKey("s"), vision=vision), [target]
    )
    (via_recorded,) = AttentionNoSink().attribute(
        MapInputs(Capture.from_arrays(recorded), nosink, SampleKey("s"), vision=None), [target]
    )
    np.testing.assert_allclose(via_recorded.grid, via_forward.grid, rtol=1e-6, atol=1e-12)
