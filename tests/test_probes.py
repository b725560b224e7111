"""Issue 19: a run's identity survives a rerun, and 14 probes of bad input, each pinned by a test.

Each test names its probe ("probe N" as numbered in the issue; "identity" for the byte-identity one).
"""

from __future__ import annotations

import json
import math
import re
import shlex
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from conftest import REPO_ROOT, save_untrained_model, write_sequences_dir
from test_workflow import planned_runs, snakemake, write_config

from catrec.cli import main
from catrec.config import read_hparams, stage_hparams, validate_config
from catrec.data.preprocess import preprocess
from catrec.data.sequences import SequenceData
from catrec.errors import CatrecError
from catrec.models import ModelConfig, build_model, save_model
from catrec.paths import EPSILON_PATTERN, epsilon_label
from catrec.stages.cascade import write_cascade
from catrec.vocabulary import ATTACK_COLUMNS, CURVE_COLUMNS, PROFILE_COLUMNS


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    """The CLI's error: exactly one line on stderr."""
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1, error
    return error[0]


# ------------------------------------------------------------------------------------- identity


def test_identity_same_model_saved_to_two_paths_gives_identical_bytes(tmp_path: Path) -> None:
    """Identity: torch named the zip's folder after the temporary path (pid, random suffix)."""
    torch.manual_seed(0)
    model = build_model(ModelConfig("sasrec", 30, 10, 8, 0.1, num_blocks=1, num_heads=1, layer_norm="pre"))
    save_model(tmp_path / "a" / "pretrain.pt", model)
    save_model(tmp_path / "b" / "adv_cas.pt", model)
    assert (tmp_path / "a" / "pretrain.pt").read_bytes() == (tmp_path / "b" / "adv_cas.pt").read_bytes()


# ------------------------------------------------------------------------------------- probe 1


