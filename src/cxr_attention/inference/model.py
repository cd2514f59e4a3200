"""Load MedGemma (or the tiny look-alike) with transformers' Auto classes, on an unclaimed GPU."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Any

import torch

from cxr_attention.inference.gpu_claim import GpuClaim, claim_gpu

__all__ = ["LoadedModel", "choose_device", "load_model"]

# The card this process claimed (one per process), held open until the process ends.
_held_claim: GpuClaim | None = None
_claim_guard = threading.Lock()


@dataclass
class LoadedModel:
    """A model in eval mode, its processor and the device its weights live on."""

    model: Any
    processor: Any
    device: torch.device

    @property
    def tokenizer(self):
        return self.processor.tokenizer

    @property
    def image_token_id(self) -> int:
        return int(self.model.config.image_token_id)


def choose_device(
    device: str | torch.device = "auto", *, min_free_gpu_gb: float = 15.0
) -> torch.device:
    """The device to load on: ``"auto"`` claims the free GPU with the most free memory.

    On a machine with several GPUs, concurrent jobs each claim a different card, held until
    the process ends (see `cxr_attention.inference.gpu_claim`); choosing again in the same
    process gives up the card it held first. An explicit ``"cuda:N"`` is taken as is.

    Parameters
    ----------
    device : str or torch.device
        ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
    min_free_gpu_gb : float
        With ``"auto"`` or ``"cuda"``: the least free memory (GiB) a GPU must have.

    Raises
    ------
    RuntimeError
        ``"cuda"`` was asked for but no GPU has enough free memory (or none is visible), or every
        GPU that has is claimed by another job.
    """
    global _held_claim
    device = str(device)
    if device == "cpu" or (device == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if device not in ("auto", "cuda"):
        return torch.device(device)
    if not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but torch sees no CUDA device")
    with _claim_guard:
        if _held_claim is not None:
            _held_claim.release()
            _held_claim = None
        _held_claim = claim_gpu(min_free_gpu_gb)
        return _held_claim.device


def load_model(
    model_id_or_path: str | os.PathLike,
    *,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype = "auto",
    min_free_gpu_gb: float = 15.0,
    attn_implementation: str = "sdpa",
) -> LoadedModel:
    """Load a model folder or hub id (e.g. ``google/medgemma-4b-it``) for inference.

    Never runs remote code and reads safetensors only. ``dtype="auto"`` means bfloat16 on CUDA and
    float32 on the CPU (bfloat16 matmuls are slow and less exact there).

    Parameters
    ----------
    model_id_or_path : str or path
    device : str or torch.device
        See `choose_device`.
    dtype : "auto" or torch.dtype
    min_free_gpu_gb : float
    attn_implementation : str
        ``"sdpa"`` (fast path) or ``"eager"``; attention capture switches it itself.

    Returns
    -------
    LoadedModel
    """
    from transformers import AutoModelForImageTextToText, AutoProcessor

    target = choose_device(device, min_free_gpu_gb=min_free_gpu_gb)
    if dtype == "auto":
        dtype = torch.bfloat16 if target.type == "cuda" else torch.float32
    source = os.fspath(model_id_or_path)
    processor = AutoProcessor.from_pretrained(source, trust_remote_code=False)
    model = AutoModelForImageTextToText.from_pretrained(
        source,
        dtype=dtype,
        use_safetensors=True,
        trust_remote_code=False,
        attn_implementation=attn_implementation,
    )
    model.to(target)
    model.eval()
    return LoadedModel(model=model, processor=processor, device=target)
