"""Progress of long loops, on the console as well as in the job's log.

A workflow job's stderr goes to its log file (:func:`cxr_attention.workflow.job_logging`), so a
user watching Snakemake sees nothing between a job's start and its end. Loops over images or
samples report through :class:`Progress`, which logs on the ``cxr_attention.console`` logger at
INFO every tenth of the way (and at the end), and a step that leaves nothing to score says so with
:func:`loud_warning` on the same logger; :func:`progress_to_console` adds a handler that
writes those records, and only those, to the process's original stderr (``sys.__stderr__``, which
``contextlib.redirect_stderr`` leaves alone), i.e. to the console that Snakemake runs in. The
records still propagate to the root logger, so the log file keeps them too.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Iterator
from typing import TextIO

__all__ = ["CONSOLE_LOGGER", "Progress", "loud_warning", "progress_to_console"]

CONSOLE_LOGGER = "cxr_attention.console"
"""Records for the user's console: progress and warnings that must not stay in a log file."""
_STEPS = 10  # reports per loop


class Progress:
    """Count the items of a loop and report every tenth of the way.

    Parameters
    ----------
    what : str
        What the loop does, e.g. ``"preprocess"``; starts every message.
    total : int
        Number of items the loop will do.
    unit : str
        Name of the items in the messages.

    Examples
    --------
    >>> progress = Progress("preprocess", total=len(paths))  # doctest: +SKIP
    >>> for path in paths:  # doctest: +SKIP
    ...     work(path)
    ...     progress.step()
    """

    def __init__(self, what: str, total: int, unit: str = "images") -> None:
        self.what = what
        self.total = int(total)
        self.unit = unit
        self.done = 0
        self._every = max(1, -(-self.total // _STEPS))
        self._start = time.monotonic()
        self._logger = logging.getLogger(CONSOLE_LOGGER)

    def step(self, count: int = 1) -> None:
        """Mark ``count`` more items done; report when a tenth of the way (or the end) is passed."""
        before = self.done // self._every
        self.done += count
        if self.done // self._every > before or self.done == self.total:
            elapsed = time.monotonic() - self._start
            self._logger.info(
                "%s: %d/%d %s (%.0f%%), %.0f s",
                self.what,
                self.done,
                self.total,
                self.unit,
                100.0 * self.done / max(self.total, 1),
                elapsed,
            )


def loud_warning(message: str, *args: object) -> None:
    """Log a WARNING that must reach the console too (e.g. "nothing left to score")."""
    logging.getLogger(CONSOLE_LOGGER).warning(message, *args)


@contextlib.contextmanager
def progress_to_console(label: str = "", stream: TextIO | None = None) -> Iterator[None]:
    """Write :class:`Progress` reports and :func:`loud_warning` records to the console.

    Parameters
    ----------
    label : str
        Prefix of each console line (e.g. the job's log name, to tell parallel jobs apart).
    stream : text stream, optional
        Where to write; the process's original stderr by default.
    """
    handler = logging.StreamHandler(stream if stream is not None else sys.__stderr__)
    prefix = f"[{label}] " if label else ""
    handler.setFormatter(logging.Formatter(f"{prefix}%(levelname)s %(message)s"))
    handler.setLevel(logging.INFO)
    console = logging.getLogger(CONSOLE_LOGGER)
    level = console.level
    console.addHandler(handler)
    console.setLevel(logging.INFO)
    try:
        yield
    finally:
        console.removeHandler(handler)
        console.setLevel(level)
