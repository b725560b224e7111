"""Datasets: raw-format parsers, iterative k-core filtering, id remapping, the leave-one-out split.

The on-disk format every later stage reads is ``sequences.txt``: one line per user, ``user item item ...``,
ids contiguous from 1 (0 is padding), items in chronological order.

``preprocess`` turns one raw file into that format:

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

``export`` writes a preprocessed directory back out for other toolkits: ``recbole`` is a RecBole atomic
``.inter`` file whose timestamps are the positions in each sequence, so RecBole trains on exactly our order
and split, and reading it back (``--format recbole --min-count 0``) gives the same ``sequences.txt``.

Outputs (``sequences.txt``, ``stats.json``, ``user_map.tsv``, ``item_map.tsv``) are written to temporary
files and renamed into place only after everything succeeded; bad input raises ``CatrecError`` naming the
file and line before anything is written.
"""

from __future__ import annotations

import ast
import gzip
import json
import math
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from operator import itemgetter
from pathlib import Path
from typing import Any, TextIO

from catrec.errors import CatrecError
from catrec.io import atomic_path
from catrec.vocabulary import DATA_FORMATS, EXPORT_FORMATS

Record = tuple[str, str, float | None]
"""One interaction as parsed: (original user id, original item id, timestamp or None)."""

AMAZON_JSON_KEYS = ("reviewerID", "asin", "unixReviewTime")
LEAVE_ONE_OUT_MIN = 3  # items a user needs: at least one training item, the validation and the test target


def load_sequences(path: str | Path) -> list[list[int]]:
    """Read ``user item item ...`` lines into per-user item lists, ordered by user id."""
    sequences = read_user_sequences(path)
    return [sequences[user] for user in sorted(sequences)]


def read_user_sequences(path: str | Path) -> dict[int, list[int]]:
    """Read ``user item item ...`` lines into ``{user id: items}``, in file order."""
    return {user: items for _, user, items in read_sequence_lines(path)}


def read_sequence_lines(path: str | Path) -> list[tuple[int, int, list[int]]]:
    """``(line number, user id, items)`` of every ``user item item ...`` line, in file order."""
    path = Path(path)
    lines: list[tuple[int, int, list[int]]] = []
    seen: set[int] = set()
    for line_number, line in _numbered_lines(path):
        try:
            user, *items = (int(field) for field in line.split())
        except ValueError as exc:
            raise _error(path, line_number, f"expected integer ids, got '{line.strip()}'") from exc
        if user in seen:
            raise _error(path, line_number, f"user {user} appears twice")
        seen.add(user)
        lines.append((line_number, user, items))
    return lines


def leave_one_out(sequence: list[int]) -> tuple[list[int], int, int]:
    """Split one chronological sequence: (training items, validation target, test target).

    The last item is the test target, the second last the validation target, the rest is training.
    """
    if len(sequence) < LEAVE_ONE_OUT_MIN:
        raise ValueError(f"leave-one-out needs at least {LEAVE_ONE_OUT_MIN} items, got {len(sequence)}")
    return sequence[:-2], sequence[-2], sequence[-1]


# ---------------------------------------------------------------------------------------------- parsers


def _error(path: Path, line_number: int, message: str) -> CatrecError:
    return CatrecError(f"{path}:{line_number}: {message}")


def _open_text(path: Path, encoding: str) -> TextIO:
    if path.name.endswith(".gz"):
        return gzip.open(path, "rt", encoding=encoding)
    return open(path, encoding=encoding)


def _numbered_lines(path: Path, encoding: str = "utf-8-sig") -> Iterator[tuple[int, str]]:
    """Yield ``(line number, line)`` for every non-blank line; read failures become ``CatrecError``.

    UTF-8 by default with a leading byte-order mark dropped (``utf-8-sig``): editors on Windows write one, and
    it would otherwise become part of the first user id or header field.
    """
    line_number = 0
    try:
        with _open_text(path, encoding) as handle:
            for line_number, line in enumerate(handle, start=1):
                if line.strip():
                    yield line_number, line
    # A truncated .gz or a stray byte surfaces while iterating: report the line reading stopped at.
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise _error(path, line_number + 1, f"cannot read: {exc}") from exc


