"""Real Snakemake runs: planning both configs, a bad config, and the whole smoke DAG end to end.

The smoke run fetches the toy dataset over HTTP from a server on 127.0.0.1 started here, so download ->
extract -> preprocess is exercised through Snakemake exactly as for ML-1M. It first builds Figure 6 alone
(and checks that only the jobs Figure 6 needs ran), then everything else.
"""

from __future__ import annotations

import base64
import copy
import functools
import hashlib
import http.server
import json
import os
import re
import shlex
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from conftest import REPO_ROOT

from catrec.config import read_hparams
from catrec.paths import epsilon_label
from catrec.toy import write_toy_zip
from catrec.vocabulary import (
    CLEAN_METHODS,
    COMPUTE_COLUMNS,
    EPSILON_METHODS,
    FIGURE_KINDS,
    PROFILE_SUMMARY_COLUMNS,
    SEQUENCE_METHODS,
    SIGNIFICANCE_COLUMNS,
)

BIN_DIR = Path(sys.executable).parent


def snakemake(
    workdir: Path,
    *args: str,
    check: bool = True,
    env: dict[str, str] | None = None,
    snakefile: Path = REPO_ROOT / "Snakefile",
    cuda: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Snakemake in ``workdir`` with ``args``; ``snakefile`` that of another copy of the workflow. Its process
    and jobs see no CUDA (hidden, whatever the machine has), or with ``cuda`` a CUDA mocked as available (for
    plans only, ``-n``: nothing could run on it)."""
    env = {**os.environ, "PATH": f"{BIN_DIR}{os.pathsep}{os.environ['PATH']}", **(env or {})}
    env |= cuda_mocked(workdir) if cuda else {"CUDA_VISIBLE_DEVICES": ""}
    command = [
        str(BIN_DIR / "snakemake"),
        "--snakefile",
        str(snakefile),
        "--directory",
        str(workdir),
        *args,
    ]
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=workdir)
    if check and result.returncode != 0:
        raise AssertionError(
            f"snakemake {' '.join(args)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
        )
    return result


def planned_jobs(output: str) -> dict[str, int]:
    """Parse the 'Job stats' table Snakemake prints."""
    table = output.split("Job stats:", 1)[1].split("total", 1)[0]
    return {name: int(count) for name, count in re.findall(r"^(\w+)\s+(\d+)\s*$", table, flags=re.M)}


def test_paper_config_plans(tmp_path: Path) -> None:
    result = snakemake(tmp_path, "-n", "--cores", "1", "all")
    jobs = planned_jobs(result.stdout + result.stderr)
    assert jobs["download"] == 4 and jobs["pretrain"] == 8 and jobs["table1"] == 1


def planned_runs(output: str) -> list[tuple[str, dict[str, str]]]:
    """(rule, wildcards) of every job a dry run plans."""
    jobs = re.findall(r"^rule (\w+):\n(?:    .*\n)*?    wildcards: (.*)$", output, flags=re.M)
    return [(rule, dict(item.split("=", 1) for item in wildcards.split(", "))) for rule, wildcards in jobs]


# Every rule that runs a model: on a GPU each must hold one (the default profile allows one at a time).
MODEL_RULES = {
    "pretrain",
    "finetune",
    "finetune_clean",
    "finetune_stack",
    "attack",
    "attack_clean",
    "profile",
    "user_metrics",
    "user_metrics_clean",
}


def planned_gpus(output: str) -> dict[str, set[str]]:
    """Rule -> the `gpu` resource values its planned jobs declare (absent: '0')."""
    gpus: dict[str, set[str]] = {}
    for rule, body in re.findall(r"^rule (\w+):\n((?:    .*\n)*)", output, flags=re.M):
        declared = re.search(r"^    resources: .*\bgpu=(\d+)", body, flags=re.M)
        gpus.setdefault(rule, set()).add(declared.group(1) if declared else "0")
    return gpus


def cuda_mocked(directory: Path) -> dict[str, str]:
    """The environment of a Snakemake process that sees CUDA as available (it plans; nothing runs)."""
    mock = directory / "mock_cuda"
    mock.mkdir(exist_ok=True)
    (mock / "sitecustomize.py").write_text("import torch\ntorch.cuda.is_available = lambda: True\n")
    return {"PYTHONPATH": str(mock)}


def test_auto_device_with_cuda_plans_one_gpu_per_model_job(tmp_path: Path) -> None:
    """`device: auto` where CUDA is available (mocked in the Snakemake process) plans gpu=1 for model jobs."""
    config = str(REPO_ROOT / "config/smoke.yaml")
    without = planned_gpus(snakemake(tmp_path, "-n", "--cores", "1", "all", "--configfile", config).stdout)
    with_cuda = planned_gpus(
        snakemake(tmp_path, "-n", "--cores", "1", "all", "--configfile", config, cuda=True).stdout
    )
    assert {rule: values for rule, values in with_cuda.items() if rule in MODEL_RULES} == {
        rule: {"1"} for rule in MODEL_RULES
    }
    assert all(values == {"0"} for rule, values in with_cuda.items() if rule not in MODEL_RULES)
    assert all(values == {"0"} for values in without.values())  # CUDA hidden


def test_tests_plan_as_without_cuda_on_a_machine_with_one(tmp_path: Path) -> None:
    """On a GPU machine (faked: CUDA available unless CUDA_VISIBLE_DEVICES hides it, as there) the helper's
    runs still see no CUDA, so no workflow test depends on the machine it runs on."""
    machine = tmp_path / "gpu_machine"
    machine.mkdir()
    (machine / "sitecustomize.py").write_text(
        "import os, torch\ntorch.cuda.is_available = lambda: os.environ.get('CUDA_VISIBLE_DEVICES') != ''\n"
    )
    config = str(REPO_ROOT / "config/smoke.yaml")
    plan = snakemake(
        tmp_path, "-n", "--cores", "1", "all", "--configfile", config, env={"PYTHONPATH": str(machine)}
    )
    assert all(values == {"0"} for values in planned_gpus(plan.stdout).values())


def test_default_profile_caps_gpu_jobs_without_flags(tmp_path: Path) -> None:
    """A plain `snakemake -n` loads profiles/default, whose total of one GPU serialises the GPU jobs."""
    profile = yaml.safe_load((REPO_ROOT / "profiles/default/config.yaml").read_text())
    assert profile["resources"] == ["gpu=1"]
    config = str(REPO_ROOT / "config/smoke.yaml")
    result = snakemake(tmp_path, "-n", "--cores", "1", "all", "--configfile", config)
    assert f"workflow specific profile {REPO_ROOT / 'profiles/default'}" in result.stderr


def write_config(directory: Path, name: str, config: dict[str, object]) -> Path:
    path = directory / name
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def smoke_config() -> dict[str, object]:
    return yaml.safe_load((REPO_ROOT / "config/smoke.yaml").read_text())


def test_seeds_plan_a_pretraining_per_model_and_seed(tmp_path: Path) -> None:
    config = smoke_config()
    config["seeds"] = [1, 2]
    path = write_config(tmp_path, "seeds.yaml", config)
    result = snakemake(tmp_path, "-n", "--cores", "1", "all", "--configfile", str(path))
    pretrains = [wildcards for rule, wildcards in planned_runs(result.stdout) if rule == "pretrain"]
    assert sorted((w["model"], w["seed"]) for w in pretrains) == [
        ("gru4rec", "1"),
        ("gru4rec", "2"),
        ("sasrec", "1"),
        ("sasrec", "2"),
    ]


def test_config_typo_is_refused_naming_the_key(tmp_path: Path) -> None:
    config = smoke_config()
    config["adversarial"]["epsilom"] = 1
    path = write_config(tmp_path, "typo.yaml", config)
    result = snakemake(tmp_path, "-n", "--cores", "1", "all", "--configfile", str(path), check=False)
    assert result.returncode != 0
    assert "adversarial.epsilom" in result.stdout + result.stderr


def test_smoke_config_plans(tmp_path: Path) -> None:
    result = snakemake(
        tmp_path, "-n", "--cores", "1", "all", "--configfile", str(REPO_ROOT / "config/smoke.yaml")
    )
    jobs = planned_jobs(result.stdout + result.stderr)
    assert jobs["generate_toy"] == 1 and jobs["pretrain"] == 2 and "download" not in jobs


def test_invalid_config_fails_naming_the_key(tmp_path: Path) -> None:
    config = yaml.safe_load((REPO_ROOT / "config/smoke.yaml").read_text())
    config["train"]["finetune_epochs"] = -2
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    result = snakemake(tmp_path, "-n", "--cores", "1", "all", "--configfile", str(path), check=False)
    assert result.returncode != 0
    assert "train.finetune_epochs" in result.stdout + result.stderr
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("epsilon", [".nan", ".inf"])
def test_non_finite_epsilon_fails_naming_the_key(tmp_path: Path, epsilon: str) -> None:
    text = (REPO_ROOT / "config/smoke.yaml").read_text()
    path = tmp_path / "bad.yaml"
    path.write_text(text.replace("\n  epsilon: 1\n", f"\n  epsilon: {epsilon}\n"))
    result = snakemake(tmp_path, "-n", "--cores", "1", "all", "--configfile", str(path), check=False)
    assert result.returncode != 0
    value = epsilon.removeprefix(".")
    assert f"invalid config key 'adversarial.epsilon': {value} is not a finite number" in result.stdout
    assert not (tmp_path / "results").exists()


def test_rule_hparams_pass_the_cli_validation(tmp_path: Path) -> None:
    """The --hparams every rule builds from the config pass the stage's own check (``read_hparams``)."""
    targets = [
        "results/metrics/toy/sasrec/seed42/adv_cas/eps1.json",
        "results/attacks/toy/gru4rec/seed42/adv_cas/eps1.csv",
        "results/profiles/toy/sasrec/seed42/adv_cas/eps1.csv",
    ]
    config = str(REPO_ROOT / "config/smoke.yaml")
    result = snakemake(tmp_path, "-n", "-p", "--cores", "1", *targets, "--configfile", config)
    commands = [
        shlex.split(line[line.index("catrec ") :])
        for line in result.stdout.splitlines()
        if "--hparams" in line
    ]
    stages = {command[1] for command in commands}
    assert stages == {"pretrain", "finetune", "attack", "profile"}
    for command in commands:
        hparams = json.loads(command[command.index("--hparams") + 1])
        # The profile rebuilds the run's loss from the finetune stage's settings.
        stage = "finetune" if command[1] == "profile" else command[1]
        model = command[command.index("--model") + 1]
        method = command[command.index("--method") + 1] if "--method" in command else None
        assert read_hparams(hparams, stage, model=model, method=method) == hparams


@pytest.fixture(scope="module")
def toy_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, list[str]]]:
    """Serve the toy zip (generated with the smoke config's parameters) over HTTP on 127.0.0.1.

    Yields its URL, its sha256 and the list of request paths (with query strings) the server received.
    """
    smoke = yaml.safe_load((REPO_ROOT / "config/smoke.yaml").read_text())
    source = smoke["datasets"]["toy"]["source"]
    served = tmp_path_factory.mktemp("served")
    archive = write_toy_zip(served / "toy.zip", member=source["member"], **source["generate"])
    requested: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self) -> None:
            requested.append(self.path)
            super().do_GET()

        def log_message(self, format: str, *args: object) -> None:
            pass

    handler = functools.partial(Handler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        sha256 = hashlib.sha256(archive.read_bytes()).hexdigest()
        yield f"http://127.0.0.1:{server.server_address[1]}/toy.zip", sha256, requested
    finally:
        server.shutdown()
        server.server_close()


def download_config(workdir: Path, url: str, sha256: str) -> Path:
    """The smoke config, the toy zip downloaded from ``url`` instead of generated, written in ``workdir``."""
    config = yaml.safe_load((REPO_ROOT / "config/smoke.yaml").read_text())
    member = config["datasets"]["toy"]["source"]["member"]
    config["datasets"]["toy"]["source"] = {
        "urls": [url],
        "filename": "toy.zip",
        "member": member,
        "sha256": sha256,
    }
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_config_url_cannot_inject_shell_commands(
    tmp_path: Path, toy_server: tuple[str, str, list[str]]
) -> None:
    url, sha256, _ = toy_server
    marker = tmp_path / "injected"
    evil = f"{url} --output results/raw/toy/toy.zip && touch {marker} #"
    config = download_config(tmp_path, evil, sha256)
    result = snakemake(
        tmp_path, "--cores", "1", "results/raw/toy/toy.zip", "--configfile", str(config), check=False
    )
    assert result.returncode != 0
    assert not marker.exists()
    assert not (tmp_path / "results/raw/toy/toy.zip").exists()
    # The whole string reached catrec download as one URL, which the server does not have.
    assert "HTTP 404" in (tmp_path / "logs/download/toy/toy.zip.log").read_text()


def test_url_with_ampersand_downloads(tmp_path: Path, toy_server: tuple[str, str, list[str]]) -> None:
    url, sha256, requested = toy_server
    config = download_config(tmp_path, f"{url}?token=abc&sig=def", sha256)
    snakemake(tmp_path, "--cores", "1", "results/raw/toy/toy.zip", "--configfile", str(config))
    archive = tmp_path / "results/raw/toy/toy.zip"
    assert hashlib.sha256(archive.read_bytes()).hexdigest() == sha256
    assert "/toy.zip?token=abc&sig=def" in requested


def test_config_download_bounds_reach_the_cli(tmp_path: Path, toy_server: tuple[str, str, list[str]]) -> None:
    url, sha256, _ = toy_server
    config_path = download_config(tmp_path, url, sha256)
    config = yaml.safe_load(config_path.read_text())
    config["download"]["max_bytes"] = 1000
    config_path.write_text(yaml.safe_dump(config))
    result = snakemake(
        tmp_path, "--cores", "1", "results/raw/toy/toy.zip", "--configfile", str(config_path), check=False
    )
    assert result.returncode != 0
    assert not [path for path in (tmp_path / "results").rglob("*") if path.is_file()]
    log = (tmp_path / "logs/download/toy/toy.zip.log").read_text()
    assert "larger than the limit of 1000 bytes" in log


@pytest.fixture(scope="module")
def smoke_run(
    tmp_path_factory: pytest.TempPathFactory, toy_server: tuple[str, str, list[str]]
) -> dict[str, object]:
    """The smoke DAG with the toy source switched to the local URL: Figure 6 first, then `all`."""
    url, sha256, _ = toy_server
    workdir = tmp_path_factory.mktemp("smoke")
    config_path = download_config(workdir, url, sha256)
    config = yaml.safe_load(config_path.read_text())
    common = ("--cores", "2", "--configfile", str(config_path))
    fig6_plan = planned_jobs(snakemake(workdir, "-n", "figures/fig6.pdf", *common).stdout)
    snakemake(workdir, "figures/fig6.pdf", *common)
    after_fig6 = sorted(str(p.relative_to(workdir)) for p in workdir.rglob("*") if p.is_file())
    snakemake(workdir, "all", *common)
    return {
        "workdir": workdir,
        "config": config,
        "config_path": config_path,
        "fig6_plan": fig6_plan,
        "after_fig6": after_fig6,
    }


@pytest.mark.slow
def test_fig6_builds_only_what_it_needs(smoke_run: dict[str, object]) -> None:
    config = smoke_run["config"]
    methods = config["figures"]["fig6"]["methods"]
    clean = [method for method in methods if method in CLEAN_METHODS]
    assert smoke_run["fig6_plan"] == {
        "download": 1,
        "extract": 1,
        "preprocess": 1,
        "pretrain": 1,
        "cascade": 1,
        "finetune": len(methods) - len(clean),
        "finetune_clean": len(clean),
        "attack": len(methods) - len(clean),
        "attack_clean": len(clean),
        "collect": 1,
        "plot": 1,
    }
    files = smoke_run["after_fig6"]
    assert "figures/fig6.pdf" in files and "figures/fig6.png" in files
    assert not [f for f in files if f.startswith("figures/") and "fig6." not in f]
    assert not [f for f in files if "gru4rec" in f or f.startswith("results/tables")]


@pytest.mark.slow
def test_smoke_dag_builds_every_table_and_figure(smoke_run: dict[str, object]) -> None:
    workdir = smoke_run["workdir"]
    assert isinstance(workdir, Path)
    for table in ("table1", "table2"):
        for ext in ("csv", "md", "tex"):
            assert (workdir / f"results/tables/{table}.{ext}").stat().st_size > 0
    assert (workdir / "results/tables/table2_vs_paper.md").exists()
    for figure in ("fig3", "fig4", "fig5", "fig6", "fig6_gru4rec", "fig_perturbation"):
        for ext in ("pdf", "png"):
            assert (workdir / f"figures/{figure}.{ext}").stat().st_size > 1000
    assert (workdir / "results/raw/toy/toy.zip").exists()
    compute = pd.read_csv(workdir / "results/tables/compute.csv")
    assert list(compute.columns) == COMPUTE_COLUMNS
    assert {"pretrain", "finetune", "cascade", "attack"} <= set(compute["stage"])
    assert (compute["seconds"] > 0).all() and (compute["max_rss_mb"] > 0).all()
    for rule in (
        "download",
        "preprocess",
        "pretrain",
        "finetune",
        "attack",
        "plot",
        "profile",
        "user_metrics",
    ):
        assert any((workdir / "logs" / rule).rglob("*.log")), f"no log for rule {rule}"


@pytest.mark.slow
def test_smoke_dag_writes_the_profile_and_the_significance_table(smoke_run: dict[str, object]) -> None:
    workdir, config = smoke_run["workdir"], smoke_run["config"]
    assert isinstance(workdir, Path) and isinstance(config, dict)
    profile = pd.read_csv(workdir / "results/summary/perturbation_profile.csv")
    assert list(profile.columns) == PROFILE_SUMMARY_COLUMNS
    profiled = [method for method in config["methods"] if method in SEQUENCE_METHODS]
    assert set(profile["method"]) == set(profiled) and set(profile["model"]) == set(config["models"])
    assert (profile["position_from_end"] >= 1).all() and (profile["mean_norm"] > 0).all()
    assert set(profile["epsilon"]) == {float(config["adversarial"]["epsilon"])}
    significance = pd.read_csv(workdir / "results/tables/significance.csv")
    assert list(significance.columns) == SIGNIFICANCE_COLUMNS
    others = set(config["methods"]) - {"adv_cas"}
    assert set(significance["method_b"]) == others and set(significance["method_a"]) == {"adv_cas"}
    assert set(significance["test"]) == {"wilcoxon", "ttest_rel"}
    assert (workdir / "results/tables/significance.md").stat().st_size > 0
    users = pd.read_csv(workdir / "results/users/toy/sasrec/seed42/base.csv")
    metrics = json.loads((workdir / "results/metrics/toy/sasrec/seed42/base.json").read_text())
    assert users["ndcg@10"].mean() == pytest.approx(metrics["test"]["ndcg@10"], abs=1e-6)


# What `snakemake --report` shows, by category: every table (its HTML rendering) and every figure (its PNG).
REPORT_GROUPS = {
    "Tables": {
        f"results/tables/{table}.html" for table in ("table1", "table2", "table2_vs_paper", "significance")
    },
    "Figures": {f"figures/{figure}.png" for figure in FIGURE_KINDS if figure != "fig_perturbation"},
    "Analysis": {"figures/fig_perturbation.png"},
    "Compute": {"results/tables/compute.html"},
}
REPORT_ITEMS = set().union(*REPORT_GROUPS.values())


def report(workdir: Path, config: Path) -> tuple[dict[str, Any], dict[str, Any], str]:
    """Run `snakemake --report` in ``workdir``; its results, categories and description, from the page."""
    snakemake(workdir, "--report", "report.html", "--configfile", str(config))
    page = (workdir / "report.html").read_text()

    def script(name: str) -> Any:
        found = re.search(rf'<script id="{name}">\s*var \w+ = (.*?);\s*</script>', page, flags=re.S)
        assert found, f"no {name} in the report"
        return json.loads(found.group(1))

    return script("results"), script("categories"), script("workflow-desc")


def test_report_captions_and_groups_every_table_and_figure(tmp_path: Path) -> None:
    """The report of the smoke DAG, made on empty stand-ins for its outputs: no run needed."""
    config = REPO_ROOT / "config/smoke.yaml"
    summary = snakemake(tmp_path, "--summary", "all", "--configfile", str(config)).stdout
    # `--summary` tabulates every output of the DAG, one per line after its header: output_file, date, ...
    for line in summary.splitlines()[1:]:
        path = tmp_path / line.split("\t")[0]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    results, categories, description = report(tmp_path, config)
    assert set(results) == REPORT_ITEMS
    for path, result in results.items():
        # Docutils renders an error in a caption (a bad reference, a broken directive) as a system message.
        assert result["caption"] and "system-message" not in result["caption"], path
        assert "datasets" in result["labels"] or "jobs" in result["labels"], path
    assert "system-message" not in description and "toy" in description
    for figure in ("fig5", "fig6", "fig6_gru4rec"):
        assert "Why random replacement can hurt more" in results[f"figures/{figure}.png"]["caption"]
    groups = {name: {path for paths in sub.values() for path in paths} for name, sub in categories.items()}
    assert groups == REPORT_GROUPS


@pytest.mark.slow
def test_smoke_report_embeds_the_tables_and_figures(smoke_run: dict[str, object]) -> None:
    workdir, config = smoke_run["workdir"], smoke_run["config_path"]
    assert isinstance(workdir, Path) and isinstance(config, Path)
    results, _, _ = report(workdir, config)
    assert set(results) == REPORT_ITEMS
    for path, result in results.items():
        embedded = base64.b64decode(result["data_uri"].split(";base64,", 1)[1])
        assert embedded == (workdir / path).read_bytes() and len(embedded) > 1000, path


@pytest.mark.slow
def test_smoke_table1_counts_match_preprocessing(smoke_run: dict[str, object]) -> None:
    workdir = smoke_run["workdir"]
    assert isinstance(workdir, Path)
    stats = json.loads((workdir / "results/data/toy/stats.json").read_text())
    assert stats["users"] == smoke_run["config"]["datasets"]["toy"]["source"].get("users", stats["users"])
    table = (workdir / "results/tables/table1.csv").read_text()
    assert f"{stats['users']}" in table and f"{stats['interactions']}" in table


def _replanned(
    smoke_run: dict[str, object], change: Callable[[dict[str, Any]], None]
) -> list[tuple[str, dict[str, str]]]:
    """The training-stage jobs a dry run plans on the finished smoke run after one config change."""
    workdir = smoke_run["workdir"]
    assert isinstance(workdir, Path)
    config = copy.deepcopy(smoke_run["config"])
    change(config)
    path = write_config(workdir.parent, f"changed-{uuid.uuid4().hex[:6]}.yaml", config)
    result = snakemake(workdir, "-n", "--cores", "1", "all", "--configfile", str(path))
    return [(rule, wildcards) for rule, wildcards in planned_runs(result.stdout) if rule in STAGE_RULES]


STAGE_RULES = {"pretrain", "finetune", "finetune_clean", "cascade", "attack", "attack_clean"}


@pytest.mark.slow
def test_unchanged_config_plans_no_training(smoke_run: dict[str, object]) -> None:
    assert _replanned(smoke_run, lambda config: None) == []


@pytest.mark.slow
def test_epsilon_replans_only_the_runs_that_take_it(smoke_run: dict[str, object]) -> None:
    jobs = _replanned(smoke_run, lambda config: config["adversarial"].update(epsilon=2))
    assert jobs, "a new epsilon must plan the runs that take it"
    assert not [rule for rule, _ in jobs if rule in ("pretrain", "cascade")]
    assert not [w for _, w in jobs if w.get("method") in ("base", "continued")]
    assert {w["epsilon"] for rule, w in jobs if rule in ("finetune", "attack")} == {"2"}
    # Building one of them succeeds (no state of another epsilon is resumed), beside the paper's epsilon.
    workdir = smoke_run["workdir"]
    assert isinstance(workdir, Path)
    config = copy.deepcopy(smoke_run["config"])
    config["adversarial"]["epsilon"] = 2
    target = "results/metrics/toy/sasrec/seed42/adv_cas/eps2.json"
    snakemake(
        workdir,
        "--cores",
        "2",
        target,
        "--configfile",
        str(write_config(workdir.parent, "eps2.yaml", config)),
    )
    assert json.loads((workdir / target).read_text())["epsilon"] == 2
    assert (workdir / "results/metrics/toy/sasrec/seed42/adv_cas/eps1.json").exists()


@pytest.mark.slow
def test_gru4rec_key_replans_nothing_of_sasrec(smoke_run: dict[str, object]) -> None:
    jobs = _replanned(smoke_run, lambda config: config["model"]["gru4rec"].update(num_layers=2))
    assert jobs and {w.get("model") for _, w in jobs} == {"gru4rec"}
    assert not [rule for rule, _ in jobs if rule == "cascade"]


@pytest.mark.slow
def test_attack_key_replans_no_training(smoke_run: dict[str, object]) -> None:
    jobs = _replanned(smoke_run, lambda config: config["attack"].update(step_size=0.2))
    assert jobs and {rule for rule, _ in jobs} <= {"attack", "attack_clean"}


def _pretrain_metrics(workdir: Path) -> dict[str, str]:
    return {str(p.relative_to(workdir)): p.read_text() for p in sorted(workdir.rglob("pretrain.json"))}


@pytest.mark.slow
def test_changed_input_or_setting_retrains_instead_of_resuming(tmp_path: Path) -> None:
    """A new toy seed (new sequences) or pretrain_epochs retrains from scratch, never resumes old state."""
    config = smoke_config()
    config["models"] = ["sasrec", "gru4rec"]
    until = ("--cores", "2", "all", "--until", "pretrain", "--configfile")
    snakemake(tmp_path, *until, str(write_config(tmp_path, "a.yaml", config)))
    first = _pretrain_metrics(tmp_path)
    assert len(first) == 2

    config["datasets"]["toy"]["source"]["generate"]["seed"] += 1
    snakemake(tmp_path, *until, str(write_config(tmp_path, "b.yaml", config)))
    second = _pretrain_metrics(tmp_path)
    assert second.keys() == first.keys()
    assert all(second[path] != first[path] for path in first), "every pretrain.json must change"
    logs = "".join(p.read_text() for p in (tmp_path / "logs" / "pretrain").rglob("*.log"))
    assert "resuming" not in logs

    config["train"]["pretrain_epochs"] += 2
    snakemake(tmp_path, *until, str(write_config(tmp_path, "c.yaml", config)))
    third = _pretrain_metrics(tmp_path)
    assert all(third[path] != second[path] for path in first)
    states = list((tmp_path / "results" / "state").rglob("identity.json"))
    assert len(states) == 6, "each run identity keeps its own state until pruned"
    pruned = subprocess.run(
        [str(BIN_DIR / "catrec"), "prune-state", "results/state"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert pruned.returncode == 0 and "removed 4 state directories" in pruned.stdout


def stacked_config() -> dict[str, Any]:
    config = smoke_config()
    config["train"]["stack"] = True
    return config


def test_stacked_config_plans_one_stack_per_seed_at_the_paper_epsilon(tmp_path: Path) -> None:
    """train.stack: one finetune_stack job per model x seed; the sweep's other epsilons stay runs."""
    config = stacked_config()
    path = write_config(tmp_path, "stack.yaml", config)
    result = snakemake(tmp_path, "-n", "--cores", "1", "all", "--configfile", str(path))
    jobs = planned_runs(result.stdout)
    stacks = [wildcards for rule, wildcards in jobs if rule == "finetune_stack"]
    assert len(stacks) == len(config["models"]) * len(config["seeds"])
    paper = epsilon_label(config["adversarial"]["epsilon"])
    finetunes = [wildcards for rule, wildcards in jobs if rule == "finetune"]
    assert finetunes and all(wildcards["epsilon"] != paper for wildcards in finetunes)
    stacked = [m for m in config["methods"] if m in EPSILON_METHODS]
    assert f"logs/finetune/toy/sasrec/seed{config['seeds'][0]}/stack-{'+'.join(stacked)}/eps{paper}.log" in (
        result.stdout
    )
    unstacked = planned_jobs(
        snakemake(
            tmp_path, "-n", "--cores", "1", "all", "--configfile", str(REPO_ROOT / "config/smoke.yaml")
        ).stdout
    )
    assert "finetune_stack" not in unstacked, "auto on a CPU: no stacks"


def test_stacked_config_with_several_seeds_plans_one_pretraining_stack_per_model(tmp_path: Path) -> None:
    """train.stack with two seeds: one pretrain_stack job per model trains both seeds' pretrainings; the
    compute table reads its benchmark; with CUDA (mocked) it holds a GPU like every model job."""
    config = stacked_config()
    config["seeds"] = [42, 43]
    path = write_config(tmp_path, "stack.yaml", config)
    result = snakemake(tmp_path, "-n", "-p", "--cores", "1", "all", "--configfile", str(path))
    jobs = planned_jobs(result.stdout)
    assert jobs["pretrain_stack"] == len(config["models"]) and "pretrain" not in jobs
    assert "logs/pretrain/toy/sasrec/seed42/stack-seeds42+43.log" in result.stdout
    compute = result.stdout.split("catrec compute", 1)[1].split("\n", 1)[0]
    assert "benchmarks/pretrain/toy/sasrec/seed42/stack-seeds42+43.tsv" in compute
    assert "benchmarks/pretrain/toy/sasrec/seed42/pretrain.tsv" not in compute
    auto = {**config, "train": {**config["train"], "stack": "auto"}}
    path = write_config(tmp_path, "auto.yaml", auto)
    on_cuda = snakemake(tmp_path, "-n", "--cores", "1", "all", "--configfile", str(path), cuda=True)
    assert planned_gpus(on_cuda.stdout)["pretrain_stack"] == {"1"}
    on_cpu = planned_jobs(snakemake(tmp_path, "-n", "--cores", "1", "all", "--configfile", str(path)).stdout)
    assert "pretrain_stack" not in on_cpu and on_cpu["pretrain"] == 2 * len(config["models"])


def test_stacked_fig6_plans_only_what_it_needs(tmp_path: Path) -> None:
    config = stacked_config()
    path = write_config(tmp_path, "stack.yaml", config)
    jobs = planned_jobs(
        snakemake(tmp_path, "-n", "--cores", "1", "figures/fig6.pdf", "--configfile", str(path)).stdout
    )
    assert jobs["finetune_stack"] == 1 and "finetune" not in jobs, "no epsilon sweep, SASRec only"
    assert jobs["pretrain"] == 1 and "pretrain_stack" not in jobs, "one seed: nothing to stack"
    assert "table1" not in jobs and "profile" not in jobs


@pytest.mark.parametrize("key", ["layout", "engine"])
def test_stacking_the_packed_layout_is_refused_naming_the_key(tmp_path: Path, key: str) -> None:
    """``train.stack: true`` with the packed layout (or ``engine: eager``, its earlier name)."""
    config = stacked_config()
    if key == "engine":
        del config["train"]["layout"]
    config["train"][key] = {"layout": "packed", "engine": "eager"}[key]
    path = write_config(tmp_path, "stack.yaml", config)
    result = snakemake(tmp_path, "-n", "--cores", "1", "all", "--configfile", str(path), check=False)
    output = result.stdout + result.stderr
    assert (
        result.returncode != 0 and "invalid config key 'train.layout'" in output and "train.stack" in output
    )


@pytest.fixture(scope="module")
def stacked_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The smoke config with train.stack, SASRec only, built to its fine-tuning runs."""
    workdir = tmp_path_factory.mktemp("stacked")
    config = stacked_config()
    config["models"] = ["sasrec"]
    config["epsilon_sweep"]["models"] = ["sasrec"]
    config["figures"]["fig6"]["supplementary_model"] = "sasrec"
    path = write_config(workdir.parent, "stacked.yaml", config)
    snakemake(workdir, "--cores", "2", "all", "--until", "finetune_stack", "--configfile", str(path))
    return {"workdir": workdir, "config": config}


def _stack_metrics(workdir: Path) -> dict[str, dict[str, Any]]:
    return {
        str(path.relative_to(workdir)): json.loads(path.read_text())
        for path in sorted((workdir / "results/metrics").rglob("eps*.json"))
    }


@pytest.mark.slow
def test_a_changed_setting_retrains_only_the_stacked_runs_that_read_it(stacked_run: dict[str, Any]) -> None:
    workdir, config = stacked_run["workdir"], copy.deepcopy(stacked_run["config"])
    before = _stack_metrics(workdir)
    stacked = [m for m in config["methods"] if m in EPSILON_METHODS]
    paper = epsilon_label(config["adversarial"]["epsilon"])
    assert {
        f"results/metrics/toy/sasrec/seed{config['seeds'][0]}/{m}/eps{paper}.json" for m in stacked
    } <= set(before)
    # A stack trains in the padded layout, uncaptured on the CPU.
    assert {(metrics["engine"], metrics["capture"]) for metrics in before.values()} == {("padded", False)}

    def planned(name: str, changed: dict[str, Any]) -> set[tuple[str, tuple[tuple[str, str], ...]]]:
        result = snakemake(
            workdir,
            "-n",
            "--cores",
            "1",
            "all",
            "--configfile",
            str(write_config(workdir.parent, name, changed)),
        )
        return {(rule, tuple(sorted(wildcards.items()))) for rule, wildcards in planned_runs(result.stdout)}

    # Built up to the stacks only: what `all` plans beyond that is the same for both configs.
    unchanged = planned("stacked-same.yaml", config)
    config["adversarial"]["epsilon"] = 2
    new_jobs = planned("stacked-eps2.yaml", config) - unchanged
    assert "finetune_stack" in {rule for rule, _ in new_jobs}
    assert not [rule for rule, _ in new_jobs if rule in ("pretrain", "cascade")]
    assert not [w for _, w in new_jobs if dict(w).get("method") in ("base", "continued")]

    config["adversarial"]["epsilon"] = stacked_run["config"]["adversarial"]["epsilon"]
    config["adversarial"]["lambda1"] = 0.5  # read by the level-1 methods only (adv_global, adv_cas*)
    path = write_config(workdir.parent, "stacked-lambda1.yaml", config)
    snakemake(workdir, "--cores", "2", "all", "--until", "finetune_stack", "--configfile", str(path))
    after = _stack_metrics(workdir)
    log = next((workdir / "logs/finetune").glob(f"toy/sasrec/seed*/stack-*/eps{paper}.log")).read_text()
    for name, metrics in before.items():
        method = metrics["method"]
        if method in ("adv_linear", "adv_seq") and f"eps{paper}" in name:
            assert after[name] == metrics, f"{method} does not read lambda1"
            assert f"finetune {method}: resuming" in log
        elif f"eps{paper}" in name:
            assert after[name]["run_id"] != metrics["run_id"], f"{method} reads lambda1"
