"""Measure the known-answer model on held-out films (issue 16's targets); optionally train it.

Targets: on demo films not used in training, ``Is there a nodule?`` right for >= 90% of planted
and of clean films, the side questions for >= 80%, Grad-CAM (target: the decision margin)
pointing at the planted box for >= 80% of planted films; training within 6 minutes on 2 cores
(else the weights are committed, ``models/known-answer``).

    PYTHONPATH=src python bench/bench_known_answer.py [--model models/known-answer]
    PYTHONPATH=src python bench/bench_known_answer.py --train /tmp/known-answer [--steps N]

Prints one JSON line: accuracies, pointing rates, training wall time and the load average seen
(the machine may be shared: compare wall time with the load).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

COMMITTED = Path(__file__).resolve().parents[1] / "models" / "known-answer"


def main() -> None:
    from cxr_attention.known_answer.train import TRAINING_STEPS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(COMMITTED), help="model folder to measure")
    parser.add_argument("--train", metavar="DIR", help="train into DIR first, then measure it")
    parser.add_argument("--steps", type=int, default=TRAINING_STEPS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plants-per-side", type=int, default=3)
    args = parser.parse_args()

    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from cxr_attention.known_answer.evaluate import evaluate_known_answer_model
    from cxr_attention.known_answer.films import demo_films, training_films
    from cxr_attention.known_answer.train import train_known_answer_model
    from cxr_attention.preprocess.decode import decode_image

    torch.set_num_threads(1)  # 2 threads on 2 shared cores ran up to 100x slower (spin-waits)
    record = {}
    folder = args.model
    if args.train:
        start = time.perf_counter()
        train_known_answer_model(
            args.train,
            films=training_films(),
            seed=args.seed,
            steps=args.steps,
        )
        record["train_seconds"] = round(time.perf_counter() - start, 1)
        record["load_average_after_training"] = os.getloadavg()
        folder = args.train
    processor = AutoProcessor.from_pretrained(folder)
    model = AutoModelForImageTextToText.from_pretrained(folder).eval()
    held_out = demo_films()[1]
    images = [decode_image(path, max_side=1024)[0] for path in held_out]
    start = time.perf_counter()
    accuracy = evaluate_known_answer_model(
        model, processor, images, seed=args.seed + 1, plants_per_side=args.plants_per_side
    )
    record["evaluate_seconds"] = round(time.perf_counter() - start, 1)
    print(
        json.dumps(
            {
                "model": str(folder),
                **record,
                "load_average": os.getloadavg(),
                "cpus": os.cpu_count(),
                "held_out_films": [path.name for path in held_out],
                **accuracy,
            }
        )
    )


if __name__ == "__main__":
    main()