def _check_ids(path: Path, line_number: int, user: str, item: str) -> None:
    if not user or not item:
        raise _error(path, line_number, "empty user or item id")


def _record(path: Path, line_number: int, user: str, item: str, timestamp: Any) -> Record:
    """Validate the fields common to the timestamped formats."""
    _check_ids(path, line_number, user, item)
    try:
        time = float(timestamp)
    except (TypeError, ValueError) as exc:
        raise _error(path, line_number, f"timestamp is not a number: {timestamp!r}") from exc
    # NaN would silently scramble the sort; infinities are no real times either.
    if not math.isfinite(time):
        raise _error(path, line_number, f"timestamp is not finite: {timestamp!r}")
    return user, item, time


def _rated_record(path: Path, line_number: int, user: str, item: str, rating: str, timestamp: str) -> Record:
    """A record from a rating line; the rating is not used (every rating is an interaction) but must parse."""
    try:
        float(rating)
    except ValueError as exc:
        raise _error(path, line_number, f"rating is not a number: {rating!r}") from exc
    return _record(path, line_number, user, item, timestamp)


def parse_ml1m(path: str | Path) -> Iterator[Record]:
    """MovieLens-1M ``ratings.dat``: ``UserID::MovieID::Rating::Timestamp`` (latin-1); every rating counts."""
    path = Path(path)
    for line_number, line in _numbered_lines(path, encoding="latin-1"):
        fields = line.strip().split("::")
        if len(fields) != 4:
            raise _error(
                path, line_number, f"expected UserID::MovieID::Rating::Timestamp, got {line.strip()!r}"
            )
        user, item, rating, timestamp = fields
        yield _rated_record(path, line_number, user, item, rating, timestamp)


def parse_amazon_json(path: str | Path) -> Iterator[Record]:
    """Amazon 2014 review files, one review per line with ``reviewerID``, ``asin``, ``unixReviewTime``.

    Most lines are JSON; older dumps hold Python dict literals (single quotes), which ``ast.literal_eval``
    reads without executing anything.
    """
    path = Path(path)
    for line_number, line in _numbered_lines(path):
        try:
            review = json.loads(line)
        except json.JSONDecodeError:
            try:
                review = ast.literal_eval(line.strip())
            except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError) as exc:
                raise _error(path, line_number, "neither JSON nor a Python literal") from exc
        if not isinstance(review, dict):
            raise _error(path, line_number, f"expected an object, got {type(review).__name__}")
        for key in AMAZON_JSON_KEYS:
            if key not in review:
                raise _error(path, line_number, f"missing key '{key}'")
        yield _record(
            path, line_number, str(review["reviewerID"]), str(review["asin"]), review["unixReviewTime"]
        )


def parse_amazon_csv(path: str | Path) -> Iterator[Record]:
    """Amazon ratings-only CSV ``user,item,rating,timestamp``; a header line ``user,...`` is skipped.

    The original files are unquoted (ids never contain commas), so a plain split is exact and fast.
    """
    path = Path(path)
    for index, (line_number, line) in enumerate(_numbered_lines(path)):
        fields = [field.strip() for field in line.split(",")]
        if index == 0 and fields[0] == "user":
            continue
        if len(fields) != 4:
            raise _error(path, line_number, f"expected user,item,rating,timestamp, got {line.strip()!r}")
        user, item, rating, timestamp = fields
        yield _rated_record(path, line_number, user, item, rating, timestamp)


