"""The one training path (``catrec.training``): the packed and the padded layout compute the same loss and
gradients, a stack of K runs trains each run as it trains alone, and the padded step reads nothing back to
the host and draws every random number from its runs' registered generators (what a CUDA graph needs)."""

from __future__ import annotations

import contextlib
import copy
import json
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from catrec.adversarial import (
    CLEAN_LOSS,
    Coefficients,
    LossTerms,
    RunLoss,
    loss_terms,
    make_loss,
    total_loss,
)
from catrec.cascade import cascade_matrix
from catrec.config import read_hparams, resolve_layout, stage_keys
from catrec.data.batches import Batch, Batches, num_batches
from catrec.data.sequences import SequenceData
from catrec.errors import CatrecError
from catrec.graph import WARMUP_STEPS, CapturedStep
from catrec.models import ModelConfig, SequentialRecommender, build_model
from catrec.models.layout import LAYOUT_OF, Packed, Padded, StepMasks
from catrec.models.stack import ModelStack
from catrec.runtime import dropout_seed, noise_seed
from catrec.trainer import TrainConfig
from catrec.training import Training
from catrec.vocabulary import CASCADE_TERMS_OF

# T above the longest toy training input (34): a (B, T) batch has all-padding columns.
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
CPU = torch.device("cpu")


pytestmark = pytest.mark.usefixtures("one_thread")


def record_step_losses(monkeypatch: pytest.MonkeyPatch) -> list[torch.Tensor]:
    """The (K,) losses of every step from now on, as ``Training.step`` computes them (appended in order)."""
    losses: list[torch.Tensor] = []

    def recorded_total_loss(terms: LossTerms, coefficients: Coefficients) -> torch.Tensor:
        value = total_loss(terms, coefficients)
        losses.append(value.detach().clone())
        return value

    monkeypatch.setattr("catrec.training.total_loss", recorded_total_loss)
    return losses


@pytest.fixture(scope="module")
def data(toy_data_dir: Path) -> SequenceData:
    return SequenceData.from_dir(toy_data_dir, MAX_LEN)


@pytest.fixture(scope="module")
def cascade(data: SequenceData) -> torch.Tensor:
    return cascade_matrix(data.train_inputs(), BATCH_SIZE, "both")


def new_model(
    variant: str, num_items: int, dropout: float = 0.0, dtype: torch.dtype = torch.float32, seed: int = 0
) -> SequentialRecommender:
    torch.manual_seed(seed)
    config = ModelConfig(
        num_items=num_items, max_len=MAX_LEN, hidden_size=HIDDEN, dropout=dropout, **VARIANTS[variant]
    )
    return build_model(config).to(dtype)


def copies(model: SequentialRecommender, count: int) -> list[SequentialRecommender]:
    return [copy.deepcopy(model) for _ in range(count)]


def copies_each(models: list[SequentialRecommender]) -> list[SequentialRecommender]:
    return [copy.deepcopy(model) for model in models]


def method_loss(method: str, data: SequenceData, cascade: torch.Tensor, **overrides: Any) -> RunLoss:
    if method == "pretrain":
        return CLEAN_LOSS
    values = {**ADVERSARIAL, **overrides}
    return make_loss(method, values, cascade if method in CASCADE_TERMS_OF else None, data)


def schedule(
    layout: str = "padded", capture: bool = False, batch_size: int = BATCH_SIZE, bucket: bool = False
) -> TrainConfig:
    config = {"seed": 0, "batch_size": batch_size, "bucket_by_length": bucket, **SCHEDULE}
    return TrainConfig(**config, layout=layout, capture=capture)


def training_of(
    models: list[SequentialRecommender],
    data: SequenceData,
    losses: list[RunLoss],
    seeds: list[int] | None = None,
    device: torch.device = CPU,
    **settings: Any,
) -> Training:
    seeds = seeds if seeds is not None else [0] * len(models)
    return Training(models, data, losses, seeds, schedule(**settings), device)


