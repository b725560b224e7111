"""The training engines: 'static' computes what 'eager' computes, with one batch shape and no host reads."""

from __future__ import annotations

import copy
import itertools
import json
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from catrec.adversarial import (
    AdversarialConfig,
    AdversarialLoss,
    loss_terms,
    make_loss,
    same_dropout,
    stack_coefficients,
    total_loss,
)
from catrec.cascade import cascade_matrix
from catrec.config import read_hparams, stage_keys
from catrec.data.batches import Batch, StaticBatches, iterate_batches, num_batches
from catrec.data.sequences import SequenceData
from catrec.engine import StaticEngine, make_engine
from catrec.errors import CatrecError
from catrec.losses import LossFn, bce_loss
from catrec.models import ModelConfig, SequentialRecommender, build_model
from catrec.models.dropout import DropoutMasks
from catrec.models.stack import ModelStack
from catrec.runtime import resolve_engine
from catrec.trainer import TrainConfig
from catrec.vocabulary import CASCADE_TERMS_OF

# T above the longest toy training input (34): eager batches are trimmed below T, static ones are not.
MAX_LEN, HIDDEN, BATCH_SIZE = 40, 16, 32
VARIANTS = {
    "sasrec-pre": {"name": "sasrec", "num_blocks": 2, "num_heads": 2, "layer_norm": "pre"},
    "sasrec-original": {"name": "sasrec", "num_blocks": 1, "num_heads": 1, "layer_norm": "original"},
    "gru4rec": {"name": "gru4rec", "num_layers": 2},
}
# Pretraining and every trained fine-tuning method (the cascade ablations share adv_cas's code).
METHODS = ("pretrain", "continued", "adv_linear", "adv_seq", "adv_global", "adv_cas")
# Host reads and data-dependent shapes: what a CUDA graph cannot hold.
HOST_READS = ("aten._local_scalar_dense", "aten.nonzero", "aten.masked_select")
SCHEDULE = {
    "lr": 0.01, "l2": 1e-5, "epochs": 1, "eval_every": 1, "checkpoint_every": 1, "precision": "fp32",
}  # fmt: skip
ADVERSARIAL = {
    "epsilon": 1.0, "lambda1": 1.0, "lambda2": 1.0, "grad_norm_scope": "batch", "init_noise": 1e-3,
    "perturb_space": "input",
}  # fmt: skip


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data(toy_data_dir: Path) -> SequenceData:
    return SequenceData.from_dir(toy_data_dir, MAX_LEN)


@pytest.fixture(scope="module")
def cascade(data: SequenceData) -> torch.Tensor:
    return cascade_matrix(data.train_inputs(), BATCH_SIZE, "both")


def new_model(
    variant: str, num_items: int, dropout: float = 0.0, dtype: torch.dtype = torch.float32
) -> SequentialRecommender:
    torch.manual_seed(0)
    config = ModelConfig(
        num_items=num_items, max_len=MAX_LEN, hidden_size=HIDDEN, dropout=dropout, **VARIANTS[variant]
    )
    return build_model(config).to(dtype).train()


def method_loss(method: str, data: SequenceData, cascade: torch.Tensor, **overrides: Any) -> LossFn:
    if method == "pretrain":
        return bce_loss
    values = {**ADVERSARIAL, **overrides}
    return make_loss(method, values, cascade if method in CASCADE_TERMS_OF else None, data)


def schedule(engine: str = "static", batch_size: int = BATCH_SIZE, bucket: bool = False) -> TrainConfig:
    config = {"seed": 0, "batch_size": batch_size, "bucket_by_length": bucket, "engine": engine, **SCHEDULE}
    return TrainConfig.from_hparams(config)


def static_layout(batch: Batch, width: int, extra_rows: int) -> Batch:
    """``batch`` laid out as the static engine does: left-padded to ``width``, plus all-padding rows."""

    def pad(matrix: torch.Tensor) -> torch.Tensor:
        return F.pad(matrix, (width - matrix.shape[1], 0, 0, extra_rows))

    users = torch.cat([batch.users, batch.users.new_zeros(extra_rows)])
    return Batch(users=users, seqs=pad(batch.seqs), pos=pad(batch.pos), neg=pad(batch.neg))


