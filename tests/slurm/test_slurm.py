"""The smoke DAG through a real SLURM scheduler (`make test-slurm`, not part of `make test`).

`make test-slurm` starts a one-node cluster (tests/slurm/cluster.sh) and points CATREC_SLURM_DIR at it.
The workflow runs twice from the same config: once locally, once with
`--workflow-profile workflow/profiles/slurm`. The scheduler's own record (the job-completion log) must list
every submitted job COMPLETED, in the partition the profile routes its rule to; no local rule may be
submitted; the metrics must equal the local run's.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[2]
SMOKE_CONFIG = REPO / "config" / "smoke.yaml"
PROFILE = REPO / "workflow" / "profiles" / "slurm"
SUMMARIES = ("metrics", "attacks")
SUBMISSION = re.compile(r"Job \d+ has been submitted with SLURM jobid (\d+) \(log: .*/rule_(\w+)/")


@pytest.fixture(scope="module")
def cluster_dir() -> Path:
    value = os.environ.get("CATREC_SLURM_DIR")
    if not value:
        pytest.fail("CATREC_SLURM_DIR is not set: run these tests with `make test-slurm`")
    return Path(value)


def snakemake(
    workdir: Path, *options: str, overlay: Path | None = None, targets: tuple[str, ...] = ("all",)
) -> str:
    """Run the smoke DAG's ``targets`` (with ``overlay``'s keys over its config) in `workdir`; the log is
    returned and kept beside the results."""
    workdir.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "snakemake",
        *targets,
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(SMOKE_CONFIG),
        *([] if overlay is None else [str(overlay)]),
        "--config",
        "device=cpu",
        *options,
    ]
    run = subprocess.run(command, capture_output=True, text=True, check=False)
    log = run.stdout + run.stderr
    (workdir / "snakemake.log").write_text(log)
    assert run.returncode == 0, f"snakemake failed in {workdir}:\n{log[-4000:]}"
    return log


@pytest.fixture(scope="module")
def local_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    workdir = tmp_path_factory.mktemp("local")
    snakemake(workdir, "--cores", "2")
    return workdir


def node_memory_mb(cluster_dir: Path) -> int:
    """The test node's RealMemory in slurm.conf (tests/slurm/cluster.sh sets it to this machine's memory)."""
    found = re.search(r"RealMemory=(\d+)", (cluster_dir / "slurm.conf").read_text())
    assert found, f"{cluster_dir / 'slurm.conf'} names no RealMemory"
    return int(found.group(1))


@pytest.fixture(scope="module")
def cluster_options(tmp_path_factory: pytest.TempPathFactory, cluster_dir: Path) -> tuple[str, ...]:
    """The options of a run through the cluster: the profile, each memory request capped at the test node's
    memory (SLURM refuses a job that asks more than any node has; the stack rules ask 32 GB), and
    squeue for job states (the test cluster has no accounting database; tests/slurm/cluster.sh says why)."""
    profile = yaml.safe_load((PROFILE / "config.yaml").read_text())
    node_mb = node_memory_mb(cluster_dir)
    for resources in [profile["default-resources"], *profile["set-resources"].values()]:
        if "mem_mb" in resources:
            resources["mem_mb"] = min(resources["mem_mb"], node_mb)
    test_profile = tmp_path_factory.mktemp("profile")
    (test_profile / "config.yaml").write_text(yaml.safe_dump(profile))
    return (
        "--workflow-profile",
        str(test_profile),
        "--slurm-status-command",
        "squeue",
        "--slurm-init-seconds-before-status-checks",
        "2",
    )


# train.stack with two seeds, SASRec only: a pretraining stack and a fine-tuning stack per seed.
STACKED_OVERLAY = {
    "seeds": [42, 43],
    "models": ["sasrec"],
    "train": {"stack": True},
    "epsilon_sweep": {"models": ["sasrec"]},
    "figures": {"fig6": {"supplementary_model": "sasrec"}},
}
STACKED_RULES = {"pretrain_stack", "finetune_stack"}
STACKED_TARGETS = tuple(
    f"results/metrics/toy/sasrec/seed{seed}/adv_cas/eps1.json" for seed in STACKED_OVERLAY["seeds"]
)


@pytest.fixture(scope="module")
def slurm_run(tmp_path_factory: pytest.TempPathFactory, cluster_options: tuple[str, ...]) -> tuple[Path, str]:
    workdir = tmp_path_factory.mktemp("slurm")
    return workdir, snakemake(workdir, *cluster_options)


@pytest.fixture(scope="module")
def stacked_slurm_run(
    tmp_path_factory: pytest.TempPathFactory, cluster_options: tuple[str, ...]
) -> tuple[Path, str]:
    """The stacked jobs of the smoke DAG with ``STACKED_OVERLAY``, and what they need, through the cluster."""
    workdir = tmp_path_factory.mktemp("stacked")
    overlay = workdir.parent / "stacked-overlay.yaml"
    overlay.write_text(yaml.safe_dump(STACKED_OVERLAY))
    # The stacked runs' files as targets, not `--until pretrain_stack finetune_stack`: with that, Snakemake 9
    # stops with "BUG: Out of jobs ready to be started" once pretrain_stack has finished (the same DAG runs
    # through without --until).
    return workdir, snakemake(workdir, *cluster_options, overlay=overlay, targets=STACKED_TARGETS)


def local_rules() -> set[str]:
    block = re.search(r"^localrules:\n((?:    \w+,\n)+)", (REPO / "Snakefile").read_text(), re.MULTILINE)
    assert block, "the Snakefile has no localrules block"
    return set(re.findall(r"(\w+),", block.group(1)))


def gpu_partition_rules() -> set[str]:
    resources = yaml.safe_load((PROFILE / "config.yaml").read_text())["set-resources"]
    return {rule for rule, values in resources.items() if values.get("slurm_partition") == "gpu"}


def scheduler_record(cluster_dir: Path) -> dict[str, dict[str, str]]:
    """The job-completion log: job id -> its fields (JobState, Partition, ...)."""
    record = {}
    for line in (cluster_dir / "log" / "jobcomp.log").read_text().splitlines():
        fields = dict(field.split("=", 1) for field in line.split() if "=" in field)
        record[fields["JobId"]] = fields
    return record


def check_submissions(log: str, cluster_dir: Path) -> dict[str, str]:
    """Every job the log submitted is COMPLETED in the scheduler's record, in the partition the profile routes
    its rule to; the listing is appended to ``listing.txt`` (`make test-slurm` prints it). Job id -> rule."""
    submitted = dict(SUBMISSION.findall(log))
    cluster_jobs = len(re.findall(r"^rule \w+:$", log, re.MULTILINE))
    assert submitted and len(submitted) == cluster_jobs, (
        f"{len(submitted)} submissions for {cluster_jobs} non-local jobs"
    )
    record = scheduler_record(cluster_dir)
    gpu_rules = gpu_partition_rules()
    listing = ["jobid  rule                 part  state"]
    for job_id, rule in sorted(submitted.items(), key=lambda item: int(item[0])):
        fields = record.get(job_id, {})
        state, partition = fields.get("JobState", "absent"), fields.get("Partition", "?")
        listing.append(f"{job_id:>5}  {rule:<20} {partition:<5} {state}")
        assert state == "COMPLETED", f"SLURM job {job_id} ({rule}): {fields or 'not in the record'}"
        expected = "gpu" if rule in gpu_rules else "cpu"
        assert partition == expected, f"SLURM job {job_id} ({rule}) ran in {partition}"
    with (cluster_dir / "listing.txt").open("a") as listing_file:
        listing_file.write("\n".join(listing) + "\n")
    return submitted


def test_every_cluster_job_completed_in_its_partition(slurm_run: tuple[Path, str], cluster_dir: Path) -> None:
    check_submissions(slurm_run[1], cluster_dir)


def test_stacked_jobs_completed_in_the_gpu_partition(
    stacked_slurm_run: tuple[Path, str], cluster_dir: Path
) -> None:
    workdir, log = stacked_slurm_run
    submitted = check_submissions(log, cluster_dir)
    assert set(submitted.values()) >= STACKED_RULES and gpu_partition_rules() >= STACKED_RULES
    for seed in STACKED_OVERLAY["seeds"]:
        assert (workdir / f"results/metrics/toy/sasrec/seed{seed}/pretrain.json").is_file()
        assert (workdir / f"results/metrics/toy/sasrec/seed{seed}/adv_cas/eps1.json").is_file()


def test_local_rules_are_not_submitted(slurm_run: tuple[Path, str]) -> None:
    _, log = slurm_run
    submitted_rules = {rule for _, rule in SUBMISSION.findall(log)}
    assert not submitted_rules & local_rules()
    ran_locally = set(re.findall(r"^localrule (\w+):$", log, re.MULTILINE))
    assert ran_locally and ran_locally <= local_rules()


@pytest.mark.parametrize("summary", SUMMARIES)
def test_results_equal_a_local_run(slurm_run: tuple[Path, str], local_run: Path, summary: str) -> None:
    workdir, _ = slurm_run
    path = Path("results") / "summary" / f"{summary}.csv"
    pd.testing.assert_frame_equal(pd.read_csv(workdir / path), pd.read_csv(local_run / path))
