"""Training data, batches, negatives, the BCE loss, and the training loop (learning, determinism, resume)."""

from __future__ import annotations

import csv
import itertools
import json
import math
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from catrec.adversarial import CLEAN_LOSS, Coefficients, LossTerms, RunLoss, loss_terms, total_loss
from catrec.config import stage_keys
from catrec.data.batches import Batch, Batches, num_batches
from catrec.data.sequences import SequenceData
from catrec.errors import CatrecError
from catrec.losses import bce_from_scores
from catrec.metrics import ndcg_hit_at_k
from catrec.models import SequentialRecommender, build_model, load_model, save_model
from catrec.models.layout import Packed
from catrec.models.stack import ModelStack
from catrec.provenance import code_provenance
from catrec.runtime import seed_everything, set_precision
from catrec.settings import PretrainSettings
from catrec.stages.common import write_metrics_json
from catrec.stages.pretrain import PretrainRun, pretrain_stack
from catrec.trainer import CHECKPOINT_NAME, FitResult, evaluate, fit

TOY_LEN = 20
TOY_HPARAMS = {
    "seed": 3,
    "max_len": TOY_LEN,
    "hidden_size": 32,
    "dropout": 0.2,
    "num_blocks": 2,
    "num_heads": 1,
    "layer_norm": "pre",
    "num_layers": 1,
    "batch_size": 32,
    "lr": 0.01,
    "l2": 1e-5,
    "epochs": 12,
    "eval_every": 4,
    "checkpoint_every": 4,
    "bucket_by_length": True,
    "layout": "packed",
    "capture": False,
    "precision": "fp32",
    "epsilon": 10,  # a fine-tuning key: ignored here
}


def pretrain_hparams(model_name: str, **overrides: object) -> dict[str, object]:
    """Exactly the keys ``catrec pretrain`` reads for ``model_name``, as the pipeline passes them."""
    values = {**TOY_HPARAMS, "model": model_name, **overrides}
    return {key: values[key] for key in stage_keys("pretrain", model=model_name)}


def pretrain_settings(model_name: str, **overrides: object) -> PretrainSettings:
    """The settings ``catrec pretrain`` reads for ``model_name`` from ``pretrain_hparams``."""
    return PretrainSettings.from_json(pretrain_hparams(model_name, **overrides), model=model_name)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def toy_data(toy_data_dir: Path) -> SequenceData:
    return SequenceData.from_dir(toy_data_dir, TOY_LEN)


def hand_data(max_len: int = 3) -> SequenceData:
    return SequenceData.from_sequences(
        [[1, 2, 3, 4, 5, 6], [7, 8, 9], [3, 1, 3, 2]], num_items=9, max_len=max_len
    )


def test_leave_one_out_tensors_on_a_hand_built_case() -> None:
    data = hand_data()
    assert (data.num_users, data.num_items, data.max_len) == (3, 9, 3)
    # Training parts: [1, 2, 3, 4], [7], [3, 1]; inputs drop the last training item, keep the last T.
    assert data.train_inputs().tolist() == [[1, 2, 3], [0, 0, 0], [0, 0, 3]]
    assert data.train_targets().tolist() == [[2, 3, 4], [0, 0, 0], [0, 0, 1]]
    assert data.eval_inputs("valid").tolist() == [[2, 3, 4], [0, 0, 7], [0, 3, 1]]
    assert data.eval_targets("valid").tolist() == [5, 8, 3]
    assert data.eval_inputs("test").tolist() == [[3, 4, 5], [0, 7, 8], [3, 1, 3]]
    assert data.eval_targets("test").tolist() == [6, 9, 2]
    # Exclusions hold the whole history, not only the last T items.
    assert data.eval_exclude("valid").tolist() == [[1, 2, 3, 4], [7], [3, 1]]
    assert data.eval_exclude("test").tolist() == [[1, 2, 3, 4, 5], [7, 8], [3, 1, 3]]
    # Negatives avoid the training items only (not the validation and test items).
    assert data.training_items().tolist() == [[1, 2, 3, 4], [7], [1, 3]]


