"""Seconds per map of every registered map method, on one sample (the answer and a few terms).

One radiograph and one study prompt; a capture is made by the inference code (so the capture-only
methods have their arrays), then each method maps the answer and ``--terms`` terms, forced through
:func:`~cxr_attention.maps.shard.explain_maps` as ``--method <name>`` (what ``explain``
runs). The first call of a method is a warm-up; the best of ``--repeats`` is reported, per map.
Settings are the schema's defaults (``maps``), so the numbers are what a run costs.

Run: ``.venv/bin/python bench/bench_methods.py --model tiny``; on a GPU:
``python bench/bench_methods.py --model medgemma-4b --device cuda``.
"""

from __future__ import annotations

import argparse
import sys

from _models import MODEL_KINDS, bench_image, describe_machine, load_bench_model, timed

QUESTION = "Is there a pleural effusion?"
TERMS = ["effusion", "heart", "lungs"]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=MODEL_KINDS, default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--terms", type=int, default=2, help="terms besides the answer")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--methods", nargs="*", help="default: every registered method")
    args = parser.parse_args(argv)

    import numpy as np

    from cxr_attention.inference.model import LoadedModel
    from cxr_attention.inference.runner import answer_one
    from cxr_attention.inference.writing import capture_arrays
    from cxr_attention.maps.registry import METHODS
    from cxr_attention.maps.shard import explain_maps

    model, processor, description = load_bench_model(args.model, args.device)
    loaded = LoadedModel(model=model, processor=processor, device=model.device)
    answered = answer_one(
        loaded,
        np.asarray(bench_image()),
        QUESTION,
        layers=3,
        max_new_tokens=3,
        image_first=True,
        include_pixel_values=True,
    )
    capture = capture_arrays(answered, dtype=np.float32, include_pixel_values=True)
    terms = TERMS[: args.terms]
    print(*describe_machine(model), f"model: {description}", sep="\n")
    print(f"maps per call: {1 + len(terms)} (the answer and {terms})\n")
    print("| method | seconds per map | maps without a fallback |")
    print("|---|---|---|")
    for name in args.methods or METHODS:

        def run(method=name):
            return explain_maps(capture, terms=terms, loaded_model=loaded, method=method)

        run()  # warm-up: the model's first pass, the image's embeddings
        best, maps = min((timed(run) for _ in range(args.repeats)), key=lambda pair: pair[0])
        good = sum(1 for record, _ in maps if record.method == name and not record.fallback_reason)
        print(f"| {name} | {best / len(maps):.3f} | {good}/{len(maps)} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
