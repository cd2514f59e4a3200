"""Gemma 3 configs with MedGemma's architecture traits, and randomly initialised models from them.

``gemma3_config`` holds what every model here shares (grouped-query attention, Gemma 3's layer
pattern and RoPE, a SigLIP tower with 14 px patches, 256 image tokens); ``medgemma_4b_config`` is
``google/medgemma-4b-it``'s architecture at full width (benchmarks build random weights from it);
the tiny test model (``tiny``) is the same architecture at toy sizes.
"""

from __future__ import annotations

import torch

__all__ = [
    "MM_TOKENS_PER_IMAGE",
    "build_random_model",
    "gemma3_config",
    "medgemma_4b_config",
    "reinit_projector",
]

MM_TOKENS_PER_IMAGE = 256


def gemma3_config(
    *,
    vocab_size: int,
    token_ids: dict[str, int],
    num_text_layers: int,
    text_options: dict,
    vision_options: dict,
):
    """A ``Gemma3Config`` with the traits every model here shares, at the given sizes.

    Shared: grouped-query attention with 8 query heads on 4 key/value heads; Gemma 3's layer
    pattern (layer ``i`` is full attention when ``(i + 1) % 6 == 0``, else sliding) and its RoPE
    settings; a SigLIP tower with 14 px patches and no pooling head; 256 image tokens; the special
    token ids read from ``token_ids`` (keys as in ``tiny.tiny_token_ids``).

    Parameters
    ----------
    vocab_size, num_text_layers : int
    token_ids : dict
    text_options, vision_options : dict
        The remaining ``Gemma3TextConfig`` / ``SiglipVisionConfig`` arguments (sizes).

    Returns
    -------
    transformers.Gemma3Config
    """
    from transformers import Gemma3Config, Gemma3TextConfig, SiglipVisionConfig

    text_config = Gemma3TextConfig(
        vocab_size=vocab_size,
        num_hidden_layers=num_text_layers,
        num_attention_heads=8,
        num_key_value_heads=4,
        layer_types=[
            "full_attention" if (i + 1) % 6 == 0 else "sliding_attention"
            for i in range(num_text_layers)
        ],
        rope_parameters={
            "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1_000_000.0},
            "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
        },
        pad_token_id=token_ids["<pad>"],
        eos_token_id=token_ids["<eos>"],
        bos_token_id=token_ids["<bos>"],
        **text_options,
    )
    vision_config = SiglipVisionConfig(
        patch_size=14, vision_use_head=False, layer_norm_eps=1e-6, **vision_options
    )
    return Gemma3Config(
        text_config=text_config,
        vision_config=vision_config,
        mm_tokens_per_image=MM_TOKENS_PER_IMAGE,
        boi_token_index=token_ids["<start_of_image>"],
        eoi_token_index=token_ids["<end_of_image>"],
        image_token_index=token_ids["<image_soft_token>"],
    )


def reinit_projector(model, generator: torch.Generator) -> None:
    """Give the multimodal projector random weights.

    transformers' ``_init_weights`` zero-initialises ``mm_input_projection_weight`` (a fresh model
    would see every image as zeros and every vision gradient would be 0). The scale
    ``vision_hidden ** -0.5`` gives image embeddings of unit root-mean-square.
    """
    weight = model.model.multi_modal_projector.mm_input_projection_weight
    with torch.no_grad():
        values = torch.randn(weight.shape, generator=generator) * weight.shape[0] ** -0.5
        weight.copy_(values.to(weight))


def medgemma_4b_config(
    *,
    num_text_layers: int = 34,
    num_vision_layers: int = 27,
    vocab_size: int = 262_208,
    token_ids: dict[str, int] | None = None,
):
    """The architecture of ``google/medgemma-4b-it`` (random weights are built from it).

    Text: hidden 2560, 8 heads / 4 KV heads, head_dim 256, intermediate 10240, sliding window 1024
    with every sixth layer global (layer ``i`` is full when ``(i + 1) % 6 == 0``); vision: SigLIP
    896 px, patch 14, hidden 1152, intermediate 4304, 16 heads; 256 image tokens (64 x 64 patches
    pooled 4 x 4).

    Parameters
    ----------
    num_text_layers, num_vision_layers : int
        Fewer layers keep full width for benchmarks on small machines (the pattern of sliding and
        full layers follows the layer index, as in the full model).
    vocab_size : int
    token_ids : dict, optional
        Special token ids (keys as in ``tiny.tiny_token_ids``) to use instead of MedGemma's, so
        that a benchmark can drive the full-size architecture with the tiny tokenizer.

    Returns
    -------
    transformers.Gemma3Config
    """
    ids = {
        "<pad>": 0,
        "<eos>": 1,
        "<bos>": 2,
        "<start_of_image>": 255_999,
        "<end_of_image>": 256_000,
        "<image_soft_token>": 262_144,
        **(token_ids or {}),
    }
    return gemma3_config(
        vocab_size=vocab_size,
        token_ids=ids,
        num_text_layers=num_text_layers,
        text_options={
            "hidden_size": 2560,
            "intermediate_size": 10240,
            "head_dim": 256,
            "query_pre_attn_scalar": 256,
            "sliding_window": 1024,
            "max_position_embeddings": 131_072,
        },
        vision_options={
            "hidden_size": 1152,
            "intermediate_size": 4304,
            "num_hidden_layers": num_vision_layers,
            "num_attention_heads": 16,
            "image_size": 896,
        },
    )


def build_random_model(
    config,
    *,
    seed: int = 0,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    attn_implementation: str = "sdpa",
):
    """A ``Gemma3ForConditionalGeneration`` with random weights, built directly on ``device``.

    Parameters
    ----------
    config : transformers.Gemma3Config
    seed : int
    device : str or torch.device
        Where the weights are created (initialising 4 B parameters on a GPU takes seconds).
    dtype : torch.dtype
    attn_implementation : str

    Returns
    -------
    transformers.Gemma3ForConditionalGeneration
        In eval mode, projector re-initialised (see ``tiny.build_tiny_model``).
    """
    from transformers import Gemma3ForConditionalGeneration

    torch.manual_seed(seed)
    with torch.device(device):
        model = Gemma3ForConditionalGeneration._from_config(
            config, dtype=dtype, attn_implementation=attn_implementation
        )
    reinit_projector(model, torch.Generator().manual_seed(seed + 1))
    model.generation_config.do_sample = False
    return model.eval()
