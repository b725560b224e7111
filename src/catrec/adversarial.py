"""Adversarial fine-tuning: the losses of Eq. 4.6-4.10, the methods of Table 2 and the ``finetune`` stage.

Level 1 (Eq. 4.6-4.7) perturbs the sequence embeddings S = E[seqs] and penalises the change of the user
representations w = f(S); level 2 (Eq. 4.8-4.9) perturbs w and the target and negative item embeddings and
applies the BCE loss to the perturbed scores. Every perturbation is an FGSM step of norm epsilon, constant
(detached) while the model minimises the total loss of Eq. 4.10. Choices the paper leaves open are switches
of the ``adversarial:`` config section, explained in docs/reproduction-notes.md.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch

from catrec.cascade import inverse_cascade_mean, perturbation_factors
from catrec.errors import CatrecError
from catrec.io import atomic_path, load_torch_file
from catrec.models import SequentialRecommender
from catrec.schemas import CURVE_COLUMNS, METHODS
from catrec.train import (
    SPLITS,
    Batch,
    LossFn,
    SequenceData,
    TrainConfig,
    bce_from_scores,
    bce_loss,
    evaluate,
    fit,
    load_model,
    resolve_device,
    save_model,
    seed_everything,
    write_metrics_json,
)

# Which cascade file (``catrec cascade --terms``) each cascade-guided method needs.
CASCADE_TERMS_OF = {"adv_cas": "both", "adv_cas_temporal": "temporal", "adv_cas_cross": "cross"}
# Guards the division of an all-zero gradient (padding positions, a flat loss): 0 / tiny = 0, never NaN.
_TINY = 1e-12

FactorFn = Callable[[Batch], torch.Tensor]


@dataclass(frozen=True)
class AdversarialConfig:
    """The ``adversarial:`` keys of ``--hparams`` (defaults: config/config.yaml)."""

    epsilon: float = 10.0
    lambda1: float = 1.0
    lambda2: float = 1.0
    grad_norm_scope: str = "batch"  # batch | sequence | position
    init_noise: float = 1e-3
    cascade_normalization: str = "dataset"  # dataset | batch
    fgsm_gradient: str = "perturbation"  # perturbation | input

    @classmethod
    def from_hparams(cls, hparams: Mapping[str, Any]) -> AdversarialConfig:
        names = {field.name for field in fields(cls)}
        config = cls(**{key: value for key, value in hparams.items() if key in names})
        choices = {
            "grad_norm_scope": ("batch", "sequence", "position"),
            "cascade_normalization": ("dataset", "batch"),
            "fgsm_gradient": ("perturbation", "input"),
        }
        for key, allowed in choices.items():
            if getattr(config, key) not in allowed:
                raise CatrecError(f"--hparams {key} must be one of {allowed}, got '{getattr(config, key)}'")
        return config


def uniform_factors(batch: Batch) -> torch.Tensor:
    """Factors of adv_global: 1 at every real position (already of mean 1), 0 at padding."""
    return (batch.seqs != 0).float()


class CascadeFactors:
    """The normalised factors 1/C (``catrec.cascade.perturbation_factors``) of a batch's rows of C."""

    def __init__(self, cascade: torch.Tensor, normalization: str) -> None:
        self._cascade = cascade
        self._mean_inverse = inverse_cascade_mean(cascade) if normalization == "dataset" else None

    def __call__(self, batch: Batch) -> torch.Tensor:
        if self._cascade.device != batch.seqs.device:
            self._cascade = self._cascade.to(batch.seqs.device)
        # A batch holds the last L columns of the (m, T) training inputs; C is aligned with those.
        rows = self._cascade[batch.users, -batch.seqs.shape[1] :]
        return perturbation_factors(rows, batch.seqs != 0, self._mean_inverse)


