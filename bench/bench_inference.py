"""Questions per second with attention capture: shared + batched against one question at a time.

Everything is measured side by side in one run on the same image and questions, so the ratios do
not depend on the machine:

- ``alone``: one question at a time, the image encoded for each (``share=False``, batch 1);
- ``shared``: all questions of the image, image first, vision tower and image prefix run once,
  questions branched from the prefix's cache as batches (``share=True``); with
  ``--question-first`` (the model card's order) only the vision tower's output is shared;
- ``shared, no capture``: the same with no layer captured (capture overhead inside the pipeline);
- ``plain generate``: transformers' ``generate`` on the sdpa path, one question at a time, no
  capture function installed (capture overhead against plain generation);
- ``written``: ``--write-rounds`` groups of images in a row, as many per batch as the largest
  ``--images-per-batch`` (what a GPU run is configured with), each capture written as the
  workflow writes it, inline or on background threads (`SampleWriter`, what the inference rule
  uses), against the same without writing; and, to weigh an alternative, on worker processes
  (the arrays made in the main thread, compressed and written elsewhere: no GIL shared);
- ``images per batch``: the shared pipeline on 1, 2, 4 ... different images at once, their
  questions in one batch (``inference.images_per_batch``), questions per second and peak memory.

Goals (issue 5): shared >= 3x alone at 42 questions per image; capture <= 1.10x plain.

Models: ``tiny`` (the test model), ``full-width`` (MedGemma 4B's widths and vocabulary with a few
layers, random weights; CPU-sized), ``medgemma-4b`` (the full architecture, random weights; for a
GPU). The one-at-a-time rate is measured on ``--alone`` questions (a rate does not depend on how
many questions follow), the shared rate on all ``--questions``.

Run: ``.venv/bin/python bench/bench_inference.py --model tiny``
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import multiprocessing
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
from _models import (
    MODEL_KINDS,
    bench_image,
    bench_images,
    describe_machine,
    load_bench_model,
    peak_memory_gib,
    reset_peak_memory,
    timed,
)

FINDINGS = [
    ("atelectasis", "a collapsed part of the lung"),
    ("cardiomegaly", "an enlarged heart"),
    ("consolidation", "a dense area in the lung"),
    ("pulmonary edema", "fluid in the lungs"),
    ("an enlarged cardiomediastinum", "a widened middle of the chest"),
    ("a fracture", "a broken bone"),
    ("a lung lesion", "a spot on the lung"),
    ("a lung opacity", "a cloudy area in the lung"),
    ("a pleural effusion", "fluid around the lungs"),
    ("another pleural abnormality", "another problem of the lung lining"),
    ("pneumonia", "a lung infection"),
    ("a pneumothorax", "a collapsed lung with air around it"),
    ("a support device", "tubes or wires"),
    ("no finding", "a normal chest"),
]


def questions_for_one_image(n: int) -> list[str]:
    """``n`` distinct questions in the study's three styles (baseline, plain, paraphrase)."""
    forms = [
        "Is there {technical}?",
        "Is there {plain} in this chest X-ray?",
        "Looking at this radiograph, can you see {technical}?",
    ]
    pool = [f.format(technical=t, plain=p) for f in forms for t, p in FINDINGS]
    if n > len(pool):
        raise SystemExit(f"at most {len(pool)} questions")
    return pool[:n]


def write_arrays(path: Path, arrays: dict) -> None:
    """Write a capture's arrays (in a worker process: module level, so that it pickles)."""
    from cxr_attention.io import write_npz

    write_npz(path, **arrays)


def agreement(alone: list, shared: list) -> str:
    """How far the shared + batched captures are from one-at-a-time ones, question by question.

    Equal up to float32 rounding on the CPU (the tests assert it); on a GPU in bfloat16 batching
    changes the order of sums, so small differences are expected and reported.
    """
    pairs = list(zip(alone, shared[: len(alone)], strict=True))  # alone: the first questions
    same = sum(np.array_equal(a.generated_ids, s.generated_ids) for a, s in pairs)
    p_yes = max(abs(a.p_yes - s.p_yes) for a, s in pairs)
    attention = 0.0
    for a, s in pairs:
        steps = min(a.attention.shape[2], s.attention.shape[2])  # answers may differ in length
        difference = np.abs(a.attention[:, :, :steps] - s.attention[:, :, :steps])
        attention = max(attention, float(difference.max(initial=0.0)))
    return (
        f"shared vs one at a time on the same {len(alone)} questions: {same} identical answers, "
        f"largest P(yes) difference {p_yes:.2e}, largest attention difference {attention:.2e}"
    )


