"""Issue 30: results carry the code that made them, inputs are known by content, a NaN stops the run.

Each test names the failure of the issue it pins ("failure N", numbered as there).
"""

from __future__ import annotations

import gzip
import json
import os
import random
import shutil
import subprocess
import time
import zipfile
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
import yaml
from conftest import REPO_ROOT, save_untrained_model
from test_probes import _one_line_error, _smoke
from test_workflow import BIN_DIR, planned_jobs, snakemake, write_config

from catrec import provenance
from catrec.cli import main
from catrec.config import read_hparams, stage_hparams, validate_config
from catrec.data.preprocess import preprocess
from catrec.errors import CatrecError
from catrec.io import load_torch_file, save_torch_file
from catrec.provenance import package_digest, source_digest
from catrec.report.collect import collect
from catrec.toy import write_toy_zip
from catrec.vocabulary import CURVE_COLUMNS


def _small(config: dict[str, Any], methods: list[str]) -> dict[str, Any]:
    """``config`` cut to SASRec, ``methods`` and a few epochs: what one run of each method needs."""
    config["models"] = ["sasrec"]
    config["methods"] = methods
    config["epsilon_sweep"].update(models=["sasrec"], values=[1])
    for figure in ("fig5", "fig6"):
        config["figures"][figure]["methods"] = list(methods)  # a list each: no YAML alias
    config["train"].update(pretrain_epochs=4, finetune_epochs=2, eval_every=2, checkpoint_every=2)
    return config


def _metrics(workdir: Path, target: str) -> dict[str, Any]:
    return json.loads((workdir / target).read_text())


# ------------------------------------------------------------------------------------- failure 1


def _workflow_copy(destination: Path) -> Path:
    """The workflow with its own copy of the catrec package (its Snakefile puts that copy's src/ first on
    every job's PYTHONPATH), so a test can change the code; returns the copy's Snakefile."""
    destination.mkdir()
    for name in ("Snakefile", "workflow", "src", "config", "profiles", "envs"):
        source = REPO_ROOT / name
        if source.is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
            shutil.copytree(source, destination / name, ignore=ignore)
        else:
            shutil.copy2(source, destination / name)
    return destination / "Snakefile"


CLEAN_TARGET = "results/metrics/toy/sasrec/seed42/continued.json"
CLEAN_LOG = "logs/finetune/toy/sasrec/seed42/continued.log"
# A result-changing edit: the negatives' scores count three times in the BCE loss.
NEGATIVES = "F.logsigmoid(-torch.where(mask, neg_scores, zero))"


