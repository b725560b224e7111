"""The finished results of a background run (issue 33's, issue 34's), collected into its experiment folder.

The folder's ``targets.txt`` names its runs (the run of each ``results/<kind>/<run>.<ext>`` target, and the
pretraining of each seed whose ``base`` it names): issues 33 and 34 share one workdir, each folder takes its
own runs. Into the folder:

- ``curves.csv``: every curve under ``<workdir>/results/curves`` with its run's identity (``dataset, model,
  method, epsilon, seed`` + the curve columns), merged with the rows already here (a restarted job rewrites
  its curve only at its next evaluation; rows collected twice must agree);
- ``attacks.csv``: every finished attack file, tidy (``dataset, model, method, epsilon, seed, attack,
  position, k, metric, clean, attacked, drop_pct``);
- ``metrics.csv``: every finished metrics JSON (``catrec collect metrics --long``: ``dataset, model, method,
  epsilon, seed, split, metric, value, code_digest``; the frozen commit wrote no digest, so it is empty)
  and ``selected.csv``: each fine-tuned run's epoch selected by validation (``dataset, model, method,
  epsilon, seed, selected_epoch``);
- ``compute.csv``: the benchmark of every job of its runs and of the workdir's data jobs (``catrec compute``:
  Snakemake's wall time of the job's last part) with ``trainer_seconds``, the training time of the whole run
  summed over its resumed parts (the last curve row's ``seconds``; empty for jobs that do not train);
- ``fig5.png`` / ``fig5_gru4rec.png`` and ``fig6.png`` / ``fig6_gru4rec.png``: ``catrec plot fig5|fig6
  --input attacks.csv --option model=<model>`` (fig5 with ``dataset=beauty``), SASRec / GRU4Rec;
- ``users/<dataset>/<model>/seed<s>/<method>[/eps<e>].csv.gz``: every finished per-user metrics file, named as
  ``catrec significance`` reads a run from its path; ``significance.csv``/``.md``: ``catrec significance`` of
  them, ``significance-vs-base.csv``/``.md`` the same test of base against every run
  (``tests/test_evidence.py`` recomputes both from the committed files);
- ``attack-users/<dataset>/<model>/seed<s>/<method>[/eps<e>].csv.gz``: each user's metrics under every attack
  setting (``attack_users.sh``: this repository's ``catrec attack --users`` on the frozen run's model, kept
  only where its mean rows equal the frozen run's attack rows exactly) and ``robustness.csv``/``.md``:
  ``catrec robustness`` of them (recomputed by ``tests/test_evidence.py`` too);
- with ``--seeds`` (several seeds of each run): ``seeds.csv``, each run's mean and standard deviation over
  seeds of every split's metrics (``model, method, epsilon, split, metric, mean, std, seeds``);
  ``better-epsilon.csv``, each method at its better epsilon (the higher mean validation NDCG@10 over seeds)
  with its test mean ± std; ``seeds.md``, the table of both over every run (mean ± std, the change of
  the mean over base's, each method's better epsilon in bold); ``significance-pairs.csv``/``.md``:
  adv_cas at its better epsilon against every other method at its own (``catrec significance --pair``).

Run with the repository's package (``PYTHONPATH=src``) from the repository root:

    PYTHONPATH=src python docs/evidence/beauty-paper-schedule/collect.py \
        docs/evidence/beauty-paper-schedule/issue33-run [--workdir /work/run33] [--seeds]
"""

from __future__ import annotations

import argparse
import gzip
import shutil
from pathlib import Path

import pandas as pd

from catrec.io import read_json
from catrec.report.collect import collect
from catrec.report.compute import compute_frame
from catrec.report.frames import ordered
from catrec.report.plots import plot_figure
from catrec.report.render import Cell, Table, format_number, write_table
from catrec.report.robustness import write_robustness
from catrec.report.significance import run_name, write_significance
from catrec.vocabulary import METHODS

IDENTITY = ["dataset", "model", "method", "epsilon", "seed"]
# (catrec plot figure, file name, model) of the figures drawn from attacks.csv.
FIGURES = [("fig5", "fig5", "sasrec"), ("fig5", "fig5_gru4rec", "gru4rec"), ("fig6", "fig6", "sasrec")]
FIGURES += [("fig6", "fig6_gru4rec", "gru4rec")]


