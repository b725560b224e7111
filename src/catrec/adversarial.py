"""Adversarial fine-tuning: the losses of Eq. 4.6-4.10 and the methods of Table 2.

Level 1 (Eq. 4.6-4.7) perturbs the sequence embeddings S, the tensor the network takes as input (SASRec:
sqrt(d) E[seqs]; GRU4Rec: E[seqs]; ``perturb_space``), and penalises the change of the user representations
w = f(S); level 2 (Eq. 4.8-4.9) perturbs w and the target and negative item embeddings and applies the BCE
loss to the perturbed scores. Every perturbation is an FGSM step of total norm epsilon within its norm scope,
constant (detached) while the model minimises the total loss of Eq. 4.10. The cascade factors 1/C of
adv_cas redistribute that budget across positions (more on the last items); they never change its total,
so every method that perturbs S adds a perturbation of the same norm (section 5.5). Choices the paper leaves
open are switches of the ``adversarial:`` config section, explained in docs/reproduction-notes.md. Pure
computation: the ``finetune`` stage (``catrec.stages.finetune``) reads and writes the files.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch

from catrec.cascade import perturbation_factors
from catrec.data.batches import Batch
from catrec.data.sequences import SequenceData
from catrec.errors import CatrecError
from catrec.losses import LossFn, bce_from_scores, bce_loss
from catrec.models import SequentialRecommender
from catrec.models.stack import ModelStack
from catrec.vocabulary import ADVERSARIAL_KEYS_OF

# Guards the division of an all-zero gradient (padding positions, a flat loss): 0 / tiny = 0, never NaN.
_TINY = 1e-12

FactorFn = Callable[[Batch], torch.Tensor]
# What the loss computes with: one model, or K stacked runs of one architecture.
Network = SequentialRecommender | ModelStack


@dataclass(frozen=True)
class AdversarialConfig:
    """The ``adversarial:`` keys one method reads (``ADVERSARIAL_KEYS_OF``); the others stay None."""

    epsilon: float | None = None
    lambda1: float | None = None
    lambda2: float | None = None
    grad_norm_scope: str | None = None  # batch | sequence | position
    init_noise: float | None = None
    perturb_space: str | None = None  # input | embedding

    @classmethod
    def from_hparams(cls, method: str, hparams: Mapping[str, Any]) -> AdversarialConfig:
        """The keys ``method`` reads from a ``--hparams`` validated by ``catrec.config.read_hparams``."""
        return cls(**{key: hparams[key] for key in ADVERSARIAL_KEYS_OF[method]})


def uniform_factors(batch: Batch) -> torch.Tensor:
    """Factors of adv_global: 1 at every real position, 0 at padding."""
    return (batch.seqs != 0).float()


class CascadeFactors:
    """The factors 1/C (``catrec.cascade.perturbation_factors``) of a batch's rows of C."""

    def __init__(self, cascade: torch.Tensor) -> None:
        self._cascade = cascade

    def __call__(self, batch: Batch) -> torch.Tensor:
        if self._cascade.device != batch.seqs.device:
            self._cascade = self._cascade.to(batch.seqs.device)
        # A batch holds the last L columns of the (m, T) training inputs; C is aligned with those.
        rows = self._cascade[batch.users, -batch.seqs.shape[1] :]
        return perturbation_factors(rows, batch.seqs != 0)


Encoder = Callable[[torch.Tensor], torch.Tensor]


def same_dropout(model: Network, seqs: torch.Tensor) -> Encoder:
    """``model.encode`` of ``seqs`` under the same dropout masks in every pass.

    The adversarial terms compare perturbed passes with the clean one; with fresh dropout masks, ||w_hat - w||
    would mostly measure dropout noise (and the FGSM step would chase it), and epsilon = 0 would not give
    back the clean loss. A single model replays the RNG state before each pass; the static engine's stack
    of runs, whose step may be a CUDA graph without host code between the passes, draws each step's masks
    once (``ModelStack.draw``), and every pass of the step applies them.
    """
    if isinstance(model, ModelStack):
        return partial(_encode_stack, model, seqs=seqs)
    return _SameDropout(model, seqs)


def _encode_stack(stack: ModelStack, seq_emb: torch.Tensor, seqs: torch.Tensor) -> torch.Tensor:
    return stack.encode(seq_emb, seqs)


class _SameDropout:
    """``model.encode`` replayed from one saved RNG state (CPU and CUDA): every pass draws the same masks."""

    def __init__(self, model: SequentialRecommender, seqs: torch.Tensor) -> None:
        self._model, self._seqs = model, seqs
        self._cpu_state = torch.get_rng_state()
        self._cuda_state = torch.cuda.get_rng_state(seqs.device) if seqs.device.type == "cuda" else None

    def __call__(self, seq_emb: torch.Tensor) -> torch.Tensor:
        torch.set_rng_state(self._cpu_state)
        if self._cuda_state is not None:
            torch.cuda.set_rng_state(self._cuda_state, self._seqs.device)
        return self._model.encode(seq_emb, self._seqs)


