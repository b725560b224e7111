"""Raw input formats: one reader per ``--format`` of ``catrec preprocess``, and the ``sequences.txt`` reader.

A parser yields ``(user, item, timestamp or None)`` records in file order; original ids stay strings. Files
ending in ``.gz`` are read through gzip; text is UTF-8 (ML-1M: latin-1), a leading UTF-8 byte-order mark
dropped from the bytes before decoding, whatever the encoding. Where a format says ids are integers (ML-1M),
anything else is refused. ``recbole`` reads RecBole atomic ``.inter`` files, finding the user, item and
timestamp columns in the typed header (``parse_recbole``). The on-disk format every later stage reads is
``sequences.txt``: one line per user, ``user item item ...``, ids contiguous from 1 (0 is padding), items in
chronological order (``read_sequence_lines``, ``load_sequences``). Bad input raises ``CatrecError`` naming
the file and line.
"""

from __future__ import annotations

import ast
import codecs
import gzip
import io
import json
import math
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

from catrec.errors import CatrecError
from catrec.vocabulary import DATA_FORMATS

Record = tuple[str, str, float | None]
"""One interaction as parsed: (original user id, original item id, timestamp or None)."""

AMAZON_JSON_KEYS = ("reviewerID", "asin", "unixReviewTime")
# ASCII digits only: str.isdigit also takes '²' and other Unicode digits that int() refuses or misreads.
_INTEGER = re.compile(r"[0-9]+")


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


# ---------------------------------------------------------------------------------------------- parsers


def _error(path: Path, line_number: int, message: str) -> CatrecError:
    return CatrecError(f"{path}:{line_number}: {message}")


def _open_binary(path: Path) -> io.BufferedReader | gzip.GzipFile:
    if path.name.endswith(".gz"):
        return gzip.open(path, "rb")
    return open(path, "rb")


def _open_text(path: Path, encoding: str) -> TextIO:
    """``path`` (gzip-compressed if named ``.gz``) as text in ``encoding``, a leading UTF-8 byte-order mark
    dropped from the bytes first: editors on Windows write one, and decoded (as latin-1 it is three
    characters, ``ï»¿``) it would become part of the first user id or header field."""
    binary = _open_binary(path)
    try:
        if binary.peek(len(codecs.BOM_UTF8)).startswith(codecs.BOM_UTF8):
            binary.read(len(codecs.BOM_UTF8))
    except BaseException:
        binary.close()  # a damaged .gz fails here already
        raise
    return io.TextIOWrapper(binary, encoding=encoding)


def _numbered_lines(path: Path, encoding: str = "utf-8") -> Iterator[tuple[int, str]]:
    """Yield ``(line number, line)`` for every non-blank line; read failures become ``CatrecError``."""
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
    """MovieLens-1M ``ratings.dat``: ``UserID::MovieID::Rating::Timestamp`` (latin-1); every rating counts.

    UserID and MovieID are integers (the format's README); anything else is a damaged or foreign line.
    """
    path = Path(path)
    for line_number, line in _numbered_lines(path, encoding="latin-1"):
        fields = line.strip().split("::")
        if len(fields) != 4:
            raise _error(
                path, line_number, f"expected UserID::MovieID::Rating::Timestamp, got {line.strip()!r}"
            )
        user, item, rating, timestamp = fields
        for name, value in (("UserID", user), ("MovieID", item)):
            if not _INTEGER.fullmatch(value):
                raise _error(path, line_number, f"{name} must be an integer, got {value!r}")
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
