"""Issue 33: the finished results of the background run, collected into this folder.

- ``curves.csv``: every curve under ``<workdir>/results/curves`` with its run's identity (``dataset, model,
  method, epsilon, seed`` + the curve columns), merged with the rows already here (a restarted job rewrites
  its curve only at its next evaluation; rows collected twice must agree);
- ``attacks.csv``: every finished attack file, tidy (``dataset, model, method, epsilon, seed, attack,
  position, k, metric, clean, attacked, drop_pct``);
- ``users/<dataset>_<model>_seed<s>_<method>[_eps<e>].csv.gz``: every finished per-user metrics file.

    python docs/evidence/beauty-paper-schedule/issue33-run/collect.py [--workdir /work/run33]
"""

from __future__ import annotations

import argparse
import gzip
import shutil
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
IDENTITY = ["dataset", "model", "method", "epsilon", "seed"]


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


def copy_users(results: Path) -> None:
    users = HERE / "users"
    users.mkdir(exist_ok=True)
    for path in sorted((results / "users").rglob("*.csv")):
        name = "_".join(path.relative_to(results / "users").with_suffix("").parts) + ".csv.gz"
        with open(path, "rb") as source, gzip.GzipFile(users / name, "wb", mtime=0) as target:
            shutil.copyfileobj(source, target)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/work/run33"))
    results = parser.parse_args().workdir / "results"
    curves = collect_curves(results)
    curves.to_csv(HERE / "curves.csv", index=False)
    print(curves.groupby(["model", "method", "epsilon"]).epoch.max())
    if (results / "attacks").exists():
        collect_attacks(results).to_csv(HERE / "attacks.csv", index=False)
    if (results / "users").exists():
        copy_users(results)


if __name__ == "__main__":
    main()
