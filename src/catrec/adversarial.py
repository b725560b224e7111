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

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from catrec.cascade import perturbation_factors
from catrec.data.batches import Batch
from catrec.data.sequences import SequenceData
from catrec.errors import CatrecError
from catrec.losses import bce_from_scores
from catrec.models.stack import ModelStack
from catrec.vocabulary import METHOD_SPECS

# Guards the division of an all-zero gradient (padding positions, a flat loss): 0 / tiny = 0, never NaN.
_TINY = 1e-12


@dataclass(frozen=True)
class AdversarialConfig:
    """The ``adversarial:`` keys one method reads (``MethodSpec.keys``); the others stay None."""

    epsilon: float | None = None
    lambda1: float | None = None
    lambda2: float | None = None
    grad_norm_scope: str | None = None  # batch | sequence | position
    init_noise: float | None = None
    perturb_space: str | None = None  # input | embedding


@dataclass(frozen=True)
class RunLoss:
    """One run's training loss: the terms of its method (``MethodSpec.terms``; none: the clean L_B of
    pretraining and continued), its settings and, for adv_cas*, the cascade matrix C of its factors 1/C."""

    terms: tuple[str, ...] = ()
    config: AdversarialConfig = AdversarialConfig()
    cascade: torch.Tensor | None = None


CLEAN_LOSS = RunLoss()


def fgsm_step(gradient: torch.Tensor, real: torch.Tensor, epsilon: torch.Tensor, scope: str) -> torch.Tensor:
    """epsilon * g / ||g||_2 (Eq. 4.7, 4.9) for a stack's (K, B, L, d) ``g``, zero where ``real`` (K, B, L)
    is False, one step per run, each normalised within its own run (``epsilon`` (K, 1, 1, 1)).

    ``scope`` 'batch': one norm over the run's whole batch tensor; 'sequence': one over all real positions x d
    of each row; 'position': one per d-vector.
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
    of each run of a stack's (K, B, L, d) representations."""
    gaps = (perturbed - clean).norm(dim=-1)
    return torch.where(real, gaps, torch.zeros_like(gaps)).sum((-2, -1)) / real.sum((-2, -1)).clamp(min=1)


