"""Raw-format parsers, per-user ordering, iterative k-core, id remapping, atomic outputs, leave-one-out."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import BEAUTY_PATH, ML100K_PATH, REPO_ROOT, require_shared

from catrec.cli import main
from catrec.data.export import export
from catrec.data.formats import (
    load_sequences,
    parse_amazon_csv,
    parse_amazon_json,
    parse_ml1m,
    parse_pairs,
    parse_recbole,
    parse_sequences,
)
from catrec.data.preprocess import kcore, leave_one_out, preprocess, remap_ids
from catrec.errors import CatrecError
from catrec.toy import generate_sequences, write_toy_zip
from catrec.vocabulary import DATA_FORMATS

FIXTURES = Path(__file__).parent / "fixtures" / "data"
OUTPUTS = ["item_map.tsv", "sequences.txt", "stats.json", "user_map.tsv"]


def read_outputs(directory: Path) -> tuple[list[str], dict, list[str], list[str]]:
    """(sequences.txt lines, stats, user_map.tsv lines, item_map.tsv lines)."""
    return (
        (directory / "sequences.txt").read_text().splitlines(),
        json.loads((directory / "stats.json").read_text()),
        (directory / "user_map.tsv").read_text().splitlines(),
        (directory / "item_map.tsv").read_text().splitlines(),
    )


def original_sequences(directory: Path) -> dict[str, list[str]]:
    """sequences.txt translated back to original ids through the two maps."""
    users = dict(line.split("\t") for line in (directory / "user_map.tsv").read_text().splitlines()[1:])
    items = dict(line.split("\t") for line in (directory / "item_map.tsv").read_text().splitlines()[1:])
    result = {}
    for line in (directory / "sequences.txt").read_text().splitlines():
        user, *sequence = line.split()
        result[users[user]] = [items[item] for item in sequence]
    return result


# ------------------------------------------------------------------------------------------- parsers


def test_parse_ml1m_yields_file_order_with_timestamps() -> None:
    assert list(parse_ml1m(FIXTURES / "ratings.dat")) == [
        ("1", "10", 300.0),
        ("1", "20", 100.0),
        ("2", "10", 50.0),
        ("1", "30", 100.0),
        ("2", "30", 50.0),
        ("2", "40", 400.0),
    ]


def test_parse_amazon_json_reads_python_literal_lines() -> None:
    records = list(parse_amazon_json(FIXTURES / "reviews.json"))
    # Line 2 is a Python dict literal (single quotes, an apostrophe inside a double-quoted string).
    assert "'reviewerID'" in (FIXTURES / "reviews.json").read_text().splitlines()[1]
    assert records == [
        ("AX", "B002", 1400000200.0),
        ("AY", "B001", 1400000100.0),
        ("AX", "B001", 1400000100.0),
        ("AY", "B003", 1400000100.0),
        ("AX", "B004", 1400000300.0),
        ("AY", "B004", 1400000300.0),
    ]


def test_parse_amazon_json_reads_gzip(tmp_path: Path) -> None:
    compressed = tmp_path / "reviews_Beauty_5.json.gz"
    compressed.write_bytes(gzip.compress((FIXTURES / "reviews.json").read_bytes()))
    assert list(parse_amazon_json(compressed)) == list(parse_amazon_json(FIXTURES / "reviews.json"))


def test_parse_amazon_csv_with_and_without_header(tmp_path: Path) -> None:
    expected = [("A2", "0001", 1300.0), ("A1", "0002", 1200.0), ("A2", "0002", 1100.0)]
    expected += [("A1", "0003", 1400.0), ("A1", "0004", 1500.0), ("A2", "0003", 1400.0)]
    assert list(parse_amazon_csv(FIXTURES / "ratings.csv")) == expected
    headerless = tmp_path / "ratings_Beauty.csv"
    headerless.write_text("".join((FIXTURES / "ratings.csv").read_text().splitlines(keepends=True)[1:]))
    assert list(parse_amazon_csv(headerless)) == expected


def test_parse_sequences_and_pairs(tmp_path: Path) -> None:
    sequences = tmp_path / "seq.txt"
    sequences.write_text("u1 b a\n\nu2 c\n")
    assert list(parse_sequences(sequences)) == [("u1", "b", None), ("u1", "a", None), ("u2", "c", None)]
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("u1 b\nu2 c\nu1 a\n")
    assert list(parse_pairs(pairs)) == [("u1", "b", None), ("u2", "c", None), ("u1", "a", None)]


def test_parse_recbole_finds_columns_by_name_and_type(tmp_path: Path) -> None:
    inter = tmp_path / "data.inter"
    # Columns in any order; extra columns are ignored; a :float user_id-like field is not the user.
    inter.write_text(
        "rating:float\ttimestamp:float\titem_id:token\tuser_score:float\tuser_id:token\n"
        "5\t300\ti1\t0.5\tu1\n\n4\t100\ti2\t0.1\tu2\n"
    )
    assert list(parse_recbole(inter)) == [("u1", "i1", 300.0), ("u2", "i2", 100.0)]
    # Without user_id / item_id the only token column starting with user / item counts; no timestamp column:
    # records keep file order.
    inter.write_text("item:token\tuser_name:token\tstamp:float\nb\tx\t2\na\tx\t1\n")
    assert list(parse_recbole(inter)) == [("x", "b", None), ("x", "a", None)]


@pytest.mark.parametrize("fmt", DATA_FORMATS)
def test_every_format_is_a_cli_choice_and_in_the_schema(fmt: str) -> None:
    schema = yaml.safe_load((REPO_ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text())
    dataset = schema["properties"]["datasets"]["additionalProperties"]
    assert fmt in dataset["properties"]["format"]["enum"]
    with pytest.raises(SystemExit) as caught:
        main(["preprocess", "--format", fmt, "--help"])
    assert caught.value.code == 0


MALFORMED = [
    # (format, file name, content, bad line number, fragment of the message)
    ("ml-1m", "ratings.dat", "1::10::5::300\n1::20::5\n", 2, "UserID::MovieID"),
    ("ml-1m", "ratings.dat", "1::10::5::300\n\n1::20::5::soon\n", 3, "timestamp"),
    ("ml-1m", "ratings.dat", "1::10::five::300\n", 1, "rating"),
    (
        "amazon-json",
        "reviews.json",
        '{"reviewerID": "A", "asin": "B", "unixReviewTime": 1}\n{"reviewerID": \n',
        2,
        "neither JSON",
    ),
    ("amazon-json", "reviews.json", '\n{"reviewerID": "A", "asin": "B"}\n', 2, "unixReviewTime"),
    # literal_eval refuses code, so this is reported instead of being executed.
    ("amazon-json", "reviews.json", "__import__('os').system('false')\n", 1, "neither JSON"),
    ("amazon-json", "reviews.json", "[1, 2]\n", 1, "expected an object"),
    ("amazon-csv", "ratings.csv", "A,B,5.0,100\nA,B,5.0\n", 2, "user,item,rating,timestamp"),
    ("amazon-csv", "ratings.csv", "A,B,5.0,100\n,C,5.0,100\n", 2, "empty"),
    ("sequences", "seq.txt", "1 2 3\n4\n", 2, "no items"),
    ("sequences", "seq.txt", "1 2 3\n2 3\n1 4\n", 3, "appears twice"),
    ("pairs", "pairs.txt", "1 2\n1 2 3\n", 2, "expected 'user item'"),
    ("recbole", "data.inter", "\n196\t242\t3\t881250949\n", 2, "name:type"),
    ("recbole", "data.inter", "user_id:float\titem_id:token\n1\t2\n", 1, "no user column"),
    ("recbole", "data.inter", "user_a:token\tuser_b:token\titem_id:token\n", 1, "several user columns"),
    ("recbole", "data.inter", "user_id:token\titem_id:token\n1\t2\n1\t2\t3\n", 3, "2 tab-separated"),
    ("recbole", "data.inter", "user_id:token\titem_id:token\n1\t2\n\t3\n", 3, "empty"),
    (
        "recbole",
        "data.inter",
        "user_id:token\titem_id:token\ttimestamp:float\n1\t2\t5\n1\t3\tnan\n",
        3,
        "not finite",
    ),
]


@pytest.mark.parametrize(("fmt", "name", "content", "line", "fragment"), MALFORMED)
def test_malformed_line_names_file_and_line_and_writes_nothing(
    tmp_path: Path, fmt: str, name: str, content: str, line: int, fragment: str
) -> None:
    path = tmp_path / name
    path.write_text(content)
    output_dir = tmp_path / "out"
    with pytest.raises(CatrecError, match=f"{name}:{line}: ") as caught:
        preprocess(fmt, path, output_dir, min_count=0)
    assert fragment in str(caught.value)
    assert not output_dir.exists()


def test_truncated_gzip_is_a_catrec_error(tmp_path: Path) -> None:
    path = tmp_path / "reviews.json.gz"
    path.write_bytes(gzip.compress((FIXTURES / "reviews.json").read_bytes() * 50)[:-40])
    with pytest.raises(CatrecError, match=r"reviews\.json\.gz:\d+: cannot read"):
        preprocess("amazon-json", path, tmp_path / "out", min_count=0)


def test_cli_reports_bad_line_and_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "ratings.dat"
    path.write_text("1::10::5::300\n1:20:5:300\n")
    argv = ["preprocess", "--format", "ml-1m", "--input", str(path), "--output-dir", str(tmp_path / "out")]
    assert main(argv) == 2
    assert "ratings.dat:2:" in capsys.readouterr().err


# ------------------------------------------------------------------------------ ordering and remapping


def test_ml1m_orders_by_timestamp_and_ties_keep_file_order(tmp_path: Path) -> None:
    preprocess("ml-1m", FIXTURES / "ratings.dat", tmp_path, min_count=0)
    sequences, stats, user_map, item_map = read_outputs(tmp_path)
    # user 1: 20 (t=100) and 30 (t=100) tie and keep file order, then 10 (t=300); items 10..40 -> 1..4.
    assert sequences == ["1 2 3 1", "2 1 3 4"]
    assert stats == {"users": 2, "items": 4, "interactions": 6, "density": 6 / 8}
    assert user_map == ["new_id\toriginal_id", "1\t1", "2\t2"]
    assert item_map == ["new_id\toriginal_id", "1\t10", "2\t20", "3\t30", "4\t40"]


def test_amazon_json_string_ids_follow_first_appearance(tmp_path: Path) -> None:
    preprocess("amazon-json", FIXTURES / "reviews.json", tmp_path, min_count=0)
    sequences, _, user_map, item_map = read_outputs(tmp_path)
    assert user_map == ["new_id\toriginal_id", "1\tAX", "2\tAY"]
    assert item_map == ["new_id\toriginal_id", "1\tB002", "2\tB001", "3\tB003", "4\tB004"]
    # AX: B001 (t=100) before B002 (t=200); AY: B001 and B003 tie at t=100 and keep file order.
    assert sequences == ["1 2 1 4", "2 2 3 4"]


def test_amazon_csv_numeric_items_sorted_string_users_by_appearance(tmp_path: Path) -> None:
    preprocess("amazon-csv", FIXTURES / "ratings.csv", tmp_path, min_count=0)
    sequences, _, user_map, item_map = read_outputs(tmp_path)
    assert user_map == ["new_id\toriginal_id", "1\tA2", "2\tA1"]
    assert item_map == ["new_id\toriginal_id", "1\t0001", "2\t0002", "3\t0003", "4\t0004"]
    assert sequences == ["1 2 1 3", "2 2 3 4"]


def test_formats_without_timestamps_keep_file_order(tmp_path: Path) -> None:
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("9 30\n5 10\n9 20\n5 50\n9 10\n5 40\n")
    preprocess("pairs", pairs, tmp_path / "out", min_count=0)
    assert original_sequences(tmp_path / "out") == {"5": ["10", "50", "40"], "9": ["30", "20", "10"]}
    assert read_outputs(tmp_path / "out")[0] == ["1 1 5 4", "2 3 2 1"]


@pytest.mark.parametrize(
    ("ids", "expected"),
    [
        (["10", "2", "33"], {"2": 1, "10": 2, "33": 3}),  # integers: ascending numeric order
        (["b", "a", "10"], {"b": 1, "a": 2, "10": 3}),  # strings: first appearance
        (["7", "007"], {"7": 1, "007": 2}),  # same number spelled twice: first appearance
        (["5", "-1"], {"5": 1, "-1": 2}),  # only non-negative decimals count as integers
        (["9" * 5000, "10", "1" + "0" * 4999], {"10": 1, "1" + "0" * 4999: 2, "9" * 5000: 3}),  # any length
        (["9" * 5000, "10", "0" + "9" * 5000], {"9" * 5000: 1, "10": 2, "0" + "9" * 5000: 3}),
    ],
)
def test_remap_ids(ids: list[str], expected: dict[str, int]) -> None:
    assert remap_ids(ids) == expected


def test_5000_digit_id_is_kept_verbatim(tmp_path: Path) -> None:
    long_id = "9" * 5000
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("".join(f"{user} {item}\n" for user in (long_id, "7") for item in (1, 2, 3)))
    argv = ["preprocess", "--format", "pairs", "--input", str(pairs), "--output-dir", str(tmp_path / "out")]
    command = [sys.executable, "-m", "catrec.cli", *argv, "--min-count", "0"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert read_outputs(tmp_path / "out")[2] == ["new_id\toriginal_id", "1\t7", f"2\t{long_id}"]


# ------------------------------------------------------------------------------------------- k-core

# With k=2: d is rare, so u4 drops to one item and leaves; that makes c rare, so u3 leaves; only then is the
# result stable. A single pass would wrongly keep u3 and c.
CASCADE = {"u1": ["a", "b"], "u2": ["a", "b"], "u3": ["b", "c"], "u4": ["c", "d"]}


def test_kcore_iterates_until_stable() -> None:
    assert kcore(CASCADE, 2) == {"u1": ["a", "b"], "u2": ["a", "b"]}


def test_kcore_counts_rows_and_zero_disables() -> None:
    repeated = {"u1": ["x", "x", "x"], "u2": ["y"]}
    assert kcore(repeated, 3) == {"u1": ["x", "x", "x"]}
    assert kcore(repeated, 0) == repeated


def test_preprocess_kcore_survivors_and_min_count_zero(tmp_path: Path) -> None:
    # With k=3: d and e are rare, so u4 drops to one item and leaves; u1..u3 and a, b, c survive.
    raw = {"u1": ["a", "b", "c"], "u2": ["a", "b", "c"], "u3": ["a", "b", "c"], "u4": ["c", "d", "e"]}
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("".join(f"{user} {item}\n" for user, items in raw.items() for item in items))
    stats = preprocess("pairs", pairs, tmp_path / "k3", min_count=3)
    assert stats == {"users": 3, "items": 3, "interactions": 9, "density": 1.0}
    assert original_sequences(tmp_path / "k3") == {user: raw[user] for user in ("u1", "u2", "u3")}

    argv = ["preprocess", "--format", "pairs", "--input", str(pairs), "--output-dir", str(tmp_path / "k0")]
    assert main([*argv, "--min-count", "0"]) == 0
    assert original_sequences(tmp_path / "k0") == raw
    assert json.loads((tmp_path / "k0" / "stats.json").read_text())["interactions"] == 12


def test_user_too_short_for_leave_one_out_is_named(tmp_path: Path) -> None:
    sequences = tmp_path / "seq.txt"
    sequences.write_text("u1 a b c\nu77 a b\nu3 a b c d\n")
    output_dir = tmp_path / "out"
    argv = ["preprocess", "--format", "sequences", "--input", str(sequences), "--output-dir", str(output_dir)]
    result = subprocess.run(
        [sys.executable, "-m", "catrec.cli", *argv, "--min-count", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr == (
        f"catrec preprocess: error: {sequences}: user u77 has 2 item(s) after the 0-core filter; "
        "the leave-one-out split needs 3 per user: set --min-count (config min_count) to 3 or more\n"
    )
    assert not output_dir.exists()


# ------------------------------------------------------------------------------------ atomic outputs


def test_errors_leave_previous_outputs_unchanged(tmp_path: Path) -> None:
    output_dir = tmp_path / "out"
    preprocess("ml-1m", FIXTURES / "ratings.dat", output_dir, min_count=0)
    before = {path.name: path.read_bytes() for path in output_dir.iterdir()}
    assert sorted(before) == OUTPUTS

    bad = tmp_path / "bad.dat"
    bad.write_text("3::10::5::1\n3::11::5\n")
    with pytest.raises(CatrecError, match="bad.dat:2:"):
        preprocess("ml-1m", bad, output_dir, min_count=0)
    # Every user has fewer than 5 items: nothing survives the filter.
    with pytest.raises(CatrecError, match="no interactions left"):
        preprocess("ml-1m", FIXTURES / "ratings.dat", output_dir, min_count=5)
    with pytest.raises(CatrecError, match="no such file"):
        preprocess("ml-1m", tmp_path / "missing.dat", output_dir)
    assert {path.name: path.read_bytes() for path in output_dir.iterdir()} == before


def test_failed_write_removes_temporary_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(source: str | Path, target: str | Path) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("catrec.io.os.replace", refuse)
    with pytest.raises(CatrecError, match=r"^cannot write .*item_map\.tsv: disk full"):
        preprocess("ml-1m", FIXTURES / "ratings.dat", tmp_path, min_count=0)
    assert list(tmp_path.iterdir()) == []


def test_unknown_format_and_negative_min_count(tmp_path: Path) -> None:
    with pytest.raises(CatrecError, match="unknown format"):
        preprocess("netflix", FIXTURES / "ratings.dat", tmp_path)
    with pytest.raises(CatrecError, match="min-count"):
        preprocess("ml-1m", FIXTURES / "ratings.dat", tmp_path, min_count=-1)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------------------- leave-one-out


def test_leave_one_out() -> None:
    assert leave_one_out([4, 8, 15, 16]) == ([4, 8], 15, 16)
    assert leave_one_out([1, 2, 3]) == ([1], 2, 3)
    with pytest.raises(ValueError, match="at least 3"):
        leave_one_out([1, 2])


# ----------------------------------------------------------------------------------------- real data


def test_beauty_through_cli_matches_table1(tmp_path: Path) -> None:
    beauty = require_shared(BEAUTY_PATH)
    argv = ["preprocess", "--format", "sequences", "--input", str(beauty), "--output-dir", str(tmp_path)]
    assert main(argv) == 0
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert (stats["users"], stats["items"], stats["interactions"]) == (22_363, 12_101, 198_502)
    assert stats["density"] == pytest.approx(198_502 / (22_363 * 12_101))
    # Beauty.txt is already a contiguous 5-core file, so numeric remapping reproduces it exactly.
    assert (tmp_path / "sequences.txt").read_text() == beauty.read_text()


def reference_5core(frame: pd.DataFrame) -> dict[str, list[str]]:
    """Straightforward pandas version: stable sort by time, then drop users and items below 5 until stable."""
    frame = frame.sort_values("timestamp", kind="stable")
    while True:
        user_counts = frame.groupby("user")["item"].transform("size")
        item_counts = frame.groupby("item")["user"].transform("size")
        keep = (user_counts >= 5) & (item_counts >= 5)
        if keep.all():
            break
        frame = frame[keep]
    return {user: list(items) for user, items in frame.groupby("user", sort=False)["item"]}


def test_ml100k_matches_pandas_reference(tmp_path: Path) -> None:
    inter = pd.read_csv(require_shared(ML100K_PATH), sep="\t", dtype=str)
    inter.columns = ["user", "item", "rating", "timestamp"]
    inter["timestamp"] = inter["timestamp"].astype(float).astype(int)
    ratings = tmp_path / "ratings.dat"
    ratings.write_text(
        "".join(f"{u}::{i}::{r}::{t}\n" for u, i, r, t in inter.itertuples(index=False, name=None))
    )

    stats = preprocess("ml-1m", ratings, tmp_path / "out")
    expected = reference_5core(inter)
    assert stats["users"] == len(expected)
    assert stats["items"] == len({item for items in expected.values() for item in items})
    assert stats["interactions"] == sum(map(len, expected.values()))

    ours = original_sequences(tmp_path / "out")
    first_user = (tmp_path / "out" / "user_map.tsv").read_text().splitlines()[1].split("\t")[1]
    assert first_user == min(expected, key=int)  # numeric user ids keep their order
    assert ours[first_user] == expected[first_user]
    assert ours == expected


def test_toy_zip_keeps_every_user(tmp_path: Path) -> None:
    archive = write_toy_zip(tmp_path / "toy.zip", users=400, items=120, seed=0)
    with zipfile.ZipFile(archive) as zipped:
        zipped.extractall(tmp_path / "raw")
    stats = preprocess("ml-1m", tmp_path / "raw" / "toy" / "ratings.dat", tmp_path / "out")
    assert stats["users"] == 400
    # Nothing was filtered, so the sequences come back exactly as generated.
    assert load_sequences(tmp_path / "out" / "sequences.txt") == generate_sequences(400, 120, seed=0)


# ---------------------------------------------------------------------------------------------- recbole


def test_ml100k_recbole_matches_the_ml1m_path(tmp_path: Path) -> None:
    inter = require_shared(ML100K_PATH)
    argv = ["preprocess", "--format", "recbole", "--input", str(inter), "--output-dir", str(tmp_path / "rb")]
    assert main([*argv, "--min-count", "5"]) == 0
    stats = json.loads((tmp_path / "rb" / "stats.json").read_text())
    assert (stats["users"], stats["items"], stats["interactions"]) == (943, 1_349, 99_287)

    # The same ratings as ml-1m's ratings.dat give the same outputs, maps included.
    ratings = tmp_path / "ratings.dat"
    rows = [line.split("\t") for line in inter.read_text().splitlines()[1:] if line]
    ratings.write_text("".join(f"{u}::{i}::{r}::{t}\n" for u, i, r, t in rows))
    preprocess("ml-1m", ratings, tmp_path / "ml", min_count=5)
    assert read_outputs(tmp_path / "rb") == read_outputs(tmp_path / "ml")


def round_trip(data_dir: Path, work: Path) -> Path:
    """export --format recbole, then preprocess --format recbole --min-count 0; the re-imported directory."""
    inter = work / "export.inter"
    assert main(["export", "--format", "recbole", "--data", str(data_dir), "--output", str(inter)]) == 0
    argv = ["preprocess", "--format", "recbole", "--input", str(inter), "--output-dir", str(work / "back")]
    assert main([*argv, "--min-count", "0"]) == 0
    return work / "back"


def test_recbole_export_round_trips_exactly(tmp_path: Path) -> None:
    # Repeated items and ids out of order within a sequence: positions, not ids, carry the order.
    pairs = tmp_path / "pairs.txt"
    raw = {"u1": ["b", "a", "b", "c"], "u2": ["c", "b", "a"], "u3": ["a", "c", "b", "a", "c"]}
    pairs.write_text("".join(f"{user} {item}\n" for user, items in raw.items() for item in items))
    preprocess("pairs", pairs, tmp_path / "data", min_count=0)
    back = round_trip(tmp_path / "data", tmp_path)
    assert (back / "sequences.txt").read_text() == (tmp_path / "data" / "sequences.txt").read_text()
    assert read_outputs(back)[1] == read_outputs(tmp_path / "data")[1]
    lines = (tmp_path / "export.inter").read_text().splitlines()
    assert lines[:3] == ["user_id:token\titem_id:token\ttimestamp:float", "1\t1\t1", "1\t2\t2"]


def test_ml100k_recbole_export_round_trips_exactly(tmp_path: Path) -> None:
    preprocess("recbole", require_shared(ML100K_PATH), tmp_path / "data", min_count=5)
    back = round_trip(tmp_path / "data", tmp_path)
    assert (back / "sequences.txt").read_bytes() == (tmp_path / "data" / "sequences.txt").read_bytes()
    assert (back / "stats.json").read_bytes() == (tmp_path / "data" / "stats.json").read_bytes()


def test_export_of_a_missing_directory_is_one_error_line(tmp_path: Path) -> None:
    with pytest.raises(CatrecError, match="sequences.txt: no such file"):
        export("recbole", tmp_path / "nothing", tmp_path / "out.inter")
    with pytest.raises(CatrecError, match="unknown export format"):
        export("parquet", tmp_path, tmp_path / "out.inter")
    assert not (tmp_path / "out.inter").exists()
