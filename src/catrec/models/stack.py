"""K runs of one architecture as one computation: parameters stacked along a leading run dimension.

A stack holds every parameter of its K member models as one (K, ...) tensor and computes the forward pass of
all runs at once: ``torch.func.vmap`` over ``functional_call`` folds K into the batch of every matmul and of
attention (SASRec), or, where vmap has no batching rule (GRU4Rec's ``nn.GRU``), one call per run. Inputs
carry the run dimension too ((K, B, L) ids), so members may see different batches. The optimizer steps the
stacked tensors: Adam is element-wise, so one Adam over them is K Adams with the same settings.

What makes a run's numbers independent of its stack: every random draw of a step comes from the run's own
generators (``dropout``: its masks; ``noise``: its level-1 noise), never from a global stream that the other
members would advance. A stack draws noise for all its runs when any of them uses level 1, so a run's
masks never come from its noise stream. A stack of one is how the static engine trains a single run, so a
run trained alone and the same run in any stack draw the same numbers. The member models get the trained
weights at ``write_back`` (evaluation, checkpoints); the stacked tensors are the ones trained.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from catrec.models import SequentialRecommender
from catrec.models.dropout import Dropout, DropoutMasks


class _Encoder(nn.Module):
    """``model.encode`` as a module's forward, for ``functional_call``."""

    def __init__(self, model: SequentialRecommender) -> None:
        super().__init__()
        self.model = model

    def forward(self, seq_emb: torch.Tensor, seqs: torch.Tensor) -> torch.Tensor:
        return self.model.encode(seq_emb, seqs)


class ModelStack:
    """The K ``models`` (one architecture, on one device) trained as one, with each run's generators."""

    def __init__(
        self,
        models: Sequence[SequentialRecommender],
        dropout: Sequence[torch.Generator],
        noise: Sequence[torch.Generator],
    ) -> None:
        if not models or not len(models) == len(dropout) == len(noise):
            raise ValueError(f"a stack needs two generators per model, for {len(models)} models")
        configs = {model.config for model in models}
        if (
            len({(config.name, config.hidden_size, config.max_len, config.num_items) for config in configs})
            > 1
        ):
            raise ValueError("the models of a stack must share one architecture")
        self.models, self._dropout_streams, self._noise_streams = list(models), list(dropout), list(noise)
        self.size = len(models)
        first = models[0]
        self.input_scale = first.input_scale
        self._vectorized = first.vectorizes
        self._dropout = {
            module.p for module in first.modules() if isinstance(module, Dropout) and module.p > 0
        }
        # The template runs the members' computation with their weights; its own weights are never used.
        self._masks = DropoutMasks()
        self._template = _Encoder(copy.deepcopy(first).to("meta"))
        self._template.model.use_static(self._masks)
        self._template.train()
        params, _ = stack_module_state(list(models))  # type: ignore[arg-type]
        self.parameters: dict[str, torch.Tensor] = {
            name: value.detach().clone().requires_grad_() for name, value in params.items()
        }
        self._mask_shapes: list[torch.Size] | None = None
        self._step_masks: list[torch.Tensor] = []

    def item_emb(self, ids: torch.Tensor) -> torch.Tensor:
        """E[ids] of each run: (K, B, L) ids -> (K, B, L, d); the padding row gets no gradient."""
        return vmap(_embedding)(ids, self.parameters["item_emb.weight"])

    def randn_like(self, x: torch.Tensor) -> torch.Tensor:
        """Standard normal noise shaped like (K, ...) ``x``, each run's slice from its own generator."""
        return torch.stack(
            [
                torch.randn(x.shape[1:], generator=stream, device=x.device, dtype=x.dtype)
                for stream in self._noise_streams
            ]
        )

    def draw(self, seqs: torch.Tensor) -> None:
        """Draw this step's dropout masks for (K, B, L) ``seqs``, each run's from its own generator; every
        ``encode`` until the next ``draw`` applies them (the same masks in every pass of a step)."""
        if not self._dropout:
            self._step_masks = []
            return
        (p,) = self._dropout  # one rate for every dropout layer (ModelConfig.dropout)
        if self._mask_shapes is None:
            self._mask_shapes = self._shapes(seqs[0])
        sizes = [shape.numel() for shape in self._mask_shapes]
        per_run = []
        for stream in self._dropout_streams:
            # One uniform draw per run and step, cut into the masks (inverted dropout: keep / (1 - p)).
            uniform = torch.rand(sum(sizes), generator=stream, device=seqs.device)
            per_run.append((uniform < 1 - p).float() / (1 - p))
        stacked = torch.stack(per_run)
        self._step_masks = [
            part.view(self.size, *shape)
            for part, shape in zip(stacked.split(sizes, dim=1), self._mask_shapes, strict=True)
        ]

    def _shapes(self, seqs: torch.Tensor) -> list[torch.Size]:
        """The shapes of the masks a pass over (B, L) ``seqs`` draws, in order (a pass on the meta device)."""
        meta = seqs.to("meta")
        hidden = self._template.model.config.hidden_size
        with self._masks.recording():
            self._template(torch.empty(*meta.shape, hidden, device="meta"), meta)
        return [mask.shape for mask in self._masks.recorded()]

    def encode(self, seq_emb: torch.Tensor, seqs: torch.Tensor) -> torch.Tensor:
        """f(S) of each run (Eq. 3.3): (K, B, L, d), (K, B, L) -> (K, B, L, d), under the step's masks."""
        if self._vectorized:
            return vmap(self._encode_one)(self.parameters, seq_emb, seqs, self._step_masks)
        return torch.stack(
            [
                self._encode_one(
                    {name: value[run] for name, value in self.parameters.items()},
                    seq_emb[run],
                    seqs[run],
                    [mask[run] for mask in self._step_masks],
                )
                for run in range(self.size)
            ]
        )

    def _encode_one(
        self,
        params: dict[str, torch.Tensor],
        seq_emb: torch.Tensor,
        seqs: torch.Tensor,
        masks: list[torch.Tensor],
    ) -> torch.Tensor:
        named = {f"model.{name}": value for name, value in params.items()}
        with self._masks.replaying(list(masks)):
            return functional_call(self._template, named, (seq_emb, seqs))

    @torch.no_grad()
    def write_back(self) -> None:
        """Copy each run's trained weights into its member model (before evaluating or saving it)."""
        for run, model in enumerate(self.models):
            for name, parameter in model.named_parameters():
                parameter.copy_(self.parameters[name][run])


def _embedding(ids: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return F.embedding(ids, weight, padding_idx=0)
