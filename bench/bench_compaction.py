"""Decoding with finished rows dropped from the batch against decoding every row to the end.

``capture_batch`` drops each row from the batch once it has produced its end token
(``compact_finished_rows=True``, `_decode_compacting`); transformers' ``generate``
(``compact_finished_rows=False``) keeps decoding every row until the last one ends. Both run side
by side in one run, on the same image and questions, with the study's capture (shared image
prefix, image first, the last ``--layers`` layers captured, prompt rows after the image).

Answer lengths are mixed as in the study, where most answers are one word and a few are
sentences: a row's answer length is planted (the random model never ends by itself) by forcing
its tokens, a countdown of ``--long-tokens`` ordinary tokens ending in the end-of-turn token.
Rows are told apart by their prompt length: ``--long-rows`` rows, the shortest prompts whose
length no other prompt has, run to ``--long-tokens`` tokens; every other row ends after 1 to 3
(by its prompt length). Forcing picks
which token comes next; every pass still runs the whole model, so the cost of a step is real.

Goal (issue 21): compaction >= 1.5x no compaction on a CPU, full width with a few layers.

Run: ``.venv/bin/python bench/bench_compaction.py --model full-width``
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import sys
import time

import numpy as np
import torch
from _models import MODEL_KINDS, bench_image, describe_machine, load_bench_model, timed
from bench_inference import questions_for_one_image

# Ordinary tokens of the tiny vocabulary (the bench models' tokenizer) for the countdown.
FIRST_COUNTDOWN_TOKEN = 100


@contextlib.contextmanager
def planted_answer_lengths(model, length_of_prompt, longest: int, eos: int):
    """Force every answer's tokens so that a prompt of ``L`` tokens gets ``length_of_prompt(L)``
    tokens, the last one ``eos``.

    The first token (the prompt pass, which sees each row's prompt length as its last position
    plus one) starts a countdown; each later token follows from the token just fed in, so the
    plan does not depend on which rows share the batch, or on their order.
    """
    countdown = torch.arange(FIRST_COUNTDOWN_TOKEN, FIRST_COUNTDOWN_TOKEN + longest - 1)
    steps_left = torch.full((model.config.get_text_config().vocab_size,), -1, dtype=torch.long)
    steps_left[countdown] = torch.arange(len(countdown))  # token countdown[j]: j tokens before eos

    def next_of(left: torch.Tensor) -> torch.Tensor:
        """The token that leaves ``left`` tokens before the end token (0: the end token)."""
        return torch.where(left > 0, countdown[(left - 1).clamp(min=0)], eos)

    def force(module, args, kwargs, output):
        positions = kwargs.get("position_ids")
        if positions is None:  # the image prefix's run: its logits go unread
            return output
        ids = kwargs["input_ids"].cpu()
        if ids.shape[1] > 1:  # the prompt pass
            lengths = positions[:, -1].cpu() + 1
            left = torch.tensor([length_of_prompt(int(n)) - 1 for n in lengths])
        else:
            # Outside the countdown: a row that has ended, which generate goes on feeding
            # padding (its tokens are never read).
            left = steps_left[ids[:, -1]].clamp(min=0)
        logits = output.logits[:, -1]
        forced = next_of(left).to(logits.device)
        rows = torch.arange(len(forced), device=logits.device)
        logits[rows, forced] = logits.max(dim=-1).values + 1.0
        return output

    handle = model.register_forward_hook(force, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


def main(argv: list[str]) -> int:
    from cxr_attention.inference.batching import capture_answers
    from cxr_attention.inference.prompting import prompt_token_ids, render_prompts

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=MODEL_KINDS, default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (shared machines)")
    parser.add_argument("--questions", type=int, default=24, help="rows, all in one batch")
    parser.add_argument("--long-rows", type=int, default=2, help="rows with long answers")
    parser.add_argument("--long-tokens", type=int, default=12, help="their answers' length")
    parser.add_argument("--layers", type=int, default=2, help="last k layers captured")
    parser.add_argument("--text-layers", type=int, default=2)
    parser.add_argument("--vision-layers", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=1, help="best of this many runs each")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model, processor, description = load_bench_model(
        args.model, args.device, text_layers=args.text_layers, vision_layers=args.vision_layers
    )
    image = bench_image()
    questions = questions_for_one_image(args.questions)
    prompts = render_prompts(processor, questions, image_first=True)
    prompt_lengths = [len(ids) for ids in prompt_token_ids(processor, prompts)]
    # Long answers go to prompts whose length no other prompt has: exactly --long-rows rows.
    counts = collections.Counter(prompt_lengths)
    long_lengths = set(sorted(n for n, k in counts.items() if k == 1)[: args.long_rows])
    if len(long_lengths) < args.long_rows:
        raise SystemExit(f"only {len(long_lengths)} prompts have a length of their own")

    def length_of_prompt(n: int) -> int:
        return args.long_tokens if n in long_lengths else 1 + n % 3

    eos = model.generation_config.eos_token_id
    eos = eos[0] if isinstance(eos, list) else eos
    options = {
        "image_first": True,
        "layers": min(args.layers, model.config.get_text_config().num_hidden_layers),
        "max_new_tokens": args.long_tokens,
        "batch_size": args.questions,
        "share": True,
        "prompt_image_rows": "text",
    }

    def run(compact: bool):
        return capture_answers(
            model, processor, image, questions, compact_finished_rows=compact, **options
        )

    # Wall seconds, and this process's CPU seconds: on a CPU shared with other jobs the second is
    # what the decoding itself cost (one thread: no parallel time to add up).
    seconds = {False: [], True: []}
    cpu_seconds = {False: [], True: []}
    captures = {}
    with planted_answer_lengths(model, length_of_prompt, args.long_tokens, eos):
        for _ in range(args.repeats):  # interleaved, so that a busy spell hits both
            for compact in (False, True):
                cpu_start = time.process_time()
                elapsed, captures[compact] = timed(lambda compact=compact: run(compact))
                cpu_seconds[compact].append(time.process_time() - cpu_start)
                seconds[compact].append(elapsed)

    lengths = [c.n_generated_tokens for c in captures[True]]
    planned = [length_of_prompt(n) for n in prompt_lengths]
    if lengths != planned or [c.n_generated_tokens for c in captures[False]] != planned:
        raise SystemExit("answer lengths differ from the plan")
    pairs = list(zip(captures[False], captures[True], strict=True))
    same = sum(np.array_equal(a.generated_ids, b.generated_ids) for a, b in pairs)
    attention = max(float(np.abs(a.attention - b.attention).max()) for a, b in pairs)
    text = max(float(np.abs(a.text_attention - b.text_attention).max()) for a, b in pairs)
    p_yes = max(abs(a.p_yes - b.p_yes) for a, b in pairs)
    none, compacted = min(seconds[False]), min(seconds[True])

    print(*describe_machine(model), sep="\n")
    print(f"model: {description}")
    histogram = ", ".join(f"{n}: {k}" for n, k in sorted(collections.Counter(lengths).items()))
    print(
        f"{len(questions)} questions in one batch, image first, shared prefix, "
        f"{options['layers']} layers captured; answer lengths (tokens: rows) {histogram}; "
        f"{sum(lengths)} answer tokens, {len(questions) * max(lengths)} row-steps without "
        f"compaction"
    )
    for label, compact in (("no compaction (generate)", False), ("compaction", True)):
        print(
            f"{label}: {min(seconds[compact]):.2f} s wall, {min(cpu_seconds[compact]):.2f} s CPU "
            f"(runs, wall: {_listed(seconds[compact])}; CPU: {_listed(cpu_seconds[compact])})"
        )
    print(
        f"compaction vs none on the same {len(pairs)} questions: {same} identical answers, "
        f"largest P(yes) difference {p_yes:.2e}, largest attention difference {attention:.2e}, "
        f"largest text attention difference {text:.2e}"
    )
    cpu_ratio = min(cpu_seconds[False]) / min(cpu_seconds[True])
    print(f"compaction speed-up: {none / compacted:.2f}x wall, {cpu_ratio:.2f}x CPU (goal >= 1.5x)")
    return 0


def _listed(values: list[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
