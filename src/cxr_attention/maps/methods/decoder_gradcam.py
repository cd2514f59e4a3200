"""``decoder_gradcam``: Grad-CAM on the language model's hidden states at the image-token positions
(the decoder-side Grad-CAM among MedFocus's MedGemma baselines), beside the vision-tower
``gradcam``.

For the hidden states entering a decoder layer (the previous layer's output, what the layer's
attention reads; the last layer's own output reaches no later position, so its gradient at the
image tokens is zero), ``H`` at the image tokens ``(image tokens, hidden)``, and the target's
score ``S``: channel weights ``w = mean_tokens dS/dH``, map ``ReLU(H w)`` per image token. The
score is the decision margin for the answer and the term's teacher-forced token logits for a
term (:mod:`~cxr_attention.maps.methods.decoder_forward`). ``maps.decoder_gradcam_layer`` picks
the layer (default the last global, full-attention layer); several layers are averaged.
"""

from __future__ import annotations

import numpy as np

from cxr_attention.maps.grid import MapUnavailable
from cxr_attention.maps.methods.base import MapInputs, MapResult
from cxr_attention.maps.methods.decoder_forward import (
    DecoderMethod,
    decoder_layer_indices,
    image_features,
    run_model,
    scored_target,
)
from cxr_attention.maps.targets import MapTarget

__all__ = ["DecoderGradCAM"]


class DecoderGradCAM(DecoderMethod):
    name = "decoder_gradcam"
    label = "decoder Grad-CAM"
    colour = "#882255"
    description = (
        "Grad-CAM on the decoder's hidden states at the image tokens, for the yes - no margin "
        "(the answer) or the term's token logits"
    )

    def attribute_one(self, inputs: MapInputs, target: MapTarget) -> MapResult:
        import torch

        from cxr_attention.maps.hooks import LayerActivations, frozen_parameters

        scored = scored_target(inputs, target)
        model, _ = inputs.model_and_pixels()
        layers = decoder_layer_indices(model, inputs.params.decoder_gradcam_layer)
        if 0 in layers:
            raise MapUnavailable("decoder layer 0 reads the embeddings (no hidden states before)")
        decoder = model.model.language_model.layers
        positions = torch.as_tensor(scored.image_positions)
        features = image_features(inputs)
        with frozen_parameters(model), torch.enable_grad():
            kept = [LayerActivations(decoder[i - 1], requires_grad=True) for i in layers]
            try:
                for hook in kept:
                    hook.__enter__()
                outputs = run_model(
                    model, scored.ids, features.clone(), logits_to_keep=scored.logits_to_keep
                )
                score = scored.score(outputs.logits)
            finally:
                for hook in kept:
                    hook.release()
            activations = [hook.activations for hook in kept]
            if any(a is None for a in activations):
                raise MapUnavailable("gradient failure: a decoder layer never ran")
            gradients = torch.autograd.grad(score.sum(), activations)
        cams = []
        for activation, gradient in zip(activations, gradients, strict=True):
            hidden = activation[0, positions].detach().float()
            grad = gradient[0, positions].float()
            if not torch.isfinite(grad).all():
                raise MapUnavailable("gradient failure: non-finite gradients")
            cams.append(torch.relu(hidden @ grad.mean(dim=0)).cpu().numpy())
        grid = np.mean(cams, axis=0).astype(np.float64).reshape(inputs.grid_shape)
        return MapResult(grid, layers="|".join(str(layer) for layer in layers))
