"""Where every result lives: the path templates the rules expand and the stages and collectors read back.

A run is identified by dataset, model, seed, method and, for the methods that take it, epsilon; each is a
level of its paths, so seeds, the paper's epsilon, the epsilon sweep and overlays coexist in one tree::

    results/{kind}/{dataset}/{model}/seed{seed}/pretrain.{ext}
    results/{kind}/{dataset}/{model}/seed{seed}/{method}.{ext}              base, continued
    results/{kind}/{dataset}/{model}/seed{seed}/{method}/eps{epsilon}.{ext} methods that take epsilon

with kind ``models`` (.pt), ``curves`` (.csv), ``metrics`` (.json), ``attacks`` (.csv), ``attack_users``
(.csv.gz, per-user metrics under attack), ``profiles`` (.csv, the perturbation profile) and ``users`` (.csv,
per-user test metrics). Templates use Snakemake's wildcard syntax; ``run_file`` fills them.

Each job of a costly stage (``catrec.vocabulary.BENCHMARK_STAGES``) writes Snakemake's ``benchmark:`` file
beside the same run path, ``benchmarks/{stage}/<run>.tsv`` (``benchmarks/cascade/{dataset}/{terms}.tsv``
for the cascade); ``benchmark_template`` gives the rules' templates, ``parse_benchmark`` reads the identity
back.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from catrec.vocabulary import BENCHMARK_STAGES, EPSILON_METHODS

RESULTS = "results"
DATA_DIR = "results/data/{dataset}"
SEQUENCES = f"{DATA_DIR}/sequences.txt"
STATS = f"{DATA_DIR}/stats.json"
CASCADE = "results/cascade/{dataset}/{terms}.pt"
STATE_ROOT = "results/state"
SUMMARY = "results/summary/{summary}.csv"
TABLES = "results/tables"
SIGNIFICANCE = f"{TABLES}/significance"
ROBUSTNESS = f"{TABLES}/robustness"
COMPUTE = f"{TABLES}/compute"

BENCHMARKS = "benchmarks"
CASCADE_BENCHMARK = f"{BENCHMARKS}/cascade/{{dataset}}/{{terms}}.tsv"

EXTENSIONS = {
    "models": "pt",
    "curves": "csv",
    "metrics": "json",
    "attacks": "csv",
    # Thousands of users by some thirty settings: compressed (gzip, reproducible bytes).
    "attack_users": "csv.gz",
    "profiles": "csv",
    "users": "csv",
}
SEED_DIR = "{dataset}/{model}/seed{seed}"
PRETRAIN_RUN = f"{SEED_DIR}/pretrain"
CLEAN_RUN = f"{SEED_DIR}/{{method}}"
EPSILON_RUN = f"{SEED_DIR}/{{method}}/eps{{epsilon}}"
EPSILON_PATTERN = "[0-9][0-9.e+-]*"


def epsilon_label(value: float | str) -> str:
    """Epsilon as it appears in paths: a form that reads back as exactly the same float (10, 0.1, 1e-05).

    ``:g`` where it is exact (so 10 stays ``10``, not Python's ``10.0``), else ``repr``, the shortest string
    that round-trips: 0.1234567 must neither become 0.123457 nor share a run with 0.1234571.
    """
    number = float(value)
    short = f"{number:g}"
    return short if float(short) == number else repr(number)


def run_name(method: str, epsilon: float | str | None = None) -> str:
    """The run template of ``method`` (pretrain, a clean method, or one that takes epsilon)."""
    if method == "pretrain":
        return PRETRAIN_RUN
    if method in EPSILON_METHODS:
        if epsilon is None:
            raise ValueError(f"method '{method}' takes epsilon")
        return EPSILON_RUN
    return CLEAN_RUN


def run_template(kind: str, method: str, epsilon: float | str | None = "{epsilon}") -> str:
    """``results/{kind}/...`` for the runs of ``method`` with the wildcards left in."""
    return f"{RESULTS}/{kind}/{run_name(method, epsilon)}.{EXTENSIONS[kind]}"


# The three families of run paths, by what their runs are: a pretraining, a clean run (base, continued: no
# epsilon) and a run that takes epsilon. The rules' outputs; every wildcard left in.
RUN_FAMILIES = {"pretrain": PRETRAIN_RUN, "clean": CLEAN_RUN, "epsilon": EPSILON_RUN}


def pretrain_template(kind: str) -> str:
    """``results/{kind}/{dataset}/{model}/seed{seed}/pretrain.{ext}``."""
    return f"{RESULTS}/{kind}/{PRETRAIN_RUN}.{EXTENSIONS[kind]}"


def clean_template(kind: str) -> str:
    """``results/{kind}/{dataset}/{model}/seed{seed}/{method}.{ext}``: the runs that take no epsilon."""
    return f"{RESULTS}/{kind}/{CLEAN_RUN}.{EXTENSIONS[kind]}"


def epsilon_template(kind: str) -> str:
    """``results/{kind}/{dataset}/{model}/seed{seed}/{method}/eps{epsilon}.{ext}``: the runs that take it."""
    return f"{RESULTS}/{kind}/{EPSILON_RUN}.{EXTENSIONS[kind]}"


def stack_run(methods: list[str], epsilon: str) -> str:
    """A stacked job's name below its stage (its log and benchmark): the seed's directory, then the runs it
    trains and their epsilon, so the compute table says which runs the job trained."""
    return f"{SEED_DIR}/stack-{'+'.join(methods)}/eps{epsilon}"


def seed_stack_run(seeds: list[int]) -> str:
    """A pretraining stack's name below its stage (its log and benchmark): listed under its first seed and
    named after the seeds it trains, so the compute table says which runs the job trained."""
    return f"{{dataset}}/{{model}}/seed{min(seeds)}/stack-seeds{'+'.join(map(str, seeds))}"


def state_dir(method: str, epsilon: float | str | None = "{epsilon}") -> str:
    """Parent of a run's state directories (one per run identity, see ``catrec.state``)."""
    return f"{STATE_ROOT}/{run_name(method, epsilon)}"


def _run_path(dataset: str, model: str, seed: int | str, method: str, epsilon: float | str | None) -> str:
    """One run's path below its kind (or stage), without the extension."""
    label = epsilon_label(epsilon) if method in EPSILON_METHODS and epsilon is not None else None
    return run_name(method, label).format(
        dataset=dataset, model=model, seed=seed, method=method, epsilon=label
    )


def run_file(
    kind: str, *, dataset: str, model: str, seed: int | str, method: str, epsilon: float | str | None = None
) -> str:
    """The concrete path of one run's file."""
    return f"{RESULTS}/{kind}/{_run_path(dataset, model, seed, method, epsilon)}.{EXTENSIONS[kind]}"


def parse_run(path: str | Path) -> dict[str, Any]:
    """A run file's identity (dataset, model, method, epsilon, seed) from its path; epsilon NaN if none. A
    gzip-compressed copy (``eps10.csv.gz``) names the same run."""
    path = Path(path)
    stem = path.name.removesuffix(".gz").rsplit(".", 1)[0]
    if stem.startswith("eps") and not path.parent.name.startswith("seed"):
        method_dir, seed_dir, epsilon = path.parent, path.parent.parent, float(stem[3:])
        method = method_dir.name
    else:
        seed_dir, method, epsilon = path.parent, stem, math.nan
    if not seed_dir.name.startswith("seed") or len(seed_dir.parts) < 3:
        raise ValueError(f"{path}: not a run path .../{{dataset}}/{{model}}/seed{{seed}}/...")
    return {
        "dataset": seed_dir.parent.parent.name,
        "model": seed_dir.parent.name,
        "method": method,
        "epsilon": epsilon,
        "seed": int(seed_dir.name[4:]),
    }


def _benchmarked(stage: str) -> str:
    if stage not in BENCHMARK_STAGES:
        raise ValueError(
            f"unknown benchmarked stage '{stage}' (expected one of {', '.join(BENCHMARK_STAGES)})"
        )
    return stage


def benchmark_template(stage: str, family: str = "pretrain") -> str:
    """``benchmarks/{stage}/...``: the benchmark file of a job of ``stage`` on a run of ``family``
    (``RUN_FAMILIES``), wildcards as in its log."""
    if _benchmarked(stage) == "cascade":
        return CASCADE_BENCHMARK
    return f"{BENCHMARKS}/{stage}/{RUN_FAMILIES[family]}.tsv"


def job_benchmark(stage: str, job: str) -> str:
    """The benchmark file of a job named ``job`` below its stage (a stacked job: ``stack_run``)."""
    return f"{BENCHMARKS}/{_benchmarked(stage)}/{job}.tsv"


def benchmark_file(
    stage: str,
    *,
    dataset: str,
    model: str | None = None,
    seed: int | str | None = None,
    method: str = "pretrain",
    epsilon: float | str | None = None,
    terms: str | None = None,
) -> str:
    """The concrete benchmark path of one job: a run's (identity as in ``run_file``) or a cascade's."""
    if _benchmarked(stage) == "cascade":
        return CASCADE_BENCHMARK.format(dataset=dataset, terms=terms)
    if model is None or seed is None:
        raise ValueError(f"the benchmark of a {stage} job needs model and seed")
    return f"{BENCHMARKS}/{stage}/{_run_path(dataset, model, seed, method, epsilon)}.tsv"


def parse_benchmark(path: str | Path) -> dict[str, Any]:
    """A benchmark file's identity: ``stage`` and, as ``parse_run`` gives them, the run's keys.

    Cascade benchmarks name a dataset and the cascade ``terms``; model, method and seed are empty (None) and
    epsilon NaN. Run benchmarks have ``terms`` None.
    """
    path = Path(path)
    parts = path.parts
    if len(parts) >= 4 and parts[-4] == BENCHMARKS and parts[-3] == "cascade" and path.suffix == ".tsv":
        return {
            "stage": "cascade",
            "dataset": parts[-2],
            "model": None,
            "method": None,
            "epsilon": math.nan,
            "seed": None,
            "terms": path.stem,
        }
    try:
        run = parse_run(path)
    except ValueError:
        run = None
    depth = 5 if run is None or math.isnan(run["epsilon"]) else 6
    if (
        run is None
        or path.suffix != ".tsv"
        or len(parts) < depth + 1
        or parts[-depth - 1] != BENCHMARKS
        or parts[-depth] not in BENCHMARK_STAGES
    ):
        raise ValueError(f"{path}: not a benchmark path {BENCHMARKS}/{{stage}}/<run>.tsv")
    return {"stage": parts[-depth], **run, "terms": None}
