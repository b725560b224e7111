"""What a config's whole experiment costs: timed steps of each stage and layout, projected over its jobs.

Not a test. For every dataset of the config (the real Beauty set, ``--beauty``, never a stand-in; the others
as synthetic sets with the users, items and mean sequence length of the paper's Table 1, lengths 5 + an
exponential tail), both models and each layout (``packed``, ``padded``: ``catrec.models.layout``; the padded
step replayed as a CUDA graph on CUDA unless ``--capture false``) it times a few training steps of
every training loss the config's methods use (pretraining and ``continued`` share the clean loss), one
full-ranking evaluation and one attack run (both on a slice of the users, scaled to all), and the cascade
matrix of each dataset. The job list comes from Snakemake's own plan of the config (``snakemake -n all``),
so the projection covers exactly what ``snakemake all`` runs: one job at a time on one device (one GPU), the
seconds of download, preprocessing, tables and plots left out (seconds each).

    .venv/bin/python bench/paper_cost.py [--device cuda|cpu] [--quick] [--configfile FILE] [--json PATH]
        [--beauty PATH] [--capture auto|true|false]

Prints one line ``whole paper: <x> min (packed <y> min) on <device>`` (x: the ``padded`` layout, y:
``packed``).
Where the config stacks on the timed device (``train.stack``: ``auto`` stacks on CUDA only, as the pipeline
does), x trains the fine-tuning runs of each dataset x model x seed at the paper's epsilon as one stack
(``catrec.models.stack``, padded, timed too) and the line ends ``; unstacked <u> min`` (u: the same runs one
after the other). ``--json`` writes ``device``, ``capture``, ``stacked``, ``stages`` (seconds per step /
evaluation / attack / cascade, per layout; where stacked ``stack_step_seconds`` and, on CUDA,
``stack_peak_memory_mib``), ``projected_minutes``, ``projected_minutes_unstacked`` (both padded) and
``projected_minutes_packed``.
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import math
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from catrec.adversarial import make_loss
from catrec.attack import attack_users
from catrec.cascade import cascade_matrix
from catrec.config import load_config, plans_stack, resolve_layout, stage_hparams
from catrec.data.formats import load_sequences
from catrec.data.item_sets import ItemSets
from catrec.data.sequences import SequenceData
from catrec.graph import WARMUP_STEPS, CapturedStep
from catrec.metrics import rank_users
from catrec.models import build_model
from catrec.paths import epsilon_label
from catrec.runtime import resolve_device, set_precision
from catrec.settings import AttackSettings, PretrainSettings
from catrec.trainer import TrainConfig
from catrec.training import Training
from catrec.vocabulary import CASCADE_TERMS_OF, CLEAN_METHODS, EPSILON_METHODS

REPO_ROOT = Path(__file__).resolve().parents[1]
BEAUTY_PATH = REPO_ROOT.parent / "shared" / "data" / "beauty" / "Beauty.txt"
TABLE1 = REPO_ROOT / "config" / "paper" / "table1.csv"
LAYOUTS = ("packed", "padded")
# The clean loss of pretraining and `continued`; every other trained method has its own.
CLEAN = "continued"
MODEL_RULES = {"pretrain", "finetune", "finetune_clean", "attack", "attack_clean", "profile"}
MODEL_RULES |= {"user_metrics", "user_metrics_clean", "cascade"}
# The rules left out: seconds a job (download, preprocessing, tables, plots).
UNTIMED_RULES = {"all", "download", "extract", "generate_toy", "preprocess", "collect", "table1", "table2"}
UNTIMED_RULES |= {"significance", "robustness", "compute", "plot"}


@dataclass(frozen=True)
class Budget:
    """How much is timed: steps per loss and of a stack (after warm-up), users of an evaluation and of an
    attack."""

    steps: int
    stack_steps: int  # a stack step is K runs' work, so --quick times one
    warmup: int  # untimed steps first: a captured step captures its CUDA graph after WARMUP_STEPS
    eval_users: int
    attack_users: int


FULL = Budget(steps=30, stack_steps=30, warmup=WARMUP_STEPS + 2, eval_users=4096, attack_users=512)
QUICK = Budget(steps=2, stack_steps=1, warmup=WARMUP_STEPS + 1, eval_users=512, attack_users=32)


def synthetic(users: int, items: int, mean_length: float, max_len: int, seed: int = 0) -> SequenceData:
    """Random histories of a Table 1 shape: at least 5 items (5-core), mean ``mean_length``, long-tailed."""
    rng = np.random.default_rng(seed)
    lengths = np.minimum(5 + rng.exponential(max(mean_length - 5, 0.0), users).astype(int), items)
    sequences = [rng.integers(1, items + 1, length).tolist() for length in lengths]
    return SequenceData.from_sequences(sequences, items, max_len=max_len)


def dataset(
    name: str, max_len: int, shapes: dict[str, dict[str, str]], beauty: Path
) -> tuple[SequenceData, str]:
    """The dataset ``name`` of the config: Beauty real (never a stand-in), the others of Table 1's shape."""
    if name == "beauty":
        if not beauty.is_file():
            raise SystemExit(f"{beauty}: no Beauty file (--beauty PATH names it)")
        sequences = load_sequences(beauty)
        return SequenceData.from_sequences(sequences, max(map(max, sequences)), max_len), "real"
    if name not in shapes:
        raise SystemExit(f"dataset '{name}' is neither Beauty nor in {TABLE1}")
    shape = shapes[name]
    users, items = int(shape["users"]), int(shape["items"])
    return synthetic(users, items, int(shape["interactions"]) / users, max_len), "synthetic"


