"""What the model benchmarks share: the random models, the image, and timing on any device.

Kinds of model (all random weights, built by the project's own code):

- ``tiny``: the test model (6 layers, hidden 64, 448 px), saved and loaded like the real one;
- ``full-width``: MedGemma 4B's widths and vocabulary with a few layers (CPU-sized);
- ``medgemma-4b``: the full MedGemma 4B architecture (34 text, 27 vision layers; for a GPU).

bfloat16 on CUDA, float32 on the CPU, as the study runs.
"""

from __future__ import annotations

import platform
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]
# A real radiograph that travels with the repository (sources and licences in data/demo/README.md).
DEMO_IMAGES = REPO_ROOT / "data" / "demo" / "mimic-cxr-jpg" / "files"
MODEL_KINDS = ("tiny", "full-width", "medgemma-4b")


def bench_images(count: int = 1) -> list[Image.Image]:
    """The first ``count`` demo radiographs (14 at most), in grey levels."""
    paths = sorted(DEMO_IMAGES.rglob("*.jpg"))
    if count > len(paths):
        raise SystemExit(f"at most {len(paths)} demo images")
    return [Image.open(path).convert("L") for path in paths[:count]]


def bench_image() -> Image.Image:
    """The first demo radiograph, in grey levels."""
    return bench_images(1)[0]


def load_bench_model(kind: str, device: str, *, text_layers: int = 3, vision_layers: int = 2):
    """``(model, processor, description)`` for one of :data:`MODEL_KINDS`."""
    from cxr_attention.inference.model import load_model
    from cxr_attention.models.gemma3 import build_random_model, medgemma_4b_config
    from cxr_attention.models.tiny import build_tiny_model, build_tiny_processor, tiny_token_ids

    if kind == "tiny":
        folder = build_tiny_model(Path(tempfile.mkdtemp()) / "tiny", seed=0)
        loaded = load_model(folder, device=device, min_free_gpu_gb=0)
        return loaded.model, loaded.processor, "tiny model (6 layers, hidden 64, 448 px)"
    processor = build_tiny_processor(image_size=896)
    layers = {"full-width": (text_layers, vision_layers), "medgemma-4b": (34, 27)}[kind]
    config = medgemma_4b_config(
        num_text_layers=layers[0],
        num_vision_layers=layers[1],
        token_ids=tiny_token_ids(processor.tokenizer),
    )
    target = torch.device(device if device != "auto" else "cpu")
    dtype = torch.bfloat16 if target.type == "cuda" else torch.float32
    model = build_random_model(config, device=target, dtype=dtype)
    text = f"{layers[0]} text / {layers[1]} vision layers"
    return model, processor, f"MedGemma 4B widths, vocab 262208, {text}, 896 px, {dtype}"


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(function) -> tuple[float, object]:
    """``(seconds, result)`` of one call, with the GPU's queued work included."""
    synchronize()
    start = time.perf_counter()
    result = function()
    synchronize()
    return time.perf_counter() - start, result


def reset_peak_memory() -> None:
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def peak_memory_gib() -> float:
    """Peak GPU memory allocated since the last reset (nan on the CPU)."""
    if not torch.cuda.is_available():
        return float("nan")
    return torch.cuda.max_memory_allocated() / 2**30


def describe_machine(model) -> list[str]:
    """Lines naming the date, machine, versions and device, for the head of a report."""
    import transformers

    lines = [
        f"date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        f"machine: {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} torch threads, torch {torch.__version__}, "
        f"transformers {transformers.__version__}, device {model.device}",
    ]
    if model.device.type == "cuda":
        lines.append(f"gpu: {torch.cuda.get_device_name(model.device)}")
    return lines