@pytest.mark.slow
def test_failure1_forced_rerun_after_a_code_change_trains_afresh(tmp_path: Path) -> None:
    """Failure 1: after a code change, `--forcerun finetune_clean` resumed the finished run of the old code
    and wrote its numbers under the same run id. Unchanged code still resumes."""
    snakefile = _workflow_copy(tmp_path / "checkout")
    workdir = tmp_path / "work"
    workdir.mkdir()
    config = write_config(workdir, "config.yaml", _small(_smoke(), ["base", "continued"]))
    args = ("--cores", "2", CLEAN_TARGET, "--configfile", str(config))
    snakemake(workdir, *args, snakefile=snakefile)
    first = _metrics(workdir, CLEAN_TARGET)
    package = tmp_path / "checkout/src/catrec"
    assert first["code_digest"] == package_digest(package)
    assert "git_commit" not in first and "git_dirty" not in first, "no git checkout: no commit recorded"

    snakemake(workdir, *args, "--forcerun", "finetune_clean", snakefile=snakefile)
    log = (workdir / CLEAN_LOG).read_text()
    assert "resuming" in log and "finetune epoch" not in log, "unchanged code resumes"
    assert _metrics(workdir, CLEAN_TARGET) == first

    losses = package / "losses.py"
    text = losses.read_text()
    assert text.count(NEGATIVES) == 1
    losses.write_text(text.replace(NEGATIVES, f"F.logsigmoid(-3 * {NEGATIVES[len('F.logsigmoid(-') :]}"))
    snakemake(workdir, *args, "--forcerun", "finetune_clean", snakefile=snakefile)
    log = (workdir / CLEAN_LOG).read_text()
    assert "resuming" not in log and "finetune epoch" in log, "changed code trains afresh"
    second = _metrics(workdir, CLEAN_TARGET)
    assert second["run_id"] != first["run_id"]
    assert second["code_digest"] == package_digest(package) != first["code_digest"]
    assert second["test"] != first["test"]

    pruned = subprocess.run(
        [str(BIN_DIR / "catrec"), "prune-state", "results/state"],
        cwd=workdir,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "removed 1 state directory" in pruned.stdout, "the old code's state, and only it"


def test_failure1_code_digest_covers_every_py_file(tmp_path: Path) -> None:
    """Failure 1: any .py file of the package, __init__.py included, can change a number."""
    package = tmp_path / "catrec"
    shutil.copytree(provenance.PACKAGE_DIR, package, ignore=shutil.ignore_patterns("__pycache__"))
    digest = package_digest(package)
    assert digest == package_digest(provenance.PACKAGE_DIR) == provenance.code_digest()
    (package / "notes.txt").write_text("not code")
    assert package_digest(package) == digest
    for name in ("__init__.py", "data/__init__.py", "losses.py"):
        original = (package / name).read_text()
        (package / name).write_text(original + "\nSCALE = 2\n")
        assert package_digest(package) != digest, name
        (package / name).write_text(original)
    assert package_digest(package) == digest
    (package / "losses.py").rename(package / "losses2.py")
    assert package_digest(package) != digest, "a renamed module"


def test_failure1_metrics_record_git_commit_and_dirty_flag() -> None:
    """Failure 1: a checkout records its commit and whether tracked files differ from it."""
    record = provenance.code_provenance()
    assert record["code_digest"] == provenance.code_digest()
    commit = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, check=False
    )
    if commit.returncode != 0:
        pytest.skip("not a git checkout")
    assert record["git_commit"] == commit.stdout.strip() and isinstance(record["git_dirty"], bool)


def _metrics_file(path: Path, ndcg: float, **extra: Any) -> Path:
    record = {
        "dataset": "toy",
        "model": "sasrec",
        "method": "base",
        "seed": 1,
        "valid": {"ndcg@10": ndcg, "hit@10": 0.5},
        "test": {"ndcg@10": ndcg, "hit@10": 0.5},
        **extra,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))
    return path


