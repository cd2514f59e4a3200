"""The ``cxr-attention`` command: the workflow's library code, one image or folder at a time.

Exit status: 0 success, 1 some inputs failed (they are listed in the failures table), 2 usage error.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from cxr_attention.maps.registry import METHODS

__all__ = ["main"]

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE = 0, 1, 2
MAP_METHOD_CHOICES = ["cascade", "all", *METHODS]


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.handler(args)
    except UsageError as error:
        parser.error(str(error))  # exits with status 2
    return EXIT_USAGE


class UsageError(Exception):
    """Bad arguments that argparse cannot see (e.g. a path that holds no image)."""


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cxr-attention",
        description="Where a medical vision-language model looks when it answers about a CXR.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    preprocess = commands.add_parser(
        "preprocess",
        help="normalise DICOM/JPEG/PNG radiographs and draw body and lung masks",
        description="Writes DIR/<stem>.png, .json, _body.png (0/255) and _lungs.png (0 background, "
        "1 patient's right lung, 2 patient's left lung) per input; failures go to "
        "DIR/failures.csv.",
    )
    preprocess.add_argument("paths", nargs="+", metavar="PATH", help="files or folders")
    preprocess.add_argument("--out", required=True, metavar="DIR")
    preprocess.add_argument("--max-side", type=int, default=1024, metavar="PIXELS")
    preprocess.set_defaults(handler=_preprocess)

    tiny = commands.add_parser(
        "build-tiny-model",
        help="write the tiny random Gemma 3 model folder used by the demo and the tests",
    )
    tiny.add_argument("out", metavar="DIR")
    tiny.add_argument("--seed", type=int, default=0)
    tiny.set_defaults(handler=_build_tiny_model)

    explain = commands.add_parser(
        "explain",
        help="answer one question about one image and write its attention, maps and metrics",
    )
    explain.add_argument("image", metavar="IMAGE", help="DICOM, JPEG or PNG")
    explain.add_argument("--question", required=True, metavar="TEXT")
    explain.add_argument("--model", required=True, metavar="PATH_OR_ID")
    explain.add_argument("--out", required=True, metavar="DIR")
    explain.add_argument("--layers", type=int, default=3, metavar="K", help="last K layers")
    explain.add_argument(
        "--term", action="append", default=[], metavar="WORD", help="add a target term (repeat)"
    )
    explain.add_argument(
        "--method",
        default="cascade",
        choices=MAP_METHOD_CHOICES,
        help="force one map method, or compute all of them",
    )
    explain.add_argument("--max-new-tokens", type=int, default=64)
    explain.add_argument("--image-first", action="store_true", help="image before the question")
    explain.set_defaults(handler=_explain)
    return parser


def _preprocess(args: argparse.Namespace) -> int:
    from cxr_attention.preprocess.pipeline import preprocess_paths

    try:
        return preprocess_paths(args.paths, args.out, max_side=args.max_side)
    except (FileNotFoundError, ValueError) as error:
        raise UsageError(str(error)) from error


def _build_tiny_model(args: argparse.Namespace) -> int:
    from cxr_attention.inference.tiny_model import build_tiny_model

    print(build_tiny_model(args.out, seed=args.seed))
    return EXIT_OK


def _explain(args: argparse.Namespace) -> int:
    from cxr_attention.explain import explain

    if not Path(args.image).is_file():
        raise UsageError(f"{args.image}: no such file")
    return explain(
        args.image,
        question=args.question,
        model_id=args.model,
        out_dir=args.out,
        layers=args.layers,
        terms=args.term,
        method=args.method,
        max_new_tokens=args.max_new_tokens,
        image_first=args.image_first,
    )


if __name__ == "__main__":
    sys.exit(main())
