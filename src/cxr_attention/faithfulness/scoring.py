"""The decision margin of many perturbed inputs of one (image, question), teacher-forced, batched.

One prompt, many pixel arrays or many token masks: each batch repeats the prompt and scores the
next-token logits at the decision step (the last prompt position) with the study's one margin,
`cxr_attention.inference.scoring.yes_no_margin_from_logits`. No text is generated.

Token-level removal replaces removed image tokens' embeddings (the multimodal projector's
output) with the mean image-token embedding of the same image, through a forward hook on
``model.model.multi_modal_projector``: the vision tower runs once per batch on the one image.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from cxr_attention.inference.scoring import yes_no_margin_from_logits, yes_no_tokens

__all__ = ["DecisionScorer", "projector"]


def projector(model) -> torch.nn.Module:
    """The module whose output are the image-token embeddings (Gemma 3's multimodal projector)."""
    return model.model.multi_modal_projector


class DecisionScorer:
    """Margins of one prompt under perturbations of its image.

    Parameters
    ----------
    model : Gemma3ForConditionalGeneration (or a module with its forward and projector)
    tokenizer
        Finds the yes / no tokens.
    inputs : mapping
        The processor's output for one question (batch of one): ``input_ids``,
        ``attention_mask``, ``token_type_ids``, ``pixel_values``.
    batch_size : int
        Prompts per forward pass.
    """

    def __init__(self, model, tokenizer, inputs: Mapping, *, batch_size: int = 8):
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.model = model
        self.tokens = yes_no_tokens(tokenizer)
        self.batch_size = int(batch_size)
        parameter = next(model.parameters())
        self.device, self.dtype = parameter.device, parameter.dtype
        self.text = {
            key: torch.as_tensor(inputs[key]).to(self.device)
            for key in ("input_ids", "attention_mask", "token_type_ids")
            if key in inputs
        }
        pixels = inputs.get("pixel_values")
        self.pixels = None if pixels is None else torch.as_tensor(pixels).to(self.device)

    @torch.no_grad()
    def _margins(self, pixel_values: torch.Tensor | None, rows: int) -> torch.Tensor:
        batch = {key: value.expand(rows, -1) for key, value in self.text.items()}
        if pixel_values is not None:
            batch["pixel_values"] = pixel_values.to(self.device, self.dtype)
        logits = self.model(**batch, use_cache=False, logits_to_keep=1).logits[:, -1, :]
        return yes_no_margin_from_logits(logits.float(), self.tokens)

    def original(self) -> float:
        """The margin of the unperturbed input."""
        return float(self._margins(self.pixels, 1)[0])

    def pixel_margins(self, pixel_batch: np.ndarray | torch.Tensor) -> np.ndarray:
        """Margins of ``(n, C, S, S)`` pixel arrays, ``batch_size`` at a time."""
        pixel_batch = torch.as_tensor(pixel_batch)
        out = []
        for start in range(0, len(pixel_batch), self.batch_size):
            chunk = pixel_batch[start : start + self.batch_size]
            out.append(self._margins(chunk, len(chunk)).cpu())
        return torch.cat(out).numpy().astype(np.float64) if out else np.zeros(0)

    def token_margins(self, removed_tokens: np.ndarray) -> np.ndarray:
        """Margins with the removed image tokens' embeddings set to the mean image token.

        Parameters
        ----------
        removed_tokens : ndarray (n, n_image_tokens), bool
            Row ``i``: the tokens removed in perturbation ``i`` (grid order, row-major).
        """
        removed = torch.as_tensor(np.asarray(removed_tokens, dtype=bool))
        results = []
        for start in range(0, len(removed), self.batch_size):
            chunk = removed[start : start + self.batch_size].to(self.device)
            handle = projector(self.model).register_forward_hook(_mean_token_hook(chunk))
            try:
                results.append(self._margins(self.pixels, len(chunk)).cpu())
            finally:
                handle.remove()
        return torch.cat(results).numpy().astype(np.float64) if results else np.zeros(0)


def _mean_token_hook(removed: torch.Tensor):
    """A forward hook: the one image's embeddings, one copy per row, removed tokens set to mean."""

    def hook(module, inputs, output):
        features = output[:1]  # (1, tokens, hidden): one image for every row of the batch
        if removed.shape[1] != features.shape[1]:
            raise ValueError(f"{removed.shape[1]} token flags for {features.shape[1]} image tokens")
        mean = features.mean(dim=1, keepdim=True)
        rows = features.expand(len(removed), -1, -1)
        return torch.where(removed[..., None], mean.expand_as(rows), rows)

    return hook
