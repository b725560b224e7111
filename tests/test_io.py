"""Files that cannot be read or written: one error naming the file, exit status 2, nothing half-written."""

from __future__ import annotations

import argparse
import errno
import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO_ROOT
from test_train import pretrain_hparams

from catrec.config import load_config, read_hparams, stage_hparams
from catrec.errors import CatrecError
from catrec.io import load_torch_file, open_text_atomically, read_text, write_text_atomically
from catrec.stages.common import data_inputs
from catrec.state import run_state
from catrec.trainer import CHECKPOINT_NAME


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "catrec.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> str:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0]
    return lines[0]


def training_outputs(out: Path) -> list[str]:
    return [
        "--checkpoint", str(out / "model.pt"), "--curve", str(out / "curve.csv"),
        "--metrics", str(out / "metrics.json"), "--state-dir", str(out / "state"),
    ]  # fmt: skip


@pytest.fixture
def valid_pt(tmp_path: Path) -> Path:
    path = tmp_path / "valid.pt"
    torch.save({"config": {"name": "sasrec"}, "state_dict": {"w": torch.zeros(1000)}}, path)
    return path


@pytest.mark.parametrize("damage", ["truncated", "empty", "text"])
def test_damaged_pretrained_model_names_the_file(
    damage: str, valid_pt: Path, toy_data_dir: Path, tmp_path: Path
) -> None:
    pretrained = tmp_path / "pretrain.pt"
    content = {"truncated": valid_pt.read_bytes()[:-500], "empty": b"", "text": b"<html>not a model</html>"}
    pretrained.write_bytes(content[damage])
    out = tmp_path / "out"
    smoke = load_config(REPO_ROOT / "config" / "smoke.yaml")
    hparams = stage_hparams(smoke, "finetune", dataset="toy", model="sasrec", seed=0, method="adv_global")
    result = run_cli(
        "finetune", "--data", str(toy_data_dir), "--hparams", json.dumps(hparams), "--dataset", "toy",
        "--model", "sasrec", "--method", "adv_global", "--pretrained", str(pretrained),
        *training_outputs(out),
    )  # fmt: skip
    line = assert_one_line_error(
        result, f"{pretrained}: truncated, damaged or not a catrec file", "delete it and rerun"
    )
    assert "Traceback" not in result.stderr and "weights_only" not in line
    assert not out.exists()


def test_truncated_training_checkpoint_names_the_file(
    valid_pt: Path, toy_data_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    hparams = pretrain_hparams("sasrec")
    # The state directory of exactly this run (catrec.state), holding a damaged checkpoint.
    state = run_state(
        out / "state", stage="pretrain", model="sasrec", method="pretrain",
        hparams=read_hparams(hparams, "pretrain", model="sasrec"), inputs=data_inputs(toy_data_dir),
        metrics=out / "metrics.json",
    )  # fmt: skip
    checkpoint = state.directory / CHECKPOINT_NAME
    checkpoint.write_bytes(valid_pt.read_bytes()[:100])
    result = run_cli(
        "pretrain", "--data", str(toy_data_dir), "--hparams", json.dumps(hparams), "--dataset", "toy",
        "--model", "sasrec", *training_outputs(out),
    )  # fmt: skip
    assert_one_line_error(
        result, f"{checkpoint}: truncated, damaged or not a catrec file", "delete it and rerun"
    )
    files = sorted(path.name for path in out.rglob("*") if path.is_file())
    assert files == [CHECKPOINT_NAME, "identity.json"], "no output may be half-written"


def test_pickled_objects_are_refused_without_suggesting_weights_only_false(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save(argparse.Namespace(command="touch pwned"), path)
    with pytest.raises(CatrecError) as error:
        load_torch_file(path)
    assert str(error.value) == (
        f"{path}: truncated, damaged or not a catrec file "
        "(it holds something other than tensors and plain containers); delete it and rerun"
    )


def test_missing_torch_file(tmp_path: Path) -> None:
    with pytest.raises(CatrecError, match=r"missing\.pt: no such file$"):
        load_torch_file(tmp_path / "missing.pt")


def test_write_failure_is_one_error_naming_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A read-only file system: writing fails, and so does removing the temp file, yet one error results."""

    def read_only(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(Path, "write_text", read_only)
    monkeypatch.setattr(Path, "unlink", read_only)
    target = tmp_path / "stats.json"
    with pytest.raises(CatrecError) as error:
        write_text_atomically(target, "{}")
    assert str(error.value).startswith(f"cannot write {target}: Read-only file system")
    assert list(tmp_path.iterdir()) == []


def test_text_written_atomically_reads_back_gzip_bytes_reproducible(tmp_path: Path) -> None:
    """``.gz``: gzip with neither name nor time in its header, so equal text is equal bytes; a block that
    fails leaves nothing behind."""
    text = "user,ndcg@10\r\n1,0.5\r\n"  # the csv module's line ends, kept as they are
    for name in ("a.csv.gz", "b.csv.gz", "plain.csv"):
        with open_text_atomically(tmp_path / name) as stream:
            stream.write(text)
        assert read_text(tmp_path / name) == text.replace("\r\n", "\n")  # as the readers see it
    compressed = (tmp_path / "a.csv.gz").read_bytes()
    assert compressed == (tmp_path / "b.csv.gz").read_bytes()
    assert gzip.decompress(compressed) == text.encode()
    # The header's flags (byte 3: no FNAME) and its time (bytes 4-7: 0).
    assert compressed[3] == 0 and compressed[4:8] == bytes(4)
    assert (tmp_path / "plain.csv").read_bytes() == text.encode()
    with pytest.raises(RuntimeError), open_text_atomically(tmp_path / "failed.csv.gz") as stream:
        stream.write(text)
        raise RuntimeError("the computation failed half-way")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a.csv.gz", "b.csv.gz", "plain.csv"]


def test_unwritable_output_directory_via_the_cli(tmp_path: Path) -> None:
    sequences = tmp_path / "seq.txt"
    sequences.write_text("1 1 2 3\n2 2 3 1\n")
    blocker = tmp_path / "results"
    blocker.write_text("a file where the results directory should be")
    output_dir = blocker / "data"
    result = run_cli(
        "preprocess", "--format", "sequences", "--input", str(sequences), "--output-dir", str(output_dir),
        "--min-count", "0",
    )  # fmt: skip
    assert_one_line_error(result, f"cannot write {output_dir}/")
    assert "Traceback" not in result.stderr


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write to read-only directories")
def test_read_only_results_directory_via_the_cli(tmp_path: Path) -> None:
    sequences = tmp_path / "seq.txt"
    sequences.write_text("1 1 2 3\n2 2 3 1\n")
    output_dir = tmp_path / "results"
    output_dir.mkdir()
    output_dir.chmod(0o555)
    try:
        result = run_cli(
            "preprocess", "--format", "sequences", "--input", str(sequences), "--output-dir", str(output_dir),
            "--min-count", "0",
        )  # fmt: skip
    finally:
        output_dir.chmod(0o755)
    assert_one_line_error(result, f"cannot write {output_dir}/", "Permission denied")
    assert list(output_dir.iterdir()) == []
