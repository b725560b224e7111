"""The ``catrec`` command line: one subcommand per pipeline stage. Snakemake rules call only these.

Run ``catrec --help`` or ``catrec <command> --help``. Errors in input or config exit with status 2 and a
single line naming the key, file or line; no traceback. SIGTERM (what Snakemake sends to the jobs it cancels)
unwinds like Ctrl-C: temporary and ``.part`` files are removed, and the exit status is 143 (Ctrl-C: one line,
"interrupted", and 130).

Each subcommand is declared by the module of its stage (``COMMANDS``, ``catrec.commands.Command``), beside
the function it runs; this module only collects them. ``COMMAND_MODULES`` says where each one lives, so a
command imports its own module alone (a download never imports torch); ``--help`` imports them all.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
from collections.abc import Sequence

from catrec.commands import Command
from catrec.errors import CatrecError

# subcommand -> the module that declares it, in the order of the pipeline (and of `catrec --help`).
COMMAND_MODULES = {
    "check-config": "catrec.config",
    "stage-keys": "catrec.config",
    "toy": "catrec.toy",
    "download": "catrec.download",
    "extract": "catrec.download",
    "preprocess": "catrec.data.preprocess",
    "export": "catrec.data.export",
    "table1": "catrec.report.table1",
    "pretrain": "catrec.stages.pretrain",
    "pretrain-stack": "catrec.stages.pretrain",
    "cascade": "catrec.stages.cascade",
    "finetune": "catrec.stages.finetune",
    "finetune-stack": "catrec.stages.finetune",
    "attack": "catrec.stages.attack",
    "profile": "catrec.stages.profile",
    "user-metrics": "catrec.stages.users",
    "prune-state": "catrec.state",
    "collect": "catrec.report.collect",
    "table2": "catrec.report.table2",
    "significance": "catrec.report.significance",
    "robustness": "catrec.report.robustness",
    "compute": "catrec.report.compute",
    "plot": "catrec.report.plots",
}


def commands(names: Sequence[str] = tuple(COMMAND_MODULES)) -> list[Command]:
    """The ``Command`` of each of ``names``, from the module that declares it."""
    found = []
    for name in names:
        declared = {
            command.name: command for command in importlib.import_module(COMMAND_MODULES[name]).COMMANDS
        }
        found.append(declared[name])
    return found


def build_parser(names: Sequence[str] = tuple(COMMAND_MODULES)) -> argparse.ArgumentParser:
    """The parser of ``catrec`` with the subcommands ``names`` (all of them by default)."""
    parser = argparse.ArgumentParser(
        prog="catrec",
        description="Cascade-guided Adversarial Training for sequential recommendation: pipeline stages. "
        "Snakemake calls these; each can also be run by hand.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in commands(names):
        sub = subparsers.add_parser(command.name, help=command.help, description=command.help)
        command.declare(sub)
        sub.set_defaults(run=command.run)
    return parser


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else list(argv)
    # A known subcommand first: build only its parser, so only its module is imported.
    chosen = arguments[:1] if arguments and arguments[0] in COMMAND_MODULES else tuple(COMMAND_MODULES)
    args = build_parser(chosen).parse_args(arguments)
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        args.run(args)
    except CatrecError as exc:
        print(f"catrec {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # Ctrl-C: the same clean unwinding as SIGTERM (partial files removed on the way), one line.
        print(f"catrec {args.command}: interrupted", file=sys.stderr)
        return 128 + signal.SIGINT
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0


if __name__ == "__main__":
    sys.exit(main())