def test_sequence_data_rejects_bad_input() -> None:
    with pytest.raises(CatrecError, match="user 2"):
        SequenceData.from_sequences([[1, 2, 3], [1, 2]], num_items=5, max_len=4)
    with pytest.raises(CatrecError, match="1..3"):
        SequenceData.from_sequences([[1, 2, 4]], num_items=3, max_len=4)
    with pytest.raises(CatrecError, match="every item"):
        SequenceData.from_sequences([[1, 2, 3, 1, 1]], num_items=3, max_len=4)


def test_from_dir_matches_from_sequences(toy_data: SequenceData, toy_sequences: list[list[int]]) -> None:
    direct = SequenceData.from_sequences(toy_sequences, max(map(max, toy_sequences)), TOY_LEN)
    assert toy_data.num_users == len(toy_sequences) and toy_data.num_items == direct.num_items
    assert torch.equal(toy_data.train_inputs(), direct.train_inputs())
    assert toy_data.eval_exclude("test").tolist() == direct.eval_exclude("test").tolist()


@pytest.mark.parametrize("on_device", [False, True])
def test_negatives_avoid_training_items_and_cover_the_rest(toy_data: SequenceData, on_device: bool) -> None:
    """By a CPU generator, and on the training device by a device generator (a run's sampler generator
    lives on its device)."""
    device = torch.device("cuda" if on_device and torch.cuda.is_available() else "cpu")
    data = toy_data.to(device) if on_device else toy_data
    users = torch.arange(toy_data.num_users, device=device)
    negatives = data.sample_negatives(users, 3000, torch.Generator(device).manual_seed(0))
    assert negatives.device == users.device and negatives.shape == (toy_data.num_users, 3000)
    negatives = negatives.cpu()
    assert negatives.min() >= 1 and negatives.max() <= toy_data.num_items
    history = toy_data.training_items().tolist()
    for user in range(0, toy_data.num_users, 7):
        seen = set(history[user])
        drawn = set(negatives[user].tolist())
        assert not drawn & seen
        # 3000 uniform draws from <= 100 free items miss one with probability < 100 * e^-30.
        assert drawn == set(range(1, toy_data.num_items + 1)) - seen


def test_negatives_with_a_single_free_item_which_is_the_validation_item() -> None:
    # User 0 trains on 5, 1, 4, 2; its validation and test item 3 is the only item left to draw.
    data = SequenceData.from_sequences([[5, 1, 4, 2, 3, 3], [3, 2, 1, 4, 5]], num_items=5, max_len=3)
    negatives = data.sample_negatives(torch.tensor([0, 1, 0]), 50, torch.Generator().manual_seed(1))
    assert (negatives[[0, 2]] == 3).all()
    assert set(negatives[1].tolist()) == {4, 5}


@pytest.mark.parametrize("bucket", [True, False])
def test_batches_cover_every_user_once_with_aligned_columns(toy_data: SequenceData, bucket: bool) -> None:
    """The packed layout's batches: trimmed to their longest real sequence (filler rows excluded)."""
    generator = torch.Generator().manual_seed(0)
    batches = trimmed_batches(toy_data, generator, bucket)
    users = torch.cat([batch.users for batch in batches])
    assert sorted(users.tolist()) == list(range(toy_data.num_users))
    lengths = (toy_data.train_inputs() != 0).sum(1)
    history = toy_data.training_items().tolist()
    for batch in batches:
        width = batch.seqs.shape[1]
        assert width == int(lengths[batch.users].max())
        assert torch.equal(batch.seqs, toy_data.train_inputs()[batch.users, -width:])
        assert torch.equal(batch.pos, toy_data.train_targets()[batch.users, -width:])
        assert torch.equal(batch.neg == 0, batch.pos == 0)
        for row, user in enumerate(batch.users.tolist()):
            assert not set(batch.neg[row].tolist()) & set(history[user])
    if bucket:  # users sorted by length before chunking: the batches' length ranges do not overlap
        ranges = sorted((int(lengths[b.users].min()), int(lengths[b.users].max())) for b in batches)
        assert all(high <= next_low for (_, high), (next_low, _) in itertools.pairwise(ranges))
    # A new epoch draws a new order.
    again = torch.cat([batch.users for batch in trimmed_batches(toy_data, generator, bucket)])
    assert not torch.equal(users, again)


