"""catrec.plan without Snakemake: the runs of a config, stack membership, the jobs `all` runs with each job's
benchmark file (stacked and unstacked), the final targets of config/config.yaml and config/smoke.yaml and the
figures' inputs."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO_ROOT

from catrec.config import load_config
from catrec.plan import Plan
from catrec.vocabulary import CLEAN_METHODS, EPSILON_METHODS

SMOKE = load_config(REPO_ROOT / "config/smoke.yaml")
PAPER = load_config(REPO_ROOT / "config/config.yaml")
ADVERSARIAL = [m for m in SMOKE["methods"] if m in EPSILON_METHODS]
STACK = "stack-" + "+".join(ADVERSARIAL)


def smoke(**train: Any) -> dict[str, Any]:
    config = copy.deepcopy(SMOKE)
    config["train"].update(train)
    return config


def by_stage(plan: Plan) -> dict[str, list[str]]:
    """The benchmark files of the jobs `all` runs, by stage (the benchmark's first directory)."""
    stages: dict[str, list[str]] = {}
    for benchmark in plan.compute_jobs:
        stages.setdefault(benchmark.split("/")[1], []).append(benchmark)
    return stages


TABLES = [
    *(f"results/tables/{t}.{e}" for t in ("table1", "table2") for e in ("csv", "md", "tex", "html")),
    *(f"results/tables/table2_vs_paper.{e}" for e in ("csv", "md", "html")),
]
FIGURES = ["fig3", "fig4", "fig5", "fig6", "fig6_gru4rec", "fig_perturbation"]


@pytest.mark.parametrize("config", [SMOKE, PAPER], ids=["smoke", "paper"])
def test_final_targets(config: dict[str, Any]) -> None:
    assert Plan(config, gpu=False).final_targets() == [
        *TABLES,
        *(f"results/tables/significance.{e}" for e in ("csv", "md", "html")),
        *(f"results/tables/robustness.{e}" for e in ("csv", "md")),
        *(f"results/tables/compute.{e}" for e in ("csv", "md", "html")),
        *(f"figures/{figure}.{ext}" for figure in FIGURES for ext in ("pdf", "png")),
        "results/summary/attacks.csv",
        "results/summary/perturbation_profile.csv",
    ]


def test_final_targets_without_significance_or_profile() -> None:
    """No adv_cas: no significance or robustness table; no method that perturbs S: no profile, its figure or
    summary."""
    config = copy.deepcopy(SMOKE)
    config["methods"] = ["base", "continued", "adv_linear"]
    config["figures"]["fig5"]["methods"] = config["figures"]["fig6"]["methods"] = ["base", "adv_linear"]
    targets = Plan(config, gpu=False).final_targets()
    assert not [t for t in targets if "significance" in t or "robustness" in t or "perturbation" in t]
    assert "figures/fig6.pdf" in targets and "results/tables/compute.csv" in targets


def test_unstacked_jobs_each_benchmark_their_own_run() -> None:
    plan = Plan(smoke(stack=False), gpu=True)
    assert plan.stacked == [] and not plan.pretrain_stacked
    stages = by_stage(plan)
    models, seed = SMOKE["models"], SMOKE["seeds"][0]
    assert sorted(stages["pretrain"]) == [
        f"benchmarks/pretrain/toy/{m}/seed{seed}/pretrain.tsv" for m in sorted(models)
    ]
    paper = [
        f"benchmarks/finetune/toy/{m}/seed{seed}/{method}/eps1.tsv" for m in models for method in ADVERSARIAL
    ]
    sweep = [
        f"benchmarks/finetune/toy/{m}/seed{seed}/adv_cas/eps{e}.tsv" for m in models for e in ("0.1", "10")
    ]
    clean = [
        f"benchmarks/finetune/toy/{m}/seed{seed}/{method}.tsv" for m in models for method in CLEAN_METHODS
    ]
    assert sorted(stages["finetune"]) == sorted(paper + sweep + clean)
    assert sorted(stages["cascade"]) == [
        f"benchmarks/cascade/toy/{t}.tsv" for t in ("both", "cross", "temporal")
    ]
    assert len(stages["attack"]) == len(stages["user_metrics"]) == len(models) * len(SMOKE["methods"])
    # Each benchmark's job writes the file the compute rule reads as its input.
    assert plan.compute_jobs[f"benchmarks/finetune/toy/sasrec/seed{seed}/adv_seq/eps1.tsv"] == (
        f"results/metrics/toy/sasrec/seed{seed}/adv_seq/eps1.json"
    )


def test_stacked_jobs_benchmark_the_stack_that_trained_them() -> None:
    """train.stack: the paper-epsilon runs of each seed are one job with one benchmark, the stacked rule's;
    the sweep's other epsilons and the clean runs keep theirs."""
    plan = Plan(smoke(stack=True), gpu=False)
    assert plan.stacked == ADVERSARIAL
    seed = SMOKE["seeds"][0]
    finetune = by_stage(plan)["finetune"]
    stacks = [f"benchmarks/finetune/toy/{m}/seed{seed}/{STACK}/eps1.tsv" for m in sorted(SMOKE["models"])]
    assert sorted(b for b in finetune if "stack-" in b) == stacks
    assert not [b for b in finetune if b.endswith("/eps1.tsv") and "stack-" not in b]
    assert f"benchmarks/finetune/toy/gru4rec/seed{seed}/adv_cas/eps10.tsv" in finetune
    assert f"benchmarks/finetune/toy/gru4rec/seed{seed}/continued.tsv" in finetune
    # The stacked rule's benchmark template is the one the compute table reads.
    template = plan.stack_benchmark()
    assert template == f"benchmarks/finetune/{{dataset}}/{{model}}/seed{{seed}}/{STACK}/eps1.tsv"
    assert template.format(dataset="toy", model="sasrec", seed=seed) in stacks
    assert sorted(by_stage(plan)["pretrain"]) == [
        f"benchmarks/pretrain/toy/{m}/seed{seed}/pretrain.tsv" for m in sorted(SMOKE["models"])
    ]


def test_several_seeds_stack_their_pretrainings() -> None:
    config = smoke(stack=True)
    config["seeds"] = [42, 43]
    plan = Plan(config, gpu=False)
    assert plan.pretrain_stacked
    assert sorted(by_stage(plan)["pretrain"]) == [
        f"benchmarks/pretrain/toy/{m}/seed42/stack-seeds42+43.tsv" for m in sorted(SMOKE["models"])
    ]
    assert plan.pretrain_stack_files("models") == [
        "results/models/{dataset}/{model}/seed42/pretrain.pt",
        "results/models/{dataset}/{model}/seed43/pretrain.pt",
    ]


@pytest.mark.parametrize(
    ("stack", "gpu", "stacked"),
    [("auto", False, False), ("auto", True, True), (True, False, True), (False, True, False)],
)
def test_stack_membership(stack: bool | str, gpu: bool, stacked: bool) -> None:
    plan = Plan(smoke(stack=stack), gpu=gpu)
    assert plan.stacked == (ADVERSARIAL if stacked else [])
    assert plan.resources == {"gpu": int(gpu), "device": SMOKE["device"]}
    assert plan.threads == (1 if gpu else SMOKE["threads"])


def test_stack_runs_hold_each_members_settings_and_files() -> None:
    plan = Plan(smoke(stack=True), gpu=False)
    members = json.loads(plan.stack_runs({"dataset": "toy", "model": "sasrec", "seed": "42"}))
    assert [m["method"] for m in members] == ADVERSARIAL
    adv_cas = members[ADVERSARIAL.index("adv_cas")]
    assert adv_cas["cascade"] == "results/cascade/toy/both.pt"
    assert adv_cas["metrics"] == "results/metrics/toy/sasrec/seed42/adv_cas/eps1.json"
    assert adv_cas["state_dir"] == "results/state/toy/sasrec/seed42/adv_cas/eps1"
    assert adv_cas["hparams"]["epsilon"] == 1.0 and adv_cas["hparams"]["seed"] == 42
    assert members[ADVERSARIAL.index("adv_linear")]["cascade"] is None
    assert (
        plan.stack_files("curves")[0]
        == f"results/curves/{{dataset}}/{{model}}/seed{{seed}}/{ADVERSARIAL[0]}/eps1.csv"
    )


def test_figure_inputs_are_the_runs_each_figure_draws() -> None:
    plan = Plan(PAPER, gpu=False)
    fig5, fig6 = PAPER["figures"]["fig5"], PAPER["figures"]["fig6"]
    assert plan.figure_summary({"figure": "fig6"}) == "results/summary/fig6_attacks.csv"
    fig6_runs = plan.summary_inputs({"summary": "fig6_attacks"})
    assert {path.split("/")[3] for path in fig6_runs} == {fig6["model"]}
    assert {path.split("/")[2] for path in fig6_runs} == set(PAPER["datasets"])
    fig5_runs = plan.summary_inputs({"summary": "fig5_attacks"})
    assert {tuple(path.split("/")[2:4]) for path in fig5_runs} == {(fig5["dataset"], fig5["model"])}
    assert len(fig5_runs) == len(fig5["methods"]) * len(PAPER["seeds"])
    sweep = plan.summary_inputs({"summary": "epsilon"})
    assert len(sweep) == len(PAPER["epsilon_sweep"]["values"]) * len(PAPER["epsilon_sweep"]["models"])
    assert (
        plan.plot_options({"figure": "fig6"})
        == f"--option model={fig6['model']} --option methods={','.join(fig6['methods'])}"
    )
    assert plan.figure_labels({"figure": "fig4"})["methods"] == "adv_cas"


RULE_BLOCK = re.compile(
    r"(\s*)(rule \w+:|use rule .*|checkpoint \w+:|ruleorder:|wildcard_constraints:|localrules:)"
)


def rule_files() -> list[Path]:
    """The .smk files in the order the Snakefile includes them."""
    includes = re.findall(r'^include: "(.+)"$', (REPO_ROOT / "Snakefile").read_text(), flags=re.M)
    return [REPO_ROOT / path for path in includes]


def outside_rules(path: Path) -> list[str]:
    """The non-blank lines of a rule file outside rule bodies (and other Snakemake directives' blocks)."""
    lines, block = [], None
    for line in path.read_text().splitlines():
        indent = len(line) - len(line.lstrip())
        start = RULE_BLOCK.match(line)
        if start and (block is None or len(start.group(1)) <= block):
            block = len(start.group(1))
            continue
        if block is not None and (not line.strip() or indent > block):
            continue
        block = None
        if line.strip():
            lines.append(line)
    return lines


def test_rule_files_hold_rules_and_at_most_150_lines_of_python_beside_them() -> None:
    files = rule_files()
    assert sorted(files) == sorted((REPO_ROOT / "workflow/rules").glob("*.smk")), "every rule file included"
    assert sum(len(outside_rules(path)) for path in files) <= 150
    assert not [line for path in files for line in outside_rules(path) if line.lstrip().startswith("def ")]


def test_no_rule_file_uses_a_name_defined_in_a_file_included_after_it() -> None:
    files = rule_files()
    defined = {
        name: index
        for index, path in enumerate(files)
        for name in re.findall(r"^([A-Za-z_]\w*) = ", path.read_text(), flags=re.M)
    }
    late = [
        f"{path.name} uses {name} of {files[defined[name]].name}"
        for index, path in enumerate(files)
        for name in set(re.findall(r"\b[A-Za-z_]\w*\b", path.read_text())) & set(defined)
        if defined[name] > index
    ]
    assert not late
