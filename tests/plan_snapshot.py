"""The jobs Snakemake plans for `all` (a dry run, every job forced), each with what it would run: rule,
wildcards, input, output, log, benchmark, params, threads, the gpu and device resources and the shell command.

`python tests/plan_snapshot.py NAME WORKDIR` writes the plan of one of PLANS as JSON to
WORKDIR/NAME.plan.json (jobs sorted by rule and
output, so the list does not depend on Snakemake's order); `python tests/plan_snapshot.py --write` rewrites
tests/fixtures/plans/NAME.json for every plan. Each plan runs in a process of its own (Snakemake's
workflow state is global) with CUDA hidden, as tests/test_workflow.py plans. test_plan.py compares the
plans of the code with the fixtures: a refactoring of the rules must plan exactly the same jobs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
FIXTURES = REPO_ROOT / "tests" / "fixtures" / "plans"


def _smoke_stacked() -> dict[str, Any]:
    config = yaml.safe_load((REPO_ROOT / "config/smoke.yaml").read_text())
    config["train"]["stack"] = True
    return config


# plan name -> its config (a file of the repository, or a config built from one)
PLANS = {
    "paper": lambda: yaml.safe_load((REPO_ROOT / "config/config.yaml").read_text()),
    "smoke": lambda: yaml.safe_load((REPO_ROOT / "config/smoke.yaml").read_text()),
    "smoke_stacked": _smoke_stacked,
}


def _jobs(config_path: Path, workdir: Path) -> list[dict[str, Any]]:
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import ConfigSettings, DAGSettings, OutputSettings, ResourceSettings

    with SnakemakeApi(OutputSettings(quiet={"all"})) as api:  # type: ignore[arg-type]
        workflow_api = api.workflow(
            resource_settings=ResourceSettings(cores=1),
            config_settings=ConfigSettings(configfiles=[config_path]),
            snakefile=REPO_ROOT / "Snakefile",
            workdir=workdir,
        )
        dag_api = workflow_api.dag(DAGSettings(targets={"all"}, forceall=True))
        workflow = dag_api.workflow_api._workflow
        workflow._prepare_dag(forceall=True, ignore_incomplete=True, lock_warn_only=True)
        workflow._build_dag()
        jobs = []
        for job in workflow.dag.jobs:
            params = dict(job.params.items())
            jobs.append(
                {
                    "rule": job.rule.name,
                    "wildcards": dict(job.wildcards.items()),
                    "input": list(map(str, job.input)),
                    "output": list(map(str, job.output)),
                    "log": list(map(str, job.log)),
                    "benchmark": None if job.benchmark is None else str(job.benchmark),
                    "params": {key: str(value) for key, value in params.items()},
                    "threads": job.threads,
                    "resources": {
                        key: getattr(job.resources, key)
                        for key in ("gpu", "device")
                        if hasattr(job.resources, key)
                    },
                    "shell": job.shellcmd,
                }
            )
    return sorted(jobs, key=lambda job: (job["rule"], job["output"], sorted(job["input"])))


def plan(name: str, workdir: Path) -> list[dict[str, Any]]:
    """The jobs plan ``name`` plans, from a Snakemake run in a process of its own in ``workdir``."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(
        [sys.executable, __file__, name, str(workdir)], capture_output=True, text=True, env=env, check=False
    )
    if result.returncode != 0:
        raise AssertionError(f"planning {name} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return json.loads((workdir / f"{name}.plan.json").read_text())


def main(argv: list[str]) -> None:
    if argv == ["--write"]:
        FIXTURES.mkdir(parents=True, exist_ok=True)
        for name in PLANS:
            with tempfile.TemporaryDirectory() as workdir:
                jobs = plan(name, Path(workdir))
            lines = ",\n".join(json.dumps(job, sort_keys=True) for job in jobs)
            (FIXTURES / f"{name}.json").write_text(f"[\n{lines}\n]\n")  # a job a line: diffs name jobs
            print(f"{name}: {len(jobs)} jobs")
        return
    name, workdir = argv
    config_path = Path(workdir) / f"{name}.yaml"
    config_path.write_text(yaml.safe_dump(PLANS[name](), sort_keys=False))
    jobs = _jobs(config_path, Path(workdir))
    # The repository's own files (config/paper/) are read from the checkout: named from its root, so the
    # plans of two checkouts compare equal.
    text = json.dumps(jobs).replace(json.dumps(str(REPO_ROOT))[1:-1], "<repo>")
    (Path(workdir) / f"{name}.plan.json").write_text(text)


if __name__ == "__main__":
    main(sys.argv[1:])