def planned_jobs(configfile: Path) -> list[tuple[str, dict[str, str]]]:
    """(rule, wildcards) of every job ``snakemake -n all`` plans for ``configfile`` in an empty directory."""
    with tempfile.TemporaryDirectory() as workdir:
        command = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO_ROOT / "Snakefile")]
        command += ["--directory", workdir, "-n", "--cores", "1", "all", "--configfile", str(configfile)]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"snakemake -n failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    jobs = re.findall(r"^rule (\w+):\n((?:    .*\n)*)", result.stdout, flags=re.M)
    planned = []
    for rule, body in jobs:
        found = re.search(r"^    wildcards: (.*)$", body, flags=re.M)
        wildcards = dict(item.split("=", 1) for item in found.group(1).split(", ")) if found else {}
        planned.append((rule, wildcards))
    return planned


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(function: Callable[[], Any], device: torch.device) -> float:
    _synchronize(device)
    started = time.perf_counter()
    function()
    _synchronize(device)
    return time.perf_counter() - started


def schedule(
    hparams: dict[str, Any], layout: str, capture: bool | str, device: torch.device, runs: int = 1
) -> TrainConfig:
    """The training schedule of ``hparams`` in ``layout`` with ``capture`` (``train.capture``; it applies to
    the padded layout, the packed one is never captured), resolved as the stages resolve them."""
    resolved = resolve_layout(
        layout, capture if layout == "padded" else "auto", cuda=device.type == "cuda", runs=runs
    )
    return PretrainSettings.of(hparams, model=hparams["model"]).train_config(*resolved)


def training_steps(training: Training) -> Iterator[None]:
    """The steps of ``training`` epoch after epoch, as the trainer's epoch loop runs them (its step replayed
    as a CUDA graph where the schedule captures)."""
    config = training.schedule
    step = (
        CapturedStep(training.step, training.generators(), training.device)
        if config.capture
        else training.step
    )
    while True:
        users, valid = training.epoch_inputs()
        for index in range(len(users)):
            training.users.copy_(users[index])
            training.valid.copy_(valid[index])
            step()
            yield


def step_seconds(
    data: SequenceData,
    hparams: dict[str, Any],
    method: str,
    cascade: torch.Tensor | None,
    layout: str,
    device: torch.device,
    budget: Budget,
    capture: bool | str = "auto",
) -> float:
    """Seconds per training step of ``method``'s loss in ``layout`` (the mean over ``budget.steps``)."""
    config = schedule(hparams, layout, capture, device)
    torch.manual_seed(0)
    model = build_model(PretrainSettings.of(hparams, model=hparams["model"]).model_config(data.num_items)).to(
        device
    )
    loss = make_loss(method, hparams, cascade, data)
    steps = training_steps(Training([model], data, [loss], [config.seed], config, device))
    for _ in range(budget.warmup):  # a captured step's capture happens here
        next(steps)
    return _timed(lambda: [next(steps) for _ in range(budget.steps)], device) / budget.steps


