"""The ``cxr-attention`` command: the workflow's library code, one image or folder at a time.

Exit status: 0 success, 1 some inputs failed (they are listed in the failures table), 2 a usage or
configuration error (one line on stderr, no traceback), found before any work is done.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from cxr_attention import __version__
from cxr_attention.io import ConfigError
from cxr_attention.maps.registry import METHODS
from cxr_attention.settings import schema_defaults

__all__ = ["main"]

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE = 0, 1, 2
MAP_METHOD_CHOICES = ["cascade", "all", *METHODS]


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)  # argparse's own errors exit 2 with the usage line
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.handler(args)
    except (UsageError, ConfigError) as error:
        print(f"cxr-attention {args.command}: error: {error}", file=sys.stderr)
        return EXIT_USAGE


class UsageError(Exception):
    """Bad arguments that argparse cannot see (e.g. a path that holds no image)."""


class _DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default, unless there is none to show (required, flags, repeats)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default in (None, False, [], argparse.SUPPRESS):
            return action.help or ""
        return super()._get_help_string(action)


def _add_parser(commands, name: str, **kwargs) -> argparse.ArgumentParser:
    return commands.add_parser(name, formatter_class=_DefaultsHelpFormatter, **kwargs)


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cxr-attention",
        description="Where a medical vision-language model looks when it answers about a CXR.",
        epilog="Exit status: 0 success, 1 some inputs failed (listed in DIR/failures.csv), "
        "2 usage or configuration error.",
        formatter_class=_DefaultsHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    # The study's defaults, from the schema: one image is explained as the workflow would.
    defaults = schema_defaults()
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    preprocess = _add_parser(
        commands,
        "preprocess",
        help="normalise DICOM/JPEG/PNG radiographs and draw body and lung masks",
        description="Writes DIR/<stem>.png, .json, _body.png (0/255) and _lungs.png (0 background, "
        "1 patient's right lung, 2 patient's left lung) per input; failures go to "
        "DIR/failures.csv.",
    )
    preprocess.add_argument("paths", nargs="+", metavar="PATH", help="files or folders")
    preprocess.add_argument("--out", required=True, metavar="DIR", help="output folder")
    preprocess.add_argument(
        "--max-side",
        type=int,
        default=defaults["preprocess"]["max_side"],
        metavar="PIXELS",
        help="cap on the long side",
    )
    preprocess.set_defaults(handler=_preprocess)

    tiny = _add_parser(
        commands,
        "build-tiny-model",
        help="write the tiny random Gemma 3 model folder used by the demo and the tests",
    )
    tiny.add_argument("out", metavar="DIR")
    tiny.add_argument(
        "--seed", type=int, default=defaults["seed"], help="seed of the random weights"
    )
    tiny.set_defaults(handler=_build_tiny_model)

    explain = _add_parser(
        commands,
        "explain",
        help="answer one question about one image and write its attention, maps and metrics",
    )
    explain.add_argument("image", metavar="IMAGE", help="DICOM, JPEG or PNG")
    explain.add_argument("--question", required=True, metavar="TEXT", help="a yes/no question")
    explain.add_argument(
        "--model",
        required=True,
        metavar="PATH_OR_ID",
        help="model folder (with config.json) or hub id, e.g. google/medgemma-4b-it",
    )
    explain.add_argument("--out", required=True, metavar="DIR", help="output folder")
    explain.add_argument(
        "--layers",
        type=int,
        default=defaults["inference"]["layers"],
        metavar="K",
        help="last K layers",
    )
    explain.add_argument(
        "--term", action="append", default=[], metavar="WORD", help="add a target term (repeat)"
    )
    explain.add_argument(
        "--method",
        default=defaults["maps"]["method"],
        choices=MAP_METHOD_CHOICES,
        help="force one map method, or compute all of them",
    )
    explain.add_argument(
        "--max-new-tokens",
        type=int,
        default=defaults["inference"]["max_new_tokens"],
        metavar="N",
        help="length cap of the answer",
    )
    explain.add_argument("--image-first", action="store_true", help="image before the question")
    explain.add_argument(
        "--max-side",
        type=int,
        default=defaults["preprocess"]["max_side"],
        metavar="PIXELS",
        help="cap on the long side when preprocessing",
    )
    explain.add_argument(
        "--boxes",
        metavar="FILE",
        help="MS-CXR-format boxes CSV: adds box_* grounding columns for rows of this image, "
        "and their phrases (label_text) as terms",
    )
    explain.add_argument(
        "--faithfulness",
        action="store_true",
        help=(
            "also write faithfulness.csv (deletion and insertion areas against random orders) "
            "and faithfulness_points.csv (their steps)"
        ),
    )
    explain.add_argument(
        "--reliance",
        action="store_true",
        help="also write reliance.csv: the answer with a grey, swapped, lung-occluded or no image",
    )
    explain.add_argument(
        "--swap-image", metavar="PATH", help="with --reliance: the image of the swapped condition"
    )
    explain.set_defaults(handler=_explain)

    summary = _add_parser(
        commands,
        "summary",
        help="a run's report path and counts: images, failures, exclusions, flagged masks",
    )
    summary.add_argument("results", metavar="RESULTS_DIR", help="a run folder, results/<run>")
    summary.set_defaults(handler=_summary)

    app = _add_parser(
        commands,
        "app",
        help="a browser page: ask a question about a radiograph and see the map and metrics",
        description="Serves the page on HOST:PORT and prints its URL; the model loads once.",
    )
    app.add_argument(
        "--model",
        required=True,
        metavar="PATH_OR_ID",
        help="model folder (with config.json) or hub id, e.g. google/medgemma-4b-it",
    )
    app.add_argument("--results", metavar="DIR", help="a run folder, results/<run>, to browse")
    app.add_argument(
        "--gpu", type=int, metavar="N", help="CUDA device index (default: the freest GPU, or CPU)"
    )
    app.add_argument("--port", type=int, metavar="P", help="port (default: Gradio's, 7860)")
    # Loopback only unless asked: the page runs a model on uploaded medical images.
    app.add_argument("--host", default="127.0.0.1", metavar="H", help="address to bind")
    app.set_defaults(handler=_app)

    from cxr_attention.known_answer.cli import add_subcommands as add_known_answer_subcommands

    add_known_answer_subcommands(commands)
    return parser


def _preprocess(args: argparse.Namespace) -> int:
    from cxr_attention.preprocess.pipeline import preprocess_paths

    try:
        table, failures = preprocess_paths(args.paths, args.out, max_side=args.max_side)
    except (FileNotFoundError, ValueError) as error:
        raise UsageError(str(error)) from error
    flagged = int((~table["mask_ok"].astype(bool)).sum())
    print(
        f"{len(table) + len(failures)} images: {len(table)} written, {len(failures)} failed, "
        f"{flagged} with a flagged lung mask; in {args.out}: preprocess.csv (mask_flags), "
        "failures.csv"
    )
    return EXIT_SOME_FAILED if failures else EXIT_OK


def _build_tiny_model(args: argparse.Namespace) -> int:
    from cxr_attention.models.tiny import build_tiny_model

    print(build_tiny_model(args.out, seed=args.seed))
    return EXIT_OK


def _summary(args: argparse.Namespace) -> int:
    from cxr_attention.run_counts import describe_run

    print(describe_run(args.results))
    return EXIT_OK


def _explain(args: argparse.Namespace) -> int:
    from cxr_attention.explain import explain

    if not Path(args.image).is_file():
        raise UsageError(f"{args.image}: no such file")
    swap_image = None
    if args.swap_image is not None:
        from cxr_attention.faithfulness.explain_outputs import read_swap_image

        try:
            swap_image = read_swap_image(args.swap_image, args.max_side)
        except ValueError as error:
            raise UsageError(str(error)) from error
    result = explain(
        args.image,
        question=args.question,
        model_id=args.model,
        out_dir=args.out,
        layers=args.layers,
        terms=args.term,
        method=args.method,
        max_new_tokens=args.max_new_tokens,
        image_first=args.image_first,
        max_side=args.max_side,
        boxes=args.boxes,
        faithfulness=args.faithfulness,
        reliance=args.reliance,
        swap_image=swap_image,
    )
    if result.failure is not None:
        print(f"failed: {result.failure}; listed in {Path(args.out) / 'failures.csv'}")
        return EXIT_SOME_FAILED
    print(f"answer: {result.answer} (P(yes) = {result.p_yes:.3f}): {result.generated_text!r}")
    if result.mask_flags:
        print(f"lung masks flagged ({result.mask_flags}): lung metrics left blank")
    print(f"outputs in {args.out}: answer.json, maps.csv, metrics.csv, overlay.png")
    return EXIT_OK


def _app(args: argparse.Namespace) -> int:
    from cxr_attention.app import ExplainSettings, build_app
    from cxr_attention.inference.model import choose_device, load_model
    from cxr_attention.model_source import check_model_source

    check_model_source(args.model)  # a ConfigError: exit 2 before the model loads
    if args.results is not None and not Path(args.results).is_dir():
        raise UsageError(f"{args.results}: no such run folder")
    if args.gpu is not None:
        import torch

        if not 0 <= args.gpu < torch.cuda.device_count():
            raise UsageError(f"--gpu {args.gpu}: torch sees {torch.cuda.device_count()} GPUs")
    defaults = schema_defaults()
    device = choose_device(
        "auto" if args.gpu is None else f"cuda:{args.gpu}",
        min_free_gpu_gb=defaults["model"]["min_free_gpu_gb"],
    )
    loaded = load_model(args.model, device=device)
    settings = ExplainSettings(
        layers=defaults["inference"]["layers"],
        method=defaults["maps"]["method"],
        max_new_tokens=defaults["inference"]["max_new_tokens"],
        image_first=defaults["inference"]["image_first"],
        max_side=defaults["preprocess"]["max_side"],
    )
    page = build_app(loaded, args.model, settings, results_dir=args.results)
    page.launch(server_name=args.host, server_port=args.port, prevent_thread_lock=True)
    print(f"cxr-attention app: {page.local_url} (model {args.model} on {device}); Ctrl-C stops")
    page.block_thread()
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