def test_failure1_collect_and_table2_name_rows_of_different_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Failure 1: rows from two versions of the code were combined without a word."""
    same = [
        _metrics_file(tmp_path / "a.json", 0.2, code_digest="a" * 64),
        _metrics_file(tmp_path / "b.json", 0.3, seed=2, code_digest="a" * 64),
    ]
    collect("metrics", same, tmp_path / "same.csv")
    assert capsys.readouterr().err == ""
    assert set(pd.read_csv(tmp_path / "same.csv")["code_digest"]) == {"a" * 64}
    mixed = [*same, _metrics_file(tmp_path / "c.json", 0.4, method="continued", code_digest="b" * 64)]
    collect("metrics", mixed, tmp_path / "mixed.csv")
    warning = capsys.readouterr().err.strip().splitlines()
    assert len(warning) == 1 and "2 versions of the catrec code" in warning[0] and "forcerun" in warning[0]
    paper = REPO_ROOT / "config/paper/table2.csv"
    argv = ["--metrics", str(tmp_path / "mixed.csv"), "--paper", str(paper)]
    assert main(["table2", *argv, "--output-prefix", str(tmp_path / "table2")]) == 0
    warning = capsys.readouterr().err.strip().splitlines()
    assert len(warning) == 1 and "table2 combines rows from 2 versions" in warning[0]


# ------------------------------------------------------------------------------------- failure 2


def _ratings(directory: Path, seed: int) -> bytes:
    """The toy dataset of ``seed`` as an ML-1M ratings.dat (its zip written in ``directory``)."""
    with zipfile.ZipFile(write_toy_zip(directory / f"toy{seed}.zip", seed=seed)) as archive:
        return archive.read("toy/ratings.dat")


def _replace_keeping_mtime(path: Path, content: bytes) -> None:
    """What `cp -p`, `rsync -a` or `tar x` of another version leave: new content, the old mtime (here
    even the old inode)."""
    before = path.stat()
    path.write_bytes(content)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # touch -r


def _path_config(workdir: Path, ratings: Path, **source: str) -> Path:
    config = _small(_smoke(), ["base", "continued"])
    config["datasets"]["toy"]["source"] = {"path": str(ratings), **source}
    return write_config(workdir, f"config-{len(source)}.yaml", config)


PRETRAIN_TARGET = "results/metrics/toy/sasrec/seed42/pretrain.json"


@pytest.mark.slow
def test_failure2_path_source_replaced_keeping_its_mtime_reruns_preprocess(tmp_path: Path) -> None:
    """Failure 2: a `source.path` file replaced by other content with its old mtime: "Nothing to be done",
    every model of the old data kept."""
    ratings = tmp_path / "ratings.dat"
    ratings.write_bytes(_ratings(tmp_path, seed=0))
    workdir = tmp_path / "work"
    workdir.mkdir()
    args = ("--cores", "2", PRETRAIN_TARGET, "--configfile", str(_path_config(workdir, ratings)))
    snakemake(workdir, *args)
    sequences = (workdir / "results/data/toy/sequences.txt").read_text()
    first = _metrics(workdir, PRETRAIN_TARGET)
    assert "Nothing to be done" in snakemake(workdir, "-n", *args).stdout

    new = _ratings(tmp_path, seed=1)
    assert new != ratings.read_bytes()
    time.sleep(0.05)  # past the file system's clock granularity, as any real replacement is
    _replace_keeping_mtime(ratings, new)
    assert planned_jobs(snakemake(workdir, "-n", *args).stdout) == {"preprocess": 1, "pretrain": 1}
    snakemake(workdir, *args)
    assert (workdir / "results/data/toy/sequences.txt").read_text() != sequences
    second = _metrics(workdir, PRETRAIN_TARGET)
    assert second["run_id"] != first["run_id"] and second["test"] != first["test"]
    assert "Nothing to be done" in snakemake(workdir, "-n", *args).stdout


def test_failure2_sha256_key_checks_a_path_source(tmp_path: Path) -> None:
    """Failure 2: an optional `sha256` key checks a path source like a download's checksum."""
    ratings = tmp_path / "ratings.dat"
    ratings.write_bytes(_ratings(tmp_path, seed=0))
    digest = provenance.file_digest(ratings)
    good = _path_config(tmp_path, ratings, sha256=digest)
    snakemake(tmp_path, "-n", "--cores", "1", PRETRAIN_TARGET, "--configfile", str(good))
    _replace_keeping_mtime(ratings, _ratings(tmp_path, seed=1))
    result = snakemake(
        tmp_path, "-n", "--cores", "1", PRETRAIN_TARGET, "--configfile", str(good), check=False
    )
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "invalid config key 'datasets.toy.source.sha256': checksum mismatch" in output
    assert f"expected sha256 {digest}" in output and str(ratings) in output