def loss_and_gradients(
    model: SequentialRecommender, loss_fn: LossFn, batch: Batch
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    loss = loss_fn(model, batch)
    loss.backward()
    gradients = {
        name: torch.zeros_like(parameter) if parameter.grad is None else parameter.grad.clone()
        for name, parameter in model.named_parameters()
    }
    return loss.detach(), gradients


def value_noise(x: torch.Tensor) -> torch.Tensor:
    """Stand-in for the level-1 start's ``randn_like``: a function of the embedding values, so that the
    trimmed and the padded layouts draw the same start at every real position."""
    return torch.sin(37.0 * x + 1.0)


def test_resolve_engine() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_engine("auto", cpu) == "eager" and resolve_engine("auto", cuda) == "static"
    assert resolve_engine("static", cpu) == "static" and resolve_engine("eager", cuda) == "eager"
    with pytest.raises(CatrecError, match="unknown engine 'graph'"):
        resolve_engine("graph", cpu)


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("method", METHODS)
def test_static_equals_eager_loss_and_gradients(
    variant: str, method: str, data: SequenceData, cascade: torch.Tensor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same batch and negatives, trimmed and packed (eager) or padded to T with masked rows (static)."""
    monkeypatch.setattr(torch, "randn_like", value_noise)
    loss_fn = method_loss(method, data, cascade)
    batch = next(iterate_batches(data, BATCH_SIZE, torch.Generator().manual_seed(1), bucket_by_length=False))
    assert batch.seqs.shape[1] < MAX_LEN and (batch.seqs == 0).any()
    # float64: the level-1 step normalises the gradient of a tiny ||f(S + A0) - f(S)||, whose float32
    # rounding depends on the order of the sums, i.e. on the layout.
    model = new_model(variant, data.num_items, dtype=torch.float64)
    eager_loss, eager_gradients = loss_and_gradients(model, loss_fn, batch)
    model.use_static(DropoutMasks())
    static_loss, static_gradients = loss_and_gradients(model, loss_fn, static_layout(batch, MAX_LEN, 5))
    torch.testing.assert_close(static_loss, eager_loss, rtol=1e-9, atol=1e-12)
    for name, gradient in eager_gradients.items():
        assert gradient.abs().sum() > 0 or name.startswith("pos_emb"), f"{name}: no gradient to compare"
        torch.testing.assert_close(static_gradients[name], gradient, rtol=1e-7, atol=1e-10, msg=name)


@pytest.mark.parametrize("scope", ["sequence", "position"])
def test_static_equals_eager_in_every_norm_scope(
    scope: str, data: SequenceData, cascade: torch.Tensor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch, "randn_like", value_noise)
    loss_fn = method_loss("adv_cas", data, cascade, grad_norm_scope=scope)
    batch = next(iterate_batches(data, BATCH_SIZE, torch.Generator().manual_seed(2), bucket_by_length=False))
    model = new_model("sasrec-pre", data.num_items, dtype=torch.float64)
    eager_loss, eager_gradients = loss_and_gradients(model, loss_fn, batch)
    model.use_static(DropoutMasks())
    static_loss, static_gradients = loss_and_gradients(model, loss_fn, static_layout(batch, MAX_LEN, 3))
    torch.testing.assert_close(static_loss, eager_loss, rtol=1e-9, atol=1e-12)
    for name, gradient in eager_gradients.items():
        torch.testing.assert_close(static_gradients[name], gradient, rtol=1e-7, atol=1e-10, msg=name)


def test_gru4rec_without_packing_equals_gru4rec_with_packing(data: SequenceData) -> None:
    torch.manual_seed(3)
    model = new_model("gru4rec", data.num_items)
    lengths = torch.randint(0, MAX_LEN + 1, (40,))
    seqs = torch.randint(1, data.num_items + 1, (40, MAX_LEN))
    seqs = seqs * (torch.arange(MAX_LEN) >= MAX_LEN - lengths.unsqueeze(1))  # left-padded rows, some empty
    packed = model(seqs)
    model.use_static(DropoutMasks())
    unpacked = model(seqs)
    real = seqs != 0
    torch.testing.assert_close(unpacked[real], packed[real], rtol=1e-5, atol=1e-6)
    assert (unpacked[~real] == 0).all() and (packed[~real] == 0).all()


@pytest.mark.parametrize("variant", ["sasrec-pre", "gru4rec"])
def test_static_passes_share_their_dropout_masks(
    variant: str, data: SequenceData, cascade: torch.Tensor
) -> None:
    model = new_model(variant, data.num_items, dropout=0.5)
    model.use_static(DropoutMasks())
    seqs = data.train_inputs()[:BATCH_SIZE]
    # Fresh masks in plain passes: dropout is active.
    assert not torch.equal(model(seqs), model(seqs))
    encode = same_dropout(model, seqs)
    seq_emb = model.item_emb(seqs)
    assert torch.equal(encode(seq_emb), encode(seq_emb))
    # Hence epsilon = 0 gives back the clean loss in every perturbed pass.
    config = AdversarialConfig(**{**ADVERSARIAL, "epsilon": 0.0})  # type: ignore[arg-type]
    batch = next(StaticEngineBatches(data).batches())
    terms = AdversarialLoss(config, sequence="bce", linear=False).terms(model, batch)
    assert terms.adv_seq is not None and torch.equal(terms.adv_seq, terms.clean)


def test_recorded_dropout_is_inverted_dropout() -> None:
    masks, x = DropoutMasks(), torch.ones(100_000)
    with masks.recording():
        dropped = masks.apply(x, 0.25)
    assert dropped.unique().tolist() == pytest.approx([0.0, 1 / 0.75])
    assert dropped.mean().item() == pytest.approx(1.0, abs=0.01)  # the expectation is kept
    with masks.replaying():
        assert torch.equal(masks.apply(2 * x, 0.25), 2 * dropped)
    assert not torch.equal(masks.apply(x, 0.25), dropped)  # outside replay, fresh masks


class StaticEngineBatches:
    """Static batches of ``data`` drawn as the static engine draws them (CPU)."""

    def __init__(self, data: SequenceData, batch_size: int = BATCH_SIZE, seed: int = 0) -> None:
        self.source = StaticBatches(data, batch_size)
        self.generator = torch.Generator().manual_seed(seed)

    def batches(self, bucket: bool = False) -> Iterator[Batch]:
        users, valid = self.source.epoch(self.generator, bucket)
        for index in range(users.shape[0]):
            yield self.source.batch(users[index], valid[index], self.generator)


@pytest.mark.parametrize("bucket", [False, True])
def test_static_batches_cover_every_user_once_in_one_shape(data: SequenceData, bucket: bool) -> None:
    history = data.training_items().tolist()
    seen: list[int] = []
    batches = list(StaticEngineBatches(data, batch_size=64).batches(bucket))
    assert len(batches) == num_batches(data, 64) and data.num_users % 64, "a partial last batch is filled"
    for batch in batches:
        assert batch.seqs.shape == batch.pos.shape == batch.neg.shape == (64, MAX_LEN)
        real_rows = (batch.seqs != 0).any(1)
        seen += batch.users[real_rows].tolist()
        assert torch.equal(batch.seqs[real_rows], data.train_inputs()[batch.users[real_rows]])
        assert torch.equal(batch.pos[real_rows], data.train_targets()[batch.users[real_rows]])
        # Filler rows are padding everywhere; negatives only where there is a positive, never a trained item.
        assert (batch.pos[~real_rows] == 0).all() and (batch.neg[~real_rows] == 0).all()
        assert torch.equal(batch.neg != 0, batch.pos != 0)
        for user, negatives in zip(batch.users.tolist(), batch.neg.tolist(), strict=True):
            assert not set(negatives) & set(history[user])
    assert sorted(seen) == list(range(data.num_users))


class OpRecorder(TorchDispatchMode):
    """Every aten op dispatched, with the shapes of its tensor outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[tuple[str, tuple[tuple[int, ...], ...]]] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        outputs = out if isinstance(out, tuple | list) else (out,)
        shapes = tuple(tuple(item.shape) for item in outputs if isinstance(item, torch.Tensor))
        self.ops.append((str(func.overloadpacket), shapes))
        return out


@pytest.mark.parametrize("variant", ["sasrec-pre", "gru4rec"])
@pytest.mark.parametrize("method", METHODS)
def test_a_static_step_reads_nothing_back_and_keeps_its_shapes(
    variant: str, method: str, data: SequenceData, cascade: torch.Tensor
) -> None:
    model = new_model(variant, data.num_items, dropout=0.2)
    loss_fn = method_loss(method, data, cascade)
    engine = StaticEngine([model], data, [loss_fn], schedule(), torch.device("cpu"))
    steps = engine.epoch()
    next(steps)  # the first step also creates Adam's state
    recorded = []
    for _ in range(2):  # two different batches: the last one is partly filler rows
        with OpRecorder() as recorder:
            next(steps)
        recorded.append(recorder.ops)
    counts = Counter(name for name, _ in recorded[0] + recorded[1])
    assert not {name: counts[name] for name in HOST_READS if counts[name]}
    assert counts["aten.mm"] + counts["aten.bmm"] > 0, "the recorder saw the step's arithmetic"
    different = [(a, b) for a, b in zip(*recorded, strict=True) if a != b]
    assert len(recorded[0]) == len(recorded[1]) and not different


def test_engines_train_alike(data: SequenceData) -> None:
    """One epoch from the same weights: different random draws, the same loss to within their noise."""
    losses = {}
    for name in ("eager", "static"):
        model = new_model("sasrec-pre", data.num_items, dropout=0.2)
        engine = make_engine(name, [model], data, [bce_loss], schedule(name), torch.device("cpu"))
        for _ in engine.epoch():
            pass
        (losses[name],) = engine.mean_losses()
    assert losses["static"] == pytest.approx(losses["eager"], rel=0.05)


def pretrain_hparams(batch_size: int) -> dict[str, Any]:
    values = {
        "seed": 0, "max_len": MAX_LEN, "model": "sasrec", "hidden_size": HIDDEN, "dropout": 0.2,
        "num_blocks": 1, "num_heads": 1, "layer_norm": "pre", "batch_size": batch_size,
        "bucket_by_length": False, "engine": "static", **SCHEDULE,
    }  # fmt: skip
    return read_hparams(
        {key: values[key] for key in stage_keys("pretrain", model="sasrec")}, "pretrain", model="sasrec"
    )


# ``python -m catrec pretrain`` under a dispatch mode counting the host reads, evaluation included.
COUNTING_RUN = """
import collections, json, runpy, sys
from torch.utils._python_dispatch import TorchDispatchMode

class Count(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.counts = collections.Counter()
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.counts[str(func.overloadpacket)] += 1
        return func(*args, **(kwargs or {}))

sys.argv = ["catrec", *sys.argv[1:]]
with Count() as count:
    try:
        runpy.run_module("catrec", run_name="__main__")
    except SystemExit as exit:
        assert not exit.code, exit.code
print(json.dumps(dict(count.counts)))
"""


def test_host_reads_of_a_static_pretraining_do_not_grow_with_its_steps(
    toy_data_dir: Path, tmp_path: Path
) -> None:
    reads = {}
    for batch_size in (16, 32):
        out = tmp_path / str(batch_size)
        command = [
            sys.executable, "-c", COUNTING_RUN, "pretrain", "--data", str(toy_data_dir),
            "--hparams", json.dumps(pretrain_hparams(batch_size)), "--dataset", "toy", "--model", "sasrec",
            "--device", "cpu", "--threads", "1", "--checkpoint", str(out / "model.pt"),
            "--curve", str(out / "curve.csv"), "--metrics", str(out / "metrics.json"),
            "--state-dir", str(out / "state"),
        ]  # fmt: skip
        run = subprocess.run(command, capture_output=True, text=True, check=True)
        counts = json.loads(run.stdout.strip().splitlines()[-1])
        assert counts["aten.mm"] > 0, "the dispatch mode saw the run"
        reads[batch_size] = {name: counts.get(name, 0) for name in HOST_READS}
        assert json.loads((out / "metrics.json").read_text())["engine"] == "static"
    assert reads[16] == reads[32]


def copies(model: SequentialRecommender, count: int) -> list[SequentialRecommender]:
    return [copy.deepcopy(model) for _ in range(count)]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("variant", ["sasrec-pre", "gru4rec"])
@pytest.mark.parametrize("method", ["pretrain", "adv_cas"])
def test_graph_replay_equals_the_uncaptured_step(
    variant: str, method: str, data: SequenceData, cascade: torch.Tensor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    device = torch.device("cuda")
    reference = new_model(variant, data.num_items, dropout=0.2).to(device)
    results = []
    for capture, model in zip((True, False), copies(reference, 2), strict=True):
        loss_fn = method_loss(method, data, cascade)
        engine = StaticEngine([model], data, [loss_fn], schedule(batch_size=8), device)
        engine.capture = capture
        for _ in itertools.islice(engine.epoch(), 20):
            pass
        assert (engine._graph is not None) == capture
        engine.write_back()
        weights = {name: parameter.detach().clone() for name, parameter in model.named_parameters()}
        results.append((engine.mean_losses()[0], weights))
    (graph_loss, graph_weights), (plain_loss, plain_weights) = results
    assert graph_loss == pytest.approx(plain_loss, rel=1e-4)
    for name, weight in plain_weights.items():
        torch.testing.assert_close(graph_weights[name], weight, rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("variant", ["sasrec-pre", "gru4rec"])
@pytest.mark.parametrize("method", METHODS)
def test_a_static_cuda_epoch_never_synchronises(
    variant: str, method: str, data: SequenceData, cascade: torch.Tensor
) -> None:
    device = torch.device("cuda")
    model = new_model(variant, data.num_items, dropout=0.2).to(device)
    engine = StaticEngine([model], data, [method_loss(method, data, cascade)], schedule(), device)
    for _ in engine.epoch():  # warm-up and capture
        pass
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in engine.epoch():
            pass
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(torch.tensor(engine.mean_losses()))


# A stack mixing every kind of term: clean only, adv_seq's BCE step, level 1 with cascade factors + level 2.
STACK_METHODS = ("continued", "adv_seq", "adv_cas")


def trained_weights(
    models: list[SequentialRecommender], losses: list[LossFn], data: SequenceData, steps: int
) -> tuple[list[dict[str, torch.Tensor]], list[float]]:
    """The runs' weights and mean losses after ``steps`` static steps of one stack of ``models``."""
    engine = StaticEngine(models, data, losses, schedule(), torch.device("cpu"))
    for _ in itertools.islice(engine.epoch(), steps):
        pass
    engine.write_back()
    weights = [
        {name: value.detach().clone() for name, value in model.state_dict().items()} for model in models
    ]
    return weights, engine.mean_losses()


@pytest.mark.parametrize("variant", ["sasrec-pre", "gru4rec"])
def test_a_run_in_a_stack_trains_as_it_trains_alone(
    variant: str, data: SequenceData, cascade: torch.Tensor
) -> None:
    """Its own masks, noise and negatives, its own gradient and Adam moments: the stack changes nothing."""
    start = new_model(variant, data.num_items, dropout=0.2)
    losses = [method_loss(method, data, cascade) for method in STACK_METHODS]
    stacked, stacked_losses = trained_weights(copies(start, len(losses)), losses, data, steps=3)
    for index, loss_fn in enumerate(losses):
        (alone,), (alone_loss,) = trained_weights(copies(start, 1), [loss_fn], data, steps=3)
        assert stacked_losses[index] == pytest.approx(alone_loss, rel=1e-5), STACK_METHODS[index]
        for name, weight in alone.items():
            torch.testing.assert_close(stacked[index][name], weight, rtol=1e-5, atol=1e-6, msg=name)
        assert not torch.equal(alone["item_emb.weight"], start.item_emb.weight), "the run trained"
    # The methods differ, so their runs do: the stack did not train one run K times.
    assert not torch.allclose(stacked[0]["item_emb.weight"], stacked[2]["item_emb.weight"])


def stacked(batch: Batch, count: int) -> Batch:
    """``batch`` as a stack of ``count`` runs sees it: every tensor with a leading run dimension."""
    return Batch(**{name: torch.stack([value] * count) for name, value in vars(batch).items()})


def assert_stack_of_one_matches(
    variant: str, loss_fn: LossFn, data: SequenceData, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The loss and gradients of ``loss_fn`` on one model equal those of a stack holding only that model."""
    monkeypatch.setattr(torch, "randn_like", value_noise)
    monkeypatch.setattr(ModelStack, "randn_like", lambda self, x: value_noise(x))
    batch = next(StaticEngineBatches(data).batches())
    model = new_model(variant, data.num_items, dtype=torch.float64)
    model_loss, model_gradients = loss_and_gradients(model, loss_fn, batch)
    stack = ModelStack([model], [torch.Generator()], [torch.Generator()])
    coefficients, factors = stack_coefficients([loss_fn], torch.device("cpu"))
    stacked_batch = stacked(batch, 1)
    stack.draw(stacked_batch.seqs)
    (loss,) = total_loss(loss_terms(stack, stacked_batch, coefficients, factors), coefficients)
    loss.backward()
    torch.testing.assert_close(loss.detach(), model_loss, rtol=1e-9, atol=1e-12)
    for name, gradient in model_gradients.items():
        stacked_gradient = stack.parameters[name].grad
        assert stacked_gradient is not None or not gradient.any(), name
        if stacked_gradient is not None:
            torch.testing.assert_close(stacked_gradient[0], gradient, rtol=1e-7, atol=1e-10, msg=name)


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("method", METHODS)
def test_a_stack_of_one_computes_the_loss_and_gradients_of_its_model(
    variant: str, method: str, data: SequenceData, cascade: torch.Tensor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Eq. 4.10 with per-run coefficients (``loss_terms`` on a ModelStack) is each method's own loss."""
    assert_stack_of_one_matches(variant, method_loss(method, data, cascade), data, monkeypatch)


@pytest.mark.parametrize("method", ["adv_seq", "adv_cas"])
@pytest.mark.parametrize(("scope", "space"), [("sequence", "embedding"), ("position", "input")])
def test_a_stack_of_one_keeps_its_norm_scope_and_perturbation_space(
    method: str,
    scope: str,
    space: str,
    data: SequenceData,
    cascade: torch.Tensor,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Eq. 4.7's norm within the run's grad_norm_scope, its budget in the run's perturb_space (SASRec's
    sqrt(d) input scale tells the two spaces apart), in a stack as alone."""
    loss_fn = method_loss(method, data, cascade, grad_norm_scope=scope, perturb_space=space)
    assert_stack_of_one_matches("sasrec-pre", loss_fn, data, monkeypatch)


def test_a_mixed_stack_perturbs_each_run_as_it_perturbs_alone(
    data: SequenceData, cascade: torch.Tensor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """adv_seq's step along dL_B/dS beside adv_cas's level-1 step (Eq. 4.7): each run's perturbation of S
    is the one it takes alone (the perturbation profile reads it)."""
    monkeypatch.setattr(torch, "randn_like", value_noise)
    monkeypatch.setattr(ModelStack, "randn_like", lambda self, x: value_noise(x))
    batch = next(StaticEngineBatches(data).batches())
    losses = [method_loss(method, data, cascade) for method in ("adv_seq", "adv_cas")]
    models = copies(new_model("sasrec-pre", data.num_items, dtype=torch.float64), len(losses))
    stack = ModelStack(models, [torch.Generator() for _ in models], [torch.Generator() for _ in models])
    coefficients, factors = stack_coefficients(losses, torch.device("cpu"))
    stacked_batch = stacked(batch, len(models))
    stack.draw(stacked_batch.seqs)
    perturbation = loss_terms(stack, stacked_batch, coefficients, factors).perturbation
    assert perturbation is not None and perturbation.shape == (len(models), *batch.seqs.shape, HIDDEN)
    for run, (model, loss_fn) in enumerate(zip(models, losses, strict=True)):
        assert isinstance(loss_fn, AdversarialLoss)
        alone = loss_fn.terms(model, batch).perturbation
        assert alone is not None
        torch.testing.assert_close(perturbation[run], alone, rtol=1e-9, atol=1e-12)


def test_a_stacked_step_reads_nothing_back_and_keeps_its_shapes(
    data: SequenceData, cascade: torch.Tensor
) -> None:
    models = copies(new_model("sasrec-pre", data.num_items, dropout=0.2), len(STACK_METHODS))
    losses = [method_loss(method, data, cascade) for method in STACK_METHODS]
    engine = StaticEngine(models, data, losses, schedule(), torch.device("cpu"))
    steps = engine.epoch()
    next(steps)
    recorded = []
    for _ in range(2):
        with OpRecorder() as recorder:
            next(steps)
        recorded.append(recorder.ops)
    counts = Counter(name for name, _ in recorded[0] + recorded[1])
    assert not {name: counts[name] for name in HOST_READS if counts[name]}
    assert counts["aten.bmm"] > 0, "vmap folded the runs into batched matmuls"
    assert recorded[0] == recorded[1]


def test_stacking_refuses_the_eager_engine_and_mixed_norm_scopes(
    data: SequenceData, cascade: torch.Tensor
) -> None:
    models = copies(new_model("sasrec-pre", data.num_items), 2)
    with pytest.raises(CatrecError, match="eager engine trains one run"):
        make_engine("eager", models, data, [bce_loss, bce_loss], schedule("eager"), torch.device("cpu"))
    mixed = [
        method_loss("adv_cas", data, cascade),
        method_loss("adv_cas", data, cascade, grad_norm_scope="position"),
    ]
    with pytest.raises(CatrecError, match="different grad_norm_scope"):
        make_engine("static", models, data, mixed, schedule(), torch.device("cpu"))
