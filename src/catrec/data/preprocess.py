"""``catrec preprocess``: one raw file -> ``sequences.txt``, by k-core filtering and id remapping; the
leave-one-out split every later stage uses.

1. A parser (one per ``--format``) yields ``(user, item, timestamp or None)`` records in file order; original
   ids stay strings. Files ending in ``.gz`` are read through gzip. ``recbole`` reads RecBole atomic
   ``.inter`` files, finding the user, item and timestamp columns in the typed header (``parse_recbole``).
2. Records are grouped per user and sorted by timestamp. The sort is stable, so ties keep file order;
   formats without timestamps (``sequences``, ``pairs``) keep file order as it is.
3. Iterative k-core (as in S3-Rec / ICLRec): users and items with fewer than ``min_count`` interactions
   (rows, repeats included) are dropped until nothing changes; ``min_count=0`` disables it. The k-core is
   the unique largest subset where every user and item has ``min_count`` interactions, so the removal order
   does not change the result. Every user left needs 3 items (training, validation and test target of the
   leave-one-out split): a shorter one, possible when ``min_count`` < 3, is refused naming its original id.
4. Ids are remapped to 1..n, users and items separately. If every surviving original id of a kind is a
   non-negative decimal integer (and no two spell the same number, like ``7`` and ``007``), the new ids
   follow ascending numeric order (compared digit by digit, so ids of any length work), so an already
   contiguous file such as ``Beauty.txt`` keeps its ids and numeric ids keep their natural order. Otherwise
   (Amazon's ``reviewerID``/``asin`` strings) the new ids follow the order of first appearance in the raw
   file, which is deterministic for a given file.

Outputs (``sequences.txt``, ``stats.json``, ``user_map.tsv``, ``item_map.tsv``) are written to temporary
files and renamed into place only after everything succeeded; bad input raises ``CatrecError`` naming the
file and line before anything is written.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from collections.abc import Iterable
from contextlib import ExitStack
from operator import itemgetter
from pathlib import Path
from typing import Any

from catrec.commands import Command
from catrec.data.formats import PARSERS, Record
from catrec.errors import CatrecError
from catrec.io import atomic_path
from catrec.vocabulary import DATA_FORMATS

LEAVE_ONE_OUT_MIN = 3  # items a user needs: at least one training item, the validation and the test target


def leave_one_out(sequence: list[int]) -> tuple[list[int], int, int]:
    """Split one chronological sequence: (training items, validation target, test target).

    The last item is the test target, the second last the validation target, the rest is training.
    """
    if len(sequence) < LEAVE_ONE_OUT_MIN:
        raise ValueError(f"leave-one-out needs at least {LEAVE_ONE_OUT_MIN} items, got {len(sequence)}")
    return sequence[:-2], sequence[-2], sequence[-1]


def group_by_user(records: Iterable[Record]) -> tuple[dict[str, list[str]], list[str]]:
    """Per-user chronological item lists (users in order of first appearance), and items by first appearance.

    Sorting is stable, so equal timestamps keep file order; records without timestamps keep file order.
    """
    events: dict[str, list[tuple[float | None, str]]] = {}
    first_seen: dict[str, None] = {}  # an insertion-ordered set
    for user, item, timestamp in records:
        events.setdefault(user, []).append((timestamp, item))
        first_seen.setdefault(item, None)
    sequences: dict[str, list[str]] = {}
    for user, user_events in events.items():
        # A format has timestamps on every record or on none, so the first one tells.
        if user_events[0][0] is not None:
            user_events.sort(key=itemgetter(0))
        sequences[user] = [item for _, item in user_events]
    return sequences, list(first_seen)


def kcore(sequences: dict[str, list[str]], min_count: int) -> dict[str, list[str]]:
    """Iterative k-core: drop items, then users, with fewer than ``min_count`` interactions until stable.

    Returns a new dict in the input's user order; item order inside each sequence is kept.
    """
    current = dict(sequences)
    if min_count <= 0:
        return current
    while True:
        counts = Counter(item for items in current.values() for item in items)
        rare = {item for item, count in counts.items() if count < min_count}
        kept: dict[str, list[str]] = {}
        for user, items in current.items():
            remaining = [item for item in items if item not in rare] if rare else items
            if len(remaining) >= min_count:
                kept[user] = remaining
        if not rare and len(kept) == len(current):
            return kept
        current = kept


def _numeric_key(digits: str) -> tuple[int, str]:
    """Sort key of a decimal integer string by value, without ``int()`` (which refuses > 4300 digits)."""
    significant = digits.lstrip("0") or "0"
    return len(significant), significant


def remap_ids(original_ids: Iterable[str]) -> dict[str, int]:
    """Map unique original ids, given in order of first appearance, to 1..n (see the module docstring)."""
    ids = list(original_ids)
    numeric = all(original.isascii() and original.isdigit() for original in ids)
    if numeric and len({_numeric_key(original) for original in ids}) == len(ids):
        ids.sort(key=_numeric_key)
    return {original: new for new, original in enumerate(ids, start=1)}


# ----------------------------------------------------------------------------------------------- output


def _write_all(output_dir: Path, files: dict[str, str]) -> None:
    """Write every file to a temporary name first and rename them only once all are written."""
    with ExitStack() as renames:
        for name, text in files.items():
            temp = renames.enter_context(atomic_path(output_dir / name))
            temp.write_text(text, encoding="utf-8")


def _id_map_text(mapping: dict[str, int]) -> str:
    rows = sorted(mapping.items(), key=itemgetter(1))
    return "new_id\toriginal_id\n" + "".join(f"{new}\t{original}\n" for original, new in rows)


def preprocess(
    fmt: str, input_path: str | Path, output_dir: str | Path, min_count: int = 5
) -> dict[str, Any]:
    """Parse ``input_path`` in format ``fmt``, order per user, k-core filter, remap ids, write ``output_dir``.

    Writes ``sequences.txt``, ``stats.json``, ``user_map.tsv`` and ``item_map.tsv``
    (``new_id<TAB>original_id``) and returns the stats: ``{"users", "items", "interactions", "density"}``.
    """
    if fmt not in PARSERS:
        raise CatrecError(f"unknown format '{fmt}' (expected one of {', '.join(PARSERS)})")
    if min_count < 0:
        raise CatrecError(f"--min-count must be >= 0, got {min_count}")
    input_path, output_dir = Path(input_path), Path(output_dir)
    if not input_path.is_file():
        raise CatrecError(f"{input_path}: no such file")

    sequences, item_order = group_by_user(PARSERS[fmt](input_path))
    if not sequences:
        raise CatrecError(f"{input_path}: no interactions found")
    sequences = kcore(sequences, min_count)
    if not sequences:
        raise CatrecError(f"{input_path}: no interactions left after the {min_count}-core filter")
    short = [user for user, items in sequences.items() if len(items) < LEAVE_ONE_OUT_MIN]
    if short:
        others = f" (and {len(short) - 1} more such users)" if len(short) > 1 else ""
        raise CatrecError(
            f"{input_path}: user {short[0]} has {len(sequences[short[0]])} item(s){others} after the "
            f"{min_count}-core filter; the leave-one-out split needs {LEAVE_ONE_OUT_MIN} per user: "
            f"set --min-count (config min_count) to {LEAVE_ONE_OUT_MIN} or more"
        )

    user_ids = remap_ids(sequences)
    surviving = {item for items in sequences.values() for item in items}
    item_ids = remap_ids(item for item in item_order if item in surviving)

    lines = sorted(
        (user_ids[user], " ".join(str(item_ids[item]) for item in items)) for user, items in sequences.items()
    )
    interactions = sum(len(items) for items in sequences.values())
    stats = {
        "users": len(user_ids),
        "items": len(item_ids),
        "interactions": interactions,
        "density": interactions / (len(user_ids) * len(item_ids)),
    }
    _write_all(
        output_dir,
        {
            "sequences.txt": "".join(f"{user} {items}\n" for user, items in lines),
            "stats.json": json.dumps(stats, indent=2) + "\n",
            "user_map.tsv": _id_map_text(user_ids),
            "item_map.tsv": _id_map_text(item_ids),
        },
    )
    return stats


def _declare_preprocess(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", dest="fmt", required=True, choices=DATA_FORMATS)
    parser.add_argument("--input", dest="input_path", metavar="INPUT", type=Path, required=True)
    parser.add_argument("--output-dir", type=Path, required=True)
    parser.add_argument(
        "--min-count", type=int, default=5, help="k of the iterative k-core filter (0 disables it)"
    )


def _run_preprocess(args: argparse.Namespace) -> None:
    print(json.dumps(preprocess(args.fmt, args.input_path, args.output_dir, min_count=args.min_count)))


COMMANDS = (
    Command(
        "preprocess",
        "Parse a raw file, order per user, k-core filter, remap ids.",
        _declare_preprocess,
        _run_preprocess,
    ),
)