def test_probe1_disk_full_during_a_model_write_is_one_line_naming_the_path(tmp_path: Path) -> None:
    """Probe 1: torch.save raises RuntimeError (not OSError) on a full disk; a file-size limit stands in."""
    target = tmp_path / "model.pt"
    target.write_bytes(b"earlier model")
    script = textwrap.dedent(
        f"""
        import resource, signal, sys
        import torch
        from catrec.errors import CatrecError
        from catrec.models import ModelConfig, build_model, save_model
        model = build_model(ModelConfig("gru4rec", 50000, 20, 32, 0.0, num_layers=1))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
        try:
            save_model({str(target)!r}, model)
        except CatrecError as exc:
            print(exc)
            sys.exit(2)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1 and f"cannot write {target}" in lines[0]
    assert target.read_bytes() == b"earlier model"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model.pt"]


# ------------------------------------------------------------------------------------- probe 2


def _three_users(directory: Path) -> Path:
    return write_sequences_dir(directory, [[1, 2, 3, 4], [2, 3, 4, 5], [3, 4, 5, 1]])


def _edit_line(directory: Path, line_number: int, text: str) -> None:
    """Replace one line of sequences.txt, keeping stats.json's count of interactions in step."""
    path = directory / "sequences.txt"
    lines = path.read_text().splitlines()
    lines[line_number - 1] = text
    path.write_text("\n".join(lines) + "\n")
    stats = json.loads((directory / "stats.json").read_text())
    stats["interactions"] = sum(len(line.split()) - 1 for line in lines)
    (directory / "stats.json").write_text(json.dumps(stats))


@pytest.mark.parametrize("line", ["3 3 4 0 1", "3 3 4 9 1", "3 3 4"])
def test_probe2_bad_sequence_line_names_file_line_and_user_as_written(tmp_path: Path, line: str) -> None:
    """Probe 2: item 0, an item beyond n, a 2-item line: the user was the 0-based position, no file."""
    directory = _three_users(tmp_path)
    _edit_line(directory, 3, line)
    with pytest.raises(CatrecError, match=r"sequences\.txt:3: user 3\b"):
        SequenceData.from_dir(directory, 5)


def test_probe2_sequences_disagreeing_with_stats_or_user_map_are_refused(tmp_path: Path) -> None:
    """Probe 2: an extra user line was accepted silently (stats.json and user_map.tsv never checked)."""
    directory = _three_users(tmp_path)
    with open(directory / "sequences.txt", "a") as handle:
        handle.write("4 1 2 3\n")
    with pytest.raises(CatrecError, match="stats.json"):
        SequenceData.from_dir(directory, 5)

    directory = _three_users(tmp_path / "mapped")
    (directory / "user_map.tsv").write_text("new_id\toriginal_id\n1\ta\n2\tb\n")
    with pytest.raises(CatrecError, match="user_map.tsv"):
        SequenceData.from_dir(directory, 5)
    (directory / "user_map.tsv").write_text("new_id\toriginal_id\n1\ta\n2\tb\n3\tc\n")
    assert SequenceData.from_dir(directory, 5).num_users == 3


# ------------------------------------------------------------------------------------- probe 8


def test_probe8_utf8_byte_order_mark_is_dropped_from_text_inputs(tmp_path: Path) -> None:
    """Probe 8: the BOM stayed in user_map.tsv (sequences), and broke the CSV and RecBole headers."""
    bom = "\ufeff"
    inputs = {
        "sequences": "1 10 11 12\n2 11 12 13\n",
        "amazon-csv": "user,item,rating,timestamp\nu1,a,5,1\nu1,b,4,2\nu1,c,3,3\n",
        "recbole": "user_id:token\titem_id:token\ttimestamp:float\n1\t10\t1\n1\t11\t2\n1\t12\t3\n",
    }
    for fmt, text in inputs.items():
        raw = tmp_path / f"{fmt}.txt"
        raw.write_text(bom + text, encoding="utf-8")
        preprocess(fmt, raw, tmp_path / fmt, min_count=0)
        user_map = (tmp_path / fmt / "user_map.tsv").read_text(encoding="utf-8")
        assert bom not in user_map, fmt
    assert (tmp_path / "sequences" / "user_map.tsv").read_text().splitlines()[1] == "1\t1"


# ------------------------------------------------------------------------------------- probe 12


def test_probe12_missing_data_directory_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Probe 12: ``--data /nonexistent`` was a FileNotFoundError traceback."""
    output = tmp_path / "cascade.pt"
    args = ["cascade", "--data", str(tmp_path / "nonexistent"), "--max-len", "5", "--batch-size", "4"]
    assert main([*args, "--output", str(output)]) == 2
    assert "nonexistent" in _one_line_error(capsys)
    assert not output.exists()


# ------------------------------------------------------------------------------------- probe 13


def test_probe13_prune_state_with_corrupt_identity_or_missing_root_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Probe 13: a corrupt identity.json was a JSONDecodeError traceback; a missing root 'removed 0'."""
    record = tmp_path / "state" / "pretrain" / "0123456789abcdef" / "identity.json"
    record.parent.mkdir(parents=True)
    record.write_text('{"stage": "pretrain", "metr')
    assert main(["prune-state", str(tmp_path / "state")]) == 2
    assert str(record) in _one_line_error(capsys)
    assert record.exists()

    assert main(["prune-state", str(tmp_path / "missing")]) == 2
    assert str(tmp_path / "missing") in _one_line_error(capsys)


# ------------------------------------------------------------------------------------- probes 3-7: config


def _smoke() -> dict[str, Any]:
    return yaml.safe_load((REPO_ROOT / "config/smoke.yaml").read_text())


def _refused(config: dict[str, Any], *fragments: str) -> str:
    with pytest.raises(CatrecError) as error:
        validate_config(config)
    for fragment in fragments:
        assert fragment in str(error.value), str(error.value)
    return str(error.value)


def test_probe3_hidden_size_not_divisible_by_heads_is_refused_at_config_time() -> None:
    """Probe 3: hidden_size 3 with num_heads 2 was valid, then a ValueError traceback at pretrain."""
    config = _smoke()
    config["model"]["hidden_size"] = 3
    config["model"]["sasrec"]["num_heads"] = 2
    _refused(config, "model.hidden_size", "model.sasrec.num_heads")
    hparams = stage_hparams(_smoke(), "pretrain", dataset="toy", model="sasrec", seed=1)
    with pytest.raises(CatrecError, match="'hidden_size'.*'num_heads'"):
        read_hparams({**hparams, "hidden_size": 3, "num_heads": 2}, "pretrain", model="sasrec")


def test_probe4_seeds_beyond_numpy_range_are_refused() -> None:
    """Probe 4: seeds [4294967296] was valid, then np.random.seed raised a ValueError traceback."""
    config = _smoke()
    config["seeds"] = [4294967296]
    _refused(config, "seeds.0")
    config = _smoke()
    config["seeds"] = [4294967295]
    validate_config(config)


@pytest.mark.parametrize(
    "keys",
    [
        ("epsilon_sweep", "values"),
        ("epsilon_sweep", "models"),
        ("epsilon_sweep", "datasets"),
        ("figures", "fig5", "methods"),
        ("figures", "fig6", "methods"),
        ("attack", "positions"),
    ],
)
def test_probe5_empty_lists_are_refused(keys: tuple[str, ...]) -> None:
    """Probe 5: an empty list was valid, then `catrec collect` failed with an argparse usage error."""
    config = _smoke()
    parent = config
    for key in keys[:-1]:
        parent = parent[key]
    parent[keys[-1]] = []
    _refused(config, ".".join(keys), "should be non-empty")


@pytest.mark.parametrize(
    ("keys", "value"),
    [
        (("models",), ["sasrec", "sasrec"]),
        (("epsilon_sweep", "values"), [0.1, 0.1]),
        (("epsilon_sweep", "values"), [1, 1.0]),
        (("epsilon_sweep", "models"), ["gru4rec", "gru4rec"]),
        (("epsilon_sweep", "datasets"), ["toy", "toy"]),
        (("figures", "fig5", "methods"), ["base", "base"]),
        (("attack", "positions"), ["last", "last"]),
    ],
)
def test_probe6_repeated_names_values_and_seeds_are_refused(keys: tuple[str, ...], value: list[Any]) -> None:
    """Probe 6: models [sasrec, sasrec] was valid; every file was collected twice, Table 2 failed."""
    config = _smoke()
    parent = config
    for key in keys[:-1]:
        parent = parent[key]
    parent[keys[-1]] = value
    _refused(config, ".".join(keys), "non-unique")


def test_probe7_epsilon_label_reads_back_as_the_configured_float() -> None:
    """Probe 7: ``:g`` kept 6 digits: 0.1234567 trained at 0.123457 and merged with 0.1234571."""
    values = [0.1234567, 0.1234571, 0.1, 1.0, 10.0, 1e-05, 2.0 / 3.0, 123456789.0, 1e22]
    labels = [epsilon_label(value) for value in values]
    assert [float(label) for label in labels] == values
    assert len(set(labels)) == len(values)
    assert labels[2:5] == ["0.1", "1", "10"], "labels that were exact keep their paths"
    assert all(re.fullmatch(EPSILON_PATTERN, label) for label in labels)


def test_probe7_the_loss_gets_the_configured_epsilon_exactly(tmp_path: Path) -> None:
    """Probe 7 through Snakemake: the planned runs and the --hparams the finetune rule passes."""
    config = _smoke()
    config["adversarial"]["epsilon"] = 0.1234567
    config["epsilon_sweep"]["values"] = [0.1234567, 0.1234571]
    path = write_config(tmp_path, "eps.yaml", config)
    result = snakemake(tmp_path, "-n", "-p", "--cores", "1", "all", "--configfile", str(path))
    epsilons = {w["epsilon"] for rule, w in planned_runs(result.stdout) if rule == "finetune"}
    assert epsilons == {"0.1234567", "0.1234571"}
    commands = [
        shlex.split(line[line.index("catrec ") :]) for line in result.stdout.splitlines() if "catrec " in line
    ]
    trained = {
        json.loads(command[command.index("--hparams") + 1])["epsilon"]
        for command in commands
        if command[1] == "finetune" and "--hparams" in command and "adv_cas" in command
    }
    assert trained == {0.1234567, 0.1234571}


# ------------------------------------------------------------------------------------- probe 14


def _alias_bomb(levels: int = 9, width: int = 9) -> str:
    lines = [f"l0: &l0 [{', '.join(['x'] * width)}]"]
    for level in range(1, levels):
        lines.append(f"l{level}: &l{level} [{', '.join([f'*l{level - 1}'] * width)}]")
    return "\n".join(lines) + "\n"


def test_probe14_yaml_alias_bomb_is_refused_within_a_second(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Probe 14: check-config and snakemake -n gave no answer for minutes (every alias walked each time)."""
    text = _alias_bomb()
    assert len(text) < 2000
    for where in ("top level", "seeds"):
        path = tmp_path / f"{where.replace(' ', '_')}.yaml"
        smoke = (REPO_ROOT / "config/smoke.yaml").read_text()
        bomb = text + smoke.replace("seeds: [42]", "seeds: *l8") if where == "seeds" else smoke + text
        path.write_text(bomb)
        started = time.perf_counter()
        assert main(["check-config", str(path)]) == 2
        assert time.perf_counter() - started < 1.0
        _one_line_error(capsys)
    # The config Snakemake loads (aliases resolved to shared objects) takes the same check.
    bomb = yaml.safe_load(text)
    started = time.perf_counter()
    with pytest.raises(CatrecError, match="alias"):
        validate_config({**_smoke(), "seeds": bomb["l8"]})
    assert time.perf_counter() - started < 1.0


# ------------------------------------------------------------------------------------- probe 10

PROFILE_LEN = 20


def _profile_argv(tmp_path: Path, data_dir: Path, checkpoint: Path, cascade: Path) -> list[str]:
    config = _smoke()
    config["datasets"]["toy"]["max_len"] = PROFILE_LEN
    hparams = stage_hparams(config, "finetune", dataset="toy", model="sasrec", seed=42, method="adv_cas")
    argv = ["profile", "--data", str(data_dir), "--hparams", json.dumps(hparams), "--dataset", "toy"]
    argv += ["--model", "sasrec", "--method", "adv_cas", "--checkpoint", str(checkpoint)]
    return [*argv, "--cascade", str(cascade), "--output", str(tmp_path / "profile.csv"), "--device", "cpu"]


def _finetune_argv(tmp_path: Path, data_dir: Path, pretrained: Path, cascade: Path) -> list[str]:
    """``catrec finetune`` of adv_cas from ``pretrained``, its outputs under ``tmp_path / "out"``."""
    argv = _profile_argv(tmp_path, data_dir, pretrained, cascade)
    argv[0] = "finetune"
    argv[argv.index("--checkpoint")] = "--pretrained"
    out = tmp_path / "out"
    argv[argv.index("--output") : argv.index("--output") + 2] = ["--checkpoint", str(out / "model.pt")]
    return [
        *argv,
        "--curve",
        str(out / "curve.csv"),
        "--metrics",
        str(out / "m.json"),
        "--state-dir",
        str(out),
    ]


def _model_and_cascade(tmp_path: Path, data_dir: Path) -> tuple[Path, Path]:
    """An untrained SASRec and the cascade of ``data_dir``, as a profile of adv_cas reads them."""
    num_items = json.loads((data_dir / "stats.json").read_text())["items"]
    model = save_untrained_model(tmp_path / "model.pt", "sasrec", num_items, PROFILE_LEN)
    cascade = tmp_path / "cascade.pt"
    write_cascade(data_dir, max_len=PROFILE_LEN, batch_size=64, terms="both", output=cascade)
    return model, cascade


def test_probe10_foreign_pt_as_pretrained_or_cascade_is_one_line(
    tmp_path: Path, toy_data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Probe 10: a foreign .pt was an IndexError / KeyError 'config' traceback."""
    model, cascade = _model_and_cascade(tmp_path, toy_data_dir)
    foreign = {"list": [1, 2, 3], "weights": {"weight": torch.zeros(3)}, "tensor": torch.zeros(2, 2)}
    for name, payload in foreign.items():
        path = tmp_path / f"{name}.pt"
        torch.save(payload, path)
        for argv in (_profile_argv(tmp_path, toy_data_dir, path, cascade),
                     _profile_argv(tmp_path, toy_data_dir, model, path),
                     _finetune_argv(tmp_path, toy_data_dir, path, cascade)):  # fmt: skip
            assert main(argv) == 2
            assert str(path) in _one_line_error(capsys)
    assert not (tmp_path / "profile.csv").exists() and not (tmp_path / "out").exists()


def test_probe10_zero_or_nan_cascade_says_what_it_holds(
    tmp_path: Path, toy_data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Probe 10: a zero or NaN cascade was 'shape (400, 20) does not match ... (400, 20)'."""
    model, cascade = _model_and_cascade(tmp_path, toy_data_dir)
    payload = torch.load(cascade)
    for name, value, message in (("zero", 0.0, "positive"), ("nan", math.nan, "NaN")):
        path = tmp_path / f"{name}.pt"
        torch.save({**payload, "cascade": torch.full_like(payload["cascade"], value)}, path)
        assert main(_profile_argv(tmp_path, toy_data_dir, model, path)) == 2
        error = _one_line_error(capsys)
        assert str(path) in error and message in error and "does not match" not in error


# ------------------------------------------------------------------------------------- probe 11


def _damaged(tmp_path: Path, kind: str, header: list[str], good: list[str], bad: str) -> Path:
    path = tmp_path / "results" / kind / "toy/sasrec/seed42/adv_seq/eps1.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([",".join(header), ",".join(good), bad]) + "\n")
    return path


@pytest.mark.parametrize("damage", ["non-number", "truncated"])
@pytest.mark.parametrize("kind", ["curves", "attacks", "profiles"])
def test_probe11_damaged_result_csv_is_refused_naming_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str, damage: str
) -> None:
    """Probe 11: non-numeric and truncated rows were collected (exit 0); the plot then crashed or lied."""
    rows = {
        "curves": (CURVE_COLUMNS, ["2", "finetune", "valid", "0.5", "0.7", "0.3", "1.5"]),
        "attacks": (ATTACK_COLUMNS, ["toy", "sasrec", "adv_seq", "random", "last", "1", *["0.5"] * 8]),
        "profiles": (PROFILE_COLUMNS, ["toy", "sasrec", "adv_seq", "1", "0.25", "1.0"]),
    }
    header, good = rows[kind]
    bad = list(good)
    bad[-2] = "0.5x"
    text = ",".join(bad) if damage == "non-number" else ",".join(good[:-3])
    path = _damaged(tmp_path, kind, header, good, text)
    output = tmp_path / "summary.csv"
    assert main(["collect", kind, str(path), "--output", str(output)]) == 2
    assert f"{path}:3:" in _one_line_error(capsys)
    assert not output.exists()


# ------------------------------------------------------------------------------------- probe 9


def test_probe9_memory_is_bounded_by_interactions_not_users_times_longest(tmp_path: Path) -> None:
    """Probe 9: one user with 200,000 items among 400 took cascade/eval from 237 MB to 1.49 GB (dense
    (users, longest history) exclusions); the peak must stay far below that."""
    num_items = 1000
    generator = torch.Generator().manual_seed(0)
    sequences = [torch.randint(1, num_items + 1, (25,), generator=generator).tolist() for _ in range(399)]
    # Item num_items stays outside the long history: that user keeps a negative to sample.
    sequences.append(torch.randint(1, num_items, (200_000,), generator=generator).tolist())
    for sequence in sequences:
        sequence[:2] = [1, 2]  # every item id occurs, so stats' items is num_items
    sequences[0][2] = num_items
    data_dir = write_sequences_dir(tmp_path / "data", sequences)
    model = save_untrained_model(tmp_path / "model.pt", "gru4rec", num_items, 20)
    script = textwrap.dedent(
        """
        import resource, sys
        from catrec.cli import main
        status = main(sys.argv[1:])
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
        sys.exit(status)
        """
    )
    commands = [
        ["cascade", "--data", str(data_dir), "--max-len", "20", "--batch-size", "64"],
        ["user-metrics", "--data", str(data_dir), "--max-len", "20", "--model", "gru4rec"],
    ]
    commands[0] += ["--output", str(tmp_path / "cascade.pt")]
    commands[1] += ["--checkpoint", str(model), "--output", str(tmp_path / "users.csv"), "--device", "cpu"]
    for command in commands:
        result = subprocess.run(
            [sys.executable, "-c", script, *command], capture_output=True, text=True, timeout=600
        )
        assert result.returncode == 0, result.stderr[-2000:]
        peak_mb = int(result.stdout.strip().splitlines()[-1])
        assert peak_mb < 700, f"catrec {command[0]}: peak {peak_mb} MB"


# ------------------------------------------------------------------------------------- identity, end to end

IDENTITY_TARGET = "results/metrics/toy/sasrec/seed42/adv_cas/eps1.json"


def _identity_config() -> dict[str, Any]:
    """The smoke config cut to what one adv_cas run needs: pretraining, the cascade, fine-tuning."""
    config = _smoke()
    config["models"] = ["sasrec"]
    config["methods"] = ["base", "adv_cas"]
    config["epsilon_sweep"].update(models=["sasrec"], values=[1])
    config["figures"]["fig5"]["methods"] = ["base", "adv_cas"]
    config["figures"]["fig6"]["methods"] = ["base", "adv_cas"]
    config["train"].update(pretrain_epochs=4, finetune_epochs=2, eval_every=2, checkpoint_every=2)
    return config


def _artifacts(workdir: Path) -> dict[str, bytes]:
    """Every .pt a result path holds (models, cascade). The resumable checkpoints under results/state also
    record wall-clock seconds, so they differ between runs by nature; no run identity hashes them."""
    results = workdir / "results"
    return {
        str(path.relative_to(workdir)): path.read_bytes()
        for path in sorted(results.rglob("*.pt"))
        if (results / "state") not in path.parents
    }


@pytest.mark.slow
def test_identity_two_identical_runs_write_identical_bytes_and_a_checkpoint_change_trains_nothing(
    tmp_path: Path,
) -> None:
    """Identity: two identical Snakemake runs in two workdirs write the same bytes for every .pt, so the
    run ids agree; a changed ``checkpoint_every`` (outside the identity) resumes every run where it ended
    instead of fine-tuning again from scratch."""
    config = _identity_config()
    runs = []
    for name in ("a", "b"):
        workdir = tmp_path / name
        workdir.mkdir()
        path = write_config(workdir, "config.yaml", config)
        snakemake(workdir, "--cores", "2", IDENTITY_TARGET, "--configfile", str(path))
        runs.append(workdir)
    first, second = (_artifacts(workdir) for workdir in runs)
    assert len(first) == 3 and first.keys() == second.keys()  # pretrain.pt, cascade both.pt, adv_cas eps1.pt
    assert [name for name in first if first[name] != second[name]] == []
    metrics = [json.loads((workdir / IDENTITY_TARGET).read_text()) for workdir in runs]
    assert metrics[0] == metrics[1]

    workdir = runs[0]
    config["train"]["checkpoint_every"] = 3
    path = write_config(workdir, "checkpoint.yaml", config)
    snakemake(workdir, "--cores", "2", IDENTITY_TARGET, "--configfile", str(path))
    log = (workdir / "logs/finetune/toy/sasrec/seed42/adv_cas/eps1.log").read_text()
    assert "resuming" in log and "finetune epoch" not in log, log[-2000:]
    assert json.loads((workdir / IDENTITY_TARGET).read_text()) == metrics[0]
    assert _artifacts(workdir) == first
    finetune_states = list((workdir / "results/state").rglob("adv_cas/**/identity.json"))
    assert len(finetune_states) == 1, finetune_states
