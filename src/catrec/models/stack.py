"""K >= 1 runs of one architecture as one computation: parameters stacked along a leading run dimension.

Every training run is a stack (a single run is K = 1). A stack holds every parameter of its K member models
as one (K, ...) tensor and computes the forward pass of all runs at once: ``torch.func.vmap`` over
``functional_call`` folds K into the batch of every matmul and of attention (SASRec), or, where vmap has no
batching rule (GRU4Rec's ``nn.GRU``) or there is one run, one call per run. Inputs carry the run dimension
((K, B, L) ids), so members may see different batches. The optimizer steps the stacked tensors: Adam is
element-wise, so one Adam over them is K Adams with the same settings.

What makes a run's numbers independent of its stack: every random draw of a step comes from the run's own
generators (``dropout``: its masks; ``noise``: its level-1 noise), never from a global stream that the other
members would advance. So a run trained alone and the same run in any stack draw the same numbers. The member
models get the trained weights at ``write_back`` (evaluation, checkpoints); the stacked tensors are trained.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from catrec.models import SequentialRecommender
from catrec.models.layout import Packed, Padded, StepMasks


class _Encoder(nn.Module):
    """``model.encode`` in a layout built from the ids, as a module's forward, for ``functional_call``."""

    def __init__(self, model: SequentialRecommender, layout: type[Packed] | type[Padded]) -> None:
        super().__init__()
        self.model, self.layout = model, layout

    def forward(self, seq_emb: torch.Tensor, seqs: torch.Tensor, masks: StepMasks | None) -> torch.Tensor:
        return self.model.encode(seq_emb, self.layout(seqs, masks))


class ModelStack:
    """The K ``models`` (one architecture, on one device) trained as one in ``layout``, with each run's
    dropout and noise generators."""

    def __init__(
        self,
        models: Sequence[SequentialRecommender],
        dropout: Sequence[torch.Generator],
        noise: Sequence[torch.Generator],
        layout: type[Packed] | type[Padded],
    ) -> None:
        if not models or not len(models) == len(dropout) == len(noise):
            raise ValueError(f"a stack needs two generators per model, for {len(models)} models")
        configs = {model.config for model in models}
        if len({(c.name, c.hidden_size, c.max_len, c.num_items) for c in configs}) > 1:
            raise ValueError("the models of a stack must share one architecture")
        if layout is Packed and len(models) > 1:
            # Packing reads each batch's real positions on the host: one run's batch at a time.
            raise ValueError(f"the packed layout trains one run, not {len(models)}")
        self.models, self._dropout_streams, self._noise_streams = list(models), list(dropout), list(noise)
        self.size, self.layout = len(models), layout
        first = models[0]
        self.input_scale = first.input_scale
        self._dropout = first.config.dropout
        # Padded: vmap for every K, one run included, so that a run computes the same numbers (to the bit)
        # alone and in any stack; packed (K = 1) runs its one call (vmap cannot pack: ``nonzero``).
        self._vectorized = first.vectorizes and layout is Padded
        # The template runs the members' computation with their weights; its own weights are never used.
        self._template = _Encoder(copy.deepcopy(first).to("meta"), layout)
        params, _ = stack_module_state(list(models))  # type: ignore[arg-type]
        self.parameters: dict[str, torch.Tensor] = {
            name: value.detach().clone().requires_grad_() for name, value in params.items()
        }
        self._step_masks: list[StepMasks] | None = None

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
        """Draw this step's dropout numbers for (K, B, L) ``seqs``, each run's from its own generator;
        every ``encode`` until the next ``draw`` applies them (the same masks in every pass of a step)."""
        if self._dropout == 0:
            self._step_masks = None
            return
        width = self.models[0].dropout_width(seqs.shape[-1])
        self._step_masks = [
            StepMasks.draw(self.layout.mask_rows(seqs[run]), width, self._dropout, stream)
            for run, stream in enumerate(self._dropout_streams)
        ]

    def encode(self, seq_emb: torch.Tensor, seqs: torch.Tensor) -> torch.Tensor:
        """f(S) of each run (Eq. 3.3): (K, B, L, d), (K, B, L) -> (K, B, L, d), under the step's masks."""
        if self._vectorized:
            uniform = None if self._step_masks is None else torch.stack([m.uniform for m in self._step_masks])
            # No masks (dropout 0, or none drawn): nothing to map over in their place.
            in_dims = (0, 0, 0, None if uniform is None else 0)
            return vmap(self._encode_batched, in_dims=in_dims)(self.parameters, seq_emb, seqs, uniform)
        return torch.stack(
            [
                self._encode_one(
                    {name: value[run] for name, value in self.parameters.items()},
                    seq_emb[run],
                    seqs[run],
                    None if self._step_masks is None else self._step_masks[run],
                )
                for run in range(self.size)
            ]
        )

    def _encode_batched(
        self,
        params: dict[str, torch.Tensor],
        seq_emb: torch.Tensor,
        seqs: torch.Tensor,
        uniform: torch.Tensor | None,
    ) -> torch.Tensor:
        masks = None if uniform is None else StepMasks(uniform, self._dropout)
        return self._encode_one(params, seq_emb, seqs, masks)

    def _encode_one(
        self,
        params: dict[str, torch.Tensor],
        seq_emb: torch.Tensor,
        seqs: torch.Tensor,
        masks: StepMasks | None,
    ) -> torch.Tensor:
        named = {f"model.{name}": value for name, value in params.items()}
        return functional_call(self._template, named, (seq_emb, seqs, masks))

    @torch.no_grad()
    def write_back(self) -> None:
        """Copy each run's trained weights into its member model (before evaluating or saving it)."""
        for run, model in enumerate(self.models):
            for name, parameter in model.named_parameters():
                parameter.copy_(self.parameters[name][run])


def _embedding(ids: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return F.embedding(ids, weight, padding_idx=0)