def trimmed_batches(data: SequenceData, generator: torch.Generator, bucket: bool) -> list[Batch]:
    """One epoch of the packed layout's batches of 32, their filler rows (the last batch's) left out."""
    batches = Batches(data, 32, trim=True)
    users, valid = batches.epoch(generator, bucket)
    epoch = [batches.batch(users[index], valid[index], generator) for index in range(len(batches))]
    return [
        Batch(batch.users[rows], batch.seqs[rows], batch.pos[rows], batch.neg[rows])
        for batch, rows in zip(epoch, valid, strict=True)
    ]


def test_bce_matches_eq_3_5_and_ignores_padding() -> None:
    pos = torch.tensor([[9.0, 2.0, 0.5], [-1.0, 3.0, 1.0]])
    neg = torch.tensor([[-9.0, -1.0, 0.0], [4.0, 2.0, -3.0]])
    mask = torch.tensor([[False, True, True], [False, False, True]])
    expected = -(
        math.log(torch.sigmoid(torch.tensor(2.0)))
        + math.log(1 - torch.sigmoid(torch.tensor(-1.0)))
        + math.log(torch.sigmoid(torch.tensor(0.5)))
        + math.log(1 - torch.sigmoid(torch.tensor(0.0)))
        + math.log(torch.sigmoid(torch.tensor(1.0)))
        + math.log(1 - torch.sigmoid(torch.tensor(-3.0)))
    )
    assert bce_from_scores(pos, neg, mask).item() == pytest.approx(expected / 3)
    # Anything at padding, even inf or NaN, stays out of the loss and its gradient.
    wild_pos = pos.masked_fill(~mask, math.nan).requires_grad_()
    wild_neg = neg.masked_fill(~mask, math.inf)
    loss = bce_from_scores(wild_pos, wild_neg, mask)
    loss.backward()
    assert loss.item() == pytest.approx(expected / 3)
    assert torch.isfinite(wild_pos.grad).all() and (wild_pos.grad[~mask] == 0).all()
    # Extreme real scores stay finite; an all-padding batch gives 0, not NaN.
    assert math.isfinite(bce_from_scores(torch.tensor([-200.0]), torch.tensor([200.0]), torch.tensor([True])))
    assert bce_from_scores(pos, neg, torch.zeros_like(mask)).item() == 0.0


def test_bce_loss_ignores_negatives_at_padding(toy_data: SequenceData) -> None:
    torch.manual_seed(0)
    model = build_model(pretrain_settings("sasrec").model_config(toy_data.num_items))
    # No ``draw``: no dropout masks, so the clean term is a function of the batch alone.
    stack = ModelStack([model], [torch.Generator()], [torch.Generator()], Packed)
    coefficients = Coefficients.of([CLEAN_LOSS], torch.device("cpu"))

    def clean_loss(batch: Batch) -> float:
        as_stack = Batch(**{name: value.unsqueeze(0) for name, value in vars(batch).items()})
        return loss_terms(stack, as_stack, coefficients).clean.item()

    (batch,) = trimmed_batches(toy_data, torch.Generator().manual_seed(0), bucket=False)[:1]
    padding = batch.pos == 0
    assert padding.any()
    other = Batch(batch.users, batch.seqs, batch.pos, batch.neg.masked_fill(padding, 1))
    assert clean_loss(other) == clean_loss(batch)
    changed_real = Batch(batch.users, batch.seqs, batch.pos, batch.neg.masked_fill(~padding, 1))
    assert clean_loss(changed_real) != clean_loss(batch)


def test_configs_from_settings() -> None:
    config = pretrain_settings("gru4rec").train_config("padded", False)
    assert (config.batch_size, config.lr, config.epochs, config.bucket_by_length) == (32, 0.01, 12, True)
    assert config.seed == 3 and config.checkpoint_every == 4 and config.layout == "padded"
    # Every schedule key must be given: there are no defaults to fall back on.
    hparams = pretrain_hparams("gru4rec")
    with pytest.raises(CatrecError, match="'lr'"):
        PretrainSettings.from_json(
            {key: value for key, value in hparams.items() if key != "lr"}, model="gru4rec"
        )
    model_config = pretrain_settings("gru4rec").model_config(num_items=77)
    assert (model_config.name, model_config.num_items, model_config.max_len) == ("gru4rec", 77, TOY_LEN)
    assert (model_config.hidden_size, model_config.num_layers) == (32, 1)
    # Only the chosen model's own keys are read; the other model's stay unset.
    assert model_config.num_blocks is None and model_config.num_heads is None
    sasrec = pretrain_settings("sasrec").model_config(num_items=77)
    assert (sasrec.num_blocks, sasrec.num_heads, sasrec.layer_norm, sasrec.num_layers) == (2, 1, "pre", None)