def stack_step_seconds(
    data: SequenceData,
    hparams: dict[str, Any],
    methods: list[str],
    cascades: dict[str, torch.Tensor],
    device: torch.device,
    budget: Budget,
    capture: bool | str = "auto",
) -> tuple[float, float | None]:
    """Seconds per step (the mean over ``budget.stack_steps``) of the ``methods`` trained as one stack
    (padded, ``catrec.models.stack``), and the stack's peak GPU memory in MiB (None on the CPU): what
    ``train.max_stack`` bounds."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    config = schedule(hparams, "padded", capture, device, runs=len(methods))
    torch.manual_seed(0)
    model = build_model(PretrainSettings.of(hparams, model=hparams["model"]).model_config(data.num_items)).to(
        device
    )
    models = [copy.deepcopy(model) for _ in methods]
    losses = [make_loss(method, hparams, cascades.get(_loss_of(method)), data) for method in methods]
    seeds = [config.seed] * len(methods)  # the runs of a fine-tuning stack share their seed
    steps = training_steps(Training(models, data, losses, seeds, config, device))
    for _ in range(budget.warmup):
        next(steps)
    seconds = _timed(lambda: [next(steps) for _ in range(budget.stack_steps)], device) / budget.stack_steps
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return seconds, peak


def stacked_methods(config: dict[str, Any]) -> list[str]:
    """The runs one stacked job trains per dataset x model x seed: the config's methods that take epsilon,
    at the paper's epsilon (continued and the epsilon sweep's other values stay jobs of their own)."""
    return [method for method in config["methods"] if method in EPSILON_METHODS]


def _loss_of(method: str) -> str:
    """The timed loss of a method: the ablations of adv_cas time as adv_cas, pretraining as the clean one."""
    return "adv_cas" if method in CASCADE_TERMS_OF else CLEAN if method in ("pretrain", "base") else method


def first_users(data: SequenceData, split: str, count: int) -> tuple[torch.Tensor, torch.Tensor, ItemSets]:
    """The inputs, targets and excluded histories of ``split`` for the first ``count`` users."""
    count = min(count, data.num_users)
    exclude = ItemSets.from_lists(data.eval_exclude(split).tolist()[:count])
    return data.eval_inputs(split)[:count], data.eval_targets(split)[:count], exclude


def eval_seconds(data: SequenceData, hparams: dict[str, Any], device: torch.device, budget: Budget) -> float:
    """Seconds of one full-ranking evaluation of every user (timed on a slice, scaled)."""
    model = build_model(PretrainSettings.of(hparams, model=hparams["model"]).model_config(data.num_items)).to(
        device
    )
    inputs, targets, exclude = first_users(data, "valid", budget.eval_users)
    rank_users(model, inputs, targets, exclude)  # warm-up
    seconds = _timed(lambda: rank_users(model, inputs, targets, exclude), device)
    return seconds * data.num_users / len(targets)


def attack_seconds(
    data: SequenceData, hparams: dict[str, Any], device: torch.device, budget: Budget
) -> float:
    """Seconds of one attack job (every attack, position and k of the config; timed on a slice, scaled)."""
    model = build_model(PretrainSettings.of(hparams, model=hparams["model"]).model_config(data.num_items)).to(
        device
    )
    inputs, targets, exclude = first_users(data, "test", budget.attack_users)
    config = AttackSettings(
        **{key: hparams[key] for key in AttackSettings.keys(model=hparams["model"])}
    ).attack_config()
    seconds = _timed(lambda: attack_users(model, inputs, targets, exclude, config), device)
    return seconds * data.num_users / len(targets)


def trained_losses(config: dict[str, Any]) -> list[str]:
    """The distinct training losses of the config's methods (ablations of adv_cas time as adv_cas)."""
    losses = {CLEAN}
    for method in config["methods"]:
        if method not in CLEAN_METHODS:
            losses.add("adv_cas" if method in CASCADE_TERMS_OF else method)
    return sorted(losses)


