"""Stage ``cascade``: the cascade matrix (Eq. 4.11) of a preprocessed dataset's training inputs, saved."""

from __future__ import annotations

from pathlib import Path

from catrec.cascade import cascade_matrix
from catrec.data.sequences import SequenceData
from catrec.io import save_torch_file


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