def popularity_ndcg(data: SequenceData, split: str = "valid") -> float:
    """NDCG@10 of ranking by training popularity, with the same exclusions as the models."""
    counts = torch.bincount(data.eval_exclude("valid").items, minlength=data.num_items + 1).float()
    scores = counts.repeat(data.num_users, 1)
    targets = data.eval_targets(split)
    target_scores = scores.gather(1, targets.unsqueeze(1))
    scores[:, 0] = -math.inf
    rows, items = data.eval_exclude(split).pairs(torch.arange(data.num_users))
    scores[rows, items] = -math.inf
    scores.scatter_(1, targets.unsqueeze(1), target_scores)
    return ndcg_hit_at_k(scores, targets)[0].mean().item()


def train_toy(
    data: SequenceData, tmp_path: Path, model_name: str, loss: RunLoss = CLEAN_LOSS, **overrides: object
) -> tuple[SequentialRecommender, FitResult]:
    device = torch.device(str(overrides.pop("device", "cpu")))
    settings = pretrain_settings(model_name, **overrides)
    seed_everything(settings.seed)
    model = build_model(settings.model_config(data.num_items))
    result = fit(
        model,
        data,
        loss,
        settings.train_config(settings.layout, settings.capture),
        phase="pretrain",
        curve_path=tmp_path / "curve.csv",
        state_dir=tmp_path / "state",
        device=device,
        model_selection=str(overrides.get("model_selection", "last")),
    )
    return model, result