def fgsm_step(
    gradient: torch.Tensor, real: torch.Tensor, epsilon: float | torch.Tensor, scope: str
) -> torch.Tensor:
    """epsilon * g / ||g||_2 (Eq. 4.7, 4.9) for (B, L, d) ``g``, zero where ``real`` (B, L) is False.

    ``scope`` 'batch': one norm over the whole batch tensor; 'sequence': one over all real positions x d of
    each row; 'position': one per d-vector. A stack's (K, B, L, d) gradient gets one step per run, each
    normalised within its own run (``epsilon`` then per run, broadcastable to (K, 1, 1, 1)).
    """
    gradient = torch.where(real.unsqueeze(-1), gradient, torch.zeros_like(gradient))
    if scope == "batch":
        norm = gradient.flatten(-3).norm(dim=-1)[..., None, None, None]
    elif scope == "sequence":
        norm = gradient.flatten(-2).norm(dim=-1)[..., None, None]
    else:
        norm = gradient.norm(dim=-1, keepdim=True)
    return epsilon * gradient / norm.clamp_min(_TINY)


def representation_gap(perturbed: torch.Tensor, clean: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """L_adv-1 (Eq. 4.6): ||w_hat - w||_2 over d at each real position, averaged over the real positions
    (of each run, for a stack's (K, B, L, d) representations)."""
    gaps = (perturbed - clean).norm(dim=-1)
    return torch.where(real, gaps, torch.zeros_like(gaps)).sum((-2, -1)) / real.sum((-2, -1)).clamp(min=1)


def _bce(
    reps: torch.Tensor, pos_emb: torch.Tensor, neg_emb: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Eq. 3.5 on the scores w^T e (Eq. 3.4) of given, possibly perturbed, embeddings."""
    return bce_from_scores((reps * pos_emb).sum(-1), (reps * neg_emb).sum(-1), mask)


@dataclass
class LossTerms:
    """The parts of one batch's loss; ``perturbation`` is what was added to S (detached), for inspection.

    For a stack of K runs, each term holds one value per run (K,).
    """

    clean: torch.Tensor  # L_B
    adv1: torch.Tensor | None = None  # L_adv-1, Eq. 4.6
    adv2: torch.Tensor | None = None  # L_adv-2, Eq. 4.8
    adv_seq: torch.Tensor | None = None  # L_B with perturbed S (adv_seq)
    perturbation: torch.Tensor | None = None


Coefficient = float | torch.Tensor


@dataclass(frozen=True)
class LossCoefficients:
    """What one run's loss computes, or a stack's (each value then a (K,) tensor, one per run).

    Every method is Eq. 4.10 with terms switched off: ``bce_weight`` weighs adv_seq's L_B(S + step) (1 or 0),
    ``lambda1`` L_adv-1 and ``lambda2`` L_adv-2 (0 where the run's method has no such level); ``uses``
    names the terms any run computes, so a term no run uses costs nothing. ``input_space`` (1 or 0): the
    budgets are norms in the network's input space (``perturb_space: input``) rather than on the rows.
    """

    uses: frozenset[str]  # 'bce' (adv_seq), 'representation' (level 1), 'linear' (level 2)
    bce_weight: Coefficient = 0.0
    lambda1: Coefficient = 0.0
    lambda2: Coefficient = 0.0
    epsilon: Coefficient = 0.0
    init_noise: Coefficient = 0.0
    input_space: Coefficient = 1.0
    scope: str = "batch"


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
        self.factors = factors
        uses = {kind for kind in (sequence, "linear" if linear else None) if kind is not None}
        self.coefficients = LossCoefficients(
            uses=frozenset(uses),
            bce_weight=1.0 if sequence == "bce" else 0.0,
            lambda1=config.lambda1 if sequence == "representation" and config.lambda1 is not None else 0.0,
            lambda2=config.lambda2 if linear and config.lambda2 is not None else 0.0,
            epsilon=config.epsilon or 0.0,
            init_noise=config.init_noise or 0.0,
            input_space=1.0 if config.perturb_space in ("input", None) else 0.0,
            scope=config.grad_norm_scope or "batch",
        )

    def __call__(self, model: SequentialRecommender, batch: Batch) -> torch.Tensor:
        return total_loss(self.terms(model, batch), self.coefficients)

    def terms(self, model: SequentialRecommender, batch: Batch) -> LossTerms:
        return loss_terms(model, batch, self.coefficients, self.factors)


CLEAN_ONLY = LossCoefficients(uses=frozenset())
# The coefficients that vary from run to run (a stack holds each as a (K,) tensor).
STACKED_COEFFICIENTS = ("bce_weight", "lambda1", "lambda2", "epsilon", "init_noise", "input_space")


def loss_coefficients(loss_fn: LossFn) -> tuple[LossCoefficients, FactorFn]:
    """What a loss of ``make_loss`` computes: an ``AdversarialLoss``'s coefficients, or the clean BCE's."""
    if isinstance(loss_fn, AdversarialLoss):
        return loss_fn.coefficients, loss_fn.factors
    if loss_fn is bce_loss:
        return CLEAN_ONLY, uniform_factors
    raise ValueError(f"{loss_fn!r} is not a loss of catrec.adversarial.make_loss")


def stack_coefficients(losses: Sequence[LossFn], device: torch.device) -> tuple[LossCoefficients, FactorFn]:
    """The losses of K runs (of ``make_loss``) as one stack's: each coefficient a (K,) tensor on ``device``,
    the factors of each run computed on its own rows. The runs that perturb must share one norm scope."""
    parts = [loss_coefficients(loss) for loss in losses]
    scopes = {coefficients.scope for coefficients, _ in parts if coefficients.uses}
    if len(scopes) > 1:
        raise CatrecError(f"the runs of a stack use different grad_norm_scope values: {sorted(scopes)}")

    def column(name: str) -> torch.Tensor:
        return torch.tensor([float(getattr(coefficients, name)) for coefficients, _ in parts], device=device)

    stacked = LossCoefficients(
        uses=frozenset().union(*(coefficients.uses for coefficients, _ in parts)),
        **{name: column(name) for name in STACKED_COEFFICIENTS},
        scope=scopes.pop() if scopes else "batch",
    )
    return stacked, partial(_stacked_factors, [factors for _, factors in parts])


def _stacked_factors(factors: list[FactorFn], batch: Batch) -> torch.Tensor:
    """(K, B, L) factors of a stack's batch: each run's own factors on its own rows."""
    return torch.stack([run_factors(batch.run(run)) for run, run_factors in enumerate(factors)])


def _budget(norm: Coefficient, input_space: Coefficient, input_scale: float) -> Coefficient:
    """The norm on the embedding rows E[seqs] that makes ``norm`` in the chosen space of S.

    S = input_scale * E[seqs] (SASRec's sqrt(d)); a step of norm eps on S is one of eps / input_scale on the
    rows, in the same direction (the gradient w.r.t. S is the rows' gradient / input_scale).
    """
    if isinstance(input_space, torch.Tensor):
        return norm / torch.where(input_space > 0, input_scale, 1.0)
    return norm / input_scale if input_space else norm


def loss_terms(model: Network, batch: Batch, coefficients: LossCoefficients, factors: FactorFn) -> LossTerms:
    """The terms ``coefficients`` use on ``batch`` (a stack's: (K, B, L), one run per row of K)."""
    uses, scope = coefficients.uses, coefficients.scope
    real, mask = batch.seqs != 0, batch.pos != 0
    # The perturbations of S are applied to the embedding rows, scaled to their norm in perturb_space.
    seq_emb = model.item_emb(batch.seqs)
    # Drawn before the RNG state is saved, so these numbers are never reused as dropout masks.
    noise = model.randn_like(seq_emb) if "representation" in uses else None
    encode = same_dropout(model, batch.seqs)
    reps = encode(seq_emb)
    pos_emb, neg_emb = model.item_emb(batch.pos), model.item_emb(batch.neg)
    terms = LossTerms(clean=_bce(reps, pos_emb, neg_emb, mask))

    def budget(norm: Coefficient) -> Coefficient:
        return _budget(_per_run(norm, 4), _per_run(coefficients.input_space, 4), model.input_scale)

    if "bce" in uses:  # adv_seq: along dL_B/dS
        (gradient,) = torch.autograd.grad(terms.clean.sum(), seq_emb, retain_graph=True)
        terms.perturbation = fgsm_step(gradient, real, budget(coefficients.epsilon), scope)
        terms.adv_seq = _bce(encode(seq_emb + terms.perturbation), pos_emb, neg_emb, mask)
    if noise is not None:  # 'representation': level 1, Eq. 4.6-4.7
        scaled = factors(batch).unsqueeze(-1)
        # ||f(S + A/C) - w|| has a zero gradient at A = 0, so the FGSM step starts from a small random
        # A0 (one power-iteration step towards the most sensitive direction, as in virtual adversarial
        # training).
        start = fgsm_step(scaled * noise, real, budget(coefficients.init_noise), scope)
        probe = (seq_emb.detach() + start).requires_grad_()
        gap = representation_gap(encode(probe), reps.detach(), real)
        (gradient,) = torch.autograd.grad(gap.sum(), probe)
        # Equal budgets: 1/C reweights the gradient once, then the step is normalised to epsilon, so the
        # factors move the budget towards high-1/C positions without changing its total.
        step = fgsm_step(scaled * gradient, real, budget(coefficients.epsilon), scope)
        if terms.perturbation is not None:  # a stack with adv_seq runs beside level-1 runs
            terms.perturbation = torch.where(
                _per_run(coefficients.bce_weight, 4) > 0, terms.perturbation, step
            )
        else:
            terms.perturbation = step
        terms.adv1 = representation_gap(encode(seq_emb + step), reps, real)

    if "linear" in uses:
        # h of Eq. 4.9: gradients of the BCE at zero perturbation w.r.t. w, e_pos and e_neg, each of the
        # three normalised on its own within the configured scope.
        leaves = [tensor.detach().requires_grad_() for tensor in (reps, pos_emb, neg_emb)]
        gradients = torch.autograd.grad(_bce(*leaves, mask).sum(), leaves)
        epsilon = _per_run(coefficients.epsilon, 4)
        deltas = [fgsm_step(gradient, mask, epsilon, scope) for gradient in gradients]
        terms.adv2 = _bce(reps + deltas[0], pos_emb + deltas[1], neg_emb + deltas[2], mask)
    return terms


def _per_run(value: Coefficient, dims: int) -> Coefficient:
    """A stack's (K,) coefficient shaped (K, 1, ...) to broadcast over (K, ...) tensors of ``dims`` dims."""
    return value.view(-1, *([1] * (dims - 1))) if isinstance(value, torch.Tensor) else value


def total_loss(terms: LossTerms, coefficients: LossCoefficients) -> torch.Tensor:
    """Eq. 4.10: L_B + lambda1 L_adv-1 + lambda2 L_adv-2 (+ adv_seq's term), per run for a stack."""
    loss = terms.clean
    if terms.adv_seq is not None:
        loss = loss + coefficients.bce_weight * terms.adv_seq
    if terms.adv1 is not None:
        loss = loss + coefficients.lambda1 * terms.adv1
    if terms.adv2 is not None:
        loss = loss + coefficients.lambda2 * terms.adv2
    return loss


def check_cascade(cascade: Any, data: SequenceData, source: str = "the cascade matrix") -> None:
    """C must belong to exactly these training inputs: a finite float matrix of their shape, positive exactly
    where the items are. ``source`` (the file) starts each error."""
    inputs = data.train_inputs()
    if not isinstance(cascade, torch.Tensor) or not cascade.is_floating_point():
        held = cascade.dtype if isinstance(cascade, torch.Tensor) else type(cascade).__name__
        raise CatrecError(f"{source}: 'cascade' holds {held}, not a float matrix C")
    if cascade.shape != inputs.shape:
        raise CatrecError(
            f"{source}: C has shape {tuple(cascade.shape)}, the training inputs {tuple(inputs.shape)}: "
            "was it computed from this dataset with the same max_len?"
        )
    if not bool(torch.isfinite(cascade).all()):
        raise CatrecError(f"{source}: C holds NaN or infinite values")
    misplaced = int(((cascade > 0) != (inputs != 0)).sum())
    if misplaced:
        raise CatrecError(
            f"{source}: C is positive at {misplaced} position(s) where the training inputs are not "
            "(or not positive where they are): was it computed from this dataset?"
        )


def make_loss(
    method: str, hparams: Mapping[str, Any], cascade: torch.Tensor | None, data: SequenceData
) -> LossFn:
    """The training loss of ``method`` (a trained method: every one in ``ADVERSARIAL_KEYS_OF``)."""
    if method not in ADVERSARIAL_KEYS_OF:
        raise CatrecError(f"method '{method}' has no training loss (one of {', '.join(ADVERSARIAL_KEYS_OF)})")
    config = AdversarialConfig.from_hparams(method, hparams)
    if method == "continued":
        return bce_loss
    if method == "adv_linear":
        return AdversarialLoss(config, sequence=None, linear=True)
    if method == "adv_seq":
        return AdversarialLoss(config, sequence="bce", linear=False)
    if method == "adv_global":
        return AdversarialLoss(config, sequence="representation", linear=True)
    if cascade is None:
        raise CatrecError(f"method '{method}' needs a cascade matrix (--cascade)")
    check_cascade(cascade, data)
    factors = CascadeFactors(cascade)
    return AdversarialLoss(config, sequence="representation", linear=True, factors=factors)
