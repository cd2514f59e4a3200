"""Grad-CAM on the vision tower: targets batched per sample against one target at a time.

For one radiograph and one study prompt, the maps of a sample's terms (each forced as the start of
the answer, as the cascade does when a term was not generated) are computed both ways, side by
side in one run:

- ``one at a time``: one forward and backward pass per target (:class:`VisionGradCAM` called);
- ``batched``: ``--max-rows`` targets per pass, the vision tower run once
  (:meth:`VisionGradCAM.batched`, what the maps stage uses).

It prints the time and, on a GPU, the peak memory of each, and the largest difference between
their maps (each normalised to sum 1), relative to the map's largest cell: float32 rounding on the
CPU, bfloat16 rounding on a GPU. A batched pass that fails as a whole (out of memory) falls back
to one target at a time; the bench reports that instead of a ratio that would hide it.

Run: ``.venv/bin/python bench/bench_gradcam.py --model tiny``; on a GPU:
``python bench/bench_gradcam.py --model medgemma-4b --device cuda``.
"""

from __future__ import annotations

import argparse
import logging
import sys

import numpy as np
import torch
from _models import (
    MODEL_KINDS,
    bench_image,
    describe_machine,
    load_bench_model,
    peak_memory_gib,
    reset_peak_memory,
    timed,
)

QUESTION = "Is there a pleural effusion?"
# Terms of the kind the question bank targets, more than a sample usually has (the demo: 3-6).
TERMS = [
    "effusion",
    "pleural effusion",
    "fluid",
    "fluid around the lungs",
    "lungs",
    "opacity",
    "heart",
    "consolidation",
]


class _FallbackCounter(logging.Handler):
    """Counts the batched passes that failed whole and were redone one target at a time."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record):
        self.count += 1


def main(argv: list[str]) -> int:
    from cxr_attention.inference.prompting import build_inputs
    from cxr_attention.maps.gradcam import VisionGradCAM
    from cxr_attention.maps.grid import normalise_map
    from cxr_attention.maps.hooks import VisionEncodings

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=MODEL_KINDS, default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--targets", type=int, default=len(TERMS), help=f"at most {len(TERMS)}")
    parser.add_argument("--max-rows", type=int, default=8, help="targets per batched pass")
    parser.add_argument("--text-layers", type=int, default=3)
    parser.add_argument("--vision-layers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs")
    args = parser.parse_args(argv)
    if not 1 <= args.targets <= len(TERMS):
        parser.error(f"--targets must be between 1 and {len(TERMS)}")

    torch.manual_seed(0)
    model, processor, description = load_bench_model(
        args.model, args.device, text_layers=args.text_layers, vision_layers=args.vision_layers
    )
    model.eval()
    inputs = build_inputs(processor, bench_image(), QUESTION, image_first=True)
    input_ids = inputs["input_ids"][0].numpy()
    pixel_values = inputs["pixel_values"]
    tokenizer = processor.tokenizer
    requests = []
    for term in TERMS[: args.targets]:
        forced = tokenizer(" " + term, add_special_tokens=False)["input_ids"]
        requests.append((forced, list(range(len(forced)))))
    gradcam = VisionGradCAM(model)
    # The maps stage's own: the image's vision encoding computed once (here before the timings,
    # as an image's dozens of samples share it) and reused by every pass.
    encodings = VisionEncodings()
    cached = VisionGradCAM(model, encodings=encodings)
    encodings.output(model, pixel_values, -1)
    fallbacks = _FallbackCounter()
    logging.getLogger("cxr_attention.maps.gradcam").addHandler(fallbacks)

    runs = {
        "one target at a time": lambda: [
            gradcam(input_ids, pixel_values, *request) for request in requests
        ],
        "batched": lambda: gradcam.batched(
            input_ids, pixel_values, requests, max_rows=args.max_rows
        ),
        "batched, encoding cached": lambda: cached.batched(
            input_ids, pixel_values, requests, max_rows=args.max_rows
        ),
    }
    runs["one target at a time"]()  # warm-up (lazy initialisation, allocator), not timed
    best = dict.fromkeys(runs, np.inf)
    peak = dict.fromkeys(runs, 0.0)
    maps = {}
    for _ in range(args.repeats):
        for name, run in runs.items():
            reset_peak_memory()
            seconds, maps[name] = timed(run)
            best[name] = min(best[name], seconds)
            peak[name] = max(peak[name], peak_memory_gib())

    failed = [m for result in maps.values() for m in result if isinstance(m, Exception)]
    if failed:
        print(f"{len(failed)} maps failed: {failed[0]}")
        return 1
    singles = maps["one target at a time"]
    difference = max(
        float(np.abs(normalise_map(a) - normalise_map(b)).max() / normalise_map(a).max())
        for name in ("batched", "batched, encoding cached")
        for a, b in zip(singles, maps[name], strict=True)
    )
    print("\n".join(describe_machine(model)))
    print(f"model: {description}")
    lengths = [len(ids) for ids, _ in requests]
    print(
        f"prompt {len(input_ids)} tokens, {len(requests)} targets of {min(lengths)}-{max(lengths)} "
        f"forced tokens, up to {args.max_rows} per batched pass, best of {args.repeats}"
    )
    on_gpu = model.device.type == "cuda"
    print(
        f"{'run':26s} {'seconds':>9s} {'maps/s':>9s}"
        + (f" {'peak GPU GiB':>13s}" if on_gpu else "")
    )
    for name in runs:
        rate = len(requests) / best[name]
        memory = f" {peak[name]:13.2f}" if on_gpu else ""
        print(f"{name:26s} {best[name]:9.3f} {rate:9.2f}{memory}")
    if fallbacks.count:
        print(f"batched passes that failed whole and fell back: {fallbacks.count}")
    single = best["one target at a time"]
    print(f"one at a time / batched: {single / best['batched']:.2f}x")
    cached_seconds = best["batched, encoding cached"]
    print(f"one at a time / batched, encoding cached: {single / cached_seconds:.2f}x")
    print(f"largest map difference (relative to the map's largest cell): {difference:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
