"""Adversarial losses (Eq. 4.6-4.10), the methods and the finetune stage, on the toy data with tiny models."""

from __future__ import annotations

import csv
import json
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import LastItemModel, stack_loss, stack_of, stacked

from catrec.adversarial import (
    CLEAN_LOSS,
    AdversarialConfig,
    Coefficients,
    LossTerms,
    RunLoss,
    check_cascade,
    fgsm_step,
    make_loss,
    representation_gap,
)
from catrec.cascade import cascade_matrix
from catrec.config import read_hparams, stage_keys
from catrec.data.batches import Batch, Batches
from catrec.data.sequences import SequenceData
from catrec.errors import CatrecError
from catrec.losses import bce_from_scores
from catrec.models import ModelConfig, SequentialRecommender, build_model, load_model, save_model
from catrec.models.layout import LAYOUT_OF, Packed, StepMasks
from catrec.provenance import code_provenance
from catrec.runtime import dropout_seed, noise_seed
from catrec.settings import FinetuneSettings
from catrec.stages.cascade import write_cascade
from catrec.stages.finetune import FinetuneRun, finetune, finetune_stack
from catrec.trainer import TrainConfig
from catrec.training import Training
from catrec.vocabulary import (
    ADVERSARIAL_KEYS_OF,
    CASCADE_TERMS,
    CASCADE_TERMS_OF,
    CURVE_COLUMNS,
    METHOD_SPECS,
)

MAX_LEN, HIDDEN, BATCH_SIZE = 16, 16, 64
TRAINED_METHODS = ("continued", "adv_linear", "adv_seq", "adv_global", *CASCADE_TERMS_OF)
METRICS_KEYS = {
    "dataset",
    "model",
    "method",
    "seed",
    "valid",
    "test",
    "epsilon",
    "selected_epoch",
    "run_id",
    "engine",
    "capture",
    "device",
    "precision",
    *code_provenance(),  # code_digest, and git_commit and git_dirty in a git checkout
}


def make_hparams(method: str = "adv_cas", **overrides: Any) -> dict[str, Any]:
    """Exactly the ``--hparams`` keys ``catrec finetune`` reads for ``method``, as the pipeline passes."""
    hparams = {
        "seed": 0, "max_len": MAX_LEN, "batch_size": BATCH_SIZE, "lr": 0.01, "l2": 0.0, "epochs": 1,
        "eval_every": 1, "checkpoint_every": 1, "bucket_by_length": True, "layout": "packed",
        "capture": "auto", "precision": "fp32", "epoch_offset": 20,
        "epsilon": 1.0, "lambda1": 1.0, "lambda2": 1.0, "grad_norm_scope": "sequence", "init_noise": 1e-3,
        "perturb_space": "input", "model_selection": "best_valid",
    }  # fmt: skip
    unknown = set(overrides) - set(hparams)
    assert not unknown, f"not an --hparams key of finetune: {unknown}"
    hparams.update(overrides)
    keys = stage_keys("finetune", model="sasrec", method=method)
    return read_hparams({key: hparams[key] for key in keys}, "finetune", model="sasrec", method=method)


def new_model(name: str, num_items: int, seed: int = 0) -> SequentialRecommender:
    torch.manual_seed(seed)
    config = ModelConfig(
        name, num_items, MAX_LEN, hidden_size=HIDDEN, dropout=0.2, num_blocks=1, num_heads=1,
        layer_norm="pre", num_layers=1,
    )  # fmt: skip
    return build_model(config)


def padded_batch(data: SequenceData, seed: int = 0, size: int = 48) -> Batch:
    """A batch of random users (no bucketing), so that it holds short, left-padded sequences."""
    generator = torch.Generator().manual_seed(seed)
    batches = Batches(data, size, trim=True)
    users, valid = batches.epoch(generator, bucket_by_length=False)
    batch = batches.batch(users[0], valid[0], generator)
    assert (batch.seqs == 0).any() and (batch.seqs != 0).any()
    return batch


def one_run(terms: LossTerms) -> LossTerms:
    """The terms of a stack of one as its run's: each (1,) value a scalar, the perturbation (B, L, d)."""
    values = {item.name: getattr(terms, item.name) for item in fields(terms)}
    return LossTerms(**{name: None if value is None else value[0] for name, value in values.items()})


def run_terms(model: SequentialRecommender, batch: Batch, loss: RunLoss, **options: Any) -> LossTerms:
    """The terms of ``loss`` on ``model``'s ``batch`` as a training step computes them (``stack_loss``:
    the step's dropout masks drawn, unless ``dropout=False``; generators of the run seeded ``seed``)."""
    return one_run(stack_loss(model, batch, loss, **options)[1])


def fgsm(gradient: torch.Tensor, real: torch.Tensor, epsilon: float, scope: str) -> torch.Tensor:
    """``fgsm_step`` of one run's (B, L, d) gradient, as the step of a stack of one."""
    return fgsm_step(gradient[None], real[None], torch.full((1, 1, 1, 1), epsilon), scope)[0]


