"""Adversarial losses (Eq. 4.6-4.10), the methods and the finetune stage, on the toy data with tiny models."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from catrec.adversarial import (
    AdversarialConfig,
    AdversarialLoss,
    CascadeFactors,
    fgsm_step,
    make_loss,
    representation_gap,
)
from catrec.cascade import cascade_matrix
from catrec.config import stage_keys
from catrec.data.batches import Batch, iterate_batches
from catrec.data.sequences import SequenceData
from catrec.errors import CatrecError
from catrec.losses import bce_loss
from catrec.models import ModelConfig, SequentialRecommender, build_model, load_model, save_model
from catrec.stages.cascade import write_cascade
from catrec.stages.finetune import finetune
from catrec.vocabulary import ADVERSARIAL_KEYS_OF, CASCADE_TERMS_OF, CURVE_COLUMNS

MAX_LEN, HIDDEN, BATCH_SIZE = 16, 16, 64
TRAINED_METHODS = ("continued", "adv_linear", "adv_seq", "adv_global", *CASCADE_TERMS_OF)
METRICS_KEYS = {"dataset", "model", "method", "seed", "valid", "test", "epsilon", "selected_epoch", "run_id"}


def make_hparams(method: str = "adv_cas", **overrides: Any) -> dict[str, Any]:
    """Exactly the ``--hparams`` keys ``catrec finetune`` reads for ``method``, as the pipeline passes."""
    hparams = {
        "seed": 0, "max_len": MAX_LEN, "batch_size": BATCH_SIZE, "lr": 0.01, "l2": 0.0, "epochs": 1,
        "eval_every": 1, "checkpoint_every": 1, "bucket_by_length": True, "epoch_offset": 20,
        "epsilon": 1.0, "lambda1": 1.0, "lambda2": 1.0, "grad_norm_scope": "sequence", "init_noise": 1e-3,
        "cascade_normalization": "dataset", "fgsm_gradient": "perturbation", "model_selection": "best_valid",
    }  # fmt: skip
    hparams.update(overrides)
    return {key: hparams[key] for key in stage_keys("finetune", model="sasrec", method=method)}


def new_model(name: str, num_items: int, seed: int = 0) -> SequentialRecommender:
    torch.manual_seed(seed)
    config = ModelConfig(
        name, num_items, MAX_LEN, hidden_size=HIDDEN, dropout=0.2, num_blocks=1, num_heads=1,
        layer_norm="pre", num_layers=1,
    )  # fmt: skip
    return build_model(config)


def padded_batch(data: SequenceData, seed: int = 0, size: int = 48) -> Batch:
    """A batch padded to T (no bucketing), so that it holds short, left-padded sequences."""
    batch = next(iterate_batches(data, size, torch.Generator().manual_seed(seed), bucket_by_length=False))
    assert (batch.seqs == 0).any() and (batch.seqs != 0).any()
    return batch


@pytest.fixture(scope="module")
def data(toy_data_dir: Path) -> SequenceData:
    return SequenceData.from_dir(toy_data_dir, MAX_LEN)


@pytest.fixture(scope="module")
def cascade(data: SequenceData) -> torch.Tensor:
    return cascade_matrix(data.train_inputs(), BATCH_SIZE, "both")


def adversarial_loss(
    method: str, data: SequenceData, cascade: torch.Tensor, **overrides: Any
) -> AdversarialLoss:
    cascade_or_none = cascade if method in CASCADE_TERMS_OF else None
    loss = make_loss(method, make_hparams(method, **overrides), cascade_or_none, data)
    assert isinstance(loss, AdversarialLoss)
    return loss


@pytest.mark.parametrize("model_name", ["sasrec", "gru4rec"])
@pytest.mark.parametrize("method", ["adv_linear", "adv_seq", "adv_global", "adv_cas"])
def test_zero_epsilon_gives_back_the_clean_loss(
    model_name: str, method: str, data: SequenceData, cascade: torch.Tensor
) -> None:
    model = new_model(model_name, data.num_items).train()
    batch = padded_batch(data)
    # Dropout is active: two plain passes differ, so equality below needs the replayed masks.
    assert not torch.equal(model(batch.seqs), model(batch.seqs))
    loss = adversarial_loss(method, data, cascade, epsilon=0.0)
    terms = loss.terms(model, batch)
    for perturbed in (terms.adv2, terms.adv_seq):
        if perturbed is not None:
            assert torch.equal(perturbed, terms.clean)
    if terms.adv1 is not None:
        assert terms.adv1.item() == 0.0
    if terms.perturbation is not None:
        assert (terms.perturbation == 0).all()
    loss(model, batch).backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("model_name", ["sasrec", "gru4rec"])
@pytest.mark.parametrize("method", ["adv_seq", "adv_global", "adv_cas"])
def test_padding_is_never_perturbed(
    model_name: str, method: str, data: SequenceData, cascade: torch.Tensor
) -> None:
    batch = padded_batch(data)
    terms = adversarial_loss(method, data, cascade).terms(
        new_model(model_name, data.num_items).train(), batch
    )
    assert terms.perturbation is not None
    real = batch.seqs != 0
    assert (terms.perturbation[~real] == 0).all()
    assert (terms.perturbation[real].norm(dim=-1) > 0).all()


@pytest.mark.parametrize("scope", ["batch", "sequence", "position"])
def test_level1_step_has_norm_epsilon_before_the_cascade_factors(
    scope: str, data: SequenceData, cascade: torch.Tensor
) -> None:
    batch = padded_batch(data)
    loss = adversarial_loss("adv_cas", data, cascade, epsilon=2.5, grad_norm_scope=scope)
    terms = loss.terms(new_model("sasrec", data.num_items).train(), batch)
    assert terms.perturbation is not None
    real = batch.seqs != 0
    factors = CascadeFactors(cascade, "dataset")(batch)
    step = torch.where(real.unsqueeze(-1), terms.perturbation / factors.clamp_min(1e-9).unsqueeze(-1), 0.0)
    norms = {
        "batch": step.norm().reshape(1),
        "sequence": step.flatten(1).norm(dim=1),
        "position": step.norm(dim=-1)[real],
    }[scope]
    torch.testing.assert_close(norms, torch.full_like(norms, 2.5))


def test_lower_cascade_positions_get_larger_perturbations(data: SequenceData, cascade: torch.Tensor) -> None:
    batch = padded_batch(data)
    # Per-position norms make ||A|| = epsilon at every position, so only 1/C tells positions apart.
    loss = adversarial_loss("adv_cas", data, cascade, grad_norm_scope="position")
    terms = loss.terms(new_model("sasrec", data.num_items).train(), batch)
    assert terms.perturbation is not None
    real = batch.seqs != 0
    norms = terms.perturbation.norm(dim=-1)
    rows = cascade[batch.users, -batch.seqs.shape[1] :]
    torch.testing.assert_close(norms[real], CascadeFactors(cascade, "dataset")(batch)[real])
    compared = 0
    for row_cascade, row_norms, row_real in zip(rows, norms, real, strict=True):
        values, sizes = row_cascade[row_real], row_norms[row_real]
        if values.min() < values.max():
            assert sizes[values.argmin()] > sizes[values.argmax()]
            compared += 1
    assert compared > 10


def toy_trained(name: str, data: SequenceData, epochs: int = 10) -> SequentialRecommender:
    """A model trained briefly on the clean BCE: unlike a fresh one, f(S) has clearly preferred directions."""
    model = new_model(name, data.num_items).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    generator = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        for batch in iterate_batches(data, BATCH_SIZE, generator, bucket_by_length=True):
            optimizer.zero_grad()
            bce_loss(model, batch).backward()
            optimizer.step()
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
    # Evaluation mode (load_model's): no dropout, so both gaps are measured on the same deterministic f.
    model = load_model(run_inputs / f"{model_name}.pt", "cpu")
    loss = adversarial_loss("adv_global", data, cascade, epsilon=0.5)
    adversarial, random = [], []
    for seed in range(4):
        batch = padded_batch(data, seed=seed)
        terms = loss.terms(model, batch)
        assert terms.adv1 is not None
        real = batch.seqs != 0
        seq_emb = model.item_emb(batch.seqs).detach()
        direction = fgsm_step(torch.randn_like(seq_emb), real, 0.5, "sequence")
        with torch.no_grad():
            clean = model.encode(seq_emb, batch.seqs)
            random.append(representation_gap(model.encode(seq_emb + direction, batch.seqs), clean, real))
        adversarial.append(terms.adv1.detach())
    assert torch.stack(adversarial).mean() > 1.5 * torch.stack(random).mean()


def test_batch_factors_follow_the_trimmed_columns_and_have_mean_one(
    data: SequenceData, cascade: torch.Tensor
) -> None:
    generator = torch.Generator().manual_seed(0)
    for batch in iterate_batches(data, 32, generator, bucket_by_length=True):
        real = batch.seqs != 0
        factors = CascadeFactors(cascade, "batch")(batch)
        assert torch.equal(factors > 0, real), "the last L columns of C line up with the trimmed batch"
        torch.testing.assert_close(factors[real].mean(), torch.tensor(1.0))


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
def test_adversarial_config_reads_only_the_keys_of_its_method(method: str) -> None:
    config = AdversarialConfig.from_hparams(method, make_hparams(method))
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
    # The temporal-only file handed to adv_cas is refused before any training.
    with pytest.raises(CatrecError, match="terms='temporal'"):
        finetune(
            data_dir=toy_data_dir, hparams=make_hparams("adv_cas"), dataset="toy", model_name="sasrec",
            method="adv_cas", pretrained=run_inputs / "sasrec.pt", cascade=run_inputs / "temporal.pt",
            checkpoint=tmp_path / "model.pt", curve=tmp_path / "curve.csv", metrics=tmp_path / "metrics.json",
            state_dir=tmp_path / "state", device="cpu",
        )  # fmt: skip
    assert not (tmp_path / "model.pt").exists()


def test_fgsm_gradient_switch_differs_by_the_chain_rule_factor(
    data: SequenceData, cascade: torch.Tensor
) -> None:
    # 'perturbation' steps along d/dA = (1/C) * d/dS of f(S + A / C); 'input' along d/dS (paper's notation).
    batch = padded_batch(data)
    model = new_model("sasrec", data.num_items).train()
    steps = {}
    for variant in ("perturbation", "input"):
        torch.manual_seed(3)  # same random start and dropout masks for both
        terms = adversarial_loss("adv_cas", data, cascade, fgsm_gradient=variant).terms(model, batch)
        assert terms.perturbation is not None
        steps[variant] = terms.perturbation
    real = (batch.seqs != 0).unsqueeze(-1)
    factors = CascadeFactors(cascade, "dataset")(batch).unsqueeze(-1)
    along_input = torch.where(real, steps["input"] * factors, 0.0).flatten(1)
    along_perturbation = steps["perturbation"].flatten(1)
    cosine = torch.nn.functional.cosine_similarity(along_input, along_perturbation, dim=1)
    torch.testing.assert_close(cosine, torch.ones_like(cosine))
    assert not torch.allclose(steps["input"], steps["perturbation"])
