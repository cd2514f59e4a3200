"""Helpers for the maps tests: an eager-attention capture oracle and weight-planting constructions.

The capture here is built from transformers' own ``generate(output_attentions=True)`` on an eager
model, independently of ``cxr_attention.inference.capture``, in the array contract of
``docs/architecture.md``.

Planting (all through the weights, never by editing an output):

- ``linearise_vision_tower``: patch embedding reads one channel (``MARK``), position embeddings
  and every encoder block's residual branches are zeroed, so the last encoder layer outputs
  ``c * e_MARK`` on patches whose pixels are 1 and exactly 0 on patches whose pixels are 0. The
  post-layernorm and projector then give image embeddings with a large ``MARK`` text channel on
  marked tokens and a large ``BIAS`` text channel on the others.
- ``plant_attention``: every text embedding gets a large ``BIAS`` channel; in the chosen decoder
  layers the query of every head reads ``BIAS`` and the key reads ``MARK - BIAS`` on the rotary
  pair that turns slowest (so RoPE barely changes scores), with q/k norms scaled up. Text queries
  then score ``+36`` on marked keys and ``-36`` on every other key.
"""

from __future__ import annotations

import numpy as np
import torch

BIAS, MARK = 0, 1
ROPE_SLOW_DIM = 7  # rotate_half pairs dim i with i + head_dim/2; i = head_dim/2 - 1 turns slowest


def model_inputs_from_capture(model, input_ids, pixel_values, continuation_ids=None) -> dict:
    """Batch-of-one model inputs for the prompt, optionally followed by teacher-forced tokens.

    Built here by hand, as the processor lays them out (``token_type_ids`` 1 on the image
    tokens), for the oracles that call the model directly.
    """
    from cxr_attention.maps.hooks import model_pixels

    ids = np.asarray(input_ids, dtype=np.int64).reshape(-1)
    if continuation_ids is not None and len(continuation_ids):
        ids = np.concatenate([ids, np.asarray(continuation_ids, dtype=np.int64).reshape(-1)])
    ids_tensor = torch.as_tensor(ids, device=next(model.parameters()).device).unsqueeze(0)
    return {
        "input_ids": ids_tensor,
        "attention_mask": torch.ones_like(ids_tensor),
        "token_type_ids": (ids_tensor == model.config.image_token_id).long(),
        "pixel_values": model_pixels(model, pixel_values),
    }


def load_tiny(model_dir, *, eager: bool = True):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(
        model_dir, attn_implementation="eager" if eager else "sdpa", dtype=torch.float32
    ).eval()
    return model, AutoProcessor.from_pretrained(model_dir)


def grey_image(seed: int = 0) -> np.ndarray:
    """The random grey image of `prompt_inputs`."""
    return (np.random.default_rng(seed).random((320, 256)) * 255).astype(np.uint8)


def prompt_inputs(processor, question: str, *, image_first: bool = True, seed: int = 0):
    """Processor inputs for a random grey image (`grey_image`) and a question."""
    from cxr_attention.inference.prompting import build_inputs

    image = grey_image(seed)
    return dict(build_inputs(processor, image, question, image_first=image_first))


@torch.no_grad()
def eager_capture(model, inputs, *, layers=(3, 4, 5), max_new_tokens: int = 6) -> dict:
    """Greedy generation with eager attentions, cut into the capture arrays (float32)."""
    output = model.generate(
        **inputs,
        max_new_tokens=max_new_tokens,
        do_sample=False,
        top_k=None,
        top_p=None,
        output_attentions=True,
        return_dict_in_generate=True,
    )
    input_ids = inputs["input_ids"][0]
    prompt_len = input_ids.numel()
    generated = output.sequences[0, prompt_len:]
    image_positions = torch.nonzero(input_ids == model.config.image_token_id).flatten()
    n_steps = len(output.attentions)
    heads = model.config.text_config.num_attention_heads
    attention = np.zeros((len(layers), heads, n_steps, image_positions.numel()), np.float32)
    text_attention = np.zeros((len(layers), heads, n_steps, prompt_len), np.float32)
    prompt_image = np.zeros((len(layers), heads, prompt_len, image_positions.numel()), np.float32)
    for step, per_layer in enumerate(output.attentions):
        for li, layer in enumerate(layers):
            row = per_layer[layer][0, :, -1, :].float()  # (heads, keys): the step's last query
            attention[li, :, step] = row[:, image_positions].numpy()
            text = row[:, :prompt_len].clone()
            text[:, image_positions] = 0
            text_attention[li, :, step] = text.numpy()
            if step == 0:
                full = per_layer[layer][0].float()  # (heads, prompt, prompt)
                block = full[:, :, image_positions].permute(1, 0, 2).numpy()
                prompt_image[li] = block.transpose(1, 0, 2)
                prompt_image[li][:, : int(image_positions[0])] = 0
    return {
        "attention": attention,
        "text_attention": text_attention,
        "prompt_image_attention": prompt_image,
        "layers": np.asarray(layers, dtype=np.int64),
        "input_ids": input_ids.numpy().astype(np.int64),
        "generated_ids": generated[:n_steps].numpy().astype(np.int64),
        "image_token_positions": image_positions.numpy().astype(np.int64),
        "pixel_values": inputs["pixel_values"].float().numpy(),
        "grid_shape": np.array([16, 16], dtype=np.int64),
    }


