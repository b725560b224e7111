"""The rules plan exactly the jobs they planned before the planning moved into catrec.plan (issue 32): the
same jobs, wildcards, files, params, resources and shell commands for config/config.yaml, config/smoke.yaml
and the smoke config with ``train.stack: true`` (tests/fixtures/plans/, written by
``python tests/plan_snapshot.py --write`` from the rules before the change)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from plan_snapshot import FIXTURES, PLANS, plan


def _key(job: dict) -> tuple[str, str]:
    return job["rule"], json.dumps(job["output"] or job["input"])


@pytest.mark.parametrize("name", sorted(PLANS))
def test_rules_plan_the_recorded_jobs(tmp_path: Path, name: str) -> None:
    recorded = {_key(job): job for job in json.loads((FIXTURES / f"{name}.json").read_text())}
    planned = {_key(job): job for job in plan(name, tmp_path)}
    assert sorted(planned) == sorted(recorded), "the same jobs (rule, outputs)"
    for key, job in recorded.items():
        assert planned[key] == job, f"job {key} differs"