def test_failure2_source_digest_is_cached_by_stat(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Failure 2: a large source is read once; a rewrite in place keeping size and mtime is still seen."""
    source, cache = tmp_path / "ratings.dat", tmp_path / ".snakemake/catrec/digests.json"
    source.write_bytes(b"1::2::5::3\n")
    reads: list[Path] = []
    real = provenance.file_digest

    def counted(path: str | Path) -> str:
        reads.append(Path(path))
        return real(path)

    monkeypatch.setattr(provenance, "file_digest", counted)
    first = source_digest(source, cache)
    assert source_digest(source, cache) == first and len(reads) == 1, "the second look-up reads nothing"
    time.sleep(0.05)
    _replace_keeping_mtime(source, b"1::3::5::3\n")
    assert source_digest(source, cache) == provenance.file_digest(source) != first
    cache.write_text("{not json")
    assert source_digest(source, cache) == real(source), "a damaged cache is recomputed"


# ------------------------------------------------------------------------------------- failure 3

FINETUNE_LEN = 20


def _continued_argv(data_dir: Path, pretrained: Path, out: Path) -> list[str]:
    """``catrec finetune`` of `continued` (2 epochs, a checkpoint each) from ``pretrained``."""
    config = _smoke()
    config["datasets"]["toy"]["max_len"] = FINETUNE_LEN
    hparams = stage_hparams(config, "finetune", dataset="toy", model="sasrec", seed=42, method="continued")
    hparams.update(epochs=2, eval_every=1, checkpoint_every=1, model_selection="best_valid")
    argv = ["finetune", "--data", str(data_dir), "--hparams", json.dumps(hparams), "--dataset", "toy"]
    argv += ["--model", "sasrec", "--method", "continued", "--pretrained", str(pretrained)]
    argv += ["--checkpoint", str(out / "model.pt"), "--curve", str(out / "curve.csv")]
    return [*argv, "--metrics", str(out / "m.json"), "--state-dir", str(out / "state"), "--device", "cpu"]


def _pretrained(tmp_path: Path, data_dir: Path, change: Any = None) -> Path:
    """An untrained SASRec for ``data_dir``, its weights passed through ``change``."""
    num_items = json.loads((data_dir / "stats.json").read_text())["items"]
    path = save_untrained_model(tmp_path / "pretrain.pt", "sasrec", num_items, FINETUNE_LEN)
    if change is not None:
        payload = torch.load(path)
        change(payload["state_dict"])
        save_torch_file(path, payload)
    return path


def _nan_row(weights: dict[str, torch.Tensor]) -> None:
    weights["item_emb.weight"][3] = float("nan")


@pytest.mark.usefixtures("one_thread")
def test_failure3_nan_in_the_pretrained_weights_is_refused_naming_the_file(
    tmp_path: Path, toy_data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Failure 3: a NaN row in pretrain.pt trained on: "loss nan", NDCG 0.0000, exit 0."""
    pretrained = _pretrained(tmp_path, toy_data_dir, _nan_row)
    assert main(_continued_argv(toy_data_dir, pretrained, tmp_path / "out")) == 2
    error = _one_line_error(capsys)
    assert str(pretrained) in error and "'item_emb.weight'" in error and "NaN" in error
    assert not (tmp_path / "out/m.json").exists()


@pytest.mark.usefixtures("one_thread")
def test_failure3_nan_in_a_resumable_checkpoint_is_refused_naming_the_file(
    tmp_path: Path, toy_data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Failure 3: a NaN row in checkpoint.pt: with best_valid, the metrics quietly reported the epoch
    before the damage."""
    out = tmp_path / "out"
    argv = _continued_argv(toy_data_dir, _pretrained(tmp_path, toy_data_dir), out)
    assert main(argv) == 0
    (out / "m.json").unlink()
    (checkpoint,) = (out / "state").rglob("checkpoint.pt")
    payload = torch.load(checkpoint)
    _nan_row(payload["model"])
    save_torch_file(checkpoint, payload)
    capsys.readouterr()
    assert main(argv) == 2
    error = _one_line_error(capsys)
    assert str(checkpoint) in error and "NaN" in error
    assert not (out / "m.json").exists()


@pytest.mark.usefixtures("one_thread")
def test_failure3_a_non_finite_loss_stops_the_run_naming_run_and_epoch(
    tmp_path: Path, toy_data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Failure 3: finite but huge weights (scores beyond float32) gave a NaN loss, NDCG 0, exit 0."""

    def huge(weights: dict[str, torch.Tensor]) -> None:
        for name, value in weights.items():
            if value.is_floating_point():
                weights[name] = value * 1e20

    out = tmp_path / "out"
    assert main(_continued_argv(toy_data_dir, _pretrained(tmp_path, toy_data_dir, huge), out)) == 2
    error = _one_line_error(capsys)
    (state,) = (out / "state").iterdir()
    first_epoch = _smoke()["train"]["pretrain_epochs"] + 1  # fine-tuning continues pretraining's count
    assert f"run {state}" in error and f"loss of epoch {first_epoch} is nan" in error
    assert not (out / "m.json").exists() and not (out / "model.pt").exists()


# ------------------------------------------------------------------------------------- failure 4

ABSURD = [
    ("adversarial", "epsilon", 1e308),
    ("adversarial", "epsilon", 1e39),
    ("adversarial", "epsilon", 1e20),
    ("adversarial", "lambda1", 1e308),
    ("adversarial", "lambda2", 1e308),
    ("adversarial", "init_noise", 1e308),
    ("train", "lr", 1e308),
    ("train", "l2", 1e308),
    ("attack", "step_size", 1e308),
]


@pytest.mark.parametrize(("section", "key", "value"), ABSURD)
def test_failure4_absurd_magnitudes_are_refused_by_check_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], section: str, key: str, value: float
) -> None:
    """Failure 4: epsilon 1e308 (and lr, lambda2, init_noise, step_size, l2) were valid; training then
    wrote NDCG 0 or loss inf with exit status 0."""
    config = _smoke()
    config[section][key] = value
    path = write_config(tmp_path, "absurd.yaml", config)
    assert main(["check-config", str(path)]) == 2
    assert f"invalid config key '{section}.{key}'" in _one_line_error(capsys)
    hparams = stage_hparams(_smoke(), "finetune", dataset="toy", model="sasrec", seed=1, method="adv_cas")
    if key in hparams:  # the --hparams of the stages obey the same bounds
        with pytest.raises(CatrecError, match=f"'{key}'"):
            read_hparams({**hparams, key: value}, "finetune", model="sasrec", method="adv_cas")


