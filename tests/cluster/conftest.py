"""A one-node SLURM cluster on this machine, for the tests marked ``cluster``.

The fixture installs Debian's slurm-wlm and munge when they are absent, writes a slurm.conf with
two fake GPUs (character devices /dev/nvidia0 and /dev/nvidia1, enough for SLURM's GRES
bookkeeping), starts munged, slurmctld and slurmd, waits until the node is idle, and stops every
daemon it started at teardown. The recipe is ../shared/notes/slurm-local-cluster.md, checked on
these machines (Debian 12, SLURM 22.05).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SLURM_ETC = Path("/etc/slurm")
LOG_DIR = Path("/var/log/slurm")
PID_FILES = {
    "slurmd": Path("/run/slurmd.pid"),
    "slurmctld": Path("/run/slurmctld.pid"),
    "munged": Path("/run/munge/munged.pid"),
}
FAKE_GPUS = [Path("/dev/nvidia0"), Path("/dev/nvidia1")]
NVIDIA_MAJOR = 195

# `SlurmdParameters=config_overrides` makes slurmd trust these numbers instead of the hardware,
# so that the profile's real resource requests (4 CPUs, 32 GB for inference) are schedulable on a
# small test machine; jobs simply share its cores.
SLURM_CONF = """\
ClusterName=cxrtest
SlurmctldHost=localhost
SlurmUser=slurm
AuthType=auth/munge
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/lib/slurm/slurmd
SlurmctldPidFile={slurmctld_pid}
SlurmdPidFile={slurmd_pid}
SlurmctldLogFile={log_dir}/slurmctld.log
SlurmdLogFile={log_dir}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SlurmdParameters=config_overrides
DefMemPerCPU=1000
MinJobAge=600
ReturnToService=2
CommunicationParameters=NoInAddrAny,NoCtldInAddrAny
GresTypes=gpu
Prolog={prolog}
PrologFlags=Alloc
NodeName={node} NodeAddr=127.0.0.1 CPUs=16 RealMemory=128000 Gres=gpu:2 State=UNKNOWN
PartitionName=main Default=YES Nodes=ALL MaxTime=INFINITE State=UP
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
"""

# Runs as root when a job is allocated; records which GPUs SLURM gave it. Without an accounting
# database SLURM forgets a finished job's GRES allocation, so this log is the test's record of it.
PROLOG = """\
#!/bin/sh
echo "$SLURM_JOB_ID ${{SLURM_JOB_GPUS:-none}}" >> {gpu_log}
"""

GRES_CONF = """\
AutoDetect=off
NodeName={node} Name=gpu File=/dev/nvidia[0-1]
"""


@dataclass(frozen=True)
class SlurmCluster:
    """The running test cluster.

    Attributes
    ----------
    node : str
        Its one node's name.
    slurmd_log : pathlib.Path
        slurmd's log ("Launching batch job <id>" for every job it ran).
    slurmd_log_start : int
        Its size when this cluster started (earlier sessions' lines come before).
    gpu_log : pathlib.Path
        One line per allocated job: ``<job id> <GPU indices SLURM gave it, or none>``.
    """

    node: str
    slurmd_log: Path
    slurmd_log_start: int
    gpu_log: Path

    def launched_batch_jobs(self) -> set[str]:
        """Ids of the batch jobs slurmd launched since this cluster started."""
        with open(self.slurmd_log, "rb") as log:
            log.seek(self.slurmd_log_start)
            text = log.read().decode(errors="replace")
        return set(re.findall(r"Launching batch job (\d+)", text))

    def allocated_gpus(self) -> dict[str, str]:
        """GPU indices per job id ("none" for a job without GPUs)."""
        lines = self.gpu_log.read_text().split("\n") if self.gpu_log.exists() else []
        return dict(line.split(" ", 1) for line in lines if line.strip())


def _run(*command: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(command, check=check, capture_output=True, text=True, timeout=timeout)


def _install_packages() -> None:
    if all(shutil.which(tool) for tool in ("slurmctld", "slurmd", "sbatch", "munged")):
        return
    if shutil.which("apt-get") is None:
        pytest.skip("SLURM is absent and this machine has no apt-get to install slurm-wlm")
    environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "slurm-wlm", "munge"],
    ):
        subprocess.run(command, check=True, capture_output=True, env=environment, timeout=600)


def _alive(pid_file: Path) -> int | None:
    """The PID in pid_file when that process runs (SLURM leaves stale PID files behind)."""
    try:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, 0)
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return None
    return pid


def _stop(pid: int, timeout: float = 30) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return  # already gone (a daemon that failed to start)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)


def _node_name() -> str:
    """The short host name, which slurmd must find as a NodeName in slurm.conf."""
    return socket.gethostname().split(".")[0]


def _make_fake_gpus() -> list[Path]:
    made = []
    for minor, device in enumerate(FAKE_GPUS):
        if not device.exists():
            os.mknod(device, 0o666 | stat.S_IFCHR, os.makedev(NVIDIA_MAJOR, minor))
            made.append(device)
    return made


def _wait_for_idle_node(node: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    state = ""
    while time.monotonic() < deadline:
        result = _run("sinfo", "--noheader", "--nodes", node, "--format", "%t", check=False)
        state = result.stdout.strip()
        if result.returncode == 0 and state == "idle":
            return
        time.sleep(0.5)
    raise RuntimeError(f"node {node} did not become idle in {timeout} s (state {state!r})")


@pytest.fixture(scope="module")
def slurm_cluster() -> Iterator[SlurmCluster]:
    """Start a one-node SLURM cluster (root only); stop what was started at teardown."""
    if os.geteuid() != 0:
        pytest.skip("starting SLURM daemons needs root")
    if _alive(PID_FILES["slurmctld"]) or _alive(PID_FILES["slurmd"]):
        pytest.skip("a SLURM daemon already runs on this machine; not reconfiguring it")
    _install_packages()

    node = _node_name()
    backups = {}
    for name in ("slurm.conf", "gres.conf"):
        path = SLURM_ETC / name
        backups[path] = path.read_bytes() if path.exists() else None
    state = Path(tempfile.mkdtemp(prefix="cxr-slurm-"))
    made_devices: list[Path] = []
    started: list[int] = []
    try:
        SLURM_ETC.mkdir(parents=True, exist_ok=True)
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        prolog, gpu_log = state / "prolog.sh", state / "job-gpus.log"
        prolog.write_text(PROLOG.format(gpu_log=gpu_log))
        prolog.chmod(0o755)
        state.chmod(0o755)
        (SLURM_ETC / "slurm.conf").write_text(
            SLURM_CONF.format(
                node=node,
                prolog=prolog,
                log_dir=LOG_DIR,
                slurmctld_pid=PID_FILES["slurmctld"],
                slurmd_pid=PID_FILES["slurmd"],
            )
        )
        (SLURM_ETC / "gres.conf").write_text(GRES_CONF.format(node=node))
        for state_dir in ("/var/lib/slurm/slurmctld", "/var/lib/slurm/slurmd"):
            Path(state_dir).mkdir(parents=True, exist_ok=True)
            shutil.chown(state_dir, "slurm", "slurm")
        slurmd_log = LOG_DIR / "slurmd.log"
        slurmd_log_start = slurmd_log.stat().st_size if slurmd_log.exists() else 0
        made_devices.extend(_make_fake_gpus())

        for pid_file in PID_FILES.values():
            if not _alive(pid_file):
                pid_file.unlink(missing_ok=True)  # stale, left by an earlier stop
        if not _alive(PID_FILES["munged"]):
            PID_FILES["munged"].parent.mkdir(parents=True, exist_ok=True)
            shutil.chown(PID_FILES["munged"].parent, "munge", "munge")
            _run("runuser", "-u", "munge", "--", "/usr/sbin/munged")
            started.append(_wait_for_pid(PID_FILES["munged"]))
        # -c: start from an empty job list, not from a previous test session's saved state.
        _run("slurmctld", "-c")
        started.append(_wait_for_pid(PID_FILES["slurmctld"]))
        _run("slurmd")
        started.append(_wait_for_pid(PID_FILES["slurmd"]))
        _wait_for_idle_node(node)
        yield SlurmCluster(
            node=node, slurmd_log=slurmd_log, slurmd_log_start=slurmd_log_start, gpu_log=gpu_log
        )
    finally:
        # Every step runs even when an earlier one fails: a slurm.conf left behind would make
        # every later `scontrol` (and so every Snakemake start, whose SLURM plugin asks it for the
        # config) wait 9 s for a controller that is gone.
        for pid in reversed(started):
            with contextlib.suppress(OSError):
                _stop(pid)
        for path, content in backups.items():
            if content is None:
                path.unlink(missing_ok=True)
            else:
                path.write_bytes(content)
        for device in made_devices:
            device.unlink(missing_ok=True)
        shutil.rmtree(state, ignore_errors=True)


def _wait_for_pid(pid_file: Path, timeout: float = 30) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid = _alive(pid_file)
        if pid:
            return pid
        time.sleep(0.1)
    raise RuntimeError(f"{pid_file} did not appear in {timeout} s")
