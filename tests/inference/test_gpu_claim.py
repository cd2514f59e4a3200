"""Concurrent jobs on one machine with several GPUs each claim their own card (fake devices)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
import torch

from cxr_attention.inference import model as model_module
from cxr_attention.inference.gpu_claim import LOCK_DIR_VARIABLE, claim_gpu
from cxr_attention.inference.model import choose_device

SRC = Path(__file__).resolve().parents[2] / "src"


def _fake_gpus(monkeypatch, free_gib):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: len(free_gib))
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda i: (free_gib[i] * 2**30, 80 * 2**30))


@pytest.fixture
def lock_dir(monkeypatch, tmp_path):
    monkeypatch.setenv(LOCK_DIR_VARIABLE, str(tmp_path / "locks"))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    yield tmp_path / "locks"
    if model_module._held_claim is not None:  # choose_device's claim outlives a test otherwise
        model_module._held_claim.release()
        model_module._held_claim = None


def test_concurrent_claimers_get_distinct_cards(monkeypatch, lock_dir):
    _fake_gpus(monkeypatch, [10, 40, 20, 30])
    start = threading.Barrier(4)
    claims = []

    def claimer():
        start.wait()  # all read the same free memory, as jobs started in the same second do
        claims.append(claim_gpu(5))

    threads = [threading.Thread(target=claimer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(claim.index for claim in claims) == [0, 1, 2, 3]
    with pytest.raises(RuntimeError, match="claimed by another job"):
        claim_gpu(5)


def test_claims_go_freest_first_and_a_released_card_is_reused(monkeypatch, lock_dir):
    _fake_gpus(monkeypatch, [10, 40, 20, 30])
    first, second, third = claim_gpu(15), claim_gpu(15), claim_gpu(15)
    # 40, 30 and 20 GiB free; cuda:0 (10 GiB) is below the 15 GiB asked for.
    assert [first.index, second.index, third.index] == [1, 3, 2]
    assert first.lock_path == lock_dir / "gpu-1.lock"
    taken = r"every GPU with 15 GiB free \(cuda:1, cuda:3, cuda:2\) is claimed"
    with pytest.raises(RuntimeError, match=taken):
        claim_gpu(15)
    second.release()
    assert claim_gpu(15).index == 3


def test_lock_files_are_named_after_the_visible_devices(monkeypatch, lock_dir):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,5")
    _fake_gpus(monkeypatch, [10, 40])
    held = claim_gpu(5)  # kept: a claim let go of is closed, and its card freed
    assert (held.index, held.lock_path) == (1, lock_dir / "gpu-5.lock")
    # A job that sees card 5 under the same mask finds it taken and gets card 2 (cuda:0).
    assert claim_gpu(5).lock_path == lock_dir / "gpu-2.lock"


def test_one_visible_card_is_taken_as_cuda_0_without_a_lock(monkeypatch, lock_dir):
    # SLURM gives each job its own card, which each job sees as cuda:0.
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    _fake_gpus(monkeypatch, [40])
    assert choose_device("auto", min_free_gpu_gb=15) == torch.device("cuda:0")
    assert claim_gpu(15).index == 0  # another job on the same node is not kept out
    assert not lock_dir.exists()
    with pytest.raises(RuntimeError, match="no GPU has 50 GiB free"):
        choose_device("cuda", min_free_gpu_gb=50)


def test_choosing_again_in_a_process_gives_up_the_first_card(monkeypatch, lock_dir):
    _fake_gpus(monkeypatch, [10, 40, 20])
    assert choose_device("auto", min_free_gpu_gb=5) == torch.device("cuda:1")
    assert choose_device("auto", min_free_gpu_gb=5) == torch.device("cuda:1")
    assert claim_gpu(5).index == 2  # the process holds cuda:1 once, not twice


CHILD = textwrap.dedent(
    """
    import sys
    import torch
    free_gib = [10, 40, 20]
    torch.cuda.is_available = lambda: True
    torch.cuda.device_count = lambda: len(free_gib)
    torch.cuda.mem_get_info = lambda i: (free_gib[i] * 2**30, 80 * 2**30)
    from cxr_attention.inference.model import choose_device
    print(choose_device("auto", min_free_gpu_gb=5), flush=True)
    sys.stdin.read()  # hold the card until killed
    """
)


def test_a_crashed_job_frees_its_card(monkeypatch, lock_dir):
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(SRC)},
    )
    try:
        assert child.stdout.readline().strip() == "cuda:1"
        _fake_gpus(monkeypatch, [10, 40, 20])
        assert choose_device("auto", min_free_gpu_gb=5) == torch.device("cuda:2")
        child.kill()  # no clean exit: the kernel drops the lock with the process
        child.wait()
        assert choose_device("auto", min_free_gpu_gb=5) == torch.device("cuda:1")
    finally:
        child.kill()
        child.wait()