def test_failure4_every_config_of_the_repository_stays_valid() -> None:
    """The bounds leave every shipped setting (the paper's sweep up to epsilon 50 included) valid."""
    config = yaml.safe_load((REPO_ROOT / "config/config.yaml").read_text())
    assert max(config["epsilon_sweep"]["values"]) == 50
    validate_config(config)
    validate_config(_smoke())


# ------------------------------------------------------------------------------------- failure 5

BOM = b"\xef\xbb\xbf"
# Each format, two users of three items: with min_count 2 (a 2-core), losing the interaction of line 1 to a
# foreign first user id would drop that user and, in cascade, everything.
RAW = {
    "ml-1m": "1::10::5::1\n1::11::4::2\n1::12::3::3\n2::10::5::1\n2::11::4::2\n2::12::3::3\n",
    "amazon-json": "".join(
        json.dumps({"reviewerID": f"u{u}", "asin": f"a{i}", "unixReviewTime": t}) + "\n"
        for u in (1, 2)
        for t, i in enumerate((10, 11, 12), start=1)
    ),
    "amazon-csv": "user,item,rating,timestamp\n"
    + "".join(f"u{u},a{i},5,{t}\n" for u in (1, 2) for t, i in enumerate((10, 11, 12), start=1)),
    "sequences": "1 10 11 12\n2 10 11 12\n",
    "pairs": "1 10\n1 11\n1 12\n2 10\n2 11\n2 12\n",
    "recbole": "user_id:token\titem_id:token\ttimestamp:float\n"
    + "".join(f"{u}\t{i}\t{t}\n" for u in (1, 2) for t, i in enumerate((10, 11, 12), start=1)),
}


def _preprocessed(directory: Path, fmt: str, content: bytes, name: str) -> dict[str, str]:
    raw = directory / name
    raw.write_bytes(gzip.compress(content) if name.endswith(".gz") else content)
    preprocess(fmt, raw, directory / f"out-{name}", min_count=2)
    return {
        file: (directory / f"out-{name}" / file).read_text(encoding="utf-8")
        for file in ("sequences.txt", "stats.json", "user_map.tsv", "item_map.tsv")
    }