class _SameDropout:
    """``model.encode`` replayed from one saved RNG state (CPU and CUDA): every pass draws the same masks.

    The adversarial terms compare perturbed passes with the clean one; with fresh dropout masks, ||w_hat - w||
    would mostly measure dropout noise (and the FGSM step would chase it), and epsilon = 0 would not give
    back the clean loss.
    """

    def __init__(self, model: SequentialRecommender, seqs: torch.Tensor) -> None:
        self._model, self._seqs = model, seqs
        self._cpu_state = torch.get_rng_state()
        self._cuda_state = torch.cuda.get_rng_state(seqs.device) if seqs.device.type == "cuda" else None

    def __call__(self, seq_emb: torch.Tensor) -> torch.Tensor:
        torch.set_rng_state(self._cpu_state)
        if self._cuda_state is not None:
            torch.cuda.set_rng_state(self._cuda_state, self._seqs.device)
        return self._model.encode(seq_emb, self._seqs)


def fgsm_step(gradient: torch.Tensor, real: torch.Tensor, epsilon: float, scope: str) -> torch.Tensor:
    """epsilon * g / ||g||_2 (Eq. 4.7, 4.9) for (B, L, d) ``g``, zero where ``real`` (B, L) is False.

    ``scope`` 'batch': one norm over the whole batch tensor; 'sequence': one over all real positions x d of
    each row; 'position': one per d-vector.
    """
    gradient = torch.where(real.unsqueeze(-1), gradient, torch.zeros_like(gradient))
    if scope == "batch":
        norm = gradient.norm()
    elif scope == "sequence":
        norm = gradient.flatten(1).norm(dim=1).view(-1, 1, 1)
    else:
        norm = gradient.norm(dim=-1, keepdim=True)
    return epsilon * gradient / norm.clamp_min(_TINY)


