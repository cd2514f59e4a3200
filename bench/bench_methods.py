"""Seconds per map and peak GPU memory of every registered map method, on one sample.

One radiograph and one study prompt; a capture is made by the inference code (so the capture-only
methods have their arrays), then each method maps the answer and ``--terms`` terms, forced through
:func:`~cxr_attention.maps.shard.explain_maps` as ``--method <name>`` (what ``explain``
runs). The first call of a method is a warm-up; the best of ``--repeats`` is reported, per map,
with the peak GPU memory of the method's calls (nan on the CPU).
Settings are the schema's defaults (``maps``), so the numbers are what a run costs.

Run: ``.venv/bin/python bench/bench_methods.py --model tiny``; on a GPU:
``python bench/bench_methods.py --model medgemma-4b --device cuda``.
"""

from __future__ import annotations

import argparse
import sys

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
TERMS = ["effusion", "heart", "lungs"]


def answered_capture(loaded):
    """The capture of :data:`QUESTION` on the first demo radiograph, pixels kept (the model-running
    methods read them)."""
    import numpy as np

    from cxr_attention.inference.runner import answer_one
    from cxr_attention.inference.writing import capture_arrays

    answered = answer_one(
        loaded,
        np.asarray(bench_image()),
        QUESTION,
        layers=3,
        max_new_tokens=3,
        image_first=True,
        include_pixel_values=True,
    )
    return capture_arrays(answered, dtype=np.float32, include_pixel_values=True)


def time_methods(loaded, capture, *, terms, methods, repeats: int, report=None) -> list[dict]:
    """Per method: ``method``, ``seconds_per_map`` (best of ``repeats`` after a warm-up),
    ``peak_gib`` (GPU), ``maps`` and ``own_maps`` (those made without a fallback).

    ``report(row)`` is called as each method finishes, so a run cut short keeps what it measured.
    """
    from cxr_attention.maps.shard import explain_maps

    rows = []
    for name in methods:

        def run(method=name):
            return explain_maps(capture, terms=terms, loaded_model=loaded, method=method)

        reset_peak_memory()
        run()  # warm-up: the model's first pass, the image's embeddings
        best, maps = min((timed(run) for _ in range(repeats)), key=lambda pair: pair[0])
        own = sum(1 for record, _ in maps if record.method == name and not record.fallback_reason)
        row = {
            "method": name,
            "seconds_per_map": best / len(maps),
            "peak_gib": peak_memory_gib(),
            "maps": len(maps),
            "own_maps": own,
        }
        rows.append(row)
        if report is not None:
            report(row)
    return rows


def method_line(row: dict) -> str:
    """One Markdown table row of `time_methods`'s output."""
    return (
        f"| {row['method']} | {row['seconds_per_map']:.3f} | {row['peak_gib']:.1f} | "
        f"{row['own_maps']}/{row['maps']} |"
    )


METHOD_HEADER = (
    "| method | seconds per map | peak GPU memory (GiB) | maps without a fallback |\n"
    "|---|---|---|---|"
)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=MODEL_KINDS, default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--terms", type=int, default=2, help="terms besides the answer")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--methods", nargs="*", help="default: every registered method")
    args = parser.parse_args(argv)

    from cxr_attention.inference.model import LoadedModel
    from cxr_attention.maps.registry import METHODS

    model, processor, description = load_bench_model(args.model, args.device)
    loaded = LoadedModel(model=model, processor=processor, device=model.device)
    capture = answered_capture(loaded)
    terms = TERMS[: args.terms]
    print(*describe_machine(model), f"model: {description}", sep="\n")
    print(f"maps per call: {1 + len(terms)} (the answer and {terms})\n")
    print(METHOD_HEADER)
    time_methods(
        loaded,
        capture,
        terms=terms,
        methods=args.methods or list(METHODS),
        repeats=args.repeats,
        report=lambda row: print(method_line(row), flush=True),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
