"""Issue 33: the finished attack runs as one tidy CSV, and the finished per-user files gzip-compressed."""
import glob, gzip, shutil
from pathlib import Path
import pandas as pd
root = Path("/work/run33/results"); out = Path("/work/main/docs/evidence/beauty-paper-schedule/issue33-run")
rows = []
for path in sorted(glob.glob(str(root / "attacks/**/*.csv"), recursive=True)):
    rel = Path(path).relative_to(root / "attacks")
    dataset, model, seed_dir = rel.parts[:3]
    method = rel.parts[3] if len(rel.parts) > 4 else rel.stem
    epsilon = rel.stem[3:] if len(rel.parts) > 4 else ""
    frame = pd.read_csv(path)
    for metric in ("ndcg@10", "hit@10"):
        rows.append(pd.DataFrame({
            "dataset": dataset, "model": model, "method": method, "epsilon": epsilon, "seed": int(seed_dir[4:]),
            "attack": frame["attack"], "position": frame["position"], "k": frame["k"], "metric": metric,
            "clean": frame[f"clean_{metric}"], "attacked": frame[metric], "drop_pct": frame[f"drop_{metric}_pct"],
        }))
tidy = pd.concat(rows, ignore_index=True)
tidy.to_csv(out / "attacks.csv", index=False)
print(len(tidy), "attack rows from", tidy.groupby(["model", "method", "epsilon"]).ngroups, "runs")
users = out / "users"; users.mkdir(exist_ok=True)
for path in sorted(glob.glob(str(root / "users/**/*.csv"), recursive=True)):
    rel = Path(path).relative_to(root / "users")
    name = "_".join(rel.with_suffix("").parts) + ".csv.gz"
    with open(path, "rb") as source, gzip.GzipFile(users / name, "wb", mtime=0) as target:
        shutil.copyfileobj(source, target)
    print(name, (users / name).stat().st_size)
