"""Cascading model randomisation (Adebayo et al., NeurIPS 2018): re-initialise the decoder's (then
the vision tower's) layers from the last one down and see whether the maps change.

A map that survives randomising the weights it claims to explain reflects the input (edges, the
prompt's layout), not the model. Each step answers the question again with the randomised model
(capture and maps through the study's own code, `inference.runner.answer_one` and
`maps.shard.explain_maps`) and compares every method's answer map with the original model's by
Spearman rank correlation and SSIM (`similarity.map_similarity`); the answer's decision map
only, not its per-layer or every-row variants. The weights are restored after
each step.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import torch

from cxr_attention.faithfulness.similarity import map_similarity

__all__ = ["RANDOMISATION_COLUMNS", "cascade_counts", "cascading_randomisation", "randomised"]

RANDOMISATION_COLUMNS = ["method", "part", "layers_randomised", "n_layers", "spearman", "ssim"]


def cascade_counts(n_layers: int, steps: int) -> list[int]:
    """How many last layers each step randomises: geometric from 1 to ``n_layers``, distinct."""
    counts = np.rint(np.geomspace(1, n_layers, max(1, steps))).astype(int)
    return sorted(set(counts.tolist()) | {n_layers})


@contextlib.contextmanager
def randomised(modules: Sequence[torch.nn.Module], seed: int) -> Iterator[None]:
    """Every parameter of ``modules`` redrawn from a normal of its own mean and sd; restored after.

    Keeping each tensor's scale (Adebayo et al. re-initialise with the layer's initialiser) keeps
    the network's activations in range, so what changes is the learnt structure, not the scale.
    """
    generator = torch.Generator().manual_seed(seed)
    saved = []
    with torch.no_grad():
        for module in modules:
            for parameter in module.parameters():
                saved.append((parameter, parameter.detach().clone()))
                values = parameter.detach().float()
                sd = float(values.std()) if values.numel() > 1 else 0.0
                drawn = torch.randn(parameter.shape, generator=generator) * sd + float(
                    values.mean()
                )
                parameter.copy_(drawn.to(parameter.device, parameter.dtype))
    try:
        yield
    finally:
        with torch.no_grad():
            for parameter, original in saved:
                parameter.copy_(original)


def decoder_layers(model) -> torch.nn.ModuleList:
    """The language model's decoder layers of a ``Gemma3ForConditionalGeneration``."""
    return model.model.language_model.layers


def cascading_randomisation(
    loaded,
    image: np.ndarray,
    question: str,
    original_maps: Mapping[str, np.ndarray],
    *,
    layers: int,
    max_new_tokens: int,
    image_first: bool,
    maps_params: Mapping | None,
    steps: int,
    seed: int,
    kept_maps: dict | None = None,
) -> list[dict]:
    """Similarity of each method's answer map to the original after each cascade step.

    Parameters
    ----------
    loaded : LoadedModel
    image : ndarray, uint8
    question : str
    original_maps : mapping
        Method name -> the original model's answer map of this sample.
    layers, max_new_tokens, image_first
        As the inference stage answered.
    maps_params : mapping or None
        The ``maps`` section.
    steps : int
        `cascade_counts` steps per part.
    seed : int
    kept_maps : dict, optional
        Filled with ``(method, part, layers_randomised)`` -> that step's answer map.

    Returns
    -------
    list of dict with `RANDOMISATION_COLUMNS`
    """
    from cxr_attention.inference.runner import answer_one
    from cxr_attention.inference.writing import capture_arrays
    from cxr_attention.maps.hooks import vision_layers
    from cxr_attention.maps.shard import explain_maps

    rows = []
    for part, modules in (
        ("decoder", decoder_layers(loaded.model)),
        ("vision", vision_layers(loaded.model)),
    ):
        for count in cascade_counts(len(modules), steps):
            with randomised(list(modules)[-count:], seed):
                capture = answer_one(
                    loaded,
                    image,
                    question,
                    layers=layers,
                    max_new_tokens=max_new_tokens,
                    image_first=image_first,
                    include_pixel_values=True,
                )
                arrays = capture_arrays(capture, dtype=np.float32, include_pixel_values=True)
                maps = explain_maps(
                    arrays, terms=[], loaded_model=loaded, method="all", params=maps_params
                )
            for record, grid in maps:
                if not record.is_answer_decision_map or record.method not in original_maps:
                    continue
                if kept_maps is not None:
                    kept_maps[(record.method, part, count)] = grid
                rho, ssim = map_similarity(original_maps[record.method], grid)
                rows.append(
                    {
                        "method": record.method,
                        "part": part,
                        "layers_randomised": count,
                        "n_layers": len(modules),
                        "spearman": rho,
                        "ssim": ssim,
                    }
                )
    return rows