def read_curve(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize("layout", ["packed", "padded"])
@pytest.mark.parametrize("model_name", ["sasrec", "gru4rec"])
def test_training_beats_popularity(
    toy_data: SequenceData, tmp_path: Path, model_name: str, layout: str
) -> None:
    _, result = train_toy(toy_data, tmp_path, model_name, layout=layout)
    popularity = popularity_ndcg(toy_data)
    assert result.valid["ndcg@10"] > max(2 * popularity, popularity + 0.05)
    assert result.selected_epoch == 12
    rows = read_curve(tmp_path / "curve.csv")
    assert [(int(row["epoch"]), row["split"]) for row in rows] == [
        (epoch, split) for epoch in (4, 8, 12) for split in ("valid", "test")
    ]
    losses = [float(row["loss"]) for row in rows[::2]]
    assert losses[-1] < losses[0]
    assert float(rows[-1]["ndcg@10"]) == pytest.approx(result.test["ndcg@10"])


def test_same_seed_same_result(toy_data: SequenceData, tmp_path: Path) -> None:
    _, first = train_toy(toy_data, tmp_path / "a", "sasrec", epochs=3, eval_every=3)
    _, second = train_toy(toy_data, tmp_path / "b", "sasrec", epochs=3, eval_every=3)
    _, other_seed = train_toy(toy_data, tmp_path / "c", "sasrec", epochs=3, eval_every=3, seed=4)
    assert (first.valid, first.test) == (second.valid, second.test)
    assert first.valid != other_seed.valid


def test_best_valid_selection_restores_the_best_weights(
    toy_data: SequenceData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Three epochs of learning, then three of gradient ascent: the best weights are surely not the last.
    steps = itertools.count()
    learning_steps = 3 * num_batches(toy_data, TOY_HPARAMS["batch_size"])

    def learn_then_unlearn(terms: LossTerms, coefficients: Coefficients) -> torch.Tensor:
        loss = total_loss(terms, coefficients)
        return loss if next(steps) < learning_steps else -loss

    monkeypatch.setattr("catrec.training.total_loss", learn_then_unlearn)
    model, result = train_toy(
        toy_data, tmp_path, "gru4rec", epochs=6, eval_every=1, model_selection="best_valid"
    )
    valid_rows = [row for row in read_curve(tmp_path / "curve.csv") if row["split"] == "valid"]
    best = max(valid_rows, key=lambda row: float(row["ndcg@10"]))
    assert result.selected_epoch == int(best["epoch"]) <= 3
    assert result.valid["ndcg@10"] == pytest.approx(float(best["ndcg@10"]))
    assert float(valid_rows[-1]["ndcg@10"]) < result.valid["ndcg@10"]
    # The model in hand has the selected weights, not the last ones.
    assert evaluate(model, toy_data, "valid") == pytest.approx(result.valid)


def test_zero_epochs_report_the_given_model(toy_data: SequenceData, tmp_path: Path) -> None:
    _, result = train_toy(toy_data, tmp_path, "gru4rec", epochs=0)
    assert result.selected_epoch == 0 and result.epochs_trained == 0
    rows = read_curve(tmp_path / "curve.csv")
    assert len(rows) == 2 and math.isnan(float(rows[0]["loss"]))


def test_save_load_model_and_metrics_json(toy_data: SequenceData, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model(pretrain_settings("sasrec").model_config(toy_data.num_items))
    save_model(tmp_path / "m" / "model.pt", model)
    loaded = load_model(tmp_path / "m" / "model.pt", "cpu")
    assert loaded.config == model.config and not loaded.training
    assert evaluate(loaded, toy_data, "test") == evaluate(model, toy_data, "test")
    valid, test = {"ndcg@10": 0.5, "hit@10": 0.7}, {"ndcg@10": 0.25, "hit@10": 0.5}
    identity = {"dataset": "toy", "model": "sasrec", "method": "pretrain", "seed": 3}
    write_metrics_json(
        tmp_path / "metrics.json", **identity, valid={**valid, "extra": 1.0}, test=test, selected_epoch=7
    )
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written == {**identity, "valid": valid, "test": test, "selected_epoch": 7, **code_provenance()}
    assert [path.name for path in tmp_path.iterdir() if path.name.startswith(".")] == []


def pretrain_command(data_dir: Path, out: Path, hparams: dict[str, object]) -> list[str]:
    outputs = {
        "checkpoint": "model.pt",
        "curve": "curve.csv",
        "metrics": "metrics.json",
        "state-dir": "state",
    }
    command = [sys.executable, "-m", "catrec.cli", "pretrain", "--data", str(data_dir), "--dataset", "toy"]
    command += ["--model", "sasrec", "--hparams", json.dumps(hparams), "--device", "cpu", "--threads", "1"]
    for option, name in outputs.items():
        command += [f"--{option}", str(out / name)]
    return command


def checkpoint_path(state_root: Path) -> Path | None:
    """The checkpoint of the one run identity under ``state_root`` (None before the first one is saved)."""
    paths = list(state_root.glob(f"*/{CHECKPOINT_NAME}"))
    assert len(paths) <= 1, f"more than one run identity under {state_root}: {paths}"
    return paths[0] if paths else None


def checkpoint_epoch(state_root: Path) -> int:
    path = checkpoint_path(state_root)
    if path is None:
        return 0
    return torch.load(path, map_location="cpu", weights_only=True)["progress"]["epoch"]


def test_killed_pretraining_resumes_to_the_same_result(toy_data_dir: Path, tmp_path: Path) -> None:
    # Small batches make epochs long enough (~0.2 s) to kill the run between checkpoints.
    hparams = pretrain_hparams(
        "sasrec", hidden_size=16, batch_size=8, epochs=14, checkpoint_every=1, eval_every=5
    )
    reference = subprocess.Popen(
        pretrain_command(toy_data_dir, tmp_path / "reference", hparams),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    killed = tmp_path / "killed"
    victim = subprocess.Popen(
        pretrain_command(toy_data_dir, killed, hparams), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 60
    while checkpoint_epoch(killed / "state") < 2 and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    interrupted_at = checkpoint_epoch(killed / "state")
    assert 2 <= interrupted_at < hparams["epochs"], "the run finished before it could be killed"
    assert not (killed / "metrics.json").exists()
    checkpoint = checkpoint_path(killed / "state")
    assert checkpoint is not None

    resumed = subprocess.run(
        pretrain_command(toy_data_dir, killed, hparams), capture_output=True, text=True, timeout=120
    )
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming from {checkpoint} at epoch {interrupted_at}" in resumed.stdout
    assert checkpoint_path(killed / "state") == checkpoint, "the resumed run used another state directory"
    assert reference.wait(timeout=120) == 0
    reference_metrics = json.loads((tmp_path / "reference" / "metrics.json").read_text())
    assert json.loads((killed / "metrics.json").read_text()) == reference_metrics
    assert reference_metrics["method"] == "pretrain" and reference_metrics["seed"] == 3
    # The run's identity names its state directory, the same for both runs (same settings and data).
    assert reference_metrics["run_id"] == checkpoint.parent.name

    def without_seconds(path: Path) -> list[dict[str, str]]:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in read_curve(path)]

    assert without_seconds(killed / "curve.csv") == without_seconds(tmp_path / "reference" / "curve.csv")
    weights = torch.load(killed / "model.pt", weights_only=True)["state_dict"]
    reference_weights = torch.load(tmp_path / "reference" / "model.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(weights[name], reference_weights[name]) for name in weights)


@pytest.mark.parametrize("layout", ["packed", "padded"])
def test_a_run_refuses_to_resume_on_the_other_device_type(
    toy_data: SequenceData, tmp_path: Path, layout: str
) -> None:
    """A run's generators live on its device (a CPU generator's state is 5,056 bytes, a CUDA one's 16),
    in either layout: its checkpoint resumed on the other device type is one error naming it and both
    devices. The checkpoint holds the run's own generators and no global random state."""
    settings = {"layout": layout, "hidden_size": 16, "eval_every": 1, "checkpoint_every": 1}
    train_toy(toy_data, tmp_path, "gru4rec", epochs=1, **settings)
    checkpoint = tmp_path / "state" / CHECKPOINT_NAME
    saved = torch.load(checkpoint, weights_only=True)
    assert saved["device"] == "cpu"
    assert set(saved) == {
        "model",
        "optimizer",
        "progress",
        "device",
        "sampler_rng",
        "dropout_rng",
        "noise_rng",
    }
    # What a run saved on a GPU holds: the device, a CUDA generator's state.
    saved.update(device="cuda", sampler_rng=torch.zeros(16, dtype=torch.uint8))
    torch.save(saved, checkpoint)
    with pytest.raises(CatrecError) as error:
        train_toy(toy_data, tmp_path, "gru4rec", epochs=2, **settings)
    message = str(error.value)
    expected = f"{checkpoint} (pretrain): saved on cuda, cannot resume on cpu"
    assert message.startswith(expected)
    assert "\n" not in message


def test_pretrain_refuses_hparams_it_does_not_read(
    toy_data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from catrec.cli import main

    outputs = ["--checkpoint", str(tmp_path / "m.pt"), "--curve", str(tmp_path / "c.csv")]
    outputs += ["--metrics", str(tmp_path / "m.json"), "--state-dir", str(tmp_path / "state")]
    base = [
        "pretrain",
        "--data",
        str(toy_data_dir),
        "--dataset",
        "toy",
        "--model",
        "sasrec",
        "--device",
        "cpu",
    ]
    extra = {**pretrain_hparams("sasrec"), "epsilon": 1.0}
    assert main([*base, "--hparams", json.dumps(extra), *outputs]) == 2
    assert "invalid --hparams key 'epsilon': not read by pretrain of sasrec" in capsys.readouterr().err
    missing = {key: value for key, value in pretrain_hparams("sasrec").items() if key != "num_heads"}
    assert main([*base, "--hparams", json.dumps(missing), *outputs]) == 2
    assert "invalid --hparams key 'num_heads': required by pretrain of sasrec" in capsys.readouterr().err
    good = json.dumps(pretrain_hparams("sasrec"))
    assert main([*base, "--hparams", good, "--threads", "0", *outputs]) == 2
    assert "--threads must be at least 1" in capsys.readouterr().err
    assert not (tmp_path / "m.pt").exists() and not (tmp_path / "state").exists()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("model_name", ["sasrec", "gru4rec"])
def test_cuda_matches_cpu_and_trains(
    toy_data: SequenceData, tmp_path: Path, model_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # cuDNN's GRU may use TF32 (differences ~1e-3); compare the implementations at full float32 precision.
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    torch.manual_seed(0)
    model = build_model(pretrain_settings(model_name).model_config(toy_data.num_items))
    seqs = toy_data.eval_inputs("test")[:64]
    cpu_out = model.eval()(seqs)
    cuda_out = model.to("cuda")(seqs.to("cuda")).cpu()
    torch.testing.assert_close(cuda_out, cpu_out, rtol=1e-4, atol=1e-4)
    cpu_metrics = evaluate(model.to("cpu"), toy_data, "valid")
    cuda_metrics = evaluate(model.to("cuda"), toy_data, "valid")
    assert cuda_metrics == pytest.approx(cpu_metrics, abs=1e-3)

    _, result = train_toy(toy_data, tmp_path, model_name, device="cuda", epochs=4, eval_every=2)
    assert result.valid["ndcg@10"] > popularity_ndcg(toy_data)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("model_name", ["sasrec", "gru4rec"])
def test_a_captured_cuda_run_resumed_ends_with_the_weights_of_a_straight_one(
    toy_data: SequenceData, tmp_path: Path, model_name: str, restore_precision: None
) -> None:
    """2 epochs straight, and 1 + resume + 1, padded and captured on CUDA at the pipeline's default
    precision: the resumed run restores its model, Adam state and its own CUDA generators (sampler,
    dropout, noise: none of its draws comes from CUDA's global generator, which the checkpoint does not
    hold), and ends where the straight one does (to the rounding by which its uncaptured warm-up steps
    differ from graph replays)."""
    set_precision("fp32")
    settings = {"layout": "padded", "capture": True, "device": "cuda", "eval_every": 1, "checkpoint_every": 1}
    straight, _ = train_toy(toy_data, tmp_path / "straight", model_name, epochs=2, **settings)
    train_toy(toy_data, tmp_path / "resumed", model_name, epochs=1, **settings)
    saved = torch.load(tmp_path / "resumed" / "state" / CHECKPOINT_NAME, weights_only=True)
    assert saved["device"] == "cuda"
    cuda_state = torch.Generator("cuda").get_state()
    for name in ("sampler_rng", "dropout_rng", "noise_rng"):
        assert saved[name].shape == cuda_state.shape, f"{name}: a CUDA generator's state"
    assert not {key for key in saved if "cuda" in key or key in ("torch_rng", "rng")}
    # The global CUDA stream moved: a resumed run that drew from it would now draw other numbers.
    torch.cuda.manual_seed_all(12345)
    torch.randn(1000, device="cuda")
    resumed, result = train_toy(toy_data, tmp_path / "resumed", model_name, epochs=2, **settings)
    assert result.epochs_trained == 2
    resumed_weights = resumed.state_dict()
    for name, value in straight.state_dict().items():
        torch.testing.assert_close(resumed_weights[name], value, rtol=1e-4, atol=1e-5, msg=name)


def stack_member(out: Path, **overrides: object) -> PretrainRun:
    settings = {"hidden_size": 16, "epochs": 3, "eval_every": 3, "layout": "padded", **overrides}
    hparams = pretrain_hparams("gru4rec", **settings)
    return PretrainRun(hparams, out / "model.pt", out / "curve.csv", out / "metrics.json", out / "state")


@pytest.mark.parametrize("dropout", [0.0, 0.2])
def test_a_pretraining_stack_across_seeds_writes_what_each_seed_alone_writes(
    toy_data_dir: Path, tmp_path: Path, dropout: float
) -> None:
    """``catrec pretrain-stack``: each seed's run as ``pretrain`` writes it alone (same run id, curve and
    weights): its own initial weights, batches, negatives and dropout masks come from its own seed."""
    seeds = (1, 2, 3)
    stacked = [stack_member(tmp_path / f"stack{seed}", seed=seed, dropout=dropout) for seed in seeds]
    pretrain_stack(data_dir=toy_data_dir, dataset="toy", model_name="gru4rec", runs=stacked, device="cpu")
    for seed, member in zip(seeds, stacked, strict=True):
        alone = stack_member(tmp_path / f"alone{seed}", seed=seed, dropout=dropout)
        pretrain_stack(data_dir=toy_data_dir, dataset="toy", model_name="gru4rec", runs=[alone], device="cpu")
        stacked_metrics, alone_metrics = (json.loads(run.metrics.read_text()) for run in (member, alone))
        assert stacked_metrics["run_id"] == alone_metrics["run_id"]
        for split in ("valid", "test"):
            assert stacked_metrics[split] == pytest.approx(alone_metrics[split], rel=1e-6), (seed, split)
        stacked_weights, alone_weights = (
            load_model(run.checkpoint, torch.device("cpu")).state_dict() for run in (member, alone)
        )
        for name, value in alone_weights.items():
            torch.testing.assert_close(stacked_weights[name], value, rtol=1e-5, atol=1e-6)
    # Different seeds train different models.
    first, second = (load_model(run.checkpoint, torch.device("cpu")).state_dict() for run in stacked[:2])
    assert not torch.allclose(first["item_emb.weight"], second["item_emb.weight"])


@pytest.fixture
def restore_precision() -> Iterator[None]:
    flags = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags


def test_precision_is_applied_to_matmuls_and_cudnn_and_recorded(
    toy_data_dir: Path, tmp_path: Path, restore_precision: None
) -> None:
    """``train.precision`` sets both TF32 flags (cuDNN's default is TF32 on, cuBLAS's off) and the metrics
    JSON records it beside the layout (as ``engine``), the capture and the device."""
    for precision in ("tf32", "fp32"):
        settings = {"epochs": 1, "eval_every": 1, "layout": "packed", "precision": precision}
        member = stack_member(tmp_path / precision, **settings)
        runs = [member]
        pretrain_stack(data_dir=toy_data_dir, dataset="toy", model_name="gru4rec", runs=runs, device="cpu")
        tf32 = precision == "tf32"
        assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == (tf32, tf32)
        metrics = json.loads(member.metrics.read_text())
        recorded = (metrics["engine"], metrics["capture"], metrics["device"], metrics["precision"])
        assert recorded == ("packed", False, "cpu", precision)


# Run in a fresh process: the first optimizer of a process is the one torch leaves in a reference cycle.
FREED_BETWEEN_STACKS = """
import gc, json, sys, weakref
from pathlib import Path
import catrec.trainer
from catrec.stages.pretrain import PretrainRun, pretrain_stack

data_dir, out, hparams = Path(sys.argv[1]), Path(sys.argv[2]), json.loads(sys.argv[3])
trainings = []
Training = catrec.trainer.Training

def recording_training(*args, **kwargs):
    if trainings:
        print("first training alive when the second is built:", trainings[0]() is not None)
    training = Training(*args, **kwargs)
    trainings.append(weakref.ref(training))
    return training

catrec.trainer.Training = recording_training
files = (".pt", ".csv", ".json", "state")
runs = [PretrainRun({**hparams, "seed": seed}, *(out / f"{seed}{name}" for name in files)) for seed in (1, 2)]
gc.disable()
pretrain_stack(data_dir=data_dir, dataset="toy", model_name="gru4rec", runs=runs, device="cpu", max_stack=1)
"""


def test_consecutive_stacks_free_the_first_training_before_building_the_second(
    toy_data_dir: Path, tmp_path: Path
) -> None:
    """With ``max_stack`` splitting a job, the first stack's training (parameters, Adam state, on CUDA its
    graph pool) is freed before the second is built, without waiting for the garbage collector."""
    hparams = pretrain_hparams("gru4rec", hidden_size=16, epochs=1, eval_every=1, layout="padded")
    arguments = [str(toy_data_dir), str(tmp_path), json.dumps(hparams)]
    command = [sys.executable, "-c", FREED_BETWEEN_STACKS, *arguments]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "first training alive when the second is built: False" in result.stdout, result.stdout


def test_pretrain_stack_refuses_what_it_cannot_stack(toy_data_dir: Path, tmp_path: Path) -> None:
    def stack(runs: list[PretrainRun]) -> None:
        pretrain_stack(data_dir=toy_data_dir, dataset="toy", model_name="gru4rec", runs=runs, device="cpu")

    with pytest.raises(CatrecError, match="distinct seeds"):
        stack([stack_member(tmp_path / "a", seed=1), stack_member(tmp_path / "b", seed=1)])
    with pytest.raises(CatrecError, match="all their settings but the seed"):
        stack([stack_member(tmp_path / "a", seed=1), stack_member(tmp_path / "b", seed=2, lr=0.1)])
    with pytest.raises(
        CatrecError, match=r"invalid config key 'train\.layout': the packed layout trains one"
    ):
        stack([stack_member(tmp_path / "a", seed=1, layout="packed"),
               stack_member(tmp_path / "b", seed=2, layout="packed")])  # fmt: skip
    assert not list(tmp_path.rglob("*.json")), "a refused stack writes nothing"
    with pytest.raises(CatrecError, match="the run of seed 1 lacks curve"):
        PretrainRun.from_json({"hparams": {"seed": 1}, "checkpoint": "m", "metrics": "j", "state_dir": "s"})
