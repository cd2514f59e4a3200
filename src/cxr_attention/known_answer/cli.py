"""The ``plant`` and ``train-known-answer-model`` subcommands (registered by the main CLI)."""

from __future__ import annotations

import argparse

__all__ = ["add_subcommands"]


def add_subcommands(subparsers) -> None:
    """Register ``plant`` and ``train-known-answer-model`` on ``subparsers`` (argparse's)."""
    plant = subparsers.add_parser(
        "plant",
        help="insert a synthetic nodule into radiographs, inside a lung found by the lung mask",
        description="Writes DIR/<stem>.png (same size as the input), DIR/boxes.csv (MS-CXR's "
        "columns: dicom_id, category_name, label_text, x, y, w, h, image_width, image_height) "
        "and DIR/failures.csv (an image that cannot be read or whose lung has no room; the "
        "command then exits 1 after writing the others).",
    )
    plant.add_argument("images", nargs="+", metavar="IMAGE", help="DICOM, JPEG or PNG")
    plant.add_argument("--out", required=True, metavar="DIR")
    plant.add_argument("--side", choices=("left", "right"), help="the patient's side")
    plant.add_argument("--seed", type=int, default=0)
    plant.add_argument(
        "--stripes",
        type=float,
        default=0.0,
        metavar="GREY_LEVELS",
        help="add vertical stripes of this peak amplitude inside the lesion (the known-answer "
        "model's lesion: 100, with --contrast 0.3); default 0, a plain opacity",
    )
    plant.add_argument(
        "--contrast", type=float, default=None, help="peak brightening (default: plant's own)"
    )
    plant.set_defaults(handler=_plant)

    train = subparsers.add_parser(
        "train-known-answer-model",
        help="build the tiny Gemma 3 that answers nodule questions from planted films (a set "
        "detector, a trained answer; CPU)",
        description="Trains on the given films (default: the demo's training films and the shared "
        "real films, less near-copies of the held-out ones) and saves "
        "the model like MedGemma (AutoProcessor / AutoModelForImageTextToText from DIR).",
    )
    train.add_argument("out", metavar="DIR")
    train.add_argument("--films", nargs="+", metavar="IMAGE", help="training radiographs")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--steps", type=int, default=None, help="answer-training steps")
    train.set_defaults(handler=_train)


def _plant(args: argparse.Namespace) -> int:
    from cxr_attention.cli import EXIT_OK, EXIT_SOME_FAILED
    from cxr_attention.known_answer.plant import plant

    options = {"stripes": args.stripes}
    if args.contrast is not None:
        options["contrast"] = args.contrast
    boxes, failures = plant(args.images, args.out, side=args.side, seed=args.seed, **options)
    print(
        f"{len(boxes) + len(failures)} images: {len(boxes)} planted, {len(failures)} failed; "
        f"in {args.out}: <stem>.png, boxes.csv, failures.csv"
    )
    for failure in failures:
        print(f"failed: {failure.path}: {failure.message}")
    return EXIT_SOME_FAILED if failures else EXIT_OK


def _train(args: argparse.Namespace) -> int:
    import torch

    from cxr_attention.known_answer.films import training_films
    from cxr_attention.known_answer.train import TRAINING_STEPS, train_known_answer_model

    torch.set_num_threads(1)  # on 2 shared cores, 2 threads ran up to 100x slower (spin-waits)
    films = args.films if args.films else training_films()
    out = train_known_answer_model(
        args.out,
        films=films,
        seed=args.seed,
        steps=args.steps if args.steps is not None else TRAINING_STEPS,
    )
    print(out)
    return 0
