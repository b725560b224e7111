"""The cascade matrix of Eq. 4.11 against a direct double loop, and the perturbation factors 1/C."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from catrec.cascade import cascade_matrix, perturbation_factors
from catrec.data.sequences import SequenceData
from catrec.stages.cascade import write_cascade


def random_inputs(users: int, length: int, items: int, seed: int) -> torch.Tensor:
    """Left-padded inputs of random lengths 1..length; items repeat within and across users."""
    generator = torch.Generator().manual_seed(seed)
    seqs = torch.randint(1, items + 1, (users, length), generator=generator)
    lengths = torch.randint(1, length + 1, (users,), generator=generator)
    padding = torch.arange(length).unsqueeze(0) < (length - lengths).unsqueeze(1)
    return seqs.masked_fill(padding, 0)


def cascade_by_loops(seqs: torch.Tensor, batch_size: int, terms: str) -> torch.Tensor:
    """Eq. 4.11 written literally: every (i, t) against every (k != i, l)."""
    users, length = seqs.shape
    rows = seqs.tolist()
    result = torch.zeros(users, length, dtype=torch.float64)
    for i in range(users):
        for t in range(1, length + 1):
            item = rows[i][t - 1]
            if item == 0:
                continue
            cross = sum(
                1 + length - l
                for k in range(users)
                if k != i
                for l in range(1, length + 1)  # noqa: E741 - the paper's index name
                if rows[k][l - 1] == item
            )
            temporal = 1 + length - t
            scaled = batch_size / users * cross
            result[i, t - 1] = {"both": temporal + scaled, "temporal": temporal, "cross": 1 + scaled}[terms]
    return result.float()


@pytest.mark.parametrize("terms", ["both", "temporal", "cross"])
@pytest.mark.parametrize(("users", "length", "items", "seed"), [(7, 5, 4, 0), (12, 9, 15, 1), (20, 6, 8, 2)])
def test_cascade_matrix_matches_double_loop(
    terms: str, users: int, length: int, items: int, seed: int
) -> None:
    seqs = random_inputs(users, length, items, seed)
    assert (seqs == 0).any(), "the case must contain padding"
    real_rows = [[item for item in row if item] for row in seqs.tolist()]
    assert any(len(set(row)) < len(row) for row in real_rows), "and items repeated within a user"
    expected = cascade_by_loops(seqs, batch_size=3, terms=terms)
    torch.testing.assert_close(cascade_matrix(seqs, batch_size=3, terms=terms), expected)


def test_cascade_matrix_small_example_by_hand() -> None:
    # T = 3, m = 2, b = 2 (so b/m = 1). User 0: [_, 5, 6]; user 1: [5, 6, 5].
    seqs = torch.tensor([[0, 5, 6], [5, 6, 5]])
    cascade = cascade_matrix(seqs, batch_size=2)
    # (0, t=2) item 5: temporal 2; item 5 at user 1 columns 1 and 3 -> weights 3 + 1.
    # (0, t=3) item 6: temporal 1; item 6 at user 1 column 2 -> weight 2.
    # (1, t=1) item 5: temporal 3; user 0 column 2 -> 2 (its own repeat at t=3 does not count).
    expected = torch.tensor([[0.0, 2 + 4, 1 + 2], [3 + 2, 2 + 1, 1 + 2]])
    torch.testing.assert_close(cascade, expected)


def test_cascade_matrix_rejects_unknown_terms_and_non_matrices() -> None:
    with pytest.raises(ValueError, match="terms"):
        cascade_matrix(torch.ones(2, 2, dtype=torch.long), 1, terms="all")
    with pytest.raises(ValueError, match=r"expected an \(m, T\) matrix of item ids, got shape \(3,\)"):
        cascade_matrix(torch.ones(3, dtype=torch.long), 1)


@pytest.mark.parametrize("seed", [0, 1])
def test_factors_are_raw_inverse_cascade_at_real_positions_and_zero_at_padding(seed: int) -> None:
    seqs = random_inputs(30, 8, 10, seed)
    cascade = cascade_matrix(seqs, batch_size=4)
    real = seqs != 0
    factors = perturbation_factors(cascade, real)
    assert (factors[~real] == 0).all()
    # Raw 1/C: no normalisation to mean one (the level-1 step is normalised to epsilon afterwards).
    torch.testing.assert_close(factors[real], 1.0 / cascade[real], rtol=0, atol=0)
    assert factors[real].mean() < 1.0, "every C >= 1, so a mean-one normalisation would show here"
    # A subset of rows (a batch) gets exactly its rows of the full-matrix factors.
    rows = torch.tensor([0, 3, 7, 11])
    torch.testing.assert_close(perturbation_factors(cascade[rows], real[rows]), factors[rows], rtol=0, atol=0)


def test_factors_are_inverse_to_cascade() -> None:
    cascade = torch.tensor([[0.0, 4.0, 2.0], [1.0, 2.0, 8.0]])
    factors = perturbation_factors(cascade, cascade > 0)
    expected = torch.tensor([[0.0, 0.25, 0.5], [1.0, 0.5, 0.125]])
    torch.testing.assert_close(factors, expected, rtol=0, atol=0)


def test_factors_ignore_values_at_padding() -> None:
    # Whatever sits in C at a padding position (0 gives 1/0 = inf), the factor there is 0, never inf or NaN.
    cascade = torch.tensor([[0.0, 0.0, 2.0], [5.0, 1.0, 4.0]])
    real = torch.tensor([[False, False, True], [False, True, True]])
    factors = perturbation_factors(cascade, real)
    torch.testing.assert_close(factors, torch.tensor([[0.0, 0.0, 0.5], [0.0, 1.0, 0.25]]), rtol=0, atol=0)


def test_write_cascade_saves_the_training_inputs_cascade(toy_data_dir: Path, tmp_path: Path) -> None:
    output = tmp_path / "cascade" / "both.pt"
    write_cascade(toy_data_dir, max_len=12, batch_size=16, terms="both", output=output)
    saved = torch.load(output)
    inputs = SequenceData.from_dir(toy_data_dir, 12).train_inputs()
    assert saved["terms"] == "both" and saved["batch_size"] == 16
    torch.testing.assert_close(saved["cascade"], cascade_matrix(inputs, 16, "both"))
    assert ((saved["cascade"] > 0) == (inputs != 0)).all()
    assert [p.name for p in output.parent.iterdir()] == ["both.pt"], "no temporary file is left behind"