def marked_pixels(cells, *, image_size: int = 448, grid: int = 16) -> torch.Tensor:
    """Pixel values 1 on the chosen token cells (row, col), 0 elsewhere: shape (1, 3, S, S)."""
    pixels = torch.zeros(1, 3, image_size, image_size)
    step = image_size // grid
    for row, col in cells:
        pixels[..., row * step : (row + 1) * step, col * step : (col + 1) * step] = 1.0
    return pixels


@torch.no_grad()
def linearise_vision_tower(model, *, gain: float = 10.0, marker: float = 1.0) -> None:
    """See the module docstring. Text hidden size must be >= 2."""
    tower = model.model.vision_tower
    conv = tower.embeddings.patch_embedding
    conv.weight.zero_()
    conv.weight[MARK] = marker / conv.weight[MARK].numel()
    conv.bias.zero_()
    tower.embeddings.position_embedding.weight.zero_()
    for layer in tower.encoder.layers:
        for linear in (layer.self_attn.out_proj, layer.mlp.fc2):
            linear.weight.zero_()
            linear.bias.zero_()
    norm = tower.post_layernorm
    norm.weight.zero_()
    norm.weight[MARK] = gain
    norm.bias.zero_()
    norm.bias[BIAS] = 1.0
    projection = model.model.multi_modal_projector.mm_input_projection_weight
    projection.zero_()
    projection[BIAS, BIAS] = 10.0
    projection[MARK, MARK] = 10.0


@torch.no_grad()
def plant_attention(model, layers, *, norm_gain: float = 2.0, text_bias: float = 7.0) -> None:
    """See the module docstring."""
    text = model.config.text_config
    head_dim = text.head_dim
    embed = model.model.language_model.embed_tokens.weight
    embed[:, BIAS] = text_bias
    embed[:, MARK] = 0.0
    for index in layers:
        attn = model.model.language_model.layers[index].self_attn
        attn.q_proj.weight.zero_()
        for head in range(text.num_attention_heads):
            attn.q_proj.weight[head * head_dim + ROPE_SLOW_DIM, BIAS] = 1.0
        attn.k_proj.weight.zero_()
        for head in range(text.num_key_value_heads):
            attn.k_proj.weight[head * head_dim + ROPE_SLOW_DIM, MARK] = 1.0
            attn.k_proj.weight[head * head_dim + ROPE_SLOW_DIM, BIAS] = -1.0
        attn.q_norm.weight.fill_(norm_gain)
        attn.k_norm.weight.fill_(norm_gain)


@torch.no_grad()
def plant_sink(model, token_id: int, *, marker: float = 7.0) -> None:
    """Give one vocabulary token the ``MARK`` channel instead of ``BIAS`` (after plant_attention):
    planted layers then send all their attention to it, an attention sink."""
    embed = model.model.language_model.embed_tokens.weight
    embed[token_id, BIAS] = 0.0
    embed[token_id, MARK] = marker


@torch.no_grad()
def forced_capture(model, inputs, continuation_ids, *, layers=(3, 4, 5)) -> dict:
    """Capture arrays of an answer forced token by token (one causal forward, eager attentions).

    Row ``i`` is the attention of the query that predicts ``continuation_ids[i]`` (the last
    prompt token for ``i = 0``), exactly what generation would have captured had it chosen these
    tokens: the random tiny model never generates medical words on its own.
    """
    prompt_ids = inputs["input_ids"][0]
    prompt_len = prompt_ids.numel()
    continuation = torch.as_tensor(continuation_ids, dtype=torch.long)
    ids = torch.cat([prompt_ids, continuation[:-1]]).unsqueeze(0)
    token_types = torch.zeros_like(ids)
    token_types[0, :prompt_len] = inputs["token_type_ids"][0]
    output = model(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        token_type_ids=token_types,
        pixel_values=inputs["pixel_values"],
        output_attentions=True,
        use_cache=False,
    )
    image_positions = torch.nonzero(prompt_ids == model.config.image_token_id).flatten()
    rows = torch.arange(prompt_len - 1, prompt_len - 1 + continuation.numel())
    attention, text_attention, prompt_image = [], [], []
    for layer in layers:
        block = output.attentions[layer][0][:, rows].float()  # (heads, n, keys)
        attention.append(block[..., image_positions].numpy())
        text = block[..., :prompt_len].clone()
        text[..., image_positions] = 0
        text_attention.append(text.numpy())
        # every prompt row's attention to the image (rows before the image see none of it)
        prompt_rows = output.attentions[layer][0][:, :prompt_len].float()
        prompt_image.append(prompt_rows[..., image_positions].numpy())
    return {
        "attention": np.stack(attention),
        "text_attention": np.stack(text_attention),
        "prompt_image_attention": np.stack(prompt_image),
        "layers": np.asarray(layers, dtype=np.int64),
        "input_ids": prompt_ids.numpy().astype(np.int64),
        "generated_ids": continuation.numpy().astype(np.int64),
        "image_token_positions": image_positions.numpy().astype(np.int64),
        "pixel_values": inputs["pixel_values"].float().numpy(),
        "grid_shape": np.array([16, 16], dtype=np.int64),
    }
