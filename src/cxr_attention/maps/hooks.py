"""One hooks helper for the vision-side methods, and the model plumbing they share.

Shaped after pytorch-grad-cam's ``ActivationsAndGradients``: a forward hook on the target layer
keeps its output, used as a context manager so that every handle is released however the block
ends. Gradients are taken with ``torch.autograd.grad`` on the kept activation (captum's way), so no
parameter ever receives a gradient.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

__all__ = [
    "LayerActivations",
    "VisionEncodings",
    "frozen_parameters",
    "model_pixels",
    "tokens_per_side",
    "vision_layers",
]


def vision_layers(model: nn.Module) -> nn.ModuleList:
    """The SigLIP encoder layers of a ``Gemma3ForConditionalGeneration`` (output ``(B, P, C)``)."""
    return model.model.vision_tower.encoder.layers


def tokens_per_side(model: nn.Module) -> int:
    """Side of the image-token grid (16 for ``mm_tokens_per_image = 256``)."""
    return math.isqrt(int(model.config.mm_tokens_per_image))


class LayerActivations:
    """Keep a layer's output during a forward pass; optionally make it a gradient leaf.

    Parameters
    ----------
    layer : torch.nn.Module
        Its output is a tensor, or a tuple whose first item is the tensor.
    requires_grad : bool
        If True and the output does not already require a gradient (parameters frozen, inputs
        constant), it is replaced by a detached copy that does, so that the rest of the forward
        builds a graph from it and nothing upstream is differentiated.
    repeat : int
        If above 1, a batch-of-one output is replaced by that many copies (a new gradient leaf
        when ``requires_grad``), so that the layers before run once for several rows after
        (one image, several teacher-forced texts). Rows stay independent: the gradient of a
        sum of per-row scores, taken on row ``b``, is row ``b``'s own gradient.

    Examples
    --------
    >>> with LayerActivations(vision_layers(model)[-1], requires_grad=True) as kept:
    ...     score = target(model(**inputs).logits)
    ...     (grad,) = torch.autograd.grad(score.sum(), kept.activations)
    """

    def __init__(self, layer: nn.Module, *, requires_grad: bool = False, repeat: int = 1):
        if repeat < 1:
            raise ValueError(f"repeat must be at least 1, got {repeat}")
        self.layer = layer
        self.requires_grad = requires_grad
        self.repeat = int(repeat)
        self.activations: torch.Tensor | None = None
        self._handle = None

    def _hook(self, module, inputs, output):
        tensor = output[0] if isinstance(output, tuple) else output
        replaced = False
        if self.repeat > 1:
            if tensor.shape[0] != 1:
                raise ValueError(f"repeat needs a batch of one, got {tensor.shape[0]} rows")
            tensor = tensor.detach() if self.requires_grad else tensor
            tensor = tensor.repeat(self.repeat, *([1] * (tensor.ndim - 1)))
            replaced = True
        if self.requires_grad and not tensor.requires_grad:
            tensor = tensor.detach().requires_grad_(True)
            replaced = True
        self.activations = tensor
        if not replaced:
            return None
        return (tensor, *output[1:]) if isinstance(output, tuple) else tensor

    def __enter__(self) -> LayerActivations:
        self._handle = self.layer.register_forward_hook(self._hook)
        return self

    def release(self) -> None:
        """Remove the hook (idempotent)."""
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def __exit__(self, *exc_info) -> None:
        self.release()


class VisionEncodings:
    """Vision layers' outputs for the image seen last, so that an image's samples share them.

    The maps stage visits an image's dozens of questions one after another with the same pixel
    array; the vision tower (27 layers over 4096 patches on MedGemma) then runs once for all of
    them instead of once per Grad-CAM pass or activation-norm map. The entry is keyed by the
    identity of the model and of the pixel object, both held, so that neither identity can be
    reused by another object.
    """

    def __init__(self):
        self._key: tuple[object, object] | None = None
        self._outputs: dict[int, torch.Tensor] = {}

    def output(
        self, model: nn.Module, pixel_values: np.ndarray | torch.Tensor, layer: int
    ) -> torch.Tensor:
        """Output ``(1, patches, channels)`` of vision encoder layer ``layer``, without a graph."""
        if self._key is None or self._key[0] is not model or self._key[1] is not pixel_values:
            self._key, self._outputs = (model, pixel_values), {}
        index = layer % len(vision_layers(model))
        if index not in self._outputs:
            with torch.no_grad(), LayerActivations(vision_layers(model)[index]) as kept:
                model.model.vision_tower(pixel_values=model_pixels(model, pixel_values))
            self._outputs[index] = kept.activations.detach()
        return self._outputs[index]


@contextlib.contextmanager
def frozen_parameters(model: nn.Module) -> Iterator[None]:
    """Set ``requires_grad=False`` on every parameter for the block, then restore the flags."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for parameter, _ in flags:
            parameter.requires_grad_(False)
        yield
    finally:
        for parameter, flag in flags:
            parameter.requires_grad_(flag)


def model_pixels(model: nn.Module, pixel_values: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Pixels ``(3, S, S)`` or ``(1, 3, S, S)`` as a batch of one.

    On the model's device and in its dtype, whether given as a tensor or an array.
    """
    parameter = next(model.parameters())
    if isinstance(pixel_values, torch.Tensor):
        pixels = pixel_values.to(parameter.device)
    else:
        pixels = torch.as_tensor(
            np.asarray(pixel_values, dtype=np.float32), device=parameter.device
        )
    if pixels.ndim == 3:
        pixels = pixels.unsqueeze(0)
    return pixels.to(parameter.dtype)
