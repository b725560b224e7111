"""A stacked fine-tuning job against its runs one after the other: seconds per epoch, same machine, same run.

Not a test. On the real Beauty set (config/config.yaml's settings: hidden 100, batch 128, T = 50), for
SASRec and GRU4Rec, it times the runs one ``train.stack`` job trains per dataset x model x seed (the
config's methods that take epsilon, at the paper's epsilon: six in config/config.yaml) as one stack
(the padded layout, ``catrec.models.stack``) and each of them alone in the ``packed`` and in the ``padded``
layout (``catrec.models.layout``), in alternating rounds (so load beside the bench hits all three alike),
and prints per round and as the median over rounds the seconds of one epoch of the stack against the sum of
the separate runs' epochs. This is the measurement behind ``train.stack: auto`` (stacks where the runs train
on a GPU): on a CPU a stack is not faster than its runs one after the other, packed. On CUDA the padded
steps (the stack's too) are replayed as CUDA graphs unless ``--capture false``.

    .venv/bin/python bench/stack_speed.py [--device cpu] [--rounds 3] [--steps 5] [--threads 1]
        [--capture auto|true|false] [--beauty PATH]
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Any

import torch
from paper_cost import (
    BEAUTY_PATH,
    QUICK,
    REPO_ROOT,
    Budget,
    _loss_of,
    dataset,
    stack_step_seconds,
    stacked_methods,
    step_seconds,
)

from catrec.cascade import cascade_matrix
from catrec.config import load_config, stage_hparams
from catrec.data.sequences import SequenceData
from catrec.runtime import resolve_device, set_precision

VARIANTS = ("stack", "separate packed", "separate padded")


def step_seconds_of(
    variant: str,
    data: SequenceData,
    hparams: dict[str, Any],
    methods: list[str],
    cascades: dict[str, torch.Tensor],
    device: torch.device,
    budget: Budget,
    capture: bool | str = "auto",
) -> float:
    """Seconds of one step of every run: the stack's, or the sum of each run's own (``separate <layout>``)."""
    if variant == "stack":
        return stack_step_seconds(data, hparams, methods, cascades, device, budget, capture)[0]
    layout = variant.removeprefix("separate ")
    return sum(
        step_seconds(data, hparams, m, cascades.get(_loss_of(m)), layout, device, budget, capture)
        for m in methods
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of the three variants")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per run and round (after warm-up)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument(
        "--capture",
        default="auto",
        choices=("auto", "true", "false"),
        help="train.capture of the padded layout",
    )
    parser.add_argument("--beauty", type=Path, default=BEAUTY_PATH, help="the real Beauty set")
    args = parser.parse_args()
    capture = {"true": True, "false": False}.get(args.capture, args.capture)
    device = resolve_device(args.device)
    torch.set_num_threads(args.threads)
    config = load_config(REPO_ROOT / "config" / "config.yaml")
    set_precision(config["train"]["precision"])  # as the pipeline's jobs compute
    budget = Budget(
        steps=args.steps, stack_steps=args.steps, warmup=QUICK.warmup, eval_users=0, attack_users=0
    )
    data, _ = dataset("beauty", config["datasets"]["beauty"]["max_len"], {}, args.beauty)
    steps_per_epoch = -(-data.num_users // config["train"]["batch_size"])
    cascades = {"adv_cas": cascade_matrix(data.train_inputs(), config["train"]["batch_size"], "both")}
    methods = stacked_methods(config)
    print(f"Beauty, {steps_per_epoch} steps per epoch, {len(methods)} runs: {', '.join(methods)}; {device}")
    print("| model | round | stack s/epoch | separate packed s/epoch | separate padded s/epoch |")
    print("|---|---|---:|---:|---:|")
    for model_name in config["models"]:
        hparams = {
            **stage_hparams(config, "pretrain", dataset="beauty", model=model_name, seed=0),
            **stage_hparams(config, "finetune", dataset="beauty", model=model_name, seed=0, method="adv_cas"),
        }
        epochs: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
        for round_index in range(args.rounds):
            # The order turns each round, so a slow spell of the machine does not favour one variant.
            order = VARIANTS[round_index % 3 :] + VARIANTS[: round_index % 3]
            for variant in order:
                seconds = step_seconds_of(variant, data, hparams, methods, cascades, device, budget, capture)
                epochs[variant].append(seconds * steps_per_epoch)
            row = " | ".join(f"{epochs[variant][-1]:.1f}" for variant in VARIANTS)
            print(f"| {model_name} | {round_index + 1} | {row} |", flush=True)
        median = {variant: statistics.median(values) for variant, values in epochs.items()}
        row = " | ".join(f"{median[variant]:.1f}" for variant in VARIANTS)
        print(f"| {model_name} | median | {row} |")
        print(
            f"{model_name}: stack / separate packed = {median['stack'] / median['separate packed']:.2f}, "
            f"stack / separate padded = {median['stack'] / median['separate padded']:.2f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