def time_stages(
    config: dict[str, Any],
    device: torch.device,
    budget: Budget,
    stack: bool,
    beauty: Path = BEAUTY_PATH,
    capture: bool | str = "auto",
) -> tuple[dict[str, Any], dict[str, str]]:
    """Per dataset: its kind and cascade seconds; per model: seconds per step (loss, layout), eval, attack,
    and with ``stack`` the seconds per step of the stack of ``stacked_methods``."""
    with open(TABLE1) as handle:
        shapes = {row["dataset"]: row for row in csv.DictReader(handle)}
    stages: dict[str, Any] = {}
    kinds = {}
    for name, spec in config["datasets"].items():
        data, kinds[name] = dataset(name, spec["max_len"], shapes, beauty)
        batch_size = config["train"]["batch_size"]
        cascades = {}
        started = time.perf_counter()
        cascades["adv_cas"] = cascade_matrix(data.train_inputs(), batch_size, "both")
        entry: dict[str, Any] = {
            "kind": kinds[name],
            "users": data.num_users,
            "items": data.num_items,
            "steps_per_epoch": math.ceil(data.num_users / batch_size),
            "cascade_seconds": time.perf_counter() - started,
        }
        for model_name in config["models"]:
            # The model's settings are pretraining's; the losses' and the attack's are fine-tuning's.
            hparams = {
                **stage_hparams(config, "pretrain", dataset=name, model=model_name, seed=0),
                **stage_hparams(config, "finetune", dataset=name, model=model_name, seed=0, method="adv_cas"),
                **stage_hparams(config, "attack", dataset=name, model=model_name),
            }
            timings: dict[str, Any] = {
                "eval_seconds": eval_seconds(data, hparams, device, budget),
                "attack_seconds": attack_seconds(data, hparams, device, budget),
                "step_seconds": {},
            }
            for loss in trained_losses(config):
                timings["step_seconds"][loss] = {
                    layout: step_seconds(
                        data, hparams, loss, cascades.get(loss), layout, device, budget, capture
                    )
                    for layout in LAYOUTS
                }
                print(f"{name} {model_name} {loss}: {timings['step_seconds'][loss]}", flush=True)
            stacked = stacked_methods(config) if stack else []
            if stacked:
                # Timed in the same run as the separate steps above, so the two projections compare.
                timings["stack_step_seconds"], timings["stack_peak_memory_mib"] = stack_step_seconds(
                    data, hparams, stacked, cascades, device, budget, capture
                )
                separate = sum(timings["step_seconds"][_loss_of(m)]["padded"] for m in stacked)
                seconds = timings["stack_step_seconds"]
                print(
                    f"{name} {model_name} stack of {len(stacked)}: {seconds:.4f} s/step "
                    f"(separate padded steps {separate:.4f} s)",
                    flush=True,
                )
            entry[model_name] = timings
        stages[name] = entry
    return stages, kinds


def _evaluations(epochs: int, every: int) -> int:
    """Evaluated epochs of a run (every ``every``-th and the last), each ranking valid and test."""
    return len({*range(every, epochs + 1, every), epochs}) if epochs else 1


