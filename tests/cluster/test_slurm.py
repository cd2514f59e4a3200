"""The demo workflow runs on a real SLURM cluster through profiles/slurm.

A one-node cluster on this machine (conftest.py) stands in for a real one: slurmctld schedules,
slurmd launches batch jobs, SLURM's GRES plugin hands out the (fake) GPUs. The oracle is SLURM's
own record of each job (``scontrol show job``): the workflow's jobs ran as batch jobs, completed,
and the jobs that run the model (inference, maps, faithfulness, reliance), and only they, asked
for and were given one GPU (a prolog script records the GPUs SLURM hands each job; see
conftest.py)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from workflow.demo import copy_repository, planned_jobs, shrink_demo, snakemake

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

GPU_RULES = {"inference", "maps", "faithfulness", "reliance", "known_answer_ranking"}
# The cluster keeps no accounting database, so the plugin asks squeue for job states; the first
# status query comes after 2 s instead of the plugin's 40 s.
CLUSTER_ONLY = (
    "--slurm-status-command",
    "squeue",
    "--slurm-init-seconds-before-status-checks",
    "2",
    "--jobs",
    "4",
)


def _jobs_of_run(run_id: str) -> list[dict[str, str]]:
    """SLURM's record of every job of one Snakemake run (its jobs are named by the run ID)."""
    shown = subprocess.run(
        ["scontrol", "--oneliner", "show", "job"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    jobs = []
    for line in shown.splitlines():
        fields = dict(re.findall(r"(\w+)=(\S*)", line))
        if fields.get("JobName") == run_id:
            jobs.append(fields)
    return jobs


def _rule_of(job: dict[str, str]) -> str:
    """The rule of a job, from the comment the plugin gives it: rule_<rule>[_wildcards_<...>]."""
    match = re.fullmatch(r"rule_(.+?)(?:_wildcards_.*)?", job["Comment"])
    assert match, job
    return match.group(1)


@pytest.fixture(scope="module")
def cluster_run(slurm_cluster, tmp_path_factory: pytest.TempPathFactory):
    workdir = shrink_demo(copy_repository(tmp_path_factory.mktemp("slurm") / "repo"))
    expected = planned_jobs(workdir)
    result = snakemake(workdir, "--profile", "profiles/slurm", *CLUSTER_ONLY, timeout=1200)
    output = result.stdout + result.stderr
    match = re.search(r"SLURM run ID: (\S+)", output)
    assert match, output[-3000:]
    return workdir, expected, _jobs_of_run(match.group(1)), output


def test_every_job_ran_as_a_completed_slurm_job(cluster_run, slurm_cluster):
    workdir, expected, jobs, output = cluster_run
    assert (workdir / "results/demo/report.html").is_file()
    ran = {}
    for job in jobs:
        rule = _rule_of(job)
        ran[rule] = ran.get(rule, 0) + 1
        assert job["JobState"] == "COMPLETED", job
        assert Path(job["WorkDir"]) == workdir
    # Every planned job but the local rule `all` went through sbatch, one SLURM job each.
    assert ran == {rule: n for rule, n in expected.items() if rule != "all"}, output[-3000:]
    assert {job["JobId"] for job in jobs} <= slurm_cluster.launched_batch_jobs()


def test_gpu_rules_get_one_gpu_and_the_others_none(cluster_run, slurm_cluster):
    """Requested: SLURM's TresPerJob; given: the GPU indices SLURM's prolog saw at allocation."""
    _, _, jobs, _ = cluster_run
    allocated = slurm_cluster.allocated_gpus()
    for job in jobs:
        rule = _rule_of(job)
        requested = job.get("TresPerJob", "")
        if rule in GPU_RULES:
            assert requested == "gres:gpu:1", (rule, job)
            assert re.fullmatch(r"\d+", allocated[job["JobId"]]), (rule, allocated)
        else:
            assert "gpu" not in requested, (rule, job)
            assert allocated[job["JobId"]] == "none", (rule, allocated)


def test_profile_resources_reach_sbatch(cluster_run):
    """Memory and run time of profiles/slurm arrive in SLURM's job record."""
    _, _, jobs, _ = cluster_run
    by_rule = {}
    for job in jobs:
        rule = _rule_of(job)
        by_rule[rule] = job
    inference = by_rule["inference"]
    assert inference["MinMemoryNode"] == "32000M"
    assert inference["TimeLimit"] == "12:00:00"
    assert inference["NumCPUs"] == "4"
    assert by_rule["map_metrics"]["TimeLimit"] == "01:00:00"
