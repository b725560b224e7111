"""Both models (and both SASRec layer-norm placements): shapes, causality, invariance to left padding."""

from __future__ import annotations

import pytest
import torch

from catrec.models import ModelConfig, SequentialRecommender, build_model
from catrec.models.layout import LAYOUT_OF, StepMasks

NUM_ITEMS, MAX_LEN, HIDDEN = 40, 12, 16

VARIANTS = {
    "sasrec-pre": {"name": "sasrec", "num_blocks": 2, "layer_norm": "pre", "num_heads": 2},
    "sasrec-original": {"name": "sasrec", "num_blocks": 2, "layer_norm": "original", "num_heads": 2},
    "gru4rec": {"name": "gru4rec", "num_layers": 1},
}


@pytest.fixture(params=list(VARIANTS), scope="module")
def model(request: pytest.FixtureRequest) -> SequentialRecommender:
    torch.manual_seed(0)
    config = ModelConfig(
        num_items=NUM_ITEMS, max_len=MAX_LEN, hidden_size=HIDDEN, dropout=0.2, **VARIANTS[request.param]
    )
    return build_model(config)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_build_model_needs_the_keys_of_the_chosen_model(variant: str) -> None:
    settings = VARIANTS[variant]
    common = {"num_items": NUM_ITEMS, "max_len": MAX_LEN, "hidden_size": HIDDEN, "dropout": 0.0}
    # The other model's keys stay unset: only the chosen model's own keys are needed.
    model = build_model(ModelConfig(**common, **settings))
    other = {"num_blocks", "num_heads", "layer_norm", "num_layers"} - set(settings)
    assert all(getattr(model.config, key) is None for key in other)
    for key in set(settings) - {"name"}:
        missing = {name: value for name, value in settings.items() if name != key}
        with pytest.raises(ValueError, match=key):
            build_model(ModelConfig(**common, **missing))
    with pytest.raises(ValueError, match="unknown model"):
        build_model(ModelConfig(**{**common, **settings, "name": "bert4rec"}))


def left_padded(lengths: list[int], width: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    seqs = torch.zeros(len(lengths), width, dtype=torch.long)
    for row, length in enumerate(lengths):
        if length:
            seqs[row, width - length :] = torch.randint(1, NUM_ITEMS + 1, (length,), generator=generator)
    return seqs


def test_output_shapes(model: SequentialRecommender) -> None:
    seqs = left_padded([3, 7, 1], width=7)
    reps = model(seqs)
    assert reps.shape == (3, 7, HIDDEN)
    assert model.score(reps, seqs).shape == (3, 7)
    assert model.score_all(reps[:, -1]).shape == (3, NUM_ITEMS + 1)
    assert torch.isfinite(reps).all()


@torch.no_grad()
def test_later_items_never_change_earlier_positions(model: SequentialRecommender) -> None:
    seqs = left_padded([MAX_LEN, 9, 6], width=MAX_LEN)
    reps = model(seqs)
    for column in (MAX_LEN - 5, MAX_LEN - 1):
        changed = seqs.clone()
        changed[:, column] = changed[:, column] % NUM_ITEMS + 1  # another real item
        changed_reps = model(changed)
        torch.testing.assert_close(changed_reps[:, :column], reps[:, :column], rtol=0, atol=1e-6)
        # The changed position itself does depend on the item (so the comparison above can fail).
        assert not torch.allclose(changed_reps[:, column], reps[:, column], atol=1e-4)


@torch.no_grad()
def test_left_padding_and_trimming_leave_outputs_unchanged(model: SequentialRecommender) -> None:
    lengths = [5, 2, 4]
    seqs = left_padded(lengths, width=5)
    reps = model(seqs)
    real = seqs != 0
    for width in (7, MAX_LEN):  # more left padding
        padded = torch.cat([torch.zeros(3, width - 5, dtype=torch.long), seqs], dim=1)
        torch.testing.assert_close(model(padded)[:, -5:][real], reps[real], rtol=1e-5, atol=1e-5)
    # Dropping all-padding columns: the rows of length <= 4 alone, trimmed to 4 columns.
    short = seqs[1:, -4:]
    torch.testing.assert_close(model(short)[short != 0], reps[1:, -4:][short != 0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("layout", list(LAYOUT_OF))
@torch.no_grad()
def test_padding_items_do_not_leak(model: SequentialRecommender, layout: str) -> None:
    """What sits in the embedding rows at padding must not matter (the model masks by id, not by value)."""
    seqs = left_padded([2, 6], width=6)
    seq_emb = model.item_emb(seqs)
    noisy = torch.where((seqs == 0).unsqueeze(-1), torch.randn_like(seq_emb), seq_emb)
    real = seqs != 0
    in_layout = LAYOUT_OF[layout]
    torch.testing.assert_close(
        model.encode(noisy, in_layout(seqs))[real],
        model.encode(seq_emb, in_layout(seqs))[real],
        rtol=1e-5,
        atol=1e-5,
    )


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("layout", list(LAYOUT_OF))
@pytest.mark.parametrize("training", [False, True])
def test_outputs_at_padding_are_zero(variant: str, layout: str, training: bool) -> None:
    # Also in training (a step's dropout masks applied), in both layouts, and for a row without any real item.
    torch.manual_seed(0)
    config = ModelConfig(
        num_items=NUM_ITEMS, max_len=MAX_LEN, hidden_size=HIDDEN, dropout=0.2, **VARIANTS[variant]
    )
    model = build_model(config)
    with torch.no_grad():  # as after training: no bias (layer norms included) is 0 any more
        for parameter in model.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    seqs = left_padded([3, 7, 0, 1], width=8)
    in_layout = LAYOUT_OF[layout]
    masks = None
    if training:
        rows, width = in_layout.mask_rows(seqs), model.dropout_width(seqs.shape[1])
        masks = StepMasks.draw(rows, width, config.dropout, torch.Generator().manual_seed(0))
    reps = model.encode(model.item_emb(seqs), in_layout(seqs, masks))
    if training:  # the masks are applied: other masks give other outputs
        other = StepMasks.draw(rows, width, config.dropout, torch.Generator().manual_seed(1))
        with torch.no_grad():
            assert not torch.allclose(model.encode(model.item_emb(seqs), in_layout(seqs, other)), reps)
    real = seqs != 0
    assert torch.isfinite(reps).all()
    assert (reps[~real] == 0).all()
    assert (reps[real].norm(dim=-1) > 0).all()
    # Gradients flow to the embeddings of real items only.
    (reps * torch.randn_like(reps)).sum().backward()  # not reps.sum(): flat through a layer norm
    grad = model.item_emb.weight.grad
    assert grad is not None and (grad[0] == 0).all()
    assert (grad[seqs[real].unique()].norm(dim=-1) > 0).all()