def run_key(relative: Path) -> str:
    """``dataset/model/seed<s>/<method>[/eps<e>]`` of a path below ``results/<kind>/`` (any extension)."""
    return relative.as_posix().split(".")[0]


def folder_runs(folder: Path, kind: str = "") -> set[str]:
    """The runs ``folder/targets.txt`` names (only its ``results/<kind>`` targets, given ``kind``), with the
    pretraining of every seed whose base it names."""
    runs = {
        run_key(Path(*Path(line).parts[2:]))
        for line in (folder / "targets.txt").read_text().split()
        if line.startswith(f"results/{kind}")
    }
    return runs | {run.removesuffix("/base") + "/pretrain" for run in runs if run.endswith("/base")}


def run_files(results: Path, kind: str, pattern: str, runs: set[str]) -> list[Path]:
    """The files under ``results/<kind>`` of ``runs``."""
    return [
        path
        for path in sorted((results / kind).rglob(pattern))
        if run_key(path.relative_to(results / kind)) in runs
    ]


def identity(relative: Path) -> dict[str, object]:
    """A run's identity from its path below ``results/<kind>/``: dataset/model/seed<s>/<method>[/eps<e>]."""
    dataset, model, seed_dir = relative.parts[:3]
    nested = len(relative.parts) > 4
    return {
        "dataset": dataset,
        "model": model,
        "method": relative.parts[3] if nested else relative.stem,
        "epsilon": relative.stem.removeprefix("eps") if nested else "",
        "seed": int(seed_dir.removeprefix("seed")),
    }


def collect_curves(results: Path, folder: Path, runs: set[str]) -> pd.DataFrame:
    frames = []
    for path in run_files(results, "curves", "*.csv", runs):
        run = identity(path.relative_to(results / "curves"))
        curve = pd.read_csv(path)
        frames.append(curve.assign(**run)[[*IDENTITY, *curve.columns]])
    new = pd.concat(frames, ignore_index=True).astype({"epsilon": str})
    target = folder / "curves.csv"
    old = (
        pd.read_csv(target, dtype={"epsilon": str}, keep_default_na=False)
        if target.exists()
        else new.iloc[:0]
    )
    key = [*IDENTITY, "epoch", "split"]
    overlap = new.merge(old, on=key, suffixes=("", "_old"))
    if not (overlap["ndcg@10"] == overlap["ndcg@10_old"]).all():
        raise SystemExit("a curve row collected twice differs")
    merged = pd.concat([new, old], ignore_index=True).drop_duplicates(key, keep="first")
    return merged.sort_values(["model", "method", "epsilon", "epoch", "split"], kind="stable")


def collect_attacks(results: Path, runs: set[str]) -> pd.DataFrame:
    rows = []
    for path in run_files(results, "attacks", "*.csv", runs):
        run = identity(path.relative_to(results / "attacks"))
        frame = pd.read_csv(path)
        for metric in ("ndcg@10", "hit@10"):
            rows.append(
                pd.DataFrame(
                    {
                        **run,
                        "attack": frame["attack"],
                        "position": frame["position"],
                        "k": frame["k"],
                        "metric": metric,
                        "clean": frame[f"clean_{metric}"],
                        "attacked": frame[metric],
                        "drop_pct": frame[f"drop_{metric}_pct"],
                    }
                )
            )
    return pd.concat(rows, ignore_index=True)


def copy_users(results: Path, folder: Path, runs: set[str]) -> list[Path]:
    """Each per-user file gzip-compressed (mtime 0: the same bytes for the same file) under ``users/``."""
    copies = []
    for path in run_files(results, "users", "*.csv", runs):
        copy = folder / "users" / path.relative_to(results / "users").with_suffix(".csv.gz")
        copy.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "rb") as source, gzip.GzipFile(copy, "wb", mtime=0) as target:
            shutil.copyfileobj(source, target)
        copies.append(copy)
    return copies


def copy_attack_users(attack_workdir: Path, results: Path, folder: Path, runs: set[str]) -> list[Path]:
    """attack_users.sh's per-user files under ``attack-users/``, each only if the rerun attack's mean rows
    equal the frozen run's attack rows exactly (the same attacks on the same model)."""
    copies = []
    for path in run_files(attack_workdir / "results", "attack_users", "*.csv.gz", runs):
        run = run_key(path.relative_to(attack_workdir / "results/attack_users"))
        rerun = pd.read_csv(attack_workdir / "results/attacks" / f"{run}.csv")
        frozen = pd.read_csv(results / "attacks" / f"{run}.csv")
        if not rerun.equals(frozen):
            raise SystemExit(f"{run}: the rerun attack's rows differ from the frozen run's")
        copy = folder / "attack-users" / f"{run}.csv.gz"
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, copy)
        copies.append(copy)
    return copies


