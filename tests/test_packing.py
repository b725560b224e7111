"""Random batches trimmed to their longest sequence, and SASRec on packed real positions: the same math as
plain left-padded batches of width T, and as each user alone."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import stack_loss

from catrec.data.batches import Batch, Batches
from catrec.data.sequences import SequenceData
from catrec.models import ModelConfig, SequentialRecommender, build_model
from catrec.models.layout import LAYOUT_OF

# T above the longest toy training sequence (34), so that every random batch is trimmed below T.
MAX_LEN, HIDDEN, BATCH_SIZE = 48, 16, 32

VARIANTS = {
    "sasrec-pre": {"name": "sasrec", "num_blocks": 2, "layer_norm": "pre", "num_heads": 2},
    "sasrec-original": {"name": "sasrec", "num_blocks": 2, "layer_norm": "original", "num_heads": 2},
    "gru4rec": {"name": "gru4rec", "num_layers": 1},
}
SASREC_VARIANTS = [name for name in VARIANTS if name.startswith("sasrec")]


@pytest.fixture(scope="module")
def data(toy_data_dir: Path) -> SequenceData:
    return SequenceData.from_dir(toy_data_dir, MAX_LEN)


def new_model(variant: str, num_items: int, dropout: float = 0.0) -> SequentialRecommender:
    torch.manual_seed(0)
    config = ModelConfig(
        num_items=num_items, max_len=MAX_LEN, hidden_size=HIDDEN, dropout=dropout, **VARIANTS[variant]
    )
    # Trained through a stack (``stack_loss``): the training path; with dropout 0 it is deterministic.
    return build_model(config)


def random_batches(data: SequenceData, count: int = 3, seed: int = 0) -> list[Batch]:
    generator = torch.Generator().manual_seed(seed)
    batches = Batches(data, BATCH_SIZE, trim=True)  # the packed layout's batches
    users, valid = batches.epoch(generator, bucket_by_length=False)
    assert valid[:count].all(), "full batches"
    return [batches.batch(users[index], valid[index], generator) for index in range(count)]


def left_pad(batch: Batch, width: int) -> Batch:
    """The same batch with zero columns on the left up to ``width``: the plain padded (B, T) layout."""

    def pad(matrix: torch.Tensor) -> torch.Tensor:
        return F.pad(matrix, (width - matrix.shape[1], 0))

    return Batch(users=batch.users, seqs=pad(batch.seqs), pos=pad(batch.pos), neg=pad(batch.neg))


def loss_and_gradients(
    model: SequentialRecommender, batch: Batch, layout: str
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The clean loss of a training step on ``batch`` (a stack of one) and each parameter's gradient."""
    stack, _, loss = stack_loss(model, batch, layout=LAYOUT_OF[layout])
    loss.sum().backward()
    gradients = {
        name: parameter.grad[0].clone() if parameter.grad is not None else torch.zeros_like(parameter[0])
        for name, parameter in stack.parameters.items()
    }
    return loss.detach()[0], gradients


def test_random_batches_are_trimmed_to_their_longest_sequence(data: SequenceData) -> None:
    lengths = (data.train_inputs() != 0).sum(1)
    for batch in random_batches(data, count=5):
        real = batch.seqs != 0
        assert batch.seqs.shape == batch.pos.shape == batch.neg.shape
        assert batch.seqs.shape[1] == int(lengths[batch.users].max()) < MAX_LEN
        assert real[:, 0].any(), "no all-padding column is left"
        assert real[:, -1].all(), "every user's most recent item is in the last column"
        assert torch.equal(batch.seqs, data.train_inputs()[batch.users, -batch.seqs.shape[1] :])
        # A random batch, not a bucket: lengths differ, so the comparisons below involve real padding.
        assert (~real).any()


@pytest.mark.parametrize("layout", list(LAYOUT_OF))
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_trimmed_batch_gives_the_loss_and_gradients_of_the_padded_batch(
    variant: str, layout: str, data: SequenceData
) -> None:
    model = new_model(variant, data.num_items)
    for batch in random_batches(data):
        padded = left_pad(batch, MAX_LEN)
        assert padded.seqs.shape[1] == MAX_LEN > batch.seqs.shape[1]
        trimmed_loss, trimmed_gradients = loss_and_gradients(model, batch, layout)
        padded_loss, padded_gradients = loss_and_gradients(model, padded, layout)
        torch.testing.assert_close(trimmed_loss, padded_loss, rtol=1e-5, atol=1e-5)
        assert trimmed_gradients.keys() == padded_gradients.keys()
        for name, gradient in trimmed_gradients.items():
            torch.testing.assert_close(gradient, padded_gradients[name], rtol=1e-4, atol=1e-5, msg=name)
        # The comparison is not vacuous: the loss moves most weights.
        assert (
            sum(bool(gradient.abs().sum() > 0) for gradient in trimmed_gradients.values())
            > len(trimmed_gradients) // 2
        )


@pytest.mark.parametrize("variant", list(VARIANTS))
@torch.no_grad()
def test_packed_forward_equals_each_user_alone(variant: str, data: SequenceData) -> None:
    model = new_model(variant, data.num_items)
    batch = random_batches(data, count=1)[0]
    real = batch.seqs != 0
    reps = model(batch.seqs)
    assert reps.shape == (*batch.seqs.shape, HIDDEN)
    assert (reps[~real] == 0).all(), "outputs at padding are 0"
    assert torch.isfinite(reps).all()
    for row, seqs in enumerate(batch.seqs):
        alone = seqs[seqs != 0].unsqueeze(0)  # this user only, no padding at all
        torch.testing.assert_close(reps[row][real[row]], model(alone)[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("variant", SASREC_VARIANTS)
@torch.no_grad()
def test_sasrec_positions_are_counted_from_the_right(variant: str, data: SequenceData) -> None:
    # The same items in a wider (left-padded) batch keep their positional embeddings (the last column is
    # always position T - 1): otherwise trimming would change the outputs.
    model = new_model(variant, data.num_items)
    batch = random_batches(data, count=1)[0]
    real = batch.seqs != 0
    for width in (batch.seqs.shape[1] + 1, MAX_LEN):
        wider = left_pad(batch, width).seqs
        torch.testing.assert_close(
            model(wider)[:, -batch.seqs.shape[1] :][real], model(batch.seqs)[real], rtol=1e-5, atol=1e-5
        )
