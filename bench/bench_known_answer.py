"""Train the known-answer model and measure it on held-out films (issue 16's targets).

Targets: on films not used in training, ``Is there a nodule?`` right for >= 90% of planted and of
clean films, each side question right for >= 80%; training within 6 minutes on 2 cores.

    PYTHONPATH=src python bench/bench_known_answer.py --out /tmp/known-answer [--steps N]

Prints one JSON line: accuracies, training wall time and the load average seen (the machine may
be shared: compare wall time with the load).
"""

from __future__ import annotations

import argparse
import json
import os
import time

from cxr_attention.known_answer.train import (
    TRAINING_STEPS,
    demo_films,
    evaluate_known_answer_model,
    train_known_answer_model,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps", type=int, default=TRAINING_STEPS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plants-per-side", type=int, default=2)
    args = parser.parse_args()

    from transformers import AutoModelForImageTextToText, AutoProcessor

    from cxr_attention.preprocess.decode import decode_image

    training, held_out = demo_films()
    start = time.perf_counter()
    train_known_answer_model(args.out, films=training, seed=args.seed, steps=args.steps)
    train_seconds = time.perf_counter() - start
    load_after_training = os.getloadavg()
    processor = AutoProcessor.from_pretrained(args.out)
    model = AutoModelForImageTextToText.from_pretrained(args.out).eval()
    images = [decode_image(path, max_side=1024)[0] for path in held_out]
    accuracy = evaluate_known_answer_model(
        model, processor, images, seed=args.seed + 1, plants_per_side=args.plants_per_side
    )
    print(
        json.dumps(
            {
                "steps": args.steps,
                "train_seconds": round(train_seconds, 1),
                "load_average": load_after_training,
                "cpus": os.cpu_count(),
                "held_out_films": [path.name for path in held_out],
                **accuracy,
            }
        )
    )


if __name__ == "__main__":
    main()
