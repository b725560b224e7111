"""Same results in distribution: this checkout's training path against an earlier checkout's, on real data.

Pretrains each model for ``--epochs`` epochs once per seed with this checkout (``layout: packed`` on the
CPU) and with the checkout at ``--baseline`` (its ``engine: eager``), alternating the two per (model, seed) so
that a drift of the machine's load falls on both; every run is ``python -m catrec pretrain`` of its own
checkout on the same preprocessed Beauty set, one thread each. The two draw other random numbers, so they
agree only in distribution: per model, the mean validation NDCG@10 over seeds of each path, and whether the
means lie within two standard deviations (the larger of the two paths') of each other.

    .venv/bin/python bench/one_path_distribution.py --baseline /path/to/earlier/worktree \
        [--epochs 20] [--seeds 1 2 3] [--models sasrec gru4rec] [--beauty ../shared/data/beauty/Beauty.txt] \
        [--out docs/evidence/one-path/distribution.csv]

The baseline's interpreter is ``<baseline>/.venv/bin/python`` with ``<baseline>/src`` on PYTHONPATH. The
settings are config/config.yaml's (the paper's), but for the epochs and ``eval_every`` (= epochs).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from catrec.config import load_config, stage_hparams  # noqa: E402
from catrec.provenance import code_provenance  # noqa: E402

COLUMNS = ["path", "commit", "model", "seed", "epochs", "split", "ndcg@10", "hit@10", "seconds"]


def pretrain(
    checkout: Path, python: Path, data: Path, hparams: dict[str, object], model: str, out: Path
) -> tuple[dict[str, dict[str, float]], float]:
    """Run ``catrec pretrain`` of ``checkout``; its metrics (valid, test) and wall seconds."""
    out.mkdir(parents=True)
    command = [
        str(python), "-m", "catrec", "pretrain", "--data", str(data), "--hparams", json.dumps(hparams),
        "--dataset", "beauty", "--model", model, "--device", "cpu", "--threads", "1",
        "--checkpoint", str(out / "model.pt"), "--curve", str(out / "curve.csv"),
        "--metrics", str(out / "metrics.json"), "--state-dir", str(out / "state"),
    ]  # fmt: skip
    environment = {**os.environ, "PYTHONPATH": str(checkout / "src"), "CUDA_VISIBLE_DEVICES": ""}
    started = time.perf_counter()
    subprocess.run(command, check=True, env=environment, cwd=checkout, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - started
    metrics = json.loads((out / "metrics.json").read_text())
    return {split: metrics[split] for split in ("valid", "test")}, seconds


def git_commit(checkout: Path) -> str:
    run = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=checkout, capture_output=True, text=True
    )
    return run.stdout.strip()


def summarise(rows: list[dict[str, object]]) -> list[str]:
    """Per model: each path's mean ± std of validation NDCG@10 over seeds, and the 2-std verdict."""
    lines = []
    for model in dict.fromkeys(str(row["model"]) for row in rows):
        values = {
            path: [
                float(r["ndcg@10"])
                for r in rows
                if (r["model"], r["path"], r["split"]) == (model, path, "valid")
            ]
            for path in ("baseline", "this")
        }
        means = {path: statistics.mean(v) for path, v in values.items()}
        stds = {path: statistics.stdev(v) if len(v) > 1 else 0.0 for path, v in values.items()}
        bound = 2 * max(stds.values())
        gap = abs(means["this"] - means["baseline"])
        lines.append(
            f"{model}: baseline {means['baseline']:.4f} ± {stds['baseline']:.4f}, this {means['this']:.4f} ± "
            f"{stds['this']:.4f} (n = {len(values['this'])}); |difference| {gap:.4f} "
            f"{'<=' if gap <= bound else '>'} 2 std {bound:.4f}"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--baseline", type=Path, required=True, help="an earlier checkout (its .venv and src)"
    )
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--models", nargs="+", default=["sasrec", "gru4rec"])
    parser.add_argument("--beauty", type=Path, default=REPO.parent / "shared/data/beauty/Beauty.txt")
    parser.add_argument("--out", type=Path, default=REPO / "docs/evidence/one-path/distribution.csv")
    args = parser.parse_args()
    config = load_config(REPO / "config/config.yaml")
    baseline = args.baseline.resolve()
    paths = {
        "baseline": (baseline, baseline / ".venv/bin/python", git_commit(baseline)),
        "this": (REPO, Path(sys.executable), code_provenance().get("git_commit", "")[:7]),
    }
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory() as temp:
        data = Path(temp) / "data"
        subprocess.run(
            [sys.executable, "-m", "catrec", "preprocess", "--format", "sequences",
             "--input", str(args.beauty), "--output-dir", str(data), "--min-count", "5"],
            check=True, env={**os.environ, "PYTHONPATH": str(REPO / "src")},
        )  # fmt: skip
        for model in args.models:
            for seed in args.seeds:
                hparams = stage_hparams(config, "pretrain", dataset="beauty", model=model, seed=seed)
                hparams.update(epochs=args.epochs, eval_every=args.epochs, max_len=50)
                # The baseline's schema knows the earlier name of the setting: its eager engine.
                earlier = {key: value for key, value in hparams.items() if key not in ("layout", "capture")}
                settings = {
                    "baseline": {**earlier, "engine": "eager"},
                    "this": {**hparams, "layout": "packed"},
                }
                for path, (checkout, python, commit) in paths.items():
                    out = Path(temp) / f"{path}-{model}-{seed}"
                    metrics, seconds = pretrain(checkout, python, data, settings[path], model, out)
                    for split, values in metrics.items():
                        rows.append({
                            "path": path, "commit": commit, "model": model, "seed": seed,
                            "epochs": args.epochs, "split": split, **values, "seconds": round(seconds, 1),
                        })  # fmt: skip
                    print(f"{path} {model} seed {seed}: valid ndcg@10 {metrics['valid']['ndcg@10']:.4f}, "
                          f"{seconds:.0f} s", flush=True)  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    print("\n".join(summarise(rows)))


if __name__ == "__main__":
    main()