@pytest.mark.parametrize("compressed", [False, True])
@pytest.mark.parametrize("fmt", list(RAW))
def test_failure5_a_byte_order_mark_changes_nothing_in_any_format(
    tmp_path: Path, fmt: str, compressed: bool
) -> None:
    """Failure 5: a BOM in ML-1M's ratings.dat (latin-1) made the first user 'ï»¿1', whose interaction
    min_count then dropped silently."""
    suffix = ".gz" if compressed else ""
    plain = _preprocessed(tmp_path, fmt, RAW[fmt].encode(), f"plain{suffix}")
    assert json.loads(plain["stats.json"])["interactions"] == 6
    assert _preprocessed(tmp_path, fmt, BOM + RAW[fmt].encode(), f"bom{suffix}") == plain


@pytest.mark.parametrize("line", ["x1::10::5::1", "1::1O::5::1", "1::²::5::1", "-1::10::5::1"])
def test_failure5_ml1m_ids_must_be_integers_naming_file_and_line(tmp_path: Path, line: str) -> None:
    raw = tmp_path / "ratings.dat"
    raw.write_text(RAW["ml-1m"] + line + "\n", encoding="latin-1")
    with pytest.raises(CatrecError, match=rf"{raw}:7: (UserID|MovieID) must be an integer"):
        preprocess("ml-1m", raw, tmp_path / "out", min_count=0)
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------- failure 6


