"""The summary of `make mutate` (tests/mutation_summary.py) and the survivors tests/MUTANTS.md lists."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import REPO_ROOT
from mutation_summary import KINDS, LISTED, listed_survivors, summarise

NAME = "catrec.cascade.x_cascade_matrix__mutmut_{}"


def test_summary_counts_each_status_and_names_the_unlisted_survivors(tmp_path: Path) -> None:
    meta = tmp_path / "src" / "catrec" / "cascade.py.meta"
    meta.parent.mkdir(parents=True)
    # mutmut's exit codes: 1 killed, 0 survived, 36 timeout, 33 no tests.
    codes = {NAME.format(1): 1, NAME.format(2): 0, NAME.format(3): 36, NAME.format(4): 0, NAME.format(5): 33}
    meta.write_text(json.dumps({"exit_code_by_key": codes}))
    (tmp_path / "seconds.csv").write_text("cascade,12\n")
    listed = f"| `{NAME.format(2)}` | equivalent | any id above the largest gives distinct keys |\n"
    rows, unexplained = summarise(["cascade"], tmp_path, listed)
    assert rows == [
        {
            "module": "cascade",
            "mutants": 5,
            "killed": 1,
            "survived": 2,
            "timed_out": 1,
            "other": 1,
            "seconds": "12",
        }
    ]
    assert unexplained == [f"{NAME.format(4)} (survived)", f"{NAME.format(5)} (no tests)"]


def test_every_listed_survivor_has_a_kind_and_a_reason() -> None:
    listed = listed_survivors(LISTED.read_text())
    assert listed, "tests/MUTANTS.md lists its survivors in table rows"
    assert LISTED == REPO_ROOT / "tests" / "MUTANTS.md"
    bad = {name: entry for name, entry in listed.items() if entry[0] not in KINDS or not entry[1]}
    assert not bad, f"a kind ({' or '.join(KINDS)}) and a one-line reason for each: {bad}"
