"""Cost of the faithfulness curves: seconds per map, per perturbation and step count.

A map's cost is its three curves (deletion, insertion, LeRF), each one forward pass per step
(identical masks scored once); it does not depend on the method (every method's map is a ranking
of the same 256 cells). The random baseline (``--random`` orders) is paid once per sample and
shared by its maps. The bench times one sample with one map and the random orders, and reports
seconds per order (= per map) and per sample.

Run: ``.venv/bin/python bench/bench_faithfulness.py --model tiny``; on a GPU:
``python bench/bench_faithfulness.py --model medgemma-4b --device cuda``.
"""

from __future__ import annotations

import argparse
import logging
import sys

import numpy as np
from _models import MODEL_KINDS, bench_image, describe_machine, load_bench_model, timed

from cxr_attention.faithfulness.deletion import PERTURBATIONS, CurveSettings, sample_curves
from cxr_attention.faithfulness.scoring import DecisionScorer
from cxr_attention.inference.prompting import build_inputs

QUESTION = "Is there a pleural effusion?"
STEPS = {
    5: (0, 0.05, 0.2, 0.5, 1.0),
    8: (0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0),
    12: (0, 0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.7, 0.9, 1.0),
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=MODEL_KINDS, default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--perturbations", nargs="+", default=list(PERTURBATIONS))
    parser.add_argument(
        "--steps", nargs="+", type=int, default=sorted(STEPS), choices=sorted(STEPS)
    )
    parser.add_argument("--random", type=int, default=2, help="random orders per sample")
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    model, processor, description = load_bench_model(args.model, args.device)
    print("\n".join(describe_machine(model)))
    print(description)
    image = np.asarray(bench_image())
    inputs = build_inputs(processor, image, QUESTION, image_first=False)
    scorer = DecisionScorer(model, processor.tokenizer, inputs, batch_size=args.batch_size)
    grid = np.random.default_rng(0).random((16, 16))
    print("| perturbation | steps | orders | seconds | s per map (3 curves) |")
    print("|---|---|---|---|---|")
    for perturbation in args.perturbations:
        for n_steps in args.steps:
            settings = CurveSettings(
                (perturbation,), STEPS[n_steps], args.random, 1.0, 0.01, 112, 0
            )
            seconds, _ = timed(lambda s=settings: sample_curves(scorer, [("m", "random", grid)], s))
            orders = 1 + args.random
            per_map = seconds / orders
            print(f"| {perturbation} | {n_steps} | {orders} | {seconds:.2f} | {per_map:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
