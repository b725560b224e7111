"""``catrec export``: a preprocessed dataset written back out for other toolkits.

``recbole`` is a RecBole atomic ``.inter`` file whose timestamps are the positions in each sequence, so
RecBole trains on exactly our order and split, and reading it back (``--format recbole --min-count 0``) gives
the same ``sequences.txt``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from catrec.commands import Command, add_data
from catrec.data.formats import read_user_sequences
from catrec.errors import CatrecError
from catrec.io import atomic_path
from catrec.vocabulary import EXPORT_FORMATS

RECBOLE_HEADER = ("user_id:token", "item_id:token", "timestamp:float")


def export_recbole(data_dir: str | Path, output: str | Path) -> int:
    """Write a preprocessed ``sequences.txt`` as a RecBole atomic ``.inter`` file; returns the row count.

    One row per interaction, user by user in ``sequences.txt`` order, with our ids as tokens and, as the
    timestamp, the item's position in the user's sequence (1, 2, ...): RecBole's chronological ordering then
    reproduces ours, and ``preprocess --format recbole --min-count 0`` reads the file back to the same
    ``sequences.txt``.
    """
    source = Path(data_dir) / "sequences.txt"
    if not source.is_file():
        raise CatrecError(f"{source}: no such file (expected a directory written by catrec preprocess)")
    sequences = read_user_sequences(source)
    rows = [
        f"{user}\t{item}\t{position}\n"
        for user, items in sequences.items()
        for position, item in enumerate(items, start=1)
    ]
    with atomic_path(Path(output)) as temp:
        temp.write_text("\t".join(RECBOLE_HEADER) + "\n" + "".join(rows), encoding="utf-8")
    return len(rows)


EXPORTERS: dict[str, Callable[[str | Path, str | Path], int]] = {"recbole": export_recbole}
assert tuple(EXPORTERS) == EXPORT_FORMATS, "every export format of catrec.vocabulary has its writer"


def export(fmt: str, data_dir: str | Path, output: str | Path) -> int:
    """Write the preprocessed dataset in ``data_dir`` to ``output`` in format ``fmt``; returns the rows."""
    if fmt not in EXPORTERS:
        raise CatrecError(f"unknown export format '{fmt}' (expected one of {', '.join(EXPORTERS)})")
    return EXPORTERS[fmt](data_dir, output)


def _declare_export(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", dest="fmt", required=True, choices=EXPORT_FORMATS)
    add_data(parser)
    parser.add_argument("--output", type=Path, required=True, help="file to write, e.g. ml-100k.inter")


def _run_export(args: argparse.Namespace) -> None:
    rows = export(args.fmt, args.data_dir, args.output)
    print(f"{args.output}: {rows} interactions")


COMMANDS = (
    Command(
        "export",
        "Write a preprocessed dataset for another toolkit (recbole: an atomic .inter file with our order).",
        _declare_export,
        _run_export,
    ),
)