def run_steps(training: Training, indices: list[int], step: Callable[[], None] | None = None) -> None:
    """Refill the step's inputs with batches ``indices`` of one epoch and step once on each, as the
    trainer's epoch loop does."""
    users, valid = training.epoch_inputs()
    for index in indices:
        training.users.copy_(users[index])
        training.valid.copy_(valid[index])
        (step or training.step)()


def stacked(batches: list[Batch]) -> Batch:
    """The runs' batches as a stack sees them: every field with a leading run dimension."""
    return Batch(**{name: torch.stack([vars(batch)[name] for batch in batches]) for name in vars(batches[0])})


def filled_batch(data: SequenceData, filler: int, seed: int = 1) -> Batch:
    """One batch in the padded layout's (B, T) shape: B - ``filler`` users drawn at random, then
    ``filler`` all-padding rows, as an epoch's last batch is filled; T above every input: padding columns."""
    generator = torch.Generator().manual_seed(seed)
    valid = torch.arange(BATCH_SIZE) < BATCH_SIZE - filler
    users = torch.randperm(data.num_users, generator=generator)[:BATCH_SIZE] * valid
    batch = Batches(data, BATCH_SIZE, trim=False).batch(users, valid, generator)
    real = batch.seqs != 0
    assert batch.seqs.shape == (BATCH_SIZE, MAX_LEN) and not real[:, 0].any(), "padding columns"
    assert not real[~valid].any() and not batch.neg[~valid].any(), "filler rows"
    assert (real[valid].sum(1) < real[valid].sum(1).max()).any(), "rows of different lengths"
    return batch


# --- packed == padded -----------------------------------------------------------------------------------