def run_gap(perturbed: torch.Tensor, clean: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """``representation_gap`` of one run's (B, L, d) representations, as in a stack of one."""
    return representation_gap(perturbed[None], clean[None], real[None])[0]


def cascade_factors(cascade: torch.Tensor, batch: Batch) -> torch.Tensor:
    """The level-1 factors 1/C (B, L) that a run with the cascade matrix ``cascade`` applies on ``batch``."""
    loss = RunLoss(METHOD_SPECS["adv_cas"].terms, hand_config(), cascade)
    return Coefficients.of([loss], cascade.device).factors(stacked(batch))[0]


def encode_passes(
    model: SequentialRecommender, batch: Batch
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Three training passes of ``model`` on ``batch`` (a stack of one): two passes of one step (one draw of
    the step's dropout masks) and one of the next step (the next draw)."""
    stack, run_batch = stack_of(model), stacked(batch)
    seq_emb = stack.item_emb(run_batch.seqs)
    with torch.no_grad():
        stack.draw(run_batch.seqs)
        first, again = (stack.encode(seq_emb, run_batch.seqs) for _ in range(2))
        stack.draw(run_batch.seqs)
        return first, again, stack.encode(seq_emb, run_batch.seqs)


def clean_bce(model: SequentialRecommender, batch: Batch, seed: int = 0) -> torch.Tensor:
    """L_B (Eq. 3.5) of ``model`` on ``batch``, computed outside the loss code, under the dropout masks the
    first step of a run seeded ``seed`` draws (the first numbers of its dropout generator)."""
    generator = torch.Generator().manual_seed(dropout_seed(seed))
    rows, width = Packed.mask_rows(batch.seqs), model.dropout_width(batch.seqs.shape[1])
    masks = StepMasks.draw(rows, width, model.config.dropout, generator)
    reps = model.encode(model.item_emb(batch.seqs), Packed(batch.seqs, masks))
    return bce_from_scores(model.score(reps, batch.pos), model.score(reps, batch.neg), batch.pos != 0)


@pytest.fixture(scope="module")
def data(toy_data_dir: Path) -> SequenceData:
    return SequenceData.from_dir(toy_data_dir, MAX_LEN)


@pytest.fixture(scope="module")
def cascade(data: SequenceData) -> torch.Tensor:
    return cascade_matrix(data.train_inputs(), BATCH_SIZE, "both")


@pytest.fixture(scope="module")
def cascades(data: SequenceData) -> dict[str, torch.Tensor]:
    """C of each ``terms`` (the ablations' cascade files)."""
    return {terms: cascade_matrix(data.train_inputs(), BATCH_SIZE, terms) for terms in CASCADE_TERMS}


def adversarial_loss(method: str, data: SequenceData, cascade: torch.Tensor, **overrides: Any) -> RunLoss:
    cascade_or_none = cascade if method in CASCADE_TERMS_OF else None
    loss = make_loss(method, make_hparams(method, **overrides), cascade_or_none, data)
    assert loss.terms, "an adversarial loss: terms beside L_B"
    return loss


@pytest.mark.parametrize("model_name", ["sasrec", "gru4rec"])
@pytest.mark.parametrize("method", ["adv_linear", "adv_seq", "adv_global", "adv_cas"])
def test_zero_epsilon_gives_back_the_clean_loss(
    model_name: str, method: str, data: SequenceData, cascade: torch.Tensor
) -> None:
    model = new_model(model_name, data.num_items)
    batch = padded_batch(data)
    # Dropout is active: two steps' passes differ, so equality below needs the step's masks in every pass.
    first, _, next_step = encode_passes(model, batch)
    assert not torch.equal(first, next_step)
    loss = adversarial_loss(method, data, cascade, epsilon=0.0)
    stack, stacked_terms, total = stack_loss(model, batch, loss)
    terms = one_run(stacked_terms)
    for perturbed in (terms.adv2, terms.adv_seq):
        if perturbed is not None:
            assert torch.equal(perturbed, terms.clean)
    if terms.adv1 is not None:
        assert terms.adv1.item() == 0.0
    if terms.perturbation is not None:
        assert (terms.perturbation == 0).all()
    total.sum().backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in stack.parameters.values())


@pytest.mark.parametrize("model_name", ["sasrec", "gru4rec"])
@pytest.mark.parametrize("method", TRAINED_METHODS)
def test_zero_epsilon_loss_is_the_clean_bce_loss(
    model_name: str, method: str, data: SequenceData, cascade: torch.Tensor
) -> None:
    # At epsilon = 0 every perturbed BCE term is L_B itself and L_adv-1 is 0, so Eq. 4.10 gives
    # (1 + lambda2) L_B (levels 1 and 2), adv_seq L_B + L_B, continued L_B: with distinct lambdas, any term
    # that is not its clean counterpart, or a wrong weight, shows.
    model = new_model(model_name, data.num_items)
    batch = padded_batch(data)
    assert model.config.dropout > 0
    first, again, next_step = encode_passes(model, batch)
    assert not torch.equal(first, next_step), "dropout is active"
    assert torch.equal(first, again), "and the step's masks are applied in every pass"
    hparams = make_hparams(method, epsilon=0.0, lambda1=0.7, lambda2=0.3)
    loss = make_loss(method, hparams, cascade if method in CASCADE_TERMS_OF else None, data)
    clean = clean_bce(model, batch)  # under the masks of the step below
    weight = {"continued": 1.0, "adv_linear": 1.3, "adv_seq": 2.0}.get(method, 1.3)
    _, terms, total = stack_loss(model, batch, loss)
    torch.testing.assert_close(total[0], weight * clean)
    if loss.terms:
        torch.testing.assert_close(terms.clean[0], clean)
    else:
        assert method == "continued" and loss == CLEAN_LOSS


@pytest.mark.parametrize("layout", list(LAYOUT_OF))
@pytest.mark.parametrize("model_name", ["sasrec", "gru4rec"])
@pytest.mark.parametrize("method", ["adv_seq", "adv_global", "adv_cas"])
def test_padding_is_never_perturbed(
    model_name: str, method: str, layout: str, data: SequenceData, cascade: torch.Tensor
) -> None:
    batch = padded_batch(data)
    loss = adversarial_loss(method, data, cascade)
    terms = run_terms(new_model(model_name, data.num_items), batch, loss, layout=LAYOUT_OF[layout])
    assert terms.perturbation is not None
    real = batch.seqs != 0
    assert (terms.perturbation[~real] == 0).all()
    assert (terms.perturbation[real].norm(dim=-1) > 0).all()


def input_space(model: SequentialRecommender, perturbation: torch.Tensor | None) -> torch.Tensor:
    """A perturbation of the embedding rows E[seqs] (``LossTerms.perturbation``) in the network input."""
    assert perturbation is not None
    return perturbation * model.input_scale


def scope_norms(step: torch.Tensor, real: torch.Tensor, scope: str) -> torch.Tensor:
    return {
        "batch": step.norm().reshape(1),
        "sequence": step.flatten(1).norm(dim=1),
        "position": step.norm(dim=-1)[real],
    }[scope]


def test_sasrec_input_scale_is_sqrt_hidden_and_gru4rec_is_one(data: SequenceData) -> None:
    # The norm tests below tell the two spaces apart only because SASRec's factor is not 1.
    assert new_model("sasrec", data.num_items).input_scale == pytest.approx(HIDDEN**0.5)
    assert new_model("gru4rec", data.num_items).input_scale == 1.0


@pytest.mark.parametrize("space", ["input", "embedding"])
@pytest.mark.parametrize("scope", ["batch", "sequence", "position"])
@pytest.mark.parametrize("method", ["adv_global", "adv_cas", "adv_seq"])
def test_sequence_step_has_norm_epsilon_in_its_space_within_its_scope(
    method: str, scope: str, space: str, data: SequenceData, cascade: torch.Tensor
) -> None:
    # Equal budgets: whatever the cascade factors, the step has total norm epsilon within its scope, measured
    # in the network's input (sqrt(d) E[seqs] for SASRec) or on the embedding rows themselves.
    batch = padded_batch(data)
    model = new_model("sasrec", data.num_items)
    loss = adversarial_loss(method, data, cascade, epsilon=2.5, grad_norm_scope=scope, perturb_space=space)
    terms = run_terms(model, batch, loss)
    assert terms.perturbation is not None
    step = input_space(model, terms.perturbation) if space == "input" else terms.perturbation
    norms = scope_norms(step, batch.seqs != 0, scope)
    torch.testing.assert_close(norms, torch.full_like(norms, 2.5))


@pytest.mark.parametrize("method", ["adv_global", "adv_seq"])
def test_sasrec_input_space_step_is_smaller_on_the_embedding_rows(
    method: str, data: SequenceData, cascade: torch.Tensor
) -> None:
    # Level 1 (adv_global, scope batch) and adv_seq: the explicit form of the check.
    batch = padded_batch(data)
    model = new_model("sasrec", data.num_items)
    loss = adversarial_loss(
        method, data, cascade, epsilon=3.0, grad_norm_scope="batch", perturb_space="input"
    )
    terms = run_terms(model, batch, loss)
    assert terms.perturbation is not None
    torch.testing.assert_close(input_space(model, terms.perturbation).norm(), torch.tensor(3.0))
    torch.testing.assert_close(terms.perturbation.norm(), torch.tensor(3.0 / HIDDEN**0.5))


@pytest.mark.parametrize("method", ["adv_global", "adv_cas", "adv_seq"])
def test_gru4rec_input_and_embedding_spaces_coincide(
    method: str, data: SequenceData, cascade: torch.Tensor
) -> None:
    batch = padded_batch(data)
    model = new_model("gru4rec", data.num_items)
    steps = {}
    for space in ("input", "embedding"):
        loss = adversarial_loss(method, data, cascade, grad_norm_scope="batch", perturb_space=space)
        # Generators in the same states: the same random start and dropout masks for both.
        steps[space] = run_terms(model, batch, loss, seed=5).perturbation
        assert steps[space] is not None
        torch.testing.assert_close(steps[space].norm(), torch.tensor(1.0))
    torch.testing.assert_close(steps["input"], steps["embedding"], rtol=0, atol=0)


def same_state_steps(
    data: SequenceData, cascades: dict[str, torch.Tensor], methods: tuple[str, ...], seed: int
) -> tuple[Batch, dict[str, torch.Tensor]]:
    """The level-1 steps (input space, scope batch) of ``methods`` on one batch from the same RNG state."""
    batch = padded_batch(data, seed=seed)
    model = new_model("sasrec", data.num_items)
    steps = {}
    for method in methods:
        hparams = make_hparams(method, grad_norm_scope="batch", perturb_space="input")
        loss = make_loss(method, hparams, cascades.get(CASCADE_TERMS_OF.get(method, "")), data)
        assert loss.terms
        # Generators in the same states: the same random start and dropout masks for every method.
        steps[method] = input_space(model, run_terms(model, batch, loss, seed=100 + seed).perturbation)
    return batch, steps


def test_cascade_redistributes_an_equal_budget_towards_the_last_positions(data: SequenceData) -> None:
    # Temporal cascade: C = 1 + T - t, so 1/C is 1 at the last column and at most 1/2 before it.
    # adv_cas_temporal must move a clearly larger share of the same total norm to the last column than
    # adv_global does.
    temporal = cascade_matrix(data.train_inputs(), BATCH_SIZE, "temporal")
    for seed in range(3):
        batch, steps = same_state_steps(
            data, {"temporal": temporal}, ("adv_global", "adv_cas_temporal"), seed
        )
        real = batch.seqs != 0
        assert real[:, -1].all() and real[:, :-1].any()
        ratios = {}
        for method, step in steps.items():
            torch.testing.assert_close(step.norm(), torch.tensor(1.0))
            norms = step.norm(dim=-1)
            ratios[method] = norms[:, -1].mean() / norms[:, :-1][real[:, :-1]].mean()
        torch.testing.assert_close(steps["adv_global"].norm(), steps["adv_cas_temporal"].norm())
        assert ratios["adv_cas_temporal"] > 2 * ratios["adv_global"]


def test_cascade_moves_the_budget_to_low_cascade_positions(data: SequenceData, cascade: torch.Tensor) -> None:
    # Full cascade (both terms): equal total norms; adv_cas puts more of it on the last column than adv_global
    # (over a few batches: the cross term dominates C on the toy data), and clearly more on the positions of
    # high 1/C (half of the real positions) in every batch.
    last_share: dict[str, list[torch.Tensor]] = {"adv_global": [], "adv_cas": []}
    for seed in range(4):
        batch, steps = same_state_steps(data, {"both": cascade}, ("adv_global", "adv_cas"), seed)
        real = batch.seqs != 0
        torch.testing.assert_close(steps["adv_global"].norm(), steps["adv_cas"].norm())
        factors = cascade_factors(cascade, batch)
        high = real & (factors > factors[real].median())
        high_share = {}
        for method, step in steps.items():
            norms = step.norm(dim=-1)
            last_share[method].append(norms[:, -1].mean() / norms[:, :-1][real[:, :-1]].mean())
            high_share[method] = norms[high].sum() / norms[real].sum()
        assert high_share["adv_cas"] > high_share["adv_global"] + 0.1
    assert torch.stack(last_share["adv_cas"]).mean() > torch.stack(last_share["adv_global"]).mean()


@pytest.mark.parametrize("space", ["input", "embedding"])
@pytest.mark.parametrize("scope", ["batch", "sequence"])
def test_level1_step_is_the_cascade_weighted_gradient_normalised_once(
    scope: str, space: str, data: SequenceData, cascade: torch.Tensor
) -> None:
    # The step, rebuilt from its definition: a random start (1/C-weighted, norm init_noise), the gradient of
    # ||f(S + start) - f(S)|| there, weighted by 1/C ONCE, normalised to epsilon in the chosen space.
    # No dropout (no masks drawn, as in evaluation), so the only random numbers drawn are those of the start:
    # the run's noise generator, seeded 11.
    model = new_model("sasrec", data.num_items)
    batch = padded_batch(data)
    real = batch.seqs != 0
    overrides = {"epsilon": 2.0, "init_noise": 0.05, "grad_norm_scope": scope, "perturb_space": space}
    loss = adversarial_loss("adv_cas", data, cascade, **overrides)
    terms = run_terms(model, batch, loss, seed=11, dropout=False)
    assert terms.perturbation is not None

    scale = model.input_scale if space == "input" else 1.0
    factors = cascade_factors(cascade, batch).unsqueeze(-1)
    seq_emb = model.item_emb(batch.seqs).detach()
    noise = torch.randn(seq_emb.shape, generator=torch.Generator().manual_seed(noise_seed(11)))
    start = fgsm(factors * noise, real, 0.05 / scale, scope)
    probe = (seq_emb + start).requires_grad_()
    with torch.no_grad():
        clean = model.encode(seq_emb, Packed(batch.seqs))
    (gradient,) = torch.autograd.grad(run_gap(model.encode(probe, Packed(batch.seqs)), clean, real), probe)
    expected = fgsm(factors * gradient, real, 2.0 / scale, scope)
    torch.testing.assert_close(terms.perturbation, expected, rtol=1e-4, atol=1e-6)
    # Weighting twice (or not at all) would give a measurably different step.
    for wrong in (factors**2 * gradient, gradient):
        assert not torch.allclose(terms.perturbation, fgsm(wrong, real, 2.0 / scale, scope), atol=1e-4)


def toy_trained(name: str, data: SequenceData, epochs: int = 10) -> SequentialRecommender:
    """A model trained briefly on the clean BCE: unlike a fresh one, f(S) has clearly preferred directions."""
    model = new_model(name, data.num_items)
    schedule = TrainConfig(
        seed=0, batch_size=BATCH_SIZE, lr=0.01, l2=0.0, epochs=epochs, eval_every=epochs,
        checkpoint_every=epochs, bucket_by_length=True, layout="packed", capture=False, precision="fp32",
    )  # fmt: skip
    training = Training([model], data, [CLEAN_LOSS], [0], schedule, torch.device("cpu"))
    for _ in range(epochs):
        users, valid = training.epoch_inputs()
        for batch_users, batch_valid in zip(users, valid, strict=True):
            training.users.copy_(batch_users)
            training.valid.copy_(batch_valid)
            training.step()
    training.stack.write_back()
    return model


@pytest.fixture(scope="module")
def run_inputs(tmp_path_factory: pytest.TempPathFactory, toy_data_dir: Path, data: SequenceData) -> Path:
    """A pretrained checkpoint per model and the three cascade files, as the pipeline would pass them."""
    directory = tmp_path_factory.mktemp("inputs")
    for name in ("sasrec", "gru4rec"):
        save_model(directory / f"{name}.pt", toy_trained(name, data))
    for terms in ("both", "temporal", "cross"):
        output = directory / f"{terms}.pt"
        write_cascade(toy_data_dir, max_len=MAX_LEN, batch_size=BATCH_SIZE, terms=terms, output=output)
    return directory


@pytest.mark.parametrize("model_name", ["sasrec", "gru4rec"])
def test_level1_step_moves_the_representation_more_than_a_random_one(
    model_name: str, data: SequenceData, cascade: torch.Tensor, run_inputs: Path
) -> None:
    # No dropout (no masks drawn, as in evaluation), so both gaps are measured on the same deterministic f.
    model = load_model(run_inputs / f"{model_name}.pt", "cpu")
    loss = adversarial_loss("adv_global", data, cascade, epsilon=0.5)
    adversarial, random = [], []
    for seed in range(4):
        batch = padded_batch(data, seed=seed)
        terms = run_terms(model, batch, loss, seed=seed, dropout=False)
        assert terms.adv1 is not None
        real = batch.seqs != 0
        seq_emb = model.item_emb(batch.seqs).detach()
        # The same norm in the same (input) space as the adversarial step: 0.5 on sqrt(d) E[seqs] for SASRec.
        direction = fgsm(torch.randn_like(seq_emb), real, 0.5 / model.input_scale, "sequence")
        with torch.no_grad():
            clean = model.encode(seq_emb, Packed(batch.seqs))
            random.append(run_gap(model.encode(seq_emb + direction, Packed(batch.seqs)), clean, real))
        adversarial.append(terms.adv1.detach())
    assert torch.stack(adversarial).mean() > 1.5 * torch.stack(random).mean()


@pytest.mark.parametrize("bucket_by_length", [False, True])
def test_batch_factors_are_the_inverse_cascade_of_the_trimmed_columns(
    bucket_by_length: bool, data: SequenceData, cascade: torch.Tensor
) -> None:
    generator = torch.Generator().manual_seed(0)
    widths = set()
    batches = Batches(data, 32, trim=True)  # the packed layout's trimmed batches
    users, valid = batches.epoch(generator, bucket_by_length)
    for batch_users, batch_valid in zip(users, valid, strict=True):
        batch = batches.batch(batch_users, batch_valid, generator)
        real = batch.seqs != 0
        widths.add(batch.seqs.shape[1])
        factors = cascade_factors(cascade, batch)
        assert torch.equal(factors > 0, real), "the last L columns of C line up with the trimmed batch"
        rows = cascade[batch.users, -batch.seqs.shape[1] :]
        torch.testing.assert_close(factors[real], rows[real].reciprocal(), rtol=0, atol=0)
    if bucket_by_length:
        assert len(widths) > 1, "bucketed batches are trimmed to different widths"


def run_finetune(
    method: str, model_name: str, toy_data_dir: Path, inputs: Path, out: Path, **overrides: Any
) -> dict:
    """Fine-tune one epoch from the checkpoint in ``inputs``, with the cascade file the rule would pass."""
    terms = CASCADE_TERMS_OF.get(method)
    finetune(
        data_dir=toy_data_dir,
        hparams=make_hparams(method, **overrides),
        dataset="toy",
        model_name=model_name,
        method=method,
        pretrained=inputs / f"{model_name}.pt",
        cascade=inputs / f"{terms}.pt" if terms else None,
        checkpoint=out / "model.pt",
        curve=out / "curve.csv",
        metrics=out / "metrics.json",
        state_dir=out / "state",
        device="cpu",
    )
    return json.loads((out / "metrics.json").read_text())


def same_weights(first: SequentialRecommender, second: SequentialRecommender) -> bool:
    return all(
        torch.equal(a, b)
        for a, b in zip(first.state_dict().values(), second.state_dict().values(), strict=True)
    )


@pytest.mark.parametrize(
    ("method", "model_name"), [(method, "sasrec") for method in TRAINED_METHODS] + [("adv_cas", "gru4rec")]
)
def test_finetune_trains_each_method_one_epoch(
    method: str, model_name: str, toy_data_dir: Path, run_inputs: Path, tmp_path: Path
) -> None:
    metrics = run_finetune(method, model_name, toy_data_dir, run_inputs, tmp_path)
    assert not same_weights(
        load_model(tmp_path / "model.pt", "cpu"), load_model(run_inputs / f"{model_name}.pt", "cpu")
    )
    assert set(metrics) == METRICS_KEYS
    assert (metrics["method"], metrics["model"], metrics["selected_epoch"]) == (method, model_name, 21)
    assert metrics["epsilon"] == (None if method == "continued" else 1.0)
    assert set(metrics["valid"]) == set(metrics["test"]) == {"ndcg@10", "hit@10"}
    with open(tmp_path / "curve.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(row["epoch"], row["phase"], row["split"]) for row in rows] == [
        ("21", "finetune", "valid"),
        ("21", "finetune", "test"),
    ]


def state_dirs(out: Path) -> set[str]:
    return {path.name for path in (out / "state").iterdir()}


def test_finetune_state_belongs_to_one_run_identity(
    toy_data_dir: Path, run_inputs: Path, tmp_path: Path
) -> None:
    # A state directory left by an epsilon-1 run must not be continued as an epsilon-2 run: each identity
    # (settings and input contents) has its own directory, so the epsilon-2 run starts afresh beside it.
    first = run_finetune("adv_global", "sasrec", toy_data_dir, run_inputs, tmp_path)
    assert state_dirs(tmp_path) == {first["run_id"]}
    assert (tmp_path / "state" / first["run_id"] / "checkpoint.pt").exists()
    other = run_finetune("adv_global", "sasrec", toy_data_dir, run_inputs, tmp_path, epsilon=2.0)
    assert other["run_id"] != first["run_id"]
    assert state_dirs(tmp_path) == {first["run_id"], other["run_id"]}
    # Same settings again (however often saved): the finished run's own state is found and reused.
    again = run_finetune("adv_global", "sasrec", toy_data_dir, run_inputs, tmp_path, checkpoint_every=2)
    assert again == first
    assert state_dirs(tmp_path) == {first["run_id"], other["run_id"]}


def test_finetune_refuses_hparams_the_method_does_not_read(
    toy_data_dir: Path, run_inputs: Path, tmp_path: Path
) -> None:
    # continued reads no adversarial key: an epsilon would only make its identity (and paths) differ.
    with pytest.raises(CatrecError, match="'epsilon': not read by finetune of continued"):
        finetune(
            data_dir=toy_data_dir, hparams={**make_hparams("continued"), "epsilon": 1.0}, dataset="toy",
            model_name="sasrec", method="continued", pretrained=run_inputs / "sasrec.pt", cascade=None,
            checkpoint=tmp_path / "model.pt", curve=tmp_path / "curve.csv", metrics=tmp_path / "metrics.json",
            state_dir=tmp_path / "state", device="cpu",
        )  # fmt: skip
    with pytest.raises(CatrecError, match="'lambda1': required by finetune of adv_global"):
        finetune(
            data_dir=toy_data_dir, hparams=make_hparams("adv_linear"), dataset="toy", model_name="sasrec",
            method="adv_global", pretrained=run_inputs / "sasrec.pt", cascade=None,
            checkpoint=tmp_path / "model.pt", curve=tmp_path / "curve.csv", metrics=tmp_path / "metrics.json",
            state_dir=tmp_path / "state", device="cpu",
        )  # fmt: skip
    assert not (tmp_path / "model.pt").exists() and not (tmp_path / "state").exists()


@pytest.mark.parametrize("method", list(ADVERSARIAL_KEYS_OF))
def test_adversarial_config_reads_only_the_keys_of_its_method(method: str, data: SequenceData) -> None:
    settings = FinetuneSettings.from_json(make_hparams(method), model="sasrec", method=method)
    cascade = cascade_matrix(data.train_inputs(), BATCH_SIZE) if method in CASCADE_TERMS_OF else None
    config = make_loss(method, settings, cascade, data).config
    read = {key for key, value in vars(config).items() if value is not None}
    assert read == set(ADVERSARIAL_KEYS_OF[method])


def test_finetune_base_reports_the_pretrained_model(
    toy_data_dir: Path, run_inputs: Path, tmp_path: Path
) -> None:
    metrics = run_finetune("base", "sasrec", toy_data_dir, run_inputs, tmp_path)
    assert same_weights(load_model(tmp_path / "model.pt", "cpu"), load_model(run_inputs / "sasrec.pt", "cpu"))
    assert (tmp_path / "curve.csv").read_text() == ",".join(CURVE_COLUMNS) + "\n"
    assert set(metrics) == METRICS_KEYS
    assert (metrics["method"], metrics["epsilon"], metrics["selected_epoch"]) == ("base", None, 20)
    assert metrics["run_id"] is None and not (tmp_path / "state").exists()
    assert 0 <= metrics["test"]["ndcg@10"] <= metrics["test"]["hit@10"] <= 1


def test_cascade_methods_need_the_matching_cascade(
    toy_data_dir: Path, data: SequenceData, run_inputs: Path, tmp_path: Path
) -> None:
    with pytest.raises(CatrecError, match="adv_cas_cross"):
        make_loss("adv_cas_cross", make_hparams("adv_cas_cross"), None, data)
    with pytest.raises(CatrecError, match="max_len"):
        make_loss("adv_cas", make_hparams(), cascade_matrix(data.train_inputs()[:, 1:], BATCH_SIZE), data)
    # The same shape is not enough: C must be real (> 0) exactly where the training inputs hold items.
    other = cascade_matrix(data.train_inputs(), BATCH_SIZE).clone()
    other[data.train_inputs() != 0] = other[data.train_inputs() != 0].roll(1)
    other[0, -1] = 0.0
    with pytest.raises(CatrecError, match="C is positive at 1 position"):
        make_loss("adv_cas", make_hparams(), other, data)
    # The temporal-only file handed to adv_cas is refused before any training.
    with pytest.raises(CatrecError, match="terms='temporal'"):
        finetune(
            data_dir=toy_data_dir, hparams=make_hparams("adv_cas"), dataset="toy", model_name="sasrec",
            method="adv_cas", pretrained=run_inputs / "sasrec.pt", cascade=run_inputs / "temporal.pt",
            checkpoint=tmp_path / "model.pt", curve=tmp_path / "curve.csv", metrics=tmp_path / "metrics.json",
            state_dir=tmp_path / "state", device="cpu",
        )  # fmt: skip
    assert not (tmp_path / "model.pt").exists()


# The equations pinned by hand. LastItemModel's sequence network is the identity (w = f(S) = S), so every
# number below follows from the embeddings alone.
HAND_EMBEDDING = [[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.5]]


def hand_batch() -> Batch:
    """Two users; the first has one padding column. Real positions: (0, 1), (1, 0), (1, 1)."""
    return Batch(
        users=torch.tensor([0, 1]),
        seqs=torch.tensor([[0, 1], [2, 3]]),
        pos=torch.tensor([[0, 2], [3, 4]]),
        neg=torch.tensor([[0, 4], [1, 1]]),
    )


def hand_config(**overrides: Any) -> AdversarialConfig:
    values = {
        "epsilon": 0.5, "lambda1": 0.7, "lambda2": 0.3, "grad_norm_scope": "position", "init_noise": 1e-3,
        "perturb_space": "input",
    }  # fmt: skip
    return AdversarialConfig(**{**values, **overrides})


def test_eq_4_6_representation_gap_is_the_mean_norm_over_real_positions_by_hand() -> None:
    # w_hat - w: (3, 4) and (6, 8) and (1, 0) at the real positions, anything (here 100s) at padding.
    clean = torch.zeros(2, 2, 2)
    perturbed = torch.tensor([[[3.0, 4.0], [100.0, 100.0]], [[6.0, 8.0], [1.0, 0.0]]])
    real = torch.tensor([[True, False], [True, True]])
    gap = run_gap(perturbed, clean, real)
    # Eq. 4.6: ||w_hat - w||_2 (not squared: 42), averaged over the 3 real positions (not over all 4: 4.0,
    # nor per sequence first: 5.25): (5 + 10 + 1) / 3.
    assert gap.item() == pytest.approx(16 / 3)
    assert run_gap(clean + 1.0, clean + 1.0, real).item() == 0.0


@pytest.mark.parametrize(
    ("scope", "expected"),
    # With f the identity, the gap of each position is the norm of its step: epsilon at each one (scope
    # position); epsilon / sqrt(3) at each of the 3 real positions (batch: the gradient of Eq. 4.6 has the
    # same norm 1/3 at each); epsilon for user 0's one position and epsilon / sqrt(2) for user 1's two.
    [("position", 0.5), ("batch", 0.5 / 3**0.5), ("sequence", (0.5 + 2 * 0.5 / 2**0.5) / 3)],
)
def test_eq_4_6_level1_loss_of_adv_global_by_hand(scope: str, expected: float) -> None:
    loss = RunLoss(("representation",), hand_config(grad_norm_scope=scope))  # level 1 alone
    terms = run_terms(LastItemModel(HAND_EMBEDDING), hand_batch(), loss)
    assert terms.adv1 is not None and terms.perturbation is not None
    assert terms.adv1.item() == pytest.approx(expected, rel=1e-5)
    # L_adv-1 is Eq. 4.6 of the step actually taken: the mean over real positions of ||A_t||.
    real = hand_batch().seqs != 0
    assert terms.adv1.item() == pytest.approx(terms.perturbation.norm(dim=-1)[real].mean().item(), rel=1e-5)


def eq_4_8_by_hand(batch: Batch, epsilon: float, scope: str) -> float:
    """L_adv-2 (Eq. 4.8) with the FGSM steps of Eq. 4.9 from the closed-form gradient of the BCE (Eq. 3.5).

    At each real position, with r_j = w.e_j, r_n = w.e_n: dL/dw = -(1 - s(r_j)) e_j + s(r_n) e_n,
    dL/de_j = -(1 - s(r_j)) w, dL/de_n = s(r_n) w (all times 1/N, which the normalisation removes).
    """
    emb = torch.tensor(HAND_EMBEDDING, dtype=torch.float64)
    w, e_j, e_n = emb[batch.seqs], emb[batch.pos], emb[batch.neg]
    mask = (batch.pos != 0).unsqueeze(-1)
    s_j = torch.sigmoid((w * e_j).sum(-1, keepdim=True))
    s_n = torch.sigmoid((w * e_n).sum(-1, keepdim=True))
    gradients = [-(1 - s_j) * e_j + s_n * e_n, -(1 - s_j) * w, s_n * w]
    steps = []
    for h in gradients:
        h = torch.where(mask, h, torch.zeros_like(h))
        norm = {
            "batch": h.norm(),
            "sequence": h.flatten(1).norm(dim=1).view(-1, 1, 1),
            "position": h.norm(dim=-1, keepdim=True),
        }[scope]
        steps.append(epsilon * h / norm)
    w_hat, e_j_hat, e_n_hat = w + steps[0], e_j + steps[1], e_n + steps[2]
    r_j, r_n = (w_hat * e_j_hat).sum(-1), (w_hat * e_n_hat).sum(-1)
    losses = -(torch.log(torch.sigmoid(r_j)) + torch.log(1 - torch.sigmoid(r_n)))
    return losses[batch.pos != 0].mean().item()


@pytest.mark.parametrize("scope", ["batch", "sequence", "position"])
def test_eq_4_8_level2_loss_by_hand(scope: str) -> None:
    batch = hand_batch()
    loss = RunLoss(("linear",), hand_config(grad_norm_scope=scope))  # level 2 alone
    terms = run_terms(LastItemModel(HAND_EMBEDDING), batch, loss)
    assert terms.adv2 is not None
    assert terms.adv2.item() == pytest.approx(eq_4_8_by_hand(batch, 0.5, scope), rel=1e-5)
    # The ascent steps of Eq. 4.9 raise the BCE: L_adv-2 > L_B (the same formula at epsilon 0).
    assert terms.clean.item() == pytest.approx(eq_4_8_by_hand(batch, 0.0, scope), rel=1e-6)
    assert terms.adv2.item() > terms.clean.item() + 0.1


def test_eq_4_10_total_is_clean_plus_lambda_weighted_terms_by_hand() -> None:
    # Eq. 4.10 at epsilon > 0 (at epsilon 0, L_adv-1 = 0 hides lambda1):
    # L_B + lambda1 L_adv-1 + lambda2 L_adv-2.
    model, batch = LastItemModel(HAND_EMBEDDING), hand_batch()
    loss = RunLoss(("representation", "linear"), hand_config())  # adv_global's terms
    terms = run_terms(model, batch, loss, seed=0)
    assert terms.adv1 is not None and terms.adv2 is not None
    assert terms.adv1.item() == pytest.approx(0.5, rel=1e-5)
    assert terms.adv2.item() == pytest.approx(eq_4_8_by_hand(batch, 0.5, "position"), rel=1e-5)
    _, _, total = stack_loss(model, batch, loss, seed=0)  # the same generator states: the same step
    assert total.item() == pytest.approx(terms.clean.item() + 0.7 * 0.5 + 0.3 * terms.adv2.item(), rel=1e-5)
    # adv_seq: L_B + L_B(S + step), unweighted.
    seq = RunLoss(("bce",), hand_config())
    _, seq_terms, seq_total = stack_loss(model, batch, seq)
    assert seq_terms.adv_seq is not None
    torch.testing.assert_close(seq_total, seq_terms.clean + seq_terms.adv_seq)


def first_order_increase(
    gradients: tuple[torch.Tensor, ...], real: torch.Tensor, epsilon: float, scope: str
) -> float:
    """The rise of a loss under FGSM steps (Eq. 4.7, 4.9), to first order.

    The sum over the perturbed tensors and their norm groups of <g, epsilon g / ||g||> = epsilon ||g||.
    """
    return sum(epsilon * scope_norms(g, real, scope).sum().item() for g in gradients)


@pytest.mark.parametrize("scope", ["batch", "sequence", "position"])
@pytest.mark.parametrize("model_name", ["sasrec", "gru4rec"])
@pytest.mark.parametrize("method", ["adv_linear", "adv_seq", "adv_global", *CASCADE_TERMS_OF])
def test_eq_4_7_4_9_every_perturbed_bce_term_is_an_ascent_step(
    method: str, model_name: str, scope: str, data: SequenceData, cascades: dict[str, torch.Tensor]
) -> None:
    # Adversarial, not helpful: for small epsilon, each perturbed BCE term (L_adv-2 of Eq. 4.8, adv_seq's
    # L_B(S + step)) exceeds L_B on the same batch by epsilon * ||dL_B/dx|| (summed over the norm groups),
    # the first-order rise along the gradient; a step against it would lower the loss by as much. Float64
    # and evaluation mode (no dropout) keep the second-order remainder and the rounding far below that.
    epsilon = 1e-4
    model = new_model(model_name, data.num_items).double()
    batch = padded_batch(data)
    hparams = make_hparams(method, epsilon=epsilon, grad_norm_scope=scope, perturb_space="embedding")
    loss = make_loss(method, hparams, cascades.get(CASCADE_TERMS_OF.get(method, "")), data)
    assert loss.terms
    terms = run_terms(model, batch, loss, dropout=False)
    perturbed = terms.adv_seq if method == "adv_seq" else terms.adv2
    assert perturbed is not None

    mask = batch.pos != 0
    seq_emb = model.item_emb(batch.seqs).detach().requires_grad_()
    reps = model.encode(seq_emb, Packed(batch.seqs))
    pos_emb, neg_emb = model.item_emb(batch.pos).detach(), model.item_emb(batch.neg).detach()
    if method == "adv_seq":
        leaves, real = [seq_emb], batch.seqs != 0
        clean = bce_from_scores((reps * pos_emb).sum(-1), (reps * neg_emb).sum(-1), mask)
    else:
        leaves = [reps.detach().requires_grad_(), pos_emb.requires_grad_(), neg_emb.requires_grad_()]
        real = mask
        clean = bce_from_scores((leaves[0] * pos_emb).sum(-1), (leaves[0] * neg_emb).sum(-1), mask)
    gradients = torch.autograd.grad(clean, leaves)
    torch.testing.assert_close(terms.clean, clean.detach())
    expected = first_order_increase(gradients, real, epsilon, scope)
    assert expected > 0
    assert (perturbed - terms.clean).item() == pytest.approx(expected, rel=0.02)


def test_make_loss_and_the_method_table_refuse_what_they_do_not_know(data: SequenceData) -> None:
    with pytest.raises(
        CatrecError, match=r"method 'base' has no training loss \(one of continued, adv_linear, "
    ):
        make_loss("base", make_hparams("adv_linear"), None, data)
    # A loss is built from the method table alone: an unknown method (or perturbation) has none, and every
    # term of the table is one that ``loss_terms`` computes (none is silently skipped).
    with pytest.raises(CatrecError, match=r"method 'adv_both' has no training loss"):
        make_loss("adv_both", make_hparams("adv_linear"), None, data)
    assert {term for spec in METHOD_SPECS.values() for term in spec.terms} == {
        "bce",
        "representation",
        "linear",
    }
    # What make_loss returns is the method's own loss: its terms from the table, nothing to unwrap or call.
    for method, spec in METHOD_SPECS.items():
        hparams = make_hparams(method)
        cascade = cascade_matrix(data.train_inputs(), BATCH_SIZE, spec.cascade) if spec.cascade else None
        loss = make_loss(method, hparams, cascade, data)
        assert isinstance(loss, RunLoss) and not callable(loss) and loss.terms == spec.terms


def test_eq_4_6_one_real_position_is_its_own_mean() -> None:
    # Eq. 4.6 averaged over one real position is that position's norm (the mean divides by 1, not by 2).
    gap = run_gap(
        torch.tensor([[[9.0, 9.0], [3.0, 4.0]]]), torch.zeros(1, 2, 2), torch.tensor([[False, True]])
    )
    assert gap.item() == pytest.approx(5.0)
    # No real position: 0, not NaN.
    assert run_gap(torch.ones(1, 2, 2), torch.zeros(1, 2, 2), torch.zeros(1, 2, dtype=torch.bool)) == 0


@pytest.mark.parametrize("model_name", ["sasrec", "gru4rec"])
def test_eq_4_6_level1_loss_is_the_gap_of_the_step_taken(
    model_name: str, data: SequenceData, cascade: torch.Tensor
) -> None:
    # L_adv-1 = mean over real positions of ||f(S + A/C) - f(S)||, A the step reported (Eq. 4.6): with the
    # nonlinear networks, f(S - A) gives a measurably different gap, so the sign of A in it shows too.
    model = new_model(model_name, data.num_items)
    batch = padded_batch(data)
    terms = run_terms(model, batch, adversarial_loss("adv_cas", data, cascade, epsilon=3.0), dropout=False)
    assert terms.adv1 is not None and terms.perturbation is not None
    real = batch.seqs != 0
    seq_emb = model.item_emb(batch.seqs).detach()
    with torch.no_grad():
        clean = model.encode(seq_emb, Packed(batch.seqs))
        gaps = {
            sign: (model.encode(seq_emb + sign * terms.perturbation, Packed(batch.seqs)) - clean)
            .norm(dim=-1)[real]
            .mean()
            for sign in (1, -1)
        }
    torch.testing.assert_close(terms.adv1.detach(), gaps[1])
    assert not torch.allclose(gaps[1], gaps[-1], rtol=1e-3)


def stack_run(method: str, out: Path, inputs: Path, **overrides: Any) -> FinetuneRun:
    terms = CASCADE_TERMS_OF.get(method)
    hparams = make_hparams(method, **{"layout": "padded", **overrides})
    directory = out / method
    return FinetuneRun(
        method, hparams, inputs / f"{terms}.pt" if terms else None, directory / "model.pt",
        directory / "curve.csv", directory / "metrics.json", directory / "state",
    )  # fmt: skip


def test_a_stack_writes_for_each_run_what_its_run_alone_writes(
    toy_data_dir: Path, run_inputs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``catrec finetune-stack``: every run's files as ``finetune`` writes them; a changed setting of one
    method retrains that run only, the others resume finished and train no epoch."""
    methods = ("adv_seq", "adv_cas")

    def stack(**adv_cas_overrides: Any) -> dict[str, dict]:
        runs = [stack_run(m, tmp_path / "stack", run_inputs, **(adv_cas_overrides if m == "adv_cas" else {}))
                for m in methods]  # fmt: skip
        finetune_stack(
            data_dir=toy_data_dir, dataset="toy", model_name="sasrec", pretrained=run_inputs / "sasrec.pt",
            runs=runs, device="cpu",
        )  # fmt: skip
        return {run.method: json.loads(run.metrics.read_text()) for run in runs}

    stacked = stack()
    for method in methods:
        alone = run_finetune(method, "sasrec", toy_data_dir, run_inputs, tmp_path / method, layout="padded")
        assert alone["run_id"] == stacked[method]["run_id"] and alone["engine"] == "padded"
        for split in ("valid", "test"):
            assert stacked[method][split] == pytest.approx(alone[split], rel=1e-6), (method, split)
    curve = (tmp_path / "stack" / "adv_seq" / "curve.csv").read_text()
    capsys.readouterr()

    changed = stack(lambda1=2.0)
    log = capsys.readouterr().out
    assert changed["adv_seq"] == stacked["adv_seq"], "adv_seq does not read lambda1"
    assert "resuming" in log and (tmp_path / "stack" / "adv_seq" / "curve.csv").read_text() == curve
    assert changed["adv_cas"]["run_id"] != stacked["adv_cas"]["run_id"]
    assert changed["adv_cas"]["valid"] != stacked["adv_cas"]["valid"]


def test_finetune_stack_refuses_what_it_cannot_stack(
    toy_data_dir: Path, run_inputs: Path, tmp_path: Path
) -> None:
    def stack(runs: list[FinetuneRun]) -> None:
        finetune_stack(data_dir=toy_data_dir, dataset="toy", model_name="sasrec",
                       pretrained=run_inputs / "sasrec.pt", runs=runs, device="cpu")  # fmt: skip

    with pytest.raises(CatrecError, match="share their schedule"):
        stack(
            [stack_run("adv_seq", tmp_path, run_inputs), stack_run("adv_cas", tmp_path, run_inputs, lr=0.1)]
        )
    with pytest.raises(CatrecError, match="the packed layout trains one run at a time, not a stack of 2"):
        stack([stack_run("adv_seq", tmp_path, run_inputs, layout="packed"),
               stack_run("adv_cas", tmp_path, run_inputs, layout="packed")])  # fmt: skip
    with pytest.raises(CatrecError, match="lacks checkpoint"):
        FinetuneRun.from_json({"method": "adv_seq", "hparams": {}})


# The terms of Eq. 4.10 each method computes: a term its equation does not have is not computed at all
# (not merely weighted by 0), so it costs nothing and cannot leak into the loss through a NaN.
TERMS_OF = {
    "adv_linear": {"adv2"},
    "adv_seq": {"adv_seq"},
    "adv_global": {"adv1", "adv2"},
    **{method: {"adv1", "adv2"} for method in CASCADE_TERMS_OF},
}


@pytest.mark.parametrize("method", list(TERMS_OF))
def test_eq_4_10_each_method_computes_exactly_the_terms_of_its_equation(
    method: str, data: SequenceData, cascades: dict[str, torch.Tensor]
) -> None:
    hparams = make_hparams(method)
    loss = make_loss(method, hparams, cascades.get(CASCADE_TERMS_OF.get(method, "")), data)
    assert loss.terms == METHOD_SPECS[method].terms
    terms = run_terms(new_model("sasrec", data.num_items), padded_batch(data), loss)
    computed = {name for name in ("adv1", "adv2", "adv_seq") if getattr(terms, name) is not None}
    assert computed == TERMS_OF[method]


def test_check_cascade_names_the_file_and_what_is_wrong(data: SequenceData) -> None:
    """Every refusal of a cascade matrix names its source and the fault (one clear error, never a crash)."""
    good = cascade_matrix(data.train_inputs(), BATCH_SIZE)
    with pytest.raises(CatrecError, match=r"^c\.pt: 'cascade' holds list, not a float matrix C$"):
        check_cascade([1.0], data, "c.pt")
    with pytest.raises(CatrecError, match=r"^c\.pt: 'cascade' holds torch\.int64, not a float matrix C$"):
        check_cascade(good.long(), data, "c.pt")
    with pytest.raises(CatrecError, match=r"^the cascade matrix: C has shape .*same max_len\?$"):
        check_cascade(good[:, 1:], data)
    infinite = good.clone()
    infinite[0, -1] = torch.inf
    with pytest.raises(CatrecError, match=r"^c\.pt: C holds NaN or infinite values$"):
        check_cascade(infinite, data, "c.pt")
    misplaced = good.clone()
    misplaced[0, -1] = 0.0
    with pytest.raises(CatrecError, match=r"^c\.pt: C is positive at 1 position\(s\) .*from this dataset\?$"):
        check_cascade(misplaced, data, "c.pt")
    check_cascade(good, data, "c.pt")
