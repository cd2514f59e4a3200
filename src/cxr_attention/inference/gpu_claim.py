"""Which GPU a job takes when several jobs start at once on one machine with several GPUs.

``snakemake --resources gpu=N`` runs up to N model jobs at the same time. Picking "the card with
the most free memory" alone races: jobs that start in the same second all read the same free
memory (no model is loaded yet) and land on the same card. So a job *claims* its card: it holds
an exclusive ``fcntl.flock`` on ``<lock dir>/gpu-<card>.lock`` for as long as the process lives.
Among the cards with enough free memory, a job tries them from the most free memory to the least
and takes the first whose lock it gets; two jobs can never hold the same card, and each
lock attempt is atomic, so no global lock is needed. The kernel drops a flock when its file is
closed, which happens when the process ends, crashes or is killed: a claim never outlives its job.

The lock directory is ``$CXR_ATTENTION_GPU_LOCK_DIR``, else ``cxr-attention-gpu-locks-<uid>``
in the temporary directory (one per user: jobs of other users are seen only through the memory
they take). A card is named by its ``CUDA_VISIBLE_DEVICES`` entry where that variable is set, so
jobs that see the same cards under the same mask share locks.

With one visible card (a SLURM job with one GPU: SLURM sets ``CUDA_VISIBLE_DEVICES`` to the card
it allotted, which the job sees as ``cuda:0``) there is nothing to choose and nothing is locked:
jobs on other cards of the node see their own card as ``cuda:0`` too, so a lock named after it
would keep them apart for nothing.
"""

from __future__ import annotations

import fcntl
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import torch

__all__ = ["LOCK_DIR_VARIABLE", "GpuClaim", "claim_gpu", "gpu_lock_dir"]

LOCK_DIR_VARIABLE = "CXR_ATTENTION_GPU_LOCK_DIR"


@dataclass
class GpuClaim:
    """A card this process holds: ``index`` is its CUDA index as torch sees it.

    ``lock_path`` is None where nothing was locked (a single visible card). The card stays
    claimed while this object lives: once it is garbage-collected its lock file is closed.
    """

    index: int
    lock_path: Path | None = None
    _lock_file: IO[bytes] | None = field(default=None, repr=False)

    @property
    def device(self) -> torch.device:
        return torch.device(f"cuda:{self.index}")

    def release(self) -> None:
        """Let another job take the card (ending the process does the same)."""
        if self._lock_file is not None:
            self._lock_file.close()  # closing the file drops its flock
            self._lock_file = None


def gpu_lock_dir() -> Path:
    """Where the per-card lock files live (see the module docstring)."""
    configured = os.environ.get(LOCK_DIR_VARIABLE)
    if configured:
        return Path(configured)
    return Path(tempfile.gettempdir()) / f"cxr-attention-gpu-locks-{os.getuid()}"


def _card_names(count: int) -> list[str]:
    """A name per visible card that is the same in every job with the same visible cards."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    entries = [entry.strip() for entry in visible.split(",")] if visible else []
    if len(entries) < count:
        entries = [str(index) for index in range(count)]
    return [re.sub(r"[^A-Za-z0-9_.-]", "_", entry) for entry in entries[:count]]


def _try_lock(path: Path) -> IO[bytes] | None:
    lock_file = open(path, "ab")  # noqa: SIM115 (held open for the claim's lifetime)
    try:
        fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock_file.close()
        return None
    return lock_file


def claim_gpu(min_free_gpu_gb: float) -> GpuClaim:
    """Claim the unclaimed visible GPU with the most free memory (at least ``min_free_gpu_gb``).

    Ties in free memory go to the lower index, so the choice is deterministic.

    Raises
    ------
    RuntimeError
        No GPU is visible, no GPU has ``min_free_gpu_gb`` GiB free, or every GPU that has is
        claimed by another job (more model jobs than cards: lower ``--resources gpu``).
    """
    count = torch.cuda.device_count()
    if count == 0:
        raise RuntimeError("torch sees no CUDA device")
    free_gib = {index: torch.cuda.mem_get_info(index)[0] / 2**30 for index in range(count)}
    roomy = sorted(
        (index for index, gb in free_gib.items() if gb >= min_free_gpu_gb),
        key=lambda index: (-free_gib[index], index),
    )
    if not roomy:
        listing = ", ".join(f"cuda:{i} {gb:.1f} GiB" for i, gb in free_gib.items())
        raise RuntimeError(
            f"no GPU has {min_free_gpu_gb:g} GiB free (free memory: {listing}); lower "
            "min_free_gpu_gb or free a GPU"
        )
    if count == 1:
        return GpuClaim(index=0)
    lock_dir = gpu_lock_dir()
    lock_dir.mkdir(parents=True, exist_ok=True)
    names = _card_names(count)
    for index in roomy:
        lock_path = lock_dir / f"gpu-{names[index]}.lock"
        lock_file = _try_lock(lock_path)
        if lock_file is not None:
            return GpuClaim(index=index, lock_path=lock_path, _lock_file=lock_file)
    claimed = ", ".join(f"cuda:{index}" for index in roomy)
    raise RuntimeError(
        f"every GPU with {min_free_gpu_gb:g} GiB free ({claimed}) is claimed by another job "
        f"(lock files in {lock_dir}); run at most {count} model jobs at once "
        f"(--resources gpu={count} or less)"
    )