def selected_epochs(results: Path, runs: set[str]) -> pd.DataFrame:
    rows = []
    for path in run_files(results, "metrics", "*.json", runs):
        metrics = read_json(path)
        if "selected_epoch" in metrics:
            rows.append(
                {
                    **identity(path.relative_to(results / "metrics")),
                    "selected_epoch": metrics["selected_epoch"],
                }
            )
    return pd.DataFrame(rows)


def compute_table(workdir: Path, runs: set[str]) -> pd.DataFrame:
    """The benchmark of every job of ``runs`` and of every data job (no model), with each training job's
    whole training time from its curve."""
    benchmarks = workdir / "benchmarks"
    frame = compute_frame(
        [
            path
            for path in sorted(benchmarks.rglob("*.tsv"))
            if len(path.relative_to(benchmarks).parts) < 5
            or run_key(Path(*path.relative_to(benchmarks).parts[1:])) in runs
        ]
    )
    trainer_seconds = []
    for _, job in frame.iterrows():
        seconds = float("nan")
        if job["stage"] in ("pretrain", "finetune"):
            run = job["method"] or "pretrain"
            name = run if pd.isna(job["epsilon"]) else f"{run}/eps{job['epsilon']:g}"
            curve = pd.read_csv(
                workdir
                / "results/curves"
                / job["dataset"]
                / job["model"]
                / f"seed{job['seed']}"
                / f"{name}.csv"
            )
            # base evaluates the pretrained model: its curve has no rows.
            if len(curve):
                seconds = curve["seconds"].iloc[-1]
        trainer_seconds.append(seconds)
    return frame.assign(trainer_seconds=trainer_seconds)


def seed_summary(metrics: pd.DataFrame) -> pd.DataFrame:
    """Each run's mean and sample standard deviation over its seeds, per split and metric (``metrics``:
    metrics.csv, epsilon read as text)."""
    summary = metrics.groupby(["model", "method", "epsilon", "split", "metric"], sort=False)["value"]
    return summary.agg(mean="mean", std="std", seeds="count").reset_index()


def better_epsilons(summary: pd.DataFrame) -> pd.DataFrame:
    """Each method at the epsilon of its higher mean validation NDCG@10 (methods without one: their run),
    with that run's test NDCG@10 and HT@10 mean ± std; not pretraining, whose model base evaluates."""
    valid = summary[
        (summary["split"] == "valid") & (summary["metric"] == "ndcg@10") & (summary["method"] != "pretrain")
    ]
    best = valid.loc[valid.groupby(["model", "method"], sort=False)["mean"].idxmax()]
    rows = []
    for _, run in best.iterrows():
        test = summary[
            (summary[["model", "method", "epsilon"]] == run[["model", "method", "epsilon"]]).all(axis=1)
            & (summary["split"] == "test")
        ].set_index("metric")
        rows.append(
            {
                **run[["model", "method", "epsilon"]].to_dict(),
                "valid_ndcg@10": run["mean"],
                **{f"test_{m}_{s}": test.loc[m, s] for m in ("ndcg@10", "hit@10") for s in ("mean", "std")},
                "seeds": run["seeds"],
            }
        )
    return pd.DataFrame(rows)