def main(argv: list[str]) -> int:
    from cxr_attention.inference.batching import capture_answers, capture_images
    from cxr_attention.inference.prompting import build_inputs
    from cxr_attention.inference.writing import SampleWriter, capture_arrays, write_capture

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=MODEL_KINDS, default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--questions", type=int, default=42)
    parser.add_argument("--alone", type=int, default=6, help="questions run one at a time")
    parser.add_argument("--batch-size", type=int, default=42)
    parser.add_argument("--new-tokens", type=int, default=8)
    parser.add_argument("--layers", type=int, default=3, help="last k layers captured")
    parser.add_argument("--text-layers", type=int, default=3)
    parser.add_argument("--vision-layers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs")
    parser.add_argument(
        "--write-rounds", type=int, default=3, help="image groups in a row for the written runs"
    )
    parser.add_argument(
        "--images-per-batch",
        type=int,
        nargs="+",
        default=[1, 2, 4],
        help="images answered together, each in turn (batch: this times --batch-size rows)",
    )
    parser.add_argument(
        "--question-first", action="store_true", help="question before the image (model card)"
    )
    parser.add_argument(
        "--writer-threads", type=int, default=None, help="SampleWriter threads (its default)"
    )
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    model, processor, description = load_bench_model(
        args.model, args.device, text_layers=args.text_layers, vision_layers=args.vision_layers
    )
    weights_gib = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**30
    image = bench_image()
    questions = questions_for_one_image(args.questions)
    alone_questions = questions[: args.alone]
    layers = min(args.layers, model.config.get_text_config().num_hidden_layers)
    image_first = not args.question_first
    # The workflow's default: only the prompt rows after the image are computed and stored.
    common = {
        "image_first": image_first,
        "max_new_tokens": args.new_tokens,
        "prompt_image_rows": "text",
    }

    def run_alone(layer_count=layers):
        return [
            capture_answers(
                model,
                processor,
                image,
                [question],
                layers=layer_count,
                share=False,
                batch_size=1,
                **common,
            )[0]
            for question in alone_questions
        ]

    def run_shared(layer_count=layers):
        return capture_answers(
            model,
            processor,
            image,
            questions,
            layers=layer_count,
            share=True,
            batch_size=args.batch_size,
            **common,
        )

    written_dir = Path(tempfile.mkdtemp())
    names = itertools.count()

    def next_path():
        return written_dir / f"{next(names) % (2 * write_rows)}.npz"

    def write(capture):
        write_capture(capture, next_path(), prompt_image_rows="text")

    several = bench_images(max(args.images_per_batch))

    def run_images(count: int, on_batch=None):
        return capture_images(
            model,
            processor,
            [(picture, questions) for picture in several[:count]],
            layers=layers,
            share=True,
            batch_size=count * args.batch_size,
            on_batch=on_batch,
            **common,
        )

    write_images = max(args.images_per_batch)
    write_rows = write_images * args.batch_size

    workers = args.writer_threads or SampleWriter.default_threads()
    processes = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
    for started in [processes.submit(int, 0) for _ in range(workers)]:
        started.result()  # workers started outside the timings

    def run_written(writes: str):
        background = writes == "background"
        # As the inference job does: at most two batches wait to be written.
        pool = (
            SampleWriter(lambda: None, threads=args.writer_threads, max_pending=2 * write_rows)
            if background
            else None
        )
        submitted = []
        with pool or contextlib.nullcontext() as writer:

            def on_batch(captures, seconds):
                for capture in captures:
                    if writes == "inline":
                        write(capture)
                    elif background:
                        writer.submit(write, capture)
                    elif writes == "process":
                        arrays = capture_arrays(capture, prompt_image_rows="text")
                        submitted.append(processes.submit(write_arrays, next_path(), arrays))

            for _ in range(args.write_rounds):
                run_images(write_images, on_batch)
        for future in submitted:
            future.result()

    def run_plain():
        model.set_attn_implementation("sdpa")
        for question in alone_questions:
            inputs = build_inputs(processor, image, question, image_first=image_first)
            inputs = inputs.to(model.device)
            inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
            model.generate(**inputs, max_new_tokens=args.new_tokens, do_sample=False)

    # Warm-up (lazy initialisation, allocator) on one question, outside the timings.
    capture_answers(
        model, processor, image, questions[:2], layers=layers, batch_size=2, share=True, **common
    )
    peak_shared = 0.0

    # Interleaved repeats, best of each: the machine may be shared, and the minimum is the
    # least disturbed measurement of each run.
    best = {"plain": np.inf, "alone": np.inf, "shared": np.inf, "shared_plain": np.inf}
    writes = ("none", "inline", "background", "process")
    best_written = dict.fromkeys(writes, np.inf)
    best_images = dict.fromkeys(args.images_per_batch, np.inf)
    peak_images = dict.fromkeys(args.images_per_batch, 0.0)
    for _ in range(args.repeats):
        best["plain"] = min(best["plain"], timed(run_plain)[0])
        seconds, alone_captures = timed(run_alone)
        best["alone"] = min(best["alone"], seconds)
        reset_peak_memory()
        seconds, captures = timed(run_shared)
        peak_shared = max(peak_shared, peak_memory_gib())
        best["shared"] = min(best["shared"], seconds)
        best["shared_plain"] = min(best["shared_plain"], timed(lambda: run_shared(0))[0])
        for mode in writes:
            best_written[mode] = min(best_written[mode], timed(lambda m=mode: run_written(m))[0])
        for count in args.images_per_batch:
            reset_peak_memory()
            seconds, _ = timed(lambda c=count: run_images(c))
            best_images[count] = min(best_images[count], seconds)
            peak_images[count] = max(peak_images[count], peak_memory_gib())
    t_plain, t_alone, t_shared, t_shared_plain = (
        best["plain"],
        best["alone"],
        best["shared"],
        best["shared_plain"],
    )
    prompt_len = len(captures[0].input_ids)

    rate_alone = len(alone_questions) / t_alone
    rate_plain = len(alone_questions) / t_plain
    rate_shared = len(questions) / t_shared
    rate_shared_plain = len(questions) / t_shared_plain
    print("\n".join(describe_machine(model)))
    on_gpu = model.device.type == "cuda"
    if on_gpu:
        print(
            f"GPU memory: weights {weights_gib:.1f} GiB, peak {peak_shared:.1f} GiB "
            f"(capture, shared + batched, batch {args.batch_size})"
        )
    print(f"model: {description}")
    print(
        f"questions per image: {len(questions)} (one-at-a-time rate on {len(alone_questions)}), "
        f"prompt {prompt_len} tokens, {args.new_tokens} new tokens, capture of the last "
        f"{layers} layers, batch {args.batch_size}, "
        + ("image first" if image_first else "question first")
    )
    print(f"{'run':34s} {'questions':>9s} {'seconds':>9s} {'q/s':>9s}")
    for name, count, seconds in [
        ("plain generate, one at a time", len(alone_questions), t_plain),
        ("capture, one at a time", len(alone_questions), t_alone),
        ("capture, shared + batched", len(questions), t_shared),
        ("no capture, shared + batched", len(questions), t_shared_plain),
    ]:
        print(f"{name:34s} {count:9d} {seconds:9.2f} {count / seconds:9.2f}")
    print(f"shared+batched / one at a time (capture): {rate_shared / rate_alone:.2f}x (goal >= 3x)")
    print(
        f"capture overhead, one at a time vs plain generate: {rate_plain / rate_alone:.2f}x "
        "(goal <= 1.10x)"
    )
    print(f"capture overhead, shared pipeline: {rate_shared_plain / rate_shared:.2f}x")
    print(agreement(alone_captures, captures))
    first = args.images_per_batch[0]
    for count in args.images_per_batch:
        rate = count * len(questions) / best_images[count]
        gain = best_images[first] / first / (best_images[count] / count)
        memory = f", peak GPU memory {peak_images[count]:.1f} GiB" if on_gpu else ""
        print(
            f"images per batch {count} ({count * args.batch_size} rows): {rate:.2f} q/s, "
            f"{gain:.2f}x images per batch {first}{memory}"
        )
    written = args.write_rounds * write_images * len(questions)
    print(
        f"written as the workflow writes ({written} questions, {write_images} images per batch; "
        "q/s): "
        + ", ".join(f"{mode} {written / best_written[mode]:.2f}" for mode in writes)
        + f"; background writes cost {best_written['background'] / best_written['none']:.2f}x"
        + f", inline {best_written['inline'] / best_written['none']:.2f}x"
        + f", processes {best_written['process'] / best_written['none']:.2f}x"
        + f" ({workers} threads or processes)"
    )
    processes.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