def parse_sequences(path: str | Path) -> Iterator[Record]:
    """``user item item ...`` per line, items already chronological; no timestamps."""
    path = Path(path)
    seen: set[str] = set()
    for line_number, line in _numbered_lines(path):
        user, *items = line.split()
        if not items:
            raise _error(path, line_number, f"user {user} has no items")
        # A second line for the same user would make its order ambiguous.
        if user in seen:
            raise _error(path, line_number, f"user {user} appears twice")
        seen.add(user)
        for item in items:
            yield user, item, None


def parse_pairs(path: str | Path) -> Iterator[Record]:
    """``user item`` per line, chronological per user; no timestamps."""
    path = Path(path)
    for line_number, line in _numbered_lines(path):
        fields = line.split()
        if len(fields) != 2:
            raise _error(path, line_number, f"expected 'user item', got {line.strip()!r}")
        yield fields[0], fields[1], None


def _recbole_column(
    path: Path,
    line_number: int,
    fields: list[tuple[str, str]],
    field_type: str,
    name: str,
    prefix: str | None,
) -> int | None:
    """Index of the header field ``name:field_type``, else of the only ``prefix*:field_type``, else None."""
    typed = [index for index, (field, type_) in enumerate(fields) if type_ == field_type]
    exact = [index for index in typed if fields[index][0] == name]
    if exact or prefix is None:
        return exact[0] if exact else None
    candidates = [index for index in typed if fields[index][0].startswith(prefix)]
    if len(candidates) > 1:
        found = ", ".join(f"{fields[index][0]}:{field_type}" for index in candidates)
        raise _error(path, line_number, f"several {prefix} columns ({found}) and none named {name}")
    return candidates[0] if candidates else None


def parse_recbole(path: str | Path) -> Iterator[Record]:
    """RecBole atomic ``.inter`` file: tab-separated, a typed header like ``user_id:token item_id:token ...``.

    The user column is the ``:token`` field named ``user_id``, else the only ``:token`` field whose name
    starts with ``user``; the item column likewise; the timestamp is the ``:float`` field named
    ``timestamp``. Without one, records keep file order (as RecBole does). Other columns are not read.
    """
    path = Path(path)
    lines = _numbered_lines(path)
    header = next(lines, None)
    if header is None:
        return
    header_line, text = header
    fields = []
    for field in text.rstrip("\r\n").split("\t"):
        name, sep, field_type = field.strip().partition(":")
        if not sep or not name or not field_type:
            raise _error(path, header_line, f"expected a RecBole header of name:type fields, got {field!r}")
        fields.append((name, field_type))
    ids = []
    for kind in ("user", "item"):
        column = _recbole_column(path, header_line, fields, "token", f"{kind}_id", kind)
        if column is None:
            raise _error(
                path, header_line, f"no {kind} column ({kind}_id:token or {kind}*:token) in the header"
            )
        ids.append(column)
    user_column, item_column = ids
    time_column = _recbole_column(path, header_line, fields, "float", "timestamp", None)
    for line_number, line in lines:
        values = [value.strip() for value in line.rstrip("\r\n").split("\t")]
        if len(values) != len(fields):
            raise _error(path, line_number, f"expected {len(fields)} tab-separated fields, got {len(values)}")
        user, item = values[user_column], values[item_column]
        if time_column is not None:
            yield _record(path, line_number, user, item, values[time_column])
        else:
            _check_ids(path, line_number, user, item)
            yield user, item, None


PARSERS: dict[str, Callable[[str | Path], Iterator[Record]]] = {
    "ml-1m": parse_ml1m,
    "amazon-json": parse_amazon_json,
    "amazon-csv": parse_amazon_csv,
    "sequences": parse_sequences,
    "pairs": parse_pairs,
    "recbole": parse_recbole,
}
assert tuple(PARSERS) == DATA_FORMATS, "every format of catrec.vocabulary has its parser"


# ------------------------------------------------------------------------------------- transformations


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


# ----------------------------------------------------------------------------------------------- export

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