def job_seconds(
    rule: str,
    wildcards: dict[str, str],
    config: dict[str, Any],
    stages: dict[str, Any],
    layout: str,
    stacked: bool = False,
) -> float:
    """The projected seconds of one planned job in ``layout`` (0 for ``UNTIMED_RULES``).

    ``stacked``: the runs of ``stacked_methods`` at the paper's epsilon train as one stack per seed, so each
    costs its share (1/K) of the stack's steps; otherwise each its own steps. A planned ``finetune_stack``
    job (``train.stack`` on) is its K runs either way, a ``pretrain_stack`` job the pretraining of each
    seed (its own steps: a stack of pretrainings is not timed). A rule of none of these sets is an error,
    so that no job the plan holds is left out unnoticed.
    """
    paper = epsilon_label(config["adversarial"]["epsilon"])
    if rule == "finetune_stack":
        runs = [{**wildcards, "method": method, "epsilon": paper} for method in stacked_methods(config)]
        return sum(job_seconds("finetune", run, config, stages, layout, stacked) for run in runs)
    if rule == "pretrain_stack":
        runs = [{**wildcards, "seed": str(seed)} for seed in config["seeds"]]
        return sum(job_seconds("pretrain", run, config, stages, layout, stacked) for run in runs)
    if rule in UNTIMED_RULES:
        return 0.0
    if rule not in MODEL_RULES:
        raise SystemExit(f"paper_cost: no projection for the planned rule '{rule}'")
    entry = stages[wildcards["dataset"]]
    if rule == "cascade":
        return entry["cascade_seconds"]
    timings = entry[wildcards["model"]]
    train = config["train"]
    method = wildcards.get("method", "pretrain")
    step = timings["step_seconds"][_loss_of(method)][layout]
    members = stacked_methods(config)
    if stacked and rule == "finetune" and method in members and wildcards.get("epsilon") == paper:
        step = timings["stack_step_seconds"] / len(members)
    epoch_seconds = entry["steps_per_epoch"] * step
    if rule in ("attack", "attack_clean"):
        return timings["attack_seconds"]
    if rule.startswith("user_metrics"):
        return timings["eval_seconds"]
    if rule == "profile":
        return epoch_seconds  # one pass of the method's loss over the training users, as an upper bound
    if method == "base":
        return 2 * timings["eval_seconds"]
    epochs = train["pretrain_epochs"] if rule == "pretrain" else train["finetune_epochs"]
    return epochs * epoch_seconds + 2 * _evaluations(epochs, train["eval_every"]) * timings["eval_seconds"]


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({torch.get_num_threads()} threads)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--quick", action="store_true", help="a few steps and small slices (<= 5 min on CPU)")
    parser.add_argument("--configfile", type=Path, default=REPO_ROOT / "config" / "config.yaml")
    parser.add_argument("--json", type=Path, help="write the timings and projections here")
    parser.add_argument("--beauty", type=Path, default=BEAUTY_PATH, help="the real Beauty set")
    parser.add_argument(
        "--capture",
        default="auto",
        choices=("auto", "true", "false"),
        help="train.capture of the padded layout",
    )
    args = parser.parse_args()
    capture = {"true": True, "false": False}.get(args.capture, args.capture)
    device = resolve_device(args.device)
    config = load_config(args.configfile)
    set_precision(config["train"]["precision"])  # as the pipeline's jobs compute
    budget = QUICK if args.quick else FULL
    if device.type != "cuda":
        # No CUDA graph to capture: one untimed step (first-call allocations) warms a CPU run up.
        budget = replace(budget, warmup=1)
    # As the pipeline decides it for this device (a CPU stack is slower than its runs: bench/stack_speed.py).
    stack = plans_stack(config["train"]["stack"], device.type)
    jobs = planned_jobs(args.configfile)
    stages, kinds = time_stages(config, device, budget, stack, args.beauty, capture)
    minutes = {
        layout: sum(job_seconds(rule, wildcards, config, stages, layout) for rule, wildcards in jobs) / 60
        for layout in LAYOUTS
    }
    projected = sum(
        job_seconds(rule, wildcards, config, stages, "padded", stacked=stack) for rule, wildcards in jobs
    )
    report = {
        "device": device_name(device),
        # Whether the padded steps were replayed as CUDA graphs (``--capture``, resolved for the device).
        "capture": resolve_layout("padded", capture, cuda=device.type == "cuda", runs=1)[1],
        "config": str(args.configfile),
        "quick": args.quick,
        "stacked": stack,
        "jobs": len(jobs),
        "datasets": kinds,
        "stages": stages,
        "projected_minutes": projected / 60,
        "projected_minutes_unstacked": minutes["padded"],
        "projected_minutes_packed": minutes["packed"],
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    line = f"whole paper: {projected / 60:.1f} min (packed {minutes['packed']:.1f} min) on {report['device']}"
    print(f"{line}; unstacked {minutes['padded']:.1f} min" if stack else line)


if __name__ == "__main__":
    main()
