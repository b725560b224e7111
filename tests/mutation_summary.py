"""The summary of `make mutate`: mutants killed / survived / timed out per module, and unexplained survivors.

Reads what ``mutmut run`` left in mutants/ (one ``src/catrec/<module>.py.meta`` per mutated module, and the
``seconds.csv`` the Makefile writes: wall time per module), writes ``mutants/summary.csv`` and prints it.
Every survivor must be listed in tests/MUTANTS.md (equivalent or out of scope, with its reason): the exit
status is 1 when one is not, and the unlisted survivors are printed, so that a session that changed a module
sees at once what its tests no longer pin. ``mutmut show <name>`` prints a mutant's diff.

Usage: python tests/mutation_summary.py MODULE... (the module names of catrec, e.g. cascade adversarial).
"""

from __future__ import annotations

import csv
import json
import re
import sys
from collections import Counter
from pathlib import Path

from mutmut.stats import status_by_exit_code

REPO_ROOT = Path(__file__).resolve().parents[1]
MUTANTS_DIR = REPO_ROOT / "mutants"
LISTED = REPO_ROOT / "tests" / "MUTANTS.md"
COLUMNS = ("module", "mutants", "killed", "survived", "timed_out", "other", "seconds")
# A row of the tables of tests/MUTANTS.md: | `catrec.module.x_function__mutmut_N` | kind | reason |
LISTED_ROW = re.compile(r"^\|\s*`(catrec\.[^`]+)`\s*\|\s*([^|]+?)\s*\|\s*([^|]*?)\s*\|")
KINDS = ("equivalent", "out of scope")
SHOWN = 40


def listed_survivors(text: str) -> dict[str, tuple[str, str]]:
    """{mutant name: (kind, reason)} of the table rows of tests/MUTANTS.md."""
    return {match[1]: (match[2], match[3]) for line in text.splitlines() if (match := LISTED_ROW.match(line))}


def statuses(mutants_dir: Path, module: str) -> dict[str, str]:
    """{mutant name: mutmut's status (killed, survived, timeout, ...)} of ``catrec.<module>``."""
    meta = json.loads((mutants_dir / "src" / "catrec" / f"{module}.py.meta").read_text())
    return {name: status_by_exit_code[code] for name, code in meta["exit_code_by_key"].items()}


def summary_row(module: str, status: dict[str, str], seconds: str) -> dict[str, object]:
    counts = Counter(status.values())
    killed, survived, timed_out = counts["killed"], counts["survived"], counts["timeout"]
    other = len(status) - killed - survived - timed_out
    return dict(zip(COLUMNS, (module, len(status), killed, survived, timed_out, other, seconds), strict=True))


def summarise(modules: list[str], mutants_dir: Path, listed_text: str) -> tuple[list[dict], list[str]]:
    """The summary rows of ``modules`` and the survivors (and unchecked mutants) not in ``listed_text``."""
    seconds_file = mutants_dir / "seconds.csv"
    seconds = dict(csv.reader(seconds_file.open())) if seconds_file.exists() else {}
    listed = listed_survivors(listed_text)
    rows, unexplained = [], []
    for module in modules:
        status = statuses(mutants_dir, module)
        rows.append(summary_row(module, status, seconds.get(module, "")))
        unexplained += [
            f"{name} ({value})"
            for name, value in sorted(status.items())
            if value not in ("killed", "timeout") and name not in listed
        ]
    return rows, unexplained


def main(modules: list[str]) -> int:
    rows, unexplained = summarise(modules, MUTANTS_DIR, LISTED.read_text())
    with open(MUTANTS_DIR / "summary.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    print((MUTANTS_DIR / "summary.csv").read_text(), end="")
    if unexplained:
        print(f"\n{len(unexplained)} mutants neither killed nor in tests/MUTANTS.md (kill or list them):")
        print("\n".join(unexplained[:SHOWN]) + ("\n..." if len(unexplained) > SHOWN else ""))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