def seeds_table(summary: pd.DataFrame, better: pd.DataFrame) -> Table:
    """Every fine-tuned run's validation NDCG@10 and test NDCG@10 / HT@10 over seeds (mean ± std, the change
    of the mean against base's), in the paper's method order, each method's better epsilon in bold."""
    runs = summary.set_index(["model", "method", "epsilon", "split", "metric"]).sort_index()
    chosen = set(zip(better["model"], better["method"], better["epsilon"], strict=True))
    rows: list[list[Cell]] = []
    for model in ordered(summary["model"], ["sasrec", "gru4rec"]):
        of_model = summary[(summary["model"] == model) & (summary["method"] != "pretrain")]
        for method in ordered(of_model["method"], METHODS):
            epsilons = set(of_model.loc[of_model["method"] == method, "epsilon"])
            for epsilon in sorted(epsilons, key=lambda text: float(text or 0)):
                test = runs.loc[(model, method, epsilon, "test")]
                base = runs.loc[(model, "base", "", "test")]
                cells = [model, method, epsilon.removesuffix(".0"), str(test.loc["ndcg@10", "seeds"])]
                cells.append(
                    format_number(runs.loc[(model, method, epsilon, "valid", "ndcg@10"), "mean"], ".4f")
                )
                for metric in ("ndcg@10", "hit@10"):
                    mean, std = test.loc[metric, "mean"], test.loc[metric, "std"]
                    cells.append(f"{mean:.4f}" + ("" if pd.isna(std) else f" ± {std:.4f}"))
                    change = 100 * (mean - base.loc[metric, "mean"]) / base.loc[metric, "mean"]
                    cells.append("" if method == "base" else format_number(change, "+.1f", "%"))
                bold = len(epsilons) > 1 and (model, method, epsilon) in chosen
                rows.append([Cell(text, bold=bold) for text in cells])
    return Table(
        header=[
            "model",
            "method",
            "ε",
            "seeds",
            "valid NDCG@10",
            "test NDCG@10",
            "vs base",
            "test HT@10",
            "vs base",
        ],
        rows=rows,
        align="llrrrrrrr",
        caption="Each run over its seeds (mean ± sample std; bold: the method's better ε by validation)",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="the experiment folder, holding its targets.txt")
    parser.add_argument("--workdir", type=Path, default=Path("/work/run33"))
    parser.add_argument("--attack-workdir", type=Path, default=Path("/work/att33"))
    parser.add_argument("--seeds", action="store_true", help="write the summaries over seeds")
    arguments = parser.parse_args()
    folder, workdir = arguments.folder.resolve(), arguments.workdir
    results = workdir / "results"
    runs = folder_runs(folder)
    curves = collect_curves(results, folder, runs)
    curves.to_csv(folder / "curves.csv", index=False)
    print(curves.groupby(["model", "method", "epsilon", "seed"]).epoch.max())
    attacked = folder_runs(folder, "attacks/")
    if attacked:
        collect_attacks(results, attacked).to_csv(folder / "attacks.csv", index=False)
        for figure, name, model in FIGURES:
            options = [f"model={model}"] + (["dataset=beauty"] if figure == "fig5" else [])
            plot_figure(figure, folder / "attacks.csv", folder / f"{name}.pdf", options)
            (folder / f"{name}.pdf").unlink()  # the PNG is the figure committed
    collect("metrics", run_files(results, "metrics", "*.json", runs), folder / "metrics.csv", long=True)
    selected_epochs(results, runs).to_csv(folder / "selected.csv", index=False)
    compute_table(workdir, runs).to_csv(folder / "compute.csv", index=False)
    users = copy_users(results, folder, runs)
    methods = {path.parent.name if path.name.startswith("eps") else path.name.split(".")[0] for path in users}
    # adv_cas against every other run (Table 2's question), and base against every other run (vs-base gains).
    for reference, prefix in (("adv_cas", "significance"), ("base", "significance-vs-base")):
        if reference in methods:
            write_significance(users, folder / prefix, reference)
    attack_users = copy_attack_users(arguments.attack_workdir, results, folder, attacked)
    if attack_users:
        write_robustness(attack_users, folder / "robustness")
    if arguments.seeds:
        metrics = pd.read_csv(folder / "metrics.csv", dtype={"epsilon": str}, keep_default_na=False)
        summary = seed_summary(metrics)
        summary.to_csv(folder / "seeds.csv", index=False)
        better = better_epsilons(summary)
        better.to_csv(folder / "better-epsilon.csv", index=False)
        write_table(folder / "seeds", summary, seeds_table(summary, better), formats=("md",))
        print(better.to_string(index=False))
        named = {
            method: run_name((method, float(epsilon) if epsilon != "" else float("nan")))
            for method, epsilon in zip(better["method"], better["epsilon"], strict=True)
        }
        if "adv_cas" in named:
            pairs = [("adv_cas", method) for method in named if method != "adv_cas"]
            write_significance(
                users, folder / "significance-pairs", pairs=[(named[a], named[b]) for a, b in pairs]
            )


if __name__ == "__main__":
    main()