def test_failure6_cuda_without_cuda_fails_in_the_job_naming_the_device_key(
    tmp_path: Path, toy_data_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Failure 6: `device: cuda` without CUDA (mocked: whatever this machine has) failed in a job log that
    did not name the key."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    argv = _continued_argv(toy_data_dir, _pretrained(tmp_path, toy_data_dir), tmp_path / "out")
    argv[argv.index("--device") + 1] = "cuda"
    assert main(argv) == 2
    assert "invalid config key 'device': 'cuda'" in _one_line_error(capsys)
    assert not (tmp_path / "out").exists()


def test_failure6_cuda_config_still_plans_without_cuda(tmp_path: Path) -> None:
    """Failure 6: a login node without CUDA plans the jobs of `device: cuda` (the SLURM profile's case)."""
    config = _smoke()
    config["device"] = "cuda"
    path = write_config(tmp_path, "cuda.yaml", config)
    jobs = planned_jobs(snakemake(tmp_path, "-n", "--cores", "1", "all", "--configfile", str(path)).stdout)
    assert jobs["pretrain"] == 2


def _junk_inputs(base: bytes, count: int) -> list[bytes]:
    """``count`` seeded damaged versions of ``base`` (bytes changed, truncated) and random bytes."""
    rng = random.Random(30)
    inputs = []
    for index in range(count):
        if index % 3 == 0:
            data = bytearray(base)
            for _ in range(rng.randint(1, 8)):
                data[rng.randrange(len(data))] = rng.randrange(256)
            inputs.append(bytes(data))
        elif index % 3 == 1:
            inputs.append(base[: rng.randrange(len(base))])
        else:
            inputs.append(rng.randbytes(rng.randint(0, 2000)))
    return inputs


def test_failure6_junk_pt_files_are_one_line_errors(tmp_path: Path) -> None:
    """Failure 6: 69 of 616 fuzzed .pt inputs escaped as KeyError, IndexError, struct.error or
    UnicodeDecodeError."""
    base = tmp_path / "base.pt"
    save_torch_file(base, {"config": {"name": "sasrec"}, "state_dict": {"w": torch.arange(6.0).view(2, 3)}})
    junk = tmp_path / "junk.pt"
    escaped = []
    for data in _junk_inputs(base.read_bytes(), 400):
        junk.write_bytes(data)
        try:
            load_torch_file(junk, keys=("config", "state_dict"))
        except CatrecError as error:
            assert str(junk) in str(error) and "\n" not in str(error)
        except Exception as error:  # what the test is for: anything but a CatrecError
            escaped.append(type(error).__name__)
    assert escaped == []


def test_failure6_prune_state_with_a_metrics_key_not_a_string_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Failure 6: an identity.json whose `metrics` is not a string was a TypeError traceback."""
    record = tmp_path / "state" / "pretrain" / "0123456789abcdef" / "identity.json"
    record.parent.mkdir(parents=True)
    record.write_text(json.dumps({"stage": "pretrain", "metrics": 42}))
    assert main(["prune-state", str(tmp_path / "state")]) == 2
    error = _one_line_error(capsys)
    assert str(record) in error and "'metrics'" in error
    assert record.exists()


def test_failure6_a_long_source_filename_is_refused_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Failure 6: a `source.filename` over 250 bytes was Snakemake's "File name too long" traceback."""
    for name in ("x" * 251 + ".zip", "é" * 101 + ".zip"):  # the second: 206 bytes, 105 characters
        config = _smoke()
        config["datasets"]["toy"]["source"]["filename"] = name
        path = write_config(tmp_path, "long.yaml", config)
        assert main(["check-config", str(path)]) == 2
        assert "invalid config key 'datasets.toy.source.filename'" in _one_line_error(capsys)
    result = snakemake(tmp_path, "-n", "--cores", "1", "all", "--configfile", str(path), check=False)
    assert result.returncode != 0 and "datasets.toy.source.filename" in result.stdout + result.stderr
    assert "File name too long" not in result.stdout + result.stderr


def _curve(path: Path, rows: list[list[object]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [",".join(CURVE_COLUMNS), *(",".join(map(str, row)) for row in rows)]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize(
    ("kind", "damage", "message"),
    [
        ("metrics", {"ndcg": float("nan")}, "'valid.ndcg@10' must be a number within [0, 1], got nan"),
        ("metrics", {"ndcg": -0.1}, "must be a number within [0, 1], got -0.1"),
        ("metrics", {"ndcg": 1.5}, "must be a number within [0, 1], got 1.5"),
        ("metrics", {"twice": True}, "collect metrics: two rows for dataset=toy"),
        ("curves", {"row": [2, "finetune", "valid", "nan", 0.5, 0.3, 1.0]}, ":3: column 'ndcg@10' holds nan"),
        ("curves", {"row": [2, "finetune", "valid", -0.2, 0.5, 0.3, 1.0]}, ":3: column 'ndcg@10' holds -0.2"),
        ("curves", {"row": [2, "finetune", "tset", 0.2, 0.5, 0.3, 1.0]}, ":3: column 'split' holds 'tset'"),
        ("curves", {"row": [1, "finetune", "valid", 0.2, 0.5, 0.3, 1.0]}, "two rows for dataset=toy"),
    ],
)
def test_failure6_collect_refuses_impossible_metrics_and_repeated_rows(
    tmp_path: Path, kind: str, damage: dict[str, Any], message: str
) -> None:
    """Failure 6: `catrec collect` accepted NaN, negative NDCG, unknown split names and duplicated rows."""
    if kind == "metrics":
        good = _metrics_file(tmp_path / "results/metrics/toy/sasrec/seed1/base.json", 0.2)
        bad = _metrics_file(tmp_path / "bad/base.json", damage.get("ndcg", 0.2))
        inputs = [good, good] if "twice" in damage else [good, bad]
    else:
        path = tmp_path / "results/curves/toy/sasrec/seed1/continued.csv"
        inputs = [_curve(path, [[1, "finetune", "valid", 0.2, 0.5, 0.3, 1.0], damage["row"]])]
    output = tmp_path / "summary.csv"
    with pytest.raises(CatrecError) as error:
        collect(kind, inputs, output)
    assert message in str(error.value) and "\n" not in str(error.value)
    assert not output.exists()
