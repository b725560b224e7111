"""What a stage module declares to be a ``catrec`` subcommand, and the arguments several stages share.

A module that runs a stage ends with ``COMMANDS``: one ``Command`` per subcommand, its name, help text, the
arguments it takes (``declare``) and what it runs, beside the function it calls, so adding an option touches
that one module. ``catrec.cli`` only collects them. An argument's ``dest`` is the keyword of the function it
feeds (``--data`` -> ``data_dir``), so ``Command.calling(function)`` passes the parsed arguments straight on.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from catrec.vocabulary import DEVICES, MODELS

# Namespace entries of the command line itself, not arguments of the stage.
_FRAMEWORK_KEYS = ("command", "run")


@dataclass(frozen=True)
class Command:
    """One subcommand: ``catrec <name>``; ``declare`` adds its arguments, ``run`` carries it out."""

    name: str
    help: str
    declare: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], None]

    @staticmethod
    def calling(function: Callable[..., object]) -> Callable[[argparse.Namespace], None]:
        """A ``run`` that calls ``function`` with every parsed argument as the keyword of its ``dest``."""

        def run(args: argparse.Namespace) -> None:
            function(**keywords(args))

        return run


def keywords(args: argparse.Namespace) -> dict[str, Any]:
    """The parsed arguments of a stage, by ``dest``."""
    return {key: value for key, value in vars(args).items() if key not in _FRAMEWORK_KEYS}


def _json_argument(value: str, option: str) -> Any:
    """The JSON text of ``value``, or of the file ``value`` names after an ``@``."""
    try:
        return json.loads(Path(value[1:]).read_text() if value.startswith("@") else value)
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"cannot read {option} file: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"{option} is not valid JSON: {exc}") from exc


def hparams_json(value: str) -> dict[str, Any]:
    """``--hparams`` takes a JSON object, or @file.json."""
    parsed = _json_argument(value, "--hparams")
    if not isinstance(parsed, dict):
        raise argparse.ArgumentTypeError("--hparams must be a JSON object")
    return parsed


def runs_json(value: str) -> list[dict[str, Any]]:
    """``--runs`` takes a JSON list of objects, or @file.json."""
    parsed = _json_argument(value, "--runs")
    if not isinstance(parsed, list) or not all(isinstance(run, dict) for run in parsed):
        raise argparse.ArgumentTypeError("--runs must be a JSON list of objects")
    return parsed


def positive(kind: type[int] | type[float]) -> Callable[[str], int | float]:
    """An argparse type: a finite number of ``kind`` greater than 0."""

    def parse(value: str) -> int | float:
        try:
            number = kind(value)
        except ValueError:
            number = math.nan
        if not 0 < number < math.inf:
            raise argparse.ArgumentTypeError(f"expected a positive finite {kind.__name__}, got '{value}'")
        return number

    return parse


def named_path(value: str) -> tuple[str, Path]:
    """An argparse type: ``NAME=PATH``."""
    name, sep, path = value.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got '{value}'")
    return name, Path(path)


def add_data(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data",
        dest="data_dir",
        metavar="DATA",
        type=Path,
        required=True,
        help="preprocessed dataset directory",
    )


def add_output_prefix(parser: argparse.ArgumentParser, writes: str) -> None:
    """``--output-prefix PREFIX`` of a table writer; ``writes`` says which files (the help text)."""
    parser.add_argument(
        "--output-prefix", dest="prefix", metavar="PREFIX", type=Path, required=True, help=writes
    )


def add_paper(parser: argparse.ArgumentParser, table: str) -> None:
    """``--paper``: the CSV of the paper's ``table``."""
    parser.add_argument(
        "--paper",
        dest="paper_path",
        metavar="PAPER",
        type=Path,
        required=True,
        help=f"CSV of the paper's {table}",
    )


def add_model(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", dest="model_name", required=True, choices=list(MODELS))


def add_device(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", choices=DEVICES, default="auto", help="auto: CUDA when available")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads torch may use, on a GPU too")


def add_training_args(parser: argparse.ArgumentParser) -> None:
    """What every stage that runs a model on a dataset with a stage's settings takes."""
    add_data(parser)
    parser.add_argument(
        "--hparams",
        type=hparams_json,
        required=True,
        help="JSON object (or @file.json) with exactly the settings this stage reads "
        "(catrec.settings, `catrec stage-keys`); the config's rules apply to each",
    )
    parser.add_argument("--dataset", required=True, help="dataset name recorded in the outputs")
    add_model(parser)
    add_device(parser)


def add_run_outputs(parser: argparse.ArgumentParser) -> None:
    """The files a training run writes."""
    parser.add_argument("--checkpoint", type=Path, required=True, help="final model weights (.pt)")
    parser.add_argument("--curve", type=Path, required=True, help="learning-curve CSV")
    parser.add_argument("--metrics", type=Path, required=True, help="metrics JSON")
    parser.add_argument(
        "--state-dir",
        type=Path,
        required=True,
        help="resumable checkpoints live here, one subdirectory per run identity (settings and inputs)",
    )


def add_stack_args(parser: argparse.ArgumentParser, runs_help: str) -> None:
    """What a stacked job takes: the data and model its runs share, and the runs (``runs_help``)."""
    add_data(parser)
    parser.add_argument("--dataset", required=True, help="dataset name recorded in the outputs")
    add_model(parser)
    parser.add_argument(
        "--runs", type=runs_json, required=True, help=f"JSON list (or @file.json) of {runs_help}"
    )
    parser.add_argument(
        "--max-stack",
        type=positive(int),
        help="train at most this many runs at once (consecutive stacks; default: all), a bound on memory",
    )
    add_device(parser)
