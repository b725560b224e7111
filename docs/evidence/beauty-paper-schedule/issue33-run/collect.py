"""Issue 33: the finished results of the background run, collected into this folder.

- ``curves.csv``: every curve under ``<workdir>/results/curves`` with its run's identity (``dataset, model,
  method, epsilon, seed`` + the curve columns), merged with the rows already here (a restarted job rewrites
  its curve only at its next evaluation; rows collected twice must agree);
- ``attacks.csv``: every finished attack file, tidy (``dataset, model, method, epsilon, seed, attack,
  position, k, metric, clean, attacked, drop_pct``);
- ``metrics.csv``: every finished metrics JSON (``catrec collect metrics --long``: ``dataset, model, method,
  epsilon, seed, split, metric, value, code_digest``; the frozen commit wrote no digest, so it is empty)
  and ``selected.csv``: each fine-tuned run's epoch selected by validation (``dataset, model, method,
  epsilon, seed, selected_epoch``);
- ``compute.csv``: every job's benchmark (``catrec compute``: Snakemake's wall time of the job's last part)
  with ``trainer_seconds``, the training time of the whole run summed over its resumed parts (the last
  curve row's ``seconds``; empty for jobs that do not train);
- ``fig5.png`` / ``fig5_gru4rec.png`` and ``fig6.png`` / ``fig6_gru4rec.png``: ``catrec plot fig5|fig6
  --input attacks.csv --option model=<model>`` (fig5 with ``dataset=beauty``), SASRec / GRU4Rec;
- ``users/<dataset>/<model>/seed<s>/<method>[/eps<e>].csv.gz``: every finished per-user metrics file, named as
  ``catrec significance`` reads a run from its path; ``significance.csv``/``.md``: ``catrec significance`` of
  them, ``significance-vs-base.csv``/``.md`` the same test of base against every run
  (``tests/test_evidence.py`` recomputes both from the committed files);
- ``attack-users/<dataset>/<model>/seed<s>/<method>[/eps<e>].csv.gz``: each user's metrics under every attack
  setting (``attack_users.sh``: this repository's ``catrec attack --users`` on the frozen run's model, kept
  only where its mean rows equal the frozen run's attack rows exactly) and ``robustness.csv``/``.md``:
  ``catrec robustness`` of them (recomputed by ``tests/test_evidence.py`` too).

Run with the repository's package (``PYTHONPATH=src``) from the repository root:

    PYTHONPATH=src python docs/evidence/beauty-paper-schedule/issue33-run/collect.py [--workdir /work/run33]
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
from catrec.report.plots import plot_figure
from catrec.report.robustness import write_robustness
from catrec.report.significance import write_significance

HERE = Path(__file__).resolve().parent
IDENTITY = ["dataset", "model", "method", "epsilon", "seed"]
# (catrec plot figure, file name, model) of the figures drawn from attacks.csv.
FIGURES = [("fig5", "fig5", "sasrec"), ("fig5", "fig5_gru4rec", "gru4rec"), ("fig6", "fig6", "sasrec")]
FIGURES += [("fig6", "fig6_gru4rec", "gru4rec")]


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


def collect_curves(results: Path) -> pd.DataFrame:
    frames = []
    for path in sorted((results / "curves").rglob("*.csv")):
        run = identity(path.relative_to(results / "curves"))
        curve = pd.read_csv(path)
        frames.append(curve.assign(**run)[[*IDENTITY, *curve.columns]])
    new = pd.concat(frames, ignore_index=True).astype({"epsilon": str})
    target = HERE / "curves.csv"
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


def collect_attacks(results: Path) -> pd.DataFrame:
    rows = []
    for path in sorted((results / "attacks").rglob("*.csv")):
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


def copy_users(results: Path) -> list[Path]:
    """Each per-user file gzip-compressed (mtime 0: the same bytes for the same file) under ``users/``."""
    copies = []
    for path in sorted((results / "users").rglob("*.csv")):
        copy = HERE / "users" / path.relative_to(results / "users").with_suffix(".csv.gz")
        copy.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "rb") as source, gzip.GzipFile(copy, "wb", mtime=0) as target:
            shutil.copyfileobj(source, target)
        copies.append(copy)
    return copies


def copy_attack_users(attack_workdir: Path, results: Path) -> list[Path]:
    """attack_users.sh's per-user files under ``attack-users/``, each only if the rerun attack's mean rows
    equal the frozen run's attack rows exactly (the same attacks on the same model)."""
    copies = []
    for path in sorted((attack_workdir / "results/attack_users").rglob("*.csv.gz")):
        run = path.relative_to(attack_workdir / "results/attack_users").as_posix().removesuffix(".csv.gz")
        rerun = pd.read_csv(attack_workdir / "results/attacks" / f"{run}.csv")
        frozen = pd.read_csv(results / "attacks" / f"{run}.csv")
        if not rerun.equals(frozen):
            raise SystemExit(f"{run}: the rerun attack's rows differ from the frozen run's")
        copy = HERE / "attack-users" / f"{run}.csv.gz"
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, copy)
        copies.append(copy)
    return copies


def selected_epochs(results: Path) -> pd.DataFrame:
    rows = []
    for path in sorted((results / "metrics").rglob("*.json")):
        metrics = read_json(path)
        if "selected_epoch" in metrics:
            rows.append(
                {
                    **identity(path.relative_to(results / "metrics")),
                    "selected_epoch": metrics["selected_epoch"],
                }
            )
    return pd.DataFrame(rows)


def compute_table(workdir: Path) -> pd.DataFrame:
    """The benchmark of every job, with each training job's whole training time from its curve."""
    frame = compute_frame(sorted((workdir / "benchmarks").rglob("*.tsv")))
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/work/run33"))
    parser.add_argument("--attack-workdir", type=Path, default=Path("/work/att33"))
    arguments = parser.parse_args()
    workdir = arguments.workdir
    results = workdir / "results"
    curves = collect_curves(results)
    curves.to_csv(HERE / "curves.csv", index=False)
    print(curves.groupby(["model", "method", "epsilon"]).epoch.max())
    if (results / "attacks").exists():
        collect_attacks(results).to_csv(HERE / "attacks.csv", index=False)
        for figure, name, model in FIGURES:
            options = [f"model={model}"] + (["dataset=beauty"] if figure == "fig5" else [])
            plot_figure(figure, HERE / "attacks.csv", HERE / f"{name}.pdf", options)
            (HERE / f"{name}.pdf").unlink()  # the PNG is the figure committed
    collect("metrics", sorted((results / "metrics").rglob("*.json")), HERE / "metrics.csv", long=True)
    selected_epochs(results).to_csv(HERE / "selected.csv", index=False)
    compute_table(workdir).to_csv(HERE / "compute.csv", index=False)
    users = copy_users(results)
    methods = {path.parent.name if path.name.startswith("eps") else path.name.split(".")[0] for path in users}
    # adv_cas against every other run (Table 2's question), and base against every other run (vs-base gains).
    for reference, prefix in (("adv_cas", "significance"), ("base", "significance-vs-base")):
        if reference in methods:
            write_significance(users, HERE / prefix, reference)
    attack_users = copy_attack_users(arguments.attack_workdir, results)
    if attack_users:
        write_robustness(attack_users, HERE / "robustness")


if __name__ == "__main__":
    main()