def representation_gap(perturbed: torch.Tensor, clean: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """L_adv-1 (Eq. 4.6): ||w_hat - w||_2 over d at each real position, averaged over the real positions."""
    gaps = (perturbed - clean).norm(dim=-1)
    return torch.where(real, gaps, torch.zeros_like(gaps)).sum() / real.sum().clamp(min=1)


def _bce(
    reps: torch.Tensor, pos_emb: torch.Tensor, neg_emb: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Eq. 3.5 on the scores w^T e (Eq. 3.4) of given, possibly perturbed, embeddings."""
    return bce_from_scores((reps * pos_emb).sum(-1), (reps * neg_emb).sum(-1), mask)


@dataclass
class LossTerms:
    """The parts of one batch's loss; ``perturbation`` is what was added to S (detached), for inspection."""

    clean: torch.Tensor  # L_B
    adv1: torch.Tensor | None = None  # L_adv-1, Eq. 4.6
    adv2: torch.Tensor | None = None  # L_adv-2, Eq. 4.8
    adv_seq: torch.Tensor | None = None  # L_B with perturbed S (adv_seq)
    perturbation: torch.Tensor | None = None


class AdversarialLoss:
    """The loss of one adversarial method; calling it returns the total (Eq. 4.10 for adv_global/adv_cas*).

    ``sequence``: how S is perturbed: None; 'bce' (adv_seq: along dL_B/dS, loss L_B + L_B(S + step)); or
    'representation' (level 1, Eq. 4.6-4.7, scaled by ``factors``). ``linear``: level 2 (Eq. 4.8-4.9).
    """

    def __init__(
        self,
        config: AdversarialConfig,
        *,
        sequence: str | None,
        linear: bool,
        factors: FactorFn = uniform_factors,
    ) -> None:
        if sequence not in (None, "bce", "representation"):
            raise ValueError(f"unknown sequence perturbation '{sequence}'")
        self.config = config
        self.sequence = sequence
        self.linear = linear
        self.factors = factors

    def __call__(self, model: SequentialRecommender, batch: Batch) -> torch.Tensor:
        terms = self.terms(model, batch)
        loss = terms.clean
        if terms.adv_seq is not None:
            loss = loss + terms.adv_seq
        if terms.adv1 is not None:
            loss = loss + self.config.lambda1 * terms.adv1
        if terms.adv2 is not None:
            loss = loss + self.config.lambda2 * terms.adv2
        return loss

    def terms(self, model: SequentialRecommender, batch: Batch) -> LossTerms:
        config = self.config
        real, mask = batch.seqs != 0, batch.pos != 0
        # S: the raw embedding rows; model-internal scaling (SASRec's sqrt(d)) comes after the perturbation.
        seq_emb = model.item_emb(batch.seqs)
        # Drawn before the RNG state is saved, so these numbers are never reused as dropout masks.
        noise = torch.randn_like(seq_emb) if self.sequence == "representation" else None
        encode = _SameDropout(model, batch.seqs)
        reps = encode(seq_emb)
        pos_emb, neg_emb = model.item_emb(batch.pos), model.item_emb(batch.neg)
        terms = LossTerms(clean=_bce(reps, pos_emb, neg_emb, mask))

        if self.sequence == "bce":
            (gradient,) = torch.autograd.grad(terms.clean, seq_emb, retain_graph=True)
            terms.perturbation = fgsm_step(gradient, real, config.epsilon, config.grad_norm_scope)
            terms.adv_seq = _bce(encode(seq_emb + terms.perturbation), pos_emb, neg_emb, mask)
        elif noise is not None:  # 'representation': level 1, Eq. 4.6-4.7
            factors = self.factors(batch).unsqueeze(-1)
            # ||f(S + A/C) - w|| has a zero gradient at A = 0, so the FGSM step starts from a small random
            # A0 (one power-iteration step towards the most sensitive direction, as in virtual adversarial
            # training).
            start = fgsm_step(noise, real, config.init_noise, config.grad_norm_scope)
            probe = (seq_emb.detach() + factors * start).requires_grad_()
            gap = representation_gap(encode(probe), reps.detach(), real)
            (gradient,) = torch.autograd.grad(gap, probe)
            if config.fgsm_gradient == "perturbation":
                gradient = gradient * factors  # chain rule: d/dA of f(S + (1/C) * A)
            step = fgsm_step(gradient, real, config.epsilon, config.grad_norm_scope)
            terms.perturbation = factors * step
            terms.adv1 = representation_gap(encode(seq_emb + terms.perturbation), reps, real)

        if self.linear:
            # h of Eq. 4.9: gradients of the BCE at zero perturbation w.r.t. w, e_pos and e_neg, each of the
            # three normalised on its own within the configured scope.
            leaves = [tensor.detach().requires_grad_() for tensor in (reps, pos_emb, neg_emb)]
            gradients = torch.autograd.grad(_bce(*leaves, mask), leaves)
            scope = config.grad_norm_scope
            deltas = [fgsm_step(gradient, mask, config.epsilon, scope) for gradient in gradients]
            terms.adv2 = _bce(reps + deltas[0], pos_emb + deltas[1], neg_emb + deltas[2], mask)
        return terms


def check_cascade(cascade: torch.Tensor, data: SequenceData) -> None:
    """C must belong to exactly these training inputs: same shape, real exactly where the items are."""
    inputs = data.train_inputs()
    if cascade.shape != inputs.shape or not torch.equal(cascade > 0, inputs != 0):
        raise CatrecError(
            f"the cascade matrix (shape {tuple(cascade.shape)}) does not match the training inputs "
            f"(shape {tuple(inputs.shape)}): was it computed from this dataset with the same max_len?"
        )


def make_loss(
    method: str, hparams: Mapping[str, Any], cascade: torch.Tensor | None, data: SequenceData
) -> LossFn:
    """The training loss of ``method`` (one of ``METHODS`` except 'base', which is not trained)."""
    config = AdversarialConfig.from_hparams(hparams)
    if method == "continued":
        return bce_loss
    if method == "adv_linear":
        return AdversarialLoss(config, sequence=None, linear=True)
    if method == "adv_seq":
        return AdversarialLoss(config, sequence="bce", linear=False)
    if method == "adv_global":
        return AdversarialLoss(config, sequence="representation", linear=True)
    if method in CASCADE_TERMS_OF:
        if cascade is None:
            raise CatrecError(f"method '{method}' needs a cascade matrix (--cascade)")
        check_cascade(cascade, data)
        factors = CascadeFactors(cascade, config.cascade_normalization)
        return AdversarialLoss(config, sequence="representation", linear=True, factors=factors)
    raise CatrecError(f"method '{method}' has no training loss (expected one of {METHODS[1:]})")


def load_cascade(path: str | Path, method: str, batch_size: int) -> torch.Tensor:
    """The cascade matrix saved by ``catrec cascade``, checked against what ``method`` and training expect."""
    path = Path(path)
    if not path.exists():
        raise CatrecError(f"cascade file {path} (for method '{method}') does not exist")
    payload = load_torch_file(path)
    expected = {"terms": CASCADE_TERMS_OF[method], "batch_size": batch_size}
    for key, value in expected.items():
        if payload[key] != value:
            raise CatrecError(f"{path} has {key}={payload[key]!r}; method '{method}' needs {key}={value!r}")
    return payload["cascade"]


def finetune(
    *,
    data_dir: str | Path,
    hparams: Mapping[str, Any],
    dataset: str,
    model_name: str,
    method: str,
    pretrained: str | Path,
    cascade: str | Path | None,
    checkpoint: str | Path,
    curve: str | Path,
    metrics: str | Path,
    state_dir: str | Path,
) -> None:
    """Fine-tune a pretrained model with ``method`` and write its weights, curve and metrics.

    'base' trains nothing: it reports the pretrained model (its weights copied, a curve with only the header).
    The metrics JSON carries ``epsilon`` (None for methods without perturbation) and ``selected_epoch``.
    """
    if method not in METHODS:
        raise CatrecError(f"unknown method '{method}' (expected one of {METHODS})")
    config = TrainConfig.from_hparams(hparams)
    device = resolve_device(config.device)
    if device.type == "cpu":
        torch.set_num_threads(config.threads)
    seed_everything(config.seed)
    model = load_model(pretrained, device)
    if model.config.name != model_name or model.config.max_len != config.max_len:
        raise CatrecError(
            f"{pretrained} holds {model.config.name} with max_len {model.config.max_len}; "
            f"expected {model_name} with max_len {config.max_len}"
        )
    data = SequenceData.from_dir(data_dir, config.max_len)
    epoch_offset = int(hparams.get("epoch_offset", 0))
    record = {"dataset": dataset, "model": model_name, "method": method, "seed": config.seed}

    if method == "base":
        scores = {split: evaluate(model, data, split) for split in SPLITS}
        save_model(checkpoint, model)
        with atomic_path(curve) as temporary:
            temporary.write_text(",".join(CURVE_COLUMNS) + "\n")
        write_metrics_json(metrics, **record, **scores, epsilon=None, selected_epoch=epoch_offset)
        return

    cascade_matrix = None
    if method in CASCADE_TERMS_OF and cascade is not None:
        cascade_matrix = load_cascade(cascade, method, config.batch_size)
    loss_fn = make_loss(method, hparams, cascade_matrix, data)
    result = fit(
        model,
        data,
        loss_fn,
        config,
        phase="finetune",
        curve_path=curve,
        state_dir=state_dir,
        epoch_offset=epoch_offset,
        model_selection=hparams.get("model_selection", "best_valid"),
        loss_settings={"method": method, **asdict(AdversarialConfig.from_hparams(hparams))},
    )
    save_model(checkpoint, model)
    epsilon = loss_fn.config.epsilon if isinstance(loss_fn, AdversarialLoss) else None
    write_metrics_json(
        metrics,
        **record,
        valid=result.valid,
        test=result.test,
        epsilon=epsilon,
        selected_epoch=result.selected_epoch,
    )