def step_on_batch(
    layout: str, model: SequentialRecommender, loss: RunLoss, batch: Batch, data: SequenceData, monkeypatch
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The loss and gradients of one ``Training.step`` in ``layout`` on ``batch`` (negatives included),
    the generators seeded from seed 0."""
    losses = record_step_losses(monkeypatch)
    training = training_of([copy.deepcopy(model)], data, [loss], layout=layout)
    assert training.stack.layout is LAYOUT_OF[layout]
    training.batch = lambda: stacked([batch])  # type: ignore[method-assign]
    training.step()
    gradients = {
        name: torch.zeros_like(value[0]) if value.grad is None else value.grad[0].clone()
        for name, value in training.stack.parameters.items()
    }
    (loss_value,) = losses
    return loss_value, gradients


def assert_layouts_agree(
    model: SequentialRecommender, loss: RunLoss, batch: Batch, data: SequenceData, monkeypatch
) -> None:
    packed_loss, packed_gradients = step_on_batch("packed", model, loss, batch, data, monkeypatch)
    padded_loss, padded_gradients = step_on_batch("padded", model, loss, batch, data, monkeypatch)
    torch.testing.assert_close(padded_loss, packed_loss, rtol=1e-9, atol=1e-12)
    for name, gradient in packed_gradients.items():
        assert gradient.abs().sum() > 0 or name.startswith("pos_emb"), f"{name}: no gradient to compare"
        torch.testing.assert_close(padded_gradients[name], gradient, rtol=1e-7, atol=1e-10, msg=name)


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("method", METHODS)
def test_packed_and_padded_give_the_same_loss_and_gradients(
    variant: str, method: str, data: SequenceData, cascade: torch.Tensor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One (B, T) batch with padding columns and filler rows, the same negatives and generator states:
    the packed layout (real positions only) and the padded one (every position, padding masked) apply the
    same dropout masks and noise at every real position, so the step's loss and gradients are the same.
    float64: the level-1 step normalises the gradient of a tiny ||f(S + A0) - f(S)||, whose rounding
    depends on the order of the sums, i.e. on the layout."""
    model = new_model(variant, data.num_items, dropout=0.3, dtype=torch.float64)
    batch = filled_batch(data, filler=5)
    assert_layouts_agree(model, method_loss(method, data, cascade), batch, data, monkeypatch)


@pytest.mark.parametrize("variant", ["sasrec-pre", "gru4rec"])
@pytest.mark.parametrize("scope", ["sequence", "position"])
def test_packed_and_padded_agree_in_every_norm_scope(
    variant: str, scope: str, data: SequenceData, cascade: torch.Tensor, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = new_model(variant, data.num_items, dropout=0.3, dtype=torch.float64)
    loss = method_loss("adv_cas", data, cascade, grad_norm_scope=scope)
    assert_layouts_agree(model, loss, filled_batch(data, filler=3, seed=2), data, monkeypatch)


def test_packed_and_padded_gru4rec_agree(data: SequenceData) -> None:
    """The padded layout runs the GRU over whole left-aligned rows, the packed one over packed sequences."""
    model = new_model("gru4rec", data.num_items)
    generator = torch.Generator().manual_seed(3)
    lengths = torch.randint(0, MAX_LEN + 1, (40,), generator=generator)
    seqs = torch.randint(1, data.num_items + 1, (40, MAX_LEN), generator=generator)
    seqs = seqs * (torch.arange(MAX_LEN) >= MAX_LEN - lengths.unsqueeze(1))  # left-padded rows, some empty
    packed = model.encode(model.item_emb(seqs), Packed(seqs))
    padded = model.encode(model.item_emb(seqs), Padded(seqs))
    real = seqs != 0
    torch.testing.assert_close(padded[real], packed[real], rtol=1e-5, atol=1e-6)
    assert (padded[~real] == 0).all() and (packed[~real] == 0).all()


def test_layouts_train_alike(data: SequenceData) -> None:
    """One epoch from the same weights: other negatives (trimmed batches draw fewer), the same loss to
    within their noise."""
    losses = {}
    for layout in ("packed", "padded"):
        training = training_of(
            [new_model("sasrec-pre", data.num_items, dropout=0.2)], data, [CLEAN_LOSS], layout=layout
        )
        steps = num_batches(data, BATCH_SIZE)
        run_steps(training, list(range(steps)))
        (losses[layout],) = (training.loss_sums / steps).tolist()
    assert losses["padded"] == pytest.approx(losses["packed"], rel=0.05)


# --- dropout: one draw per step, the same in every pass --------------------------------------------------


def test_step_masks_are_inverted_dropout() -> None:
    seqs = torch.ones(1000, 100, dtype=torch.long)
    x = torch.ones(100_000, 1)
    masks = StepMasks.draw(Packed.mask_rows(seqs), 1, 0.25, torch.Generator().manual_seed(0))
    dropped = Packed(seqs, masks).dropout(x)
    assert dropped.unique().tolist() == pytest.approx([0.0, 1 / 0.75])
    assert dropped.mean().item() == pytest.approx(1.0, abs=0.01)  # the expectation is kept
    assert torch.equal(Padded(seqs, masks).dropout(2 * x.view(1000, 100, 1)).view(-1, 1), 2 * dropped)
    fresh = StepMasks.draw(Packed.mask_rows(seqs), 1, 0.25, torch.Generator().manual_seed(1))
    assert not torch.equal(Packed(seqs, fresh).dropout(x), dropped)


@pytest.mark.parametrize("layout", ["packed", "padded"])
@pytest.mark.parametrize("variant", ["sasrec-pre", "gru4rec"])
def test_every_pass_of_a_step_shares_its_dropout_masks(
    layout: str, variant: str, data: SequenceData, cascade: torch.Tensor
) -> None:
    model = new_model(variant, data.num_items, dropout=0.5)
    stack = ModelStack([model], [torch.Generator().manual_seed(1)], [torch.Generator()], LAYOUT_OF[layout])
    batch = stacked([filled_batch(data, filler=2)])
    seq_emb = stack.item_emb(batch.seqs)
    stack.draw(batch.seqs)
    first = stack.encode(seq_emb, batch.seqs)
    assert torch.equal(stack.encode(seq_emb, batch.seqs), first)
    stack.draw(batch.seqs)  # the next step: fresh masks, dropout is active
    assert not torch.equal(stack.encode(seq_emb, batch.seqs), first)
    # Hence epsilon = 0 gives back the clean loss in every perturbed pass.
    loss = method_loss("adv_seq", data, cascade, epsilon=0.0)
    terms = loss_terms(stack, batch, Coefficients.of([loss], CPU))
    assert terms.adv_seq is not None and torch.equal(terms.adv_seq, terms.clean)


# --- batches ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bucket", [False, True])
def test_padded_batches_cover_every_user_once_in_one_shape(data: SequenceData, bucket: bool) -> None:
    history = data.training_items().tolist()
    batches, generator = Batches(data, 64, trim=False), torch.Generator().manual_seed(0)
    users, valid = batches.epoch(generator, bucket)
    assert users.shape == valid.shape == (num_batches(data, 64), 64) == (len(batches), 64)
    assert data.num_users % 64 and valid.sum() == data.num_users, "a partial batch is filled"
    seen: list[int] = []
    for index in range(len(batches)):
        batch = batches.batch(users[index], valid[index], generator)
        assert batch.seqs.shape == batch.pos.shape == batch.neg.shape == (64, MAX_LEN)
        real_rows = valid[index]
        seen += batch.users[real_rows].tolist()
        assert torch.equal(batch.seqs[real_rows], data.train_inputs()[batch.users[real_rows]])
        assert torch.equal(batch.pos[real_rows], data.train_targets()[batch.users[real_rows]])
        # Filler rows are padding everywhere; negatives only where there is a positive, never a trained item.
        assert not batch.seqs[~real_rows].any() and not batch.pos[~real_rows].any()
        assert not batch.neg[~real_rows].any() and torch.equal(batch.neg != 0, batch.pos != 0)
        for user, negatives in zip(batch.users.tolist(), batch.neg.tolist(), strict=True):
            assert not set(negatives) & set(history[user])
    assert sorted(seen) == list(range(data.num_users))


# --- a stack of K runs is its K runs -----------------------------------------------------------------------


def stack_terms(
    models: list[SequentialRecommender], losses: list[RunLoss], batches: list[Batch], seeds: list[int]
) -> tuple[LossTerms, torch.Tensor, list[dict[str, torch.Tensor]]]:
    """The terms, losses (K,) and each run's gradients of one padded stack of ``models`` on ``batches``,
    run k's generators seeded from ``seeds[k]``."""
    dropout = [torch.Generator().manual_seed(dropout_seed(seed)) for seed in seeds]
    noise = [torch.Generator().manual_seed(noise_seed(seed)) for seed in seeds]
    stack = ModelStack(models, dropout, noise, Padded)
    coefficients = Coefficients.of(losses, CPU)
    batch = stacked(batches)
    stack.draw(batch.seqs)
    terms = loss_terms(stack, batch, coefficients)
    loss = total_loss(terms, coefficients)
    loss.sum().backward()
    gradients = [
        {
            name: torch.zeros_like(value[run]) if value.grad is None else value.grad[run]
            for name, value in stack.parameters.items()
        }
        for run in range(len(models))
    ]
    return terms, loss.detach(), gradients


def assert_stack_computes_its_runs(losses: list[RunLoss], variant: str, data: SequenceData) -> LossTerms:
    """Runs of other weights, batches and generators, stacked: each run's loss and gradients those it
    computes alone (float64: the stack's batched matmuls round as the single run's do, to 1e-15)."""
    models = [
        new_model(variant, data.num_items, dropout=0.3, dtype=torch.float64, seed=run)
        for run in range(len(losses))
    ]
    batches = [filled_batch(data, filler=run + 1, seed=run + 1) for run in range(len(losses))]
    seeds = [10 + run for run in range(len(losses))]
    terms, together, gradients = stack_terms(copies_each(models), losses, batches, seeds)
    for run, (model, loss) in enumerate(zip(models, losses, strict=True)):
        _, (alone,), (alone_gradients,) = stack_terms([model], [loss], [batches[run]], [seeds[run]])
        torch.testing.assert_close(together[run], alone, rtol=1e-9, atol=1e-12)
        for name, gradient in alone_gradients.items():
            assert gradient.abs().sum() > 0 or name.startswith("pos_emb"), f"{name}: no gradient to compare"
            torch.testing.assert_close(gradients[run][name], gradient, rtol=1e-7, atol=1e-10, msg=name)
    assert not torch.equal(together[0], together[1]), "the runs differ"
    return terms


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("method", METHODS)
def test_a_stack_computes_each_runs_loss_and_gradients_as_the_run_alone(
    variant: str, method: str, data: SequenceData, cascade: torch.Tensor
) -> None:
    """Eq. 4.10 with per-run (K,) coefficients over a stack (vmap over the runs for SASRec, a loop for
    GRU4Rec) is each run's own loss: no run's weights, batch, masks or noise reach another's loss."""
    assert_stack_computes_its_runs([method_loss(method, data, cascade)] * 2, variant, data)


@pytest.mark.parametrize("method", ["adv_seq", "adv_cas"])
@pytest.mark.parametrize("scope", ["sequence", "position"])
def test_a_stack_keeps_each_runs_norm_scope_and_perturbation_space(
    method: str, scope: str, data: SequenceData, cascade: torch.Tensor
) -> None:
    """Eq. 4.7's norm within the runs' grad_norm_scope, each run's budget in its own perturb_space
    (SASRec's sqrt(d) input scale tells the two spaces apart), in a stack as alone."""
    losses = [
        method_loss(method, data, cascade, grad_norm_scope=scope, perturb_space=space)
        for space in ("input", "embedding")
    ]
    assert_stack_computes_its_runs(losses, "sasrec-pre", data)


def test_a_mixed_stack_perturbs_each_run_as_it_perturbs_alone(
    data: SequenceData, cascade: torch.Tensor
) -> None:
    """adv_seq's step along dL_B/dS beside adv_cas's level-1 step (Eq. 4.7): each run's perturbation of S
    is the one it takes alone (the perturbation profile reads it)."""
    losses = [method_loss(method, data, cascade) for method in ("adv_seq", "adv_cas")]
    models = copies(new_model("sasrec-pre", data.num_items, dropout=0.3, dtype=torch.float64), len(losses))
    batch = filled_batch(data, filler=4)
    together, _, _ = stack_terms(copies_each(models), losses, [batch, batch], [1, 2])
    perturbation = together.perturbation
    assert perturbation is not None and perturbation.shape == (len(models), *batch.seqs.shape, HIDDEN)
    for run, (model, loss) in enumerate(zip(models, losses, strict=True)):
        alone, _, _ = stack_terms([model], [loss], [batch], [run + 1])
        assert alone.perturbation is not None
        torch.testing.assert_close(perturbation[run], alone.perturbation[0], rtol=1e-9, atol=1e-12)
    assert not torch.allclose(perturbation[0], perturbation[1])


# A stack mixing every kind of term: clean only, adv_seq's BCE step, level 2 alone, level 1 with cascade
# factors + level 2; each run of its own seed (batches, negatives, masks, noise).
STACK_METHODS = ("continued", "adv_seq", "adv_linear", "adv_cas")
STACK_SEEDS = (1, 2, 3, 4)


def trained(
    models: list[SequentialRecommender],
    losses: list[RunLoss],
    seeds: list[int],
    data: SequenceData,
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[list[dict[str, torch.Tensor]], torch.Tensor]:
    """The runs' weights after three padded steps of one stack of ``models`` (the last on the epoch's
    filled batch), and the losses (steps, K) of those steps."""
    losses_of_steps = record_step_losses(monkeypatch)
    training = training_of(models, data, losses, seeds)
    run_steps(training, [0, 1, num_batches(data, BATCH_SIZE) - 1])
    training.stack.write_back()
    weights = [
        {name: value.detach().clone() for name, value in model.state_dict().items()} for model in models
    ]
    return weights, torch.stack(losses_of_steps)


@pytest.mark.parametrize("variant", ["sasrec-pre", "gru4rec"])
def test_a_stack_of_k_runs_trains_each_as_it_trains_alone(
    variant: str, data: SequenceData, cascade: torch.Tensor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its own epoch order, negatives, masks and noise, its own gradient and Adam moments: three steps of a
    stack of K runs of different methods and seeds are the K runs' three steps alone (float64)."""
    start = new_model(variant, data.num_items, dropout=0.2, dtype=torch.float64)
    losses = [method_loss(method, data, cascade) for method in STACK_METHODS]
    together, together_losses = trained(
        copies(start, len(losses)), losses, list(STACK_SEEDS), data, monkeypatch
    )
    assert together_losses.shape == (3, len(losses))
    for run, (loss, seed) in enumerate(zip(losses, STACK_SEEDS, strict=True)):
        (alone,), alone_losses = trained(copies(start, 1), [loss], [seed], data, monkeypatch)
        torch.testing.assert_close(together_losses[:, run], alone_losses[:, 0], rtol=1e-10, atol=1e-12)
        for name, weight in alone.items():
            torch.testing.assert_close(together[run][name], weight, rtol=1e-9, atol=1e-11, msg=name)
        assert not torch.equal(alone["item_emb.weight"], start.item_emb.weight), "the run trained"
    # The methods and seeds differ, so their runs do: the stack did not train one run K times.
    assert not torch.allclose(together[0]["item_emb.weight"], together[3]["item_emb.weight"])
    assert not torch.allclose(together_losses[:, 0], together_losses[:, 1])


def test_resolve_layout_is_the_one_place_that_decides() -> None:
    assert resolve_layout("auto", "auto", cuda=False, runs=1) == ("packed", False)
    assert resolve_layout("auto", "auto", cuda=True, runs=1) == ("padded", True)
    assert resolve_layout("auto", "auto", cuda=False, runs=3) == ("padded", False)
    assert resolve_layout("padded", "auto", cuda=False, runs=1) == ("padded", False)
    assert resolve_layout("packed", "auto", cuda=True, runs=1) == ("packed", False)
    assert resolve_layout("padded", False, cuda=True, runs=2) == ("padded", False)
    assert resolve_layout("auto", True, cuda=True, runs=1) == ("padded", True)
    with pytest.raises(
        CatrecError, match=r"^invalid config key 'train\.layout': the packed layout trains one"
    ):
        resolve_layout("packed", "auto", cuda=True, runs=2)
    with pytest.raises(CatrecError, match=r"^invalid config key 'train\.capture': true needs CUDA"):
        resolve_layout("padded", True, cuda=False, runs=1)
    with pytest.raises(CatrecError, match=r"^invalid config key 'train\.capture'.*not the packed layout"):
        resolve_layout("packed", True, cuda=True, runs=1)
    with pytest.raises(CatrecError, match="unknown layout 'graph'"):
        resolve_layout("graph", "auto", cuda=False, runs=1)


def test_stacking_refuses_the_packed_layout_and_mixed_norm_scopes(
    data: SequenceData, cascade: torch.Tensor
) -> None:
    models = copies(new_model("sasrec-pre", data.num_items), 2)
    with pytest.raises(ValueError, match="packed layout trains one run, not 2"):
        training_of(models, data, [CLEAN_LOSS, CLEAN_LOSS], layout="packed")
    mixed = [
        method_loss("adv_cas", data, cascade),
        method_loss("adv_cas", data, cascade, grad_norm_scope="position"),
    ]
    with pytest.raises(CatrecError, match="different grad_norm_scope"):
        training_of(models, data, mixed)


# --- what a CUDA graph needs: no host read, fixed shapes, every draw from a registered generator ----------


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


def assert_steps_read_nothing_back(training: Training) -> Counter[str]:
    """Two padded steps on two different batches (the second the epoch's filled last one), after a first
    that creates Adam's state: no host read, and the same ops of the same shapes."""
    users, valid = training.epoch_inputs()
    recorded = []
    for index in (0, 1, len(users) - 1):
        training.users.copy_(users[index])
        training.valid.copy_(valid[index])
        with OpRecorder() as recorder:
            training.step()
        recorded.append(recorder.ops)
    recorded = recorded[1:]
    counts = Counter(name for name, _ in recorded[0] + recorded[1])
    assert not {name: counts[name] for name in HOST_READS if counts[name]}
    different = [(a, b) for a, b in zip(*recorded, strict=True) if a != b]
    assert len(recorded[0]) == len(recorded[1]) and not different
    return counts


@pytest.mark.parametrize("variant", ["sasrec-pre", "gru4rec"])
@pytest.mark.parametrize("method", METHODS)
def test_a_padded_step_reads_nothing_back_and_keeps_its_shapes(
    variant: str, method: str, data: SequenceData, cascade: torch.Tensor
) -> None:
    model = new_model(variant, data.num_items, dropout=0.2)
    training = training_of([model], data, [method_loss(method, data, cascade)], capture=True)
    counts = assert_steps_read_nothing_back(training)
    assert counts["aten.mm"] + counts["aten.bmm"] + counts["aten.addmm"] > 0, "the recorder saw the step"


def test_a_stacked_padded_step_reads_nothing_back_and_keeps_its_shapes(
    data: SequenceData, cascade: torch.Tensor
) -> None:
    models = copies(new_model("sasrec-pre", data.num_items, dropout=0.2), len(STACK_METHODS))
    losses = [method_loss(method, data, cascade) for method in STACK_METHODS]
    training = training_of(models, data, losses, list(STACK_SEEDS), capture=True)
    counts = assert_steps_read_nothing_back(training)
    assert counts["aten.bmm"] > 0, "vmap folded the runs into batched matmuls"


def test_the_packed_step_reads_back_what_the_recorder_looks_for(data: SequenceData) -> None:
    """The recorder above can see a host read: the packed layout's nonzero and trimmed widths."""
    training = training_of(
        [new_model("sasrec-pre", data.num_items, dropout=0.2)], data, [CLEAN_LOSS], layout="packed"
    )
    training.valid.fill_(True)
    with OpRecorder() as recorder:
        training.step()
    counts = Counter(name for name, _ in recorder.ops)
    assert counts["aten.nonzero"] > 0 and counts["aten._local_scalar_dense"] > 0


# Every aten random op (in-place forms end in '_'): each draws from its generator kwarg, or from the global
# stream when it has none.
RANDOM_OPS = frozenset(
    {
        "rand", "rand_like", "randn", "randn_like", "randint", "randint_like", "randperm", "bernoulli",
        "normal", "uniform", "multinomial", "exponential", "geometric", "cauchy", "log_normal", "random",
        "poisson", "binomial", "native_dropout", "_fused_dropout", "_standard_gamma", "_sample_dirichlet",
        "rrelu_with_noise",
    }
)  # fmt: skip


class RandomDraws(TorchDispatchMode):
    """Every random aten op dispatched, with its generator kwarg (None: the global stream)."""

    def __init__(self) -> None:
        super().__init__()
        self.draws: list[tuple[str, torch.Generator | None]] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        name = str(func.overloadpacket).removeprefix("aten.").rstrip("_")
        if name in RANDOM_OPS:
            self.draws.append((name, kwargs.get("generator")))
        return func(*args, **kwargs)


class FakeCUDA:
    """The CUDA-graph API ``catrec.graph`` calls, on the CPU: streams do nothing; a graph's capture runs the
    step once under ``RandomDraws`` (a real capture records it), and each replay runs it again so."""

    def __init__(self, step: Callable[[], None]) -> None:
        self.step, self.draws, self.graphs = step, RandomDraws(), []
        self.captures = self.replays = 0
        fake = self

        class Stream:
            def __init__(self, device: Any = None) -> None:
                pass

            def wait_stream(self, other: Any) -> None:
                pass

        class CUDAGraph:
            def __init__(self) -> None:
                self.generators: list[torch.Generator] = []
                fake.graphs.append(self)

            def register_generator_state(self, generator: torch.Generator) -> None:
                self.generators.append(generator)

            def replay(self) -> None:
                fake.replays += 1
                with fake.draws:
                    fake.step()

        @contextlib.contextmanager
        def graph(cuda_graph: CUDAGraph) -> Iterator[None]:
            fake.captures += 1
            with fake.draws:
                yield

        self.api = {
            "CUDAGraph": CUDAGraph,
            "graph": graph,
            "Stream": Stream,
            "stream": lambda stream: contextlib.nullcontext(),
            "current_stream": lambda device=None: Stream(),
        }


@pytest.mark.parametrize("variant", ["sasrec-pre", "gru4rec"])
@pytest.mark.parametrize("method", METHODS)
def test_every_random_draw_of_a_captured_step_is_on_a_registered_generator(
    variant: str, method: str, data: SequenceData, cascade: torch.Tensor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A CUDA graph replays a draw from the global stream with the numbers of its capture (the stream is
    not advanced by a replay): every random op inside the captured step must name one of the generators
    the graph registered (``CapturedStep``'s ``generators``: ``Training.generators()``)."""
    model = new_model(variant, data.num_items, dropout=0.2)
    loss = method_loss(method, data, cascade)
    training = training_of([model], data, [loss], capture=True)
    fake = FakeCUDA(training.step)
    for name, value in fake.api.items():
        monkeypatch.setattr(torch.cuda, name, value)
    captured = CapturedStep(training.step, training.generators(), CPU)
    run_steps(training, list(range(WARMUP_STEPS + 3)), captured)
    # Warm-up uncaptured, one capture (and its replay), then replays.
    (graph,) = fake.graphs
    assert captured.graph is graph and fake.captures == 1 and fake.replays == 3
    assert len(graph.generators) == 3 and all(
        any(generator is registered for registered in graph.generators) for generator in training.generators()
    )
    states = [generator.get_state() for generator in graph.generators]
    assert all(not torch.equal(a, b) for a, b in zip(states, states[1:], strict=False)), (
        "distinguishable generators"
    )
    assert fake.draws.draws, "the recorder saw the step's random draws"
    used = Counter()
    for name, generator in fake.draws.draws:
        assert generator is not None, f"aten.{name} drew from the global stream"
        matches = [index for index, state in enumerate(states) if torch.equal(generator.get_state(), state)]
        assert matches, f"aten.{name} drew from an unregistered generator"
        used[matches[0] // training.size] += 1
    # Negatives and dropout masks in every step (sampler, dropout); level-1 noise where the method has it.
    assert used[0] and used[1] and bool(used[2]) == ("representation" in loss.terms), used


# --- a pretraining run's host reads do not grow with its steps ---------------------------------------------


def pretrain_hparams(batch_size: int) -> dict[str, Any]:
    values = {
        "seed": 0, "max_len": MAX_LEN, "model": "sasrec", "hidden_size": HIDDEN, "dropout": 0.2,
        "num_blocks": 1, "num_heads": 1, "layer_norm": "pre", "batch_size": batch_size,
        "bucket_by_length": False, "layout": "padded", "capture": False, **SCHEDULE,
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


def test_host_reads_of_a_padded_pretraining_do_not_grow_with_its_steps(
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
        metrics = json.loads((out / "metrics.json").read_text())
        assert (metrics["engine"], metrics["capture"]) == ("padded", False)
    assert reads[16] == reads[32]


# --- on CUDA ------------------------------------------------------------------------------------------------


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
        loss = method_loss(method, data, cascade)
        training = training_of([model], data, [loss], device=device, batch_size=8, capture=True)
        step = CapturedStep(training.step, training.generators(), device) if capture else training.step
        run_steps(training, list(range(20)), step)
        assert isinstance(step, CapturedStep) == capture and (not capture or step.graph is not None)
        training.stack.write_back()
        weights = {name: parameter.detach().clone() for name, parameter in model.named_parameters()}
        results.append((training.loss_sums.item(), weights))
    (graph_loss, graph_weights), (plain_loss, plain_weights) = results
    assert graph_loss == pytest.approx(plain_loss, rel=1e-4)
    for name, weight in plain_weights.items():
        torch.testing.assert_close(graph_weights[name], weight, rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("variant", ["sasrec-pre", "gru4rec"])
@pytest.mark.parametrize("method", METHODS)
def test_a_padded_cuda_epoch_never_synchronises(
    variant: str, method: str, data: SequenceData, cascade: torch.Tensor
) -> None:
    device = torch.device("cuda")
    model = new_model(variant, data.num_items, dropout=0.2).to(device)
    training = training_of([model], data, [method_loss(method, data, cascade)], device=device, capture=True)
    step = CapturedStep(training.step, training.generators(), device)
    epoch = list(range(num_batches(data, BATCH_SIZE)))
    run_steps(training, epoch, step)  # warm-up and capture
    assert step.graph is not None
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        run_steps(training, epoch, step)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(training.loss_sums).all()
