"""Shared fixtures: the toy dataset in the preprocessed on-disk format, and paths of the shared real data."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path

import pytest
import torch

from catrec.adversarial import CLEAN_LOSS, Coefficients, LossTerms, RunLoss, loss_terms, total_loss
from catrec.data.batches import Batch
from catrec.models import ModelConfig, SequentialRecommender, build_model, save_model
from catrec.models.layout import Layout, Packed, Padded
from catrec.models.stack import ModelStack
from catrec.runtime import dropout_seed, noise_seed
from catrec.toy import generate_sequences

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = REPO_ROOT.parent / "shared"
BEAUTY_PATH = SHARED_DIR / "data" / "beauty" / "Beauty.txt"
ML100K_PATH = SHARED_DIR / "data" / "ml-100k" / "ml-100k.inter"

TOY_USERS, TOY_ITEMS = 300, 100


def write_sequences_dir(directory: Path, sequences: list[list[int]]) -> Path:
    """Write ``sequences`` in the layout ``catrec preprocess`` produces (sequences.txt + stats.json)."""
    directory.mkdir(parents=True, exist_ok=True)
    lines = [" ".join(map(str, [user, *items])) for user, items in enumerate(sequences, start=1)]
    (directory / "sequences.txt").write_text("\n".join(lines) + "\n")
    items = max(max(s) for s in sequences)
    interactions = sum(map(len, sequences))
    stats = {
        "users": len(sequences),
        "items": items,
        "interactions": interactions,
        "density": interactions / (len(sequences) * items),
    }
    (directory / "stats.json").write_text(json.dumps(stats))
    return directory


@pytest.fixture(scope="session")
def toy_sequences() -> list[list[int]]:
    return generate_sequences(TOY_USERS, TOY_ITEMS, clusters=8, mean_length=20, seed=0)


@pytest.fixture(scope="session")
def toy_data_dir(tmp_path_factory: pytest.TempPathFactory, toy_sequences: list[list[int]]) -> Path:
    return write_sequences_dir(tmp_path_factory.mktemp("toy") / "data", toy_sequences)


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Other jobs share the CPU cores: more threads than free cores slows these small models down a lot."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def require_shared(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"shared data not found: {path}")
    return path


def save_untrained_model(path: Path, name: str, num_items: int, max_len: int, seed: int = 0) -> Path:
    """A small freshly initialised model of ``name`` saved as the pipeline saves models (stage inputs)."""
    torch.manual_seed(seed)
    config = ModelConfig(
        name=name, num_items=num_items, max_len=max_len, hidden_size=16, dropout=0.2,
        num_blocks=1, num_heads=1, layer_norm="pre", num_layers=1,
    )  # fmt: skip
    save_model(path, build_model(config))
    return path


class LastItemModel(SequentialRecommender):
    """A real model whose sequence network is the identity: f(S) = S, so w at each position is the embedding
    of the item there. ``embedding`` (n + 1, d) rows, or n + 1 numbers for d = 1; row 0 is padding.

    Every number it produces can be worked out by hand: the tests of the equations use it.
    """

    def __init__(self, embedding: list[float] | list[list[float]]) -> None:
        weight = torch.tensor(embedding, dtype=torch.float32)
        weight = weight.unsqueeze(1) if weight.dim() == 1 else weight
        config = ModelConfig(
            name="last_item", num_items=len(weight) - 1, max_len=4, hidden_size=weight.shape[1], dropout=0.0
        )
        super().__init__(config)
        with torch.no_grad():
            self.item_emb.weight.copy_(weight)

    def encode(self, seq_emb: torch.Tensor, layout: Layout) -> torch.Tensor:
        return seq_emb


def stack_of(
    model: SequentialRecommender, seed: int = 0, layout: type[Packed] | type[Padded] = Packed
) -> ModelStack:
    """``model`` as the stack of one run that every training computes on, with the dropout and noise
    generators of a run seeded with ``seed`` (``catrec.training.Training`` on the CPU)."""
    return ModelStack(
        [model],
        [torch.Generator().manual_seed(dropout_seed(seed))],
        [torch.Generator().manual_seed(noise_seed(seed))],
        layout,
    )


def stacked(batch: Batch) -> Batch:
    """One run's (B, L) batch as the (1, B, L) batch of a stack of one."""
    return Batch(**{item.name: getattr(batch, item.name).unsqueeze(0) for item in fields(batch)})


def stack_loss(
    model: SequentialRecommender,
    batch: Batch,
    loss: RunLoss = CLEAN_LOSS,
    *,
    seed: int = 0,
    layout: type[Packed] | type[Padded] = Packed,
    dropout: bool = True,
) -> tuple[ModelStack, LossTerms, torch.Tensor]:
    """``loss`` on ``model``'s one (B, L) ``batch`` as a training step computes it: the stack of one
    (``stack_of``), its terms and Eq. 4.10's total, each (1,). ``dropout``: the step's masks are drawn
    (training); False: none (as in evaluation). Gradients: ``stack.parameters[name].grad[0]``."""
    stack = stack_of(model, seed, layout)
    run_batch = stacked(batch)
    coefficients = Coefficients.of([loss], batch.seqs.device)
    if dropout:
        stack.draw(run_batch.seqs)
    terms = loss_terms(stack, run_batch, coefficients)
    return stack, terms, total_loss(terms, coefficients)
