"""Stage ``cascade``: the cascade matrix (Eq. 4.11) of a preprocessed dataset's training inputs, saved."""

from __future__ import annotations

import argparse
from pathlib import Path

from catrec.cascade import cascade_matrix
from catrec.commands import Command, add_data
from catrec.data.sequences import SequenceData
from catrec.io import save_torch_file
from catrec.vocabulary import CASCADE_TERMS


def write_cascade(
    data_dir: str | Path, *, max_len: int, batch_size: int, terms: str, output: str | Path
) -> None:
    """Compute C for the training inputs of a preprocessed dataset and save it atomically.

    Saves ``{"cascade": FloatTensor (m, T), "terms": terms, "batch_size": b}``; rows follow the users of
    ``SequenceData.from_dir(data_dir, max_len).train_inputs()``, the rows ``Batch.users`` indexes.
    """
    inputs = SequenceData.from_dir(data_dir, max_len).train_inputs()
    payload = {"cascade": cascade_matrix(inputs, batch_size, terms), "terms": terms, "batch_size": batch_size}
    save_torch_file(output, payload)


def _declare_cascade(parser: argparse.ArgumentParser) -> None:
    add_data(parser)
    parser.add_argument("--max-len", type=int, required=True, help="T")
    parser.add_argument("--batch-size", type=int, required=True, help="b, the training batch size")
    parser.add_argument("--terms", choices=CASCADE_TERMS, default="both")
    parser.add_argument("--output", type=Path, required=True)


COMMANDS = (
    Command(
        "cascade",
        "Compute the cascade matrix of Eq. 4.11 for the training inputs.",
        _declare_cascade,
        Command.calling(write_cascade),
    ),
)