def _bce(
    reps: torch.Tensor, pos_emb: torch.Tensor, neg_emb: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Eq. 3.5 on the scores w^T e (Eq. 3.4) of given, possibly perturbed, embeddings."""
    return bce_from_scores((reps * pos_emb).sum(-1), (reps * neg_emb).sum(-1), mask)


@dataclass
class LossTerms:
    """The parts of one batch's loss, each (K,): one value per run of the stack; ``perturbation`` is what
    was added to S (detached), for inspection."""

    clean: torch.Tensor  # L_B
    adv1: torch.Tensor | None = None  # L_adv-1, Eq. 4.6
    adv2: torch.Tensor | None = None  # L_adv-2, Eq. 4.8
    adv_seq: torch.Tensor | None = None  # L_B with perturbed S (adv_seq)
    perturbation: torch.Tensor | None = None


@dataclass(frozen=True)
class Coefficients:
    """What the loss of a stack of K runs computes, each coefficient a (K,) tensor (one value per run).

    Every method is Eq. 4.10 with terms switched off: ``bce_weight`` weighs adv_seq's L_B(S + step) (1 or 0),
    ``lambda1`` L_adv-1 and ``lambda2`` L_adv-2 (0 where the run's method has no such level); ``uses``
    names the terms any run computes, so a term no run uses costs nothing. ``input_space`` (1 or 0): the
    budgets are norms in the network's input space (``perturb_space: input``) rather than on the rows.
    ``cascades``: each run's C (None: uniform factors).
    """

    uses: frozenset[str]
    bce_weight: torch.Tensor
    lambda1: torch.Tensor
    lambda2: torch.Tensor
    epsilon: torch.Tensor
    init_noise: torch.Tensor
    input_space: torch.Tensor
    scope: str
    cascades: tuple[torch.Tensor | None, ...]

    @classmethod
    def of(cls, losses: Sequence[RunLoss], device: torch.device) -> Coefficients:
        """The losses of K runs as one stack's coefficients on ``device``. The runs that perturb must share
        one norm scope."""
        scopes = {loss.config.grad_norm_scope or "batch" for loss in losses if loss.terms}
        if len(scopes) > 1:
            raise CatrecError(f"the runs of a stack use different grad_norm_scope values: {sorted(scopes)}")

        def column(value_of: Any) -> torch.Tensor:
            return torch.tensor([float(value_of(loss)) for loss in losses], device=device)

        return cls(
            uses=frozenset(term for loss in losses for term in loss.terms),
            bce_weight=column(lambda loss: "bce" in loss.terms),
            lambda1=column(lambda loss: loss.config.lambda1 if "representation" in loss.terms else 0.0),
            lambda2=column(lambda loss: loss.config.lambda2 if "linear" in loss.terms else 0.0),
            epsilon=column(lambda loss: loss.config.epsilon or 0.0),
            init_noise=column(lambda loss: loss.config.init_noise or 0.0),
            input_space=column(lambda loss: loss.config.perturb_space in ("input", None)),
            scope=scopes.pop() if scopes else "batch",
            cascades=tuple(None if loss.cascade is None else loss.cascade.to(device) for loss in losses),
        )

    def factors(self, batch: Batch) -> torch.Tensor:
        """(K, B, L) level-1 factors of a stack's batch: 1/C of each run's rows of its C (adv_cas*,
        ``catrec.cascade.perturbation_factors``), or 1 at every real position (adv_global); 0 at padding."""
        return torch.stack(
            [
                _factors(cascade, batch.users[run], batch.seqs[run])
                for run, cascade in enumerate(self.cascades)
            ]
        )

    def per_run(self, value: torch.Tensor) -> torch.Tensor:
        """A (K,) coefficient shaped (K, 1, 1, 1) to broadcast over the stack's (K, B, L, d) tensors."""
        return value.view(-1, 1, 1, 1)


def _factors(cascade: torch.Tensor | None, users: torch.Tensor, seqs: torch.Tensor) -> torch.Tensor:
    real = seqs != 0
    if cascade is None:
        return real.float()
    # A batch holds the last L columns of the (m, T) training inputs; C is aligned with those.
    return perturbation_factors(cascade[users, -seqs.shape[1] :], real)


def _budget(norm: torch.Tensor, input_space: torch.Tensor, input_scale: float) -> torch.Tensor:
    """The norm on the embedding rows E[seqs] that makes ``norm`` in the chosen space of S.

    S = input_scale * E[seqs] (SASRec's sqrt(d)); a step of norm eps on S is one of eps / input_scale on the
    rows, in the same direction (the gradient w.r.t. S is the rows' gradient / input_scale).
    """
    return norm / torch.where(input_space > 0, input_scale, 1.0)


def loss_terms(stack: ModelStack, batch: Batch, coefficients: Coefficients) -> LossTerms:
    """The terms ``coefficients`` use on a stack's ``batch`` ((K, B, L), one run per row of K).

    Every ``stack.encode`` of the call applies the step's dropout masks (``ModelStack.draw``): the
    adversarial terms compare perturbed passes with the clean one, and with fresh masks ||w_hat - w|| would
    mostly measure dropout noise (and the FGSM step would chase it), and epsilon = 0 would not give back the
    clean loss.
    """
    uses, scope, per_run = coefficients.uses, coefficients.scope, coefficients.per_run
    real, mask = batch.seqs != 0, batch.pos != 0
    # The perturbations of S are applied to the embedding rows, scaled to their norm in perturb_space.
    seq_emb = stack.item_emb(batch.seqs)

    def encode(seq_emb: torch.Tensor) -> torch.Tensor:
        return stack.encode(seq_emb, batch.seqs)

    def budget(norm: torch.Tensor) -> torch.Tensor:
        return _budget(per_run(norm), per_run(coefficients.input_space), stack.input_scale)

    reps = encode(seq_emb)
    pos_emb, neg_emb = stack.item_emb(batch.pos), stack.item_emb(batch.neg)
    terms = LossTerms(clean=_bce(reps, pos_emb, neg_emb, mask))

    if "bce" in uses:  # adv_seq: along dL_B/dS
        (gradient,) = torch.autograd.grad(terms.clean.sum(), seq_emb, retain_graph=True)
        terms.perturbation = fgsm_step(gradient, real, budget(coefficients.epsilon), scope)
        terms.adv_seq = _bce(encode(seq_emb + terms.perturbation), pos_emb, neg_emb, mask)
    if "representation" in uses:  # level 1, Eq. 4.6-4.7
        scaled = coefficients.factors(batch).unsqueeze(-1)
        # ||f(S + A/C) - w|| has a zero gradient at A = 0, so the FGSM step starts from a small random
        # A0 (one power-iteration step towards the most sensitive direction, as in virtual adversarial
        # training).
        start = fgsm_step(scaled * stack.randn_like(seq_emb), real, budget(coefficients.init_noise), scope)
        probe = (seq_emb.detach() + start).requires_grad_()
        gap = representation_gap(encode(probe), reps.detach(), real)
        (gradient,) = torch.autograd.grad(gap.sum(), probe)
        # Equal budgets: 1/C reweights the gradient once, then the step is normalised to epsilon, so the
        # factors move the budget towards high-1/C positions without changing its total.
        step = fgsm_step(scaled * gradient, real, budget(coefficients.epsilon), scope)
        if terms.perturbation is not None:  # a stack with adv_seq runs beside level-1 runs
            terms.perturbation = torch.where(per_run(coefficients.bce_weight) > 0, terms.perturbation, step)
        else:
            terms.perturbation = step
        terms.adv1 = representation_gap(encode(seq_emb + step), reps, real)

    if "linear" in uses:
        # h of Eq. 4.9: gradients of the BCE at zero perturbation w.r.t. w, e_pos and e_neg, each of the
        # three normalised on its own within the configured scope.
        leaves = [tensor.detach().requires_grad_() for tensor in (reps, pos_emb, neg_emb)]
        gradients = torch.autograd.grad(_bce(*leaves, mask).sum(), leaves)
        epsilon = per_run(coefficients.epsilon)
        deltas = [fgsm_step(gradient, mask, epsilon, scope) for gradient in gradients]
        terms.adv2 = _bce(reps + deltas[0], pos_emb + deltas[1], neg_emb + deltas[2], mask)
    return terms


def total_loss(terms: LossTerms, coefficients: Coefficients) -> torch.Tensor:
    """Eq. 4.10: L_B + lambda1 L_adv-1 + lambda2 L_adv-2 (+ adv_seq's term), (K,): one per run."""
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


def make_loss(method: str, settings: Any, cascade: torch.Tensor | None, data: SequenceData) -> RunLoss:
    """The training loss of ``method`` (a trained method: every one in ``METHOD_SPECS``) with the keys it
    reads (``MethodSpec.keys``) of ``settings``: its run's ``catrec.settings.FinetuneSettings`` (or those keys
    as a mapping)."""
    if method not in METHOD_SPECS:
        raise CatrecError(f"method '{method}' has no training loss (one of {', '.join(METHOD_SPECS)})")
    spec = METHOD_SPECS[method]
    read = settings.__getitem__ if isinstance(settings, Mapping) else settings.__getattribute__
    config = AdversarialConfig(**{key: read(key) for key in spec.keys})
    if spec.cascade is None:
        return RunLoss(spec.terms, config)
    if cascade is None:
        raise CatrecError(f"method '{method}' needs a cascade matrix (--cascade)")
    check_cascade(cascade, data)
    return RunLoss(spec.terms, config, cascade)
