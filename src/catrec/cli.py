"""The ``catrec`` command line: one subcommand per pipeline stage. Snakemake rules call only these.

Run ``catrec --help`` or ``catrec <command> --help``. Errors in input or config exit with status 2 and a
single line naming the key, file or line; no traceback. SIGTERM (what Snakemake sends to the jobs it cancels)
unwinds like Ctrl-C: temporary and ``.part`` files are removed, and the exit status is 143.
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from catrec.errors import CatrecError
from catrec.vocabulary import (
    CASCADE_TERMS,
    DATA_FORMATS,
    DEVICES,
    EXPORT_FORMATS,
    FIGURE_KINDS,
    MODELS,
    SIGNIFICANCE_REFERENCE,
)


def _hparams(value: str) -> dict[str, Any]:
    """``--hparams`` takes a JSON object, or @file.json."""
    try:
        text = Path(value[1:]).read_text() if value.startswith("@") else value
        parsed = json.loads(text)
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"cannot read --hparams file: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"--hparams is not valid JSON: {exc}") from exc
    if not isinstance(parsed, dict):
        raise argparse.ArgumentTypeError("--hparams must be a JSON object")
    return parsed


def _runs(value: str) -> list[dict[str, Any]]:
    """``--runs`` takes a JSON list of objects, or @file.json."""
    try:
        parsed = json.loads(Path(value[1:]).read_text() if value.startswith("@") else value)
    except (OSError, json.JSONDecodeError) as exc:
        raise argparse.ArgumentTypeError(f"cannot read --runs: {exc}") from exc
    if not isinstance(parsed, list) or not all(isinstance(run, dict) for run in parsed):
        raise argparse.ArgumentTypeError("--runs must be a JSON list of objects")
    return parsed


def _positive(kind: type[int] | type[float]) -> Callable[[str], int | float]:
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


def _named_path(value: str) -> tuple[str, Path]:
    name, sep, path = value.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got '{value}'")
    return name, Path(path)


def cmd_check_config(args: argparse.Namespace) -> None:
    from catrec.config import load_config

    load_config(args.config)
    print(f"{args.config}: valid")


def cmd_toy(args: argparse.Namespace) -> None:
    from catrec.toy import write_toy_zip

    write_toy_zip(
        args.output,
        member=args.member,
        users=args.users,
        items=args.items,
        clusters=args.clusters,
        mean_length=args.mean_length,
        seed=args.seed,
    )


def cmd_download(args: argparse.Namespace) -> None:
    from catrec.download import DEFAULT_DEADLINE_S, DEFAULT_MAX_BYTES, download

    download(
        args.url,
        args.output,
        md5=args.md5,
        sha256=args.sha256,
        lock_file=args.lock_file,
        max_bytes=args.max_bytes or DEFAULT_MAX_BYTES,
        deadline=args.deadline or DEFAULT_DEADLINE_S,
    )


def cmd_extract(args: argparse.Namespace) -> None:
    from catrec.download import extract_member

    extract_member(args.archive, args.member, args.output)


def cmd_preprocess(args: argparse.Namespace) -> None:
    from catrec.data.raw import preprocess

    stats = preprocess(args.format, args.input, args.output_dir, min_count=args.min_count)
    print(json.dumps(stats))


def cmd_export(args: argparse.Namespace) -> None:
    from catrec.data.raw import export

    rows = export(args.format, args.data, args.output)
    print(f"{args.output}: {rows} interactions")


def cmd_table1(args: argparse.Namespace) -> None:
    from catrec.report.tables import write_table1

    write_table1(dict(args.stats), args.paper, args.output_prefix)


def cmd_pretrain(args: argparse.Namespace) -> None:
    from catrec.stages.pretrain import pretrain

    pretrain(
        data_dir=args.data,
        hparams=args.hparams,
        dataset=args.dataset,
        model_name=args.model,
        checkpoint=args.checkpoint,
        curve=args.curve,
        metrics=args.metrics,
        state_dir=args.state_dir,
        device=args.device,
        threads=args.threads,
    )


def cmd_pretrain_stack(args: argparse.Namespace) -> None:
    from catrec.stages.pretrain import PretrainRun, pretrain_stack

    pretrain_stack(
        data_dir=args.data,
        dataset=args.dataset,
        model_name=args.model,
        runs=[PretrainRun.from_json(run) for run in args.runs],
        device=args.device,
        threads=args.threads,
        max_stack=args.max_stack,
    )


def cmd_cascade(args: argparse.Namespace) -> None:
    from catrec.stages.cascade import write_cascade

    write_cascade(
        args.data, max_len=args.max_len, batch_size=args.batch_size, terms=args.terms, output=args.output
    )


def cmd_finetune(args: argparse.Namespace) -> None:
    from catrec.stages.finetune import finetune

    finetune(
        data_dir=args.data,
        hparams=args.hparams,
        dataset=args.dataset,
        model_name=args.model,
        method=args.method,
        pretrained=args.pretrained,
        cascade=args.cascade,
        checkpoint=args.checkpoint,
        curve=args.curve,
        metrics=args.metrics,
        state_dir=args.state_dir,
        device=args.device,
        threads=args.threads,
    )


def cmd_finetune_stack(args: argparse.Namespace) -> None:
    from catrec.stages.finetune import FinetuneRun, finetune_stack

    finetune_stack(
        data_dir=args.data,
        dataset=args.dataset,
        model_name=args.model,
        pretrained=args.pretrained,
        runs=[FinetuneRun.from_json(run) for run in args.runs],
        device=args.device,
        threads=args.threads,
        max_stack=args.max_stack,
    )


def cmd_attack(args: argparse.Namespace) -> None:
    from catrec.stages.attack import run_attacks

    run_attacks(
        data_dir=args.data,
        hparams=args.hparams,
        dataset=args.dataset,
        model_name=args.model,
        method=args.method,
        checkpoint=args.checkpoint,
        output=args.output,
        device=args.device,
        threads=args.threads,
    )


def cmd_profile(args: argparse.Namespace) -> None:
    from catrec.stages.profile import write_profile

    write_profile(
        data_dir=args.data,
        hparams=args.hparams,
        dataset=args.dataset,
        model_name=args.model,
        method=args.method,
        checkpoint=args.checkpoint,
        cascade=args.cascade,
        output=args.output,
        batches=args.batches,
        device=args.device,
        threads=args.threads,
    )


def cmd_user_metrics(args: argparse.Namespace) -> None:
    from catrec.stages.users import write_user_metrics

    write_user_metrics(
        data_dir=args.data,
        max_len=args.max_len,
        model_name=args.model,
        checkpoint=args.checkpoint,
        output=args.output,
        device=args.device,
        threads=args.threads,
    )


def cmd_prune_state(args: argparse.Namespace) -> None:
    from catrec.state import prune_state

    removed = prune_state(args.state_dir, finished=args.finished, dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    for directory in removed:
        print(f"{verb} {directory}")
    print(f"{verb} {len(removed)} state director{'y' if len(removed) == 1 else 'ies'}")


def cmd_collect(args: argparse.Namespace) -> None:
    from catrec.report.collect import collect

    collect(args.kind, args.inputs, args.output, long=args.long)


def cmd_table2(args: argparse.Namespace) -> None:
    from catrec.report.tables import write_table2

    write_table2(args.metrics, args.paper, args.output_prefix)


def cmd_significance(args: argparse.Namespace) -> None:
    from catrec.report.significance import write_significance

    write_significance(args.users, args.output_prefix, reference=args.method_a)


def cmd_compute(args: argparse.Namespace) -> None:
    from catrec.report.compute import write_compute

    write_compute(args.benchmarks, args.output_prefix, allow_missing=args.allow_missing)


def cmd_plot(args: argparse.Namespace) -> None:
    from catrec.report.plots import plot_figure

    plot_figure(args.figure, args.input, args.output, options=args.option)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="catrec",
        description="Cascade-guided Adversarial Training for sequential recommendation: pipeline stages. "
        "Snakemake calls these; each can also be run by hand.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(
        name: str, handler: Callable[[argparse.Namespace], None], help_text: str
    ) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(handler=handler)
        return sub

    sub = add("check-config", cmd_check_config, "Validate a config file against the schema.")
    sub.add_argument("config", type=Path)

    sub = add("toy", cmd_toy, "Write the synthetic toy dataset as an ML-1M style ratings.dat inside a zip.")
    sub.add_argument("--output", type=Path, required=True, help="zip file to write")
    sub.add_argument("--member", default="toy/ratings.dat", help="name of ratings.dat inside the zip")
    sub.add_argument("--users", type=int, required=True)
    sub.add_argument("--items", type=int, required=True)
    sub.add_argument("--clusters", type=int, default=8, help="item clusters users drift through")
    sub.add_argument("--mean-length", type=int, default=25, help="mean interactions per user")
    sub.add_argument("--seed", type=int, default=0)

    sub = add("download", cmd_download, "Download a file (retries, resume, checksum, atomic rename).")
    sub.add_argument(
        "--url", action="append", required=True, help="source URL; repeat for mirrors, tried in order"
    )
    sub.add_argument("--output", type=Path, required=True)
    sub.add_argument("--md5", help="expected md5 of the file")
    sub.add_argument("--sha256", help="expected sha256 of the file")
    sub.add_argument(
        "--lock-file", type=Path, help="JSON file recording the observed sha256 when no checksum is known"
    )
    sub.add_argument(
        "--max-bytes", type=_positive(int), help="abandon a URL sending more than this (default: 8 GiB)"
    )
    sub.add_argument(
        "--deadline",
        type=_positive(float),
        metavar="SECONDS",
        help="give up on the file after this long, all attempts and mirrors together (default: 7200)",
    )

    sub = add("extract", cmd_extract, "Extract one member of a zip archive (path traversal is refused).")
    sub.add_argument("--archive", type=Path, required=True)
    sub.add_argument("--member", required=True)
    sub.add_argument("--output", type=Path, required=True)

    sub = add("preprocess", cmd_preprocess, "Parse a raw file, order per user, k-core filter, remap ids.")
    sub.add_argument("--format", required=True, choices=DATA_FORMATS)
    sub.add_argument("--input", type=Path, required=True)
    sub.add_argument("--output-dir", type=Path, required=True)
    sub.add_argument(
        "--min-count", type=int, default=5, help="k of the iterative k-core filter (0 disables it)"
    )

    sub = add(
        "export",
        cmd_export,
        "Write a preprocessed dataset for another toolkit (recbole: an atomic .inter file with our order).",
    )
    sub.add_argument("--format", required=True, choices=EXPORT_FORMATS)
    sub.add_argument("--data", type=Path, required=True, help="preprocessed dataset directory")
    sub.add_argument("--output", type=Path, required=True, help="file to write, e.g. ml-100k.inter")

    sub = add("table1", cmd_table1, "Render Table 1 (dataset statistics beside the paper's).")
    sub.add_argument("--stats", type=_named_path, action="append", required=True, metavar="NAME=STATS_JSON")
    sub.add_argument("--paper", type=Path, required=True, help="CSV of the paper's Table 1")
    sub.add_argument("--output-prefix", type=Path, required=True, help="writes PREFIX.{csv,md,tex,html}")

    def add_training_args(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--data", type=Path, required=True, help="preprocessed dataset directory")
        sub.add_argument(
            "--hparams",
            type=_hparams,
            required=True,
            help="JSON object (or @file.json) with exactly the settings this stage reads "
            "(catrec.config.stage_keys); the config's rules apply to each",
        )
        sub.add_argument("--dataset", required=True, help="dataset name recorded in the outputs")
        sub.add_argument("--model", required=True, choices=list(MODELS))
        sub.add_argument("--device", choices=DEVICES, default="auto", help="auto: CUDA when available")
        sub.add_argument("--threads", type=int, default=1, help="CPU threads torch may use, on a GPU too")

    def add_run_outputs(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--checkpoint", type=Path, required=True, help="final model weights (.pt)")
        sub.add_argument("--curve", type=Path, required=True, help="learning-curve CSV")
        sub.add_argument("--metrics", type=Path, required=True, help="metrics JSON")
        sub.add_argument(
            "--state-dir",
            type=Path,
            required=True,
            help="resumable checkpoints live here, one subdirectory per run identity (settings and inputs)",
        )

    sub = add("pretrain", cmd_pretrain, "Train a base model with the BCE loss of Eq. 3.5 (resumable).")
    add_training_args(sub)
    add_run_outputs(sub)

    sub = add("cascade", cmd_cascade, "Compute the cascade matrix of Eq. 4.11 for the training inputs.")
    sub.add_argument("--data", type=Path, required=True)
    sub.add_argument("--max-len", type=int, required=True, help="T")
    sub.add_argument("--batch-size", type=int, required=True, help="b, the training batch size")
    sub.add_argument("--terms", choices=CASCADE_TERMS, default="both")
    sub.add_argument("--output", type=Path, required=True)

    sub = add("finetune", cmd_finetune, "Fine-tune a pretrained model with one method (Eq. 4.6-4.10).")
    add_training_args(sub)
    sub.add_argument("--method", required=True)
    sub.add_argument("--pretrained", type=Path, required=True)
    sub.add_argument("--cascade", type=Path, help="cascade matrix (.pt), needed by adv_cas*")
    add_run_outputs(sub)

    def add_stack_args(sub: argparse.ArgumentParser, runs_help: str) -> None:
        sub.add_argument("--data", type=Path, required=True, help="preprocessed dataset directory")
        sub.add_argument("--dataset", required=True, help="dataset name recorded in the outputs")
        sub.add_argument("--model", required=True, choices=list(MODELS))
        sub.add_argument(
            "--runs", type=_runs, required=True, help=f"JSON list (or @file.json) of {runs_help}"
        )
        sub.add_argument(
            "--max-stack",
            type=_positive(int),
            help="train at most this many runs at once (consecutive stacks; default: all), a bound on memory",
        )
        sub.add_argument("--device", choices=DEVICES, default="auto", help="auto: CUDA when available")
        sub.add_argument("--threads", type=int, default=1, help="CPU threads torch may use, on a GPU too")

    sub = add(
        "pretrain-stack",
        cmd_pretrain_stack,
        "Pretrain one model for several seeds trained as one stack (static engine).",
    )
    add_stack_args(
        sub,
        "runs, each an object with hparams (as pretrain's --hparams; the runs differ in seed alone), "
        "checkpoint, curve, metrics and state_dir",
    )

    sub = add(
        "finetune-stack",
        cmd_finetune_stack,
        "Fine-tune one pretrained model with several methods trained as one stack (static engine).",
    )
    add_stack_args(
        sub,
        "runs, each an object with method, hparams (as finetune's --hparams), cascade (adv_cas* only), "
        "checkpoint, curve, metrics and state_dir",
    )
    sub.add_argument("--pretrained", type=Path, required=True)

    sub = add("attack", cmd_attack, "Item-replacement attacks (section 5.6) against one trained model.")
    add_training_args(sub)
    sub.add_argument("--method", required=True)
    sub.add_argument("--checkpoint", type=Path, required=True)
    sub.add_argument("--output", type=Path, required=True, help="tidy CSV of metrics under attack")

    sub = add(
        "profile",
        cmd_profile,
        "Perturbation profile of a fine-tuned model: the norm its method adds to S by position from the end "
        "(post hoc, nothing is trained).",
    )
    add_training_args(sub)
    sub.add_argument(
        "--method", required=True, help="a method that perturbs S (adv_seq, adv_global, adv_cas*)"
    )
    sub.add_argument("--checkpoint", type=Path, required=True, help="the fine-tuned model (.pt)")
    sub.add_argument("--cascade", type=Path, help="cascade matrix (.pt) the run used, needed by adv_cas*")
    sub.add_argument(
        "--batches", type=_positive(int), default=20, help="training batches to measure (default: 20)"
    )
    sub.add_argument("--output", type=Path, required=True, help="tidy CSV of the profile")

    sub = add("user-metrics", cmd_user_metrics, "Per-user test NDCG@10 and HT@10 of one trained model.")
    sub.add_argument("--data", type=Path, required=True, help="preprocessed dataset directory")
    sub.add_argument("--max-len", type=_positive(int), required=True, help="T")
    sub.add_argument("--model", required=True, choices=list(MODELS))
    sub.add_argument("--checkpoint", type=Path, required=True)
    sub.add_argument("--output", type=Path, required=True, help="CSV: user, ndcg@10, hit@10")
    sub.add_argument("--device", choices=DEVICES, default="auto", help="auto: CUDA when available")
    sub.add_argument("--threads", type=int, default=1, help="CPU threads torch may use, on a GPU too")

    sub = add(
        "prune-state",
        cmd_prune_state,
        "Remove resumable state that no result uses any more (runs whose results a newer run replaced).",
    )
    sub.add_argument("state_dir", type=Path, help="state root, e.g. results/state")
    sub.add_argument("--finished", action="store_true", help="also remove the state of finished runs")
    sub.add_argument("--dry-run", action="store_true", help="only list what would be removed")

    sub = add("collect", cmd_collect, "Gather per-run results into one tidy CSV.")
    sub.add_argument("kind", choices=["metrics", "curves", "attacks", "profiles"])
    sub.add_argument("inputs", type=Path, nargs="+")
    sub.add_argument("--output", type=Path, required=True)
    sub.add_argument("--long", action="store_true", help="metrics: one row per metric (metric, value)")

    sub = add("table2", cmd_table2, "Render Table 2 and the comparison with the paper's numbers.")
    sub.add_argument("--metrics", type=Path, required=True, help="tidy metrics CSV (catrec collect metrics)")
    sub.add_argument("--paper", type=Path, required=True, help="CSV of the paper's Table 2")
    sub.add_argument("--output-prefix", type=Path, required=True, help="directory for the table2* files")

    sub = add(
        "significance",
        cmd_significance,
        "Wilcoxon (over users, per seed) and paired t-tests (over seeds) of adv_cas against each method.",
    )
    sub.add_argument(
        "--users", type=Path, nargs="+", required=True, help="per-user metrics CSVs (catrec user-metrics)"
    )
    sub.add_argument("--output-prefix", type=Path, required=True, help="writes PREFIX.csv, .md and .html")
    sub.add_argument(
        "--method-a", default=SIGNIFICANCE_REFERENCE, help="the method tested against the others"
    )

    sub = add(
        "compute",
        cmd_compute,
        "Tabulate the cost of every job (seconds, peak memory) from Snakemake's benchmark files.",
    )
    sub.add_argument("benchmarks", type=Path, nargs="+", help="benchmark files, benchmarks/{stage}/<run>.tsv")
    sub.add_argument("--output-prefix", type=Path, required=True, help="writes PREFIX.csv, .md and .html")
    sub.add_argument(
        "--allow-missing",
        action="store_true",
        help="a benchmark file that does not exist (a job run before benchmarks were recorded) is a row "
        "without numbers instead of an error",
    )

    sub = add("plot", cmd_plot, "Render a figure from tidy CSV (never trains).")
    sub.add_argument("figure", choices=sorted(set(FIGURE_KINDS.values())))
    sub.add_argument("--input", type=Path, required=True, help="tidy CSV")
    sub.add_argument("--output", type=Path, required=True, help="PDF path; a PNG is written beside it")
    sub.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="e.g. model=sasrec")
    return parser


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        args.handler(args)
    except CatrecError as exc:
        print(f"catrec {args.command}: error: {exc}", file=sys.stderr)
        return 2
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0


if __name__ == "__main__":
    sys.exit(main())
