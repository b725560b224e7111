"""Experiment configuration: validation, and where a run's layout is decided (``resolve_layout``).

Defaults live in one place: config/config.yaml (and each config file states every key). The schema
(workflow/schemas/config.schema.yaml) requires every key, rejects unknown ones and defines each setting once;
the ``--hparams`` of ``catrec pretrain/finetune/attack`` are validated against the same definitions, and
every stage requires exactly the keys it reads (``catrec.settings``, one settings class per stage). Errors
name the offending key as a dotted path (``train.pretrain_epochs``), so a typo in a 100-line YAML file is
found at once. Numbers must be finite (YAML's ``.nan``/``.inf`` pass JSON Schema's ``minimum``) and integers
real integers (``3.0`` epochs is refused).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Mapping
from functools import cache
from pathlib import Path, PurePosixPath
from typing import Any

import jsonschema
import yaml

from catrec.commands import Command
from catrec.errors import CatrecError
from catrec.io import read_text
from catrec.vocabulary import METHODS, MODELS

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"

# JSON Schema counts 3.0 as an integer; range(3.0) and friends do not.
_Validator = jsonschema.validators.extend(
    jsonschema.Draft202012Validator,
    type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine(
        "integer", lambda _, value: isinstance(value, int) and not isinstance(value, bool)
    ),
)

STAGES = ("pretrain", "finetune", "attack")


def _key_path(error: jsonschema.ValidationError, prefix: str) -> str:
    parts = [str(p) for p in error.absolute_path]
    # "required" and "additionalProperties" errors sit on the parent; name the missing/unknown key itself.
    if error.validator == "required" or error.validator == "additionalProperties" and "'" in error.message:
        parts.append(error.message.split("'")[1])
    return ".".join([prefix, *parts] if prefix else parts) or "<top level>"


@cache
def load_schema(path: Path = SCHEMA_PATH) -> dict[str, Any]:
    with open(path) as handle:
        return yaml.safe_load(handle)


def _check_values(value: Any, where: str, what: str, seen: set[int] | None = None) -> None:
    """Refuse what JSON Schema cannot: non-finite numbers and one node reached by two keys (a YAML alias).

    JSON Schema's minimum/maximum let NaN through, and YAML reads .nan and .inf. Aliases let a 2 KB file
    stand for a graph of billions of nodes (an "alias bomb") that any walk, and the schema's error messages
    (which print the value), would take forever over; config files never need them. Each node is visited
    once, so this walk is linear in the size of the file, and it runs before the schema.
    """
    seen = set() if seen is None else seen
    if isinstance(value, Mapping | list | tuple):
        if id(value) in seen:
            raise CatrecError(
                f"invalid {what} '{where}': the same {type(value).__name__} appears twice (a YAML alias); "
                "write each value out"
            )
        seen.add(id(value))
    if isinstance(value, Mapping):
        for key, item in value.items():
            _check_values(item, f"{where}.{key}" if where else str(key), what, seen)
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _check_values(item, f"{where}.{index}", what, seen)
    elif isinstance(value, float) and not math.isfinite(value):
        raise CatrecError(f"invalid {what} '{where}': {value} is not a finite number")


def _validate(instance: Any, schema: dict[str, Any], what: str, prefix: str = "") -> None:
    _check_values(instance, prefix, what)
    errors = list(_Validator(schema).iter_errors(instance))
    if errors:
        error = max(errors, key=lambda e: len(e.absolute_path))
        raise CatrecError(f"invalid {what} '{_key_path(error, prefix)}': {error.message}")


def _check_heads(hidden_size: int, num_heads: int, keys: tuple[str, str], what: str) -> None:
    """SASRec splits the hidden size over its attention heads (nn.MultiheadAttention): they must divide it."""
    if hidden_size % num_heads:
        raise CatrecError(
            f"invalid {what} '{keys[0]}': {hidden_size} is not divisible by '{keys[1]}' ({num_heads})"
        )


def validate_config(config: dict[str, Any], schema_path: Path = SCHEMA_PATH) -> dict[str, Any]:
    """Validate ``config`` in place and return it; raise CatrecError naming the first bad key."""
    if isinstance(config.get("train"), dict):
        _read_earlier_train_keys(config["train"])
    _validate(config, load_schema(schema_path), "config key")
    _check_references(config)
    return config


# The `train:` keys added after configs were committed (under docs/evidence/ among them), each with what the
# runs of those configs did before it existed. `engine` is `layout`'s earlier name: its engines were today's
# layouts, 'eager' packed and 'static' padded (captured on CUDA, as `capture: auto` does); before `engine`
# existed every run was eager.
_EARLIER_TRAIN_KEYS = {"precision": "fp32", "stack": False, "max_stack": None, "capture": "auto"}
_LAYOUT_OF_ENGINE = {"auto": "auto", "eager": "packed", "static": "padded"}


def _read_earlier_train_keys(train: dict[str, Any]) -> None:
    """Give an earlier config's ``train`` the keys added since, as its runs were: ``layout`` from its
    ``engine`` (none: eager), ``precision`` fp32, no stack, ``capture`` auto. config/config.yaml states them
    all; this reads the configs written before them."""
    if "engine" in train:
        if "layout" in train:
            raise CatrecError(
                "invalid config key 'train.engine': set train.layout alone (engine is its earlier name: "
                "eager = packed, static = padded)"
            )
        engine = train.pop("engine")
        if engine not in _LAYOUT_OF_ENGINE:
            raise CatrecError(
                f"invalid config key 'train.engine': '{engine}' is not one of {sorted(_LAYOUT_OF_ENGINE)} "
                "(engine is layout's earlier name)"
            )
        train["layout"] = _LAYOUT_OF_ENGINE[engine]
    train.setdefault("layout", "packed")
    for key, value in _EARLIER_TRAIN_KEYS.items():
        train.setdefault(key, value)


def resolve_layout(layout: str, capture: bool | str, *, cuda: bool, runs: int) -> tuple[str, bool]:
    """The layout (``catrec.models.layout``) and CUDA-graph capture of a training of ``runs`` runs stacked,
    on CUDA or not: the one place that decides them.

    'auto' layout: padded on CUDA (fixed shapes, what a CUDA graph needs) and for a stack of several runs
    (their batches differ: packing reads one batch's real positions on the host), else packed (the least
    arithmetic: the fast CPU layout). 'auto' capture: on exactly where it can be, the padded layout on CUDA.
    """
    if layout not in ("auto", "packed", "padded"):
        raise CatrecError(f"unknown layout '{layout}' (expected auto, packed or padded)")
    if layout == "auto":
        layout = "padded" if cuda or runs > 1 else "packed"
    if layout == "packed" and runs > 1:
        raise CatrecError(
            f"invalid config key 'train.layout': the packed layout trains one run at a time, not a stack of "
            f"{runs} (train.stack needs train.layout padded or auto)"
        )
    if capture == "auto":
        return layout, cuda and layout == "padded"
    if capture and not (cuda and layout == "padded"):
        raise CatrecError(
            "invalid config key 'train.capture': true needs CUDA and the padded layout (a CUDA graph "
            f"replays fixed shapes on a GPU), not the {layout} layout on {'CUDA' if cuda else 'the CPU'}"
        )
    return layout, bool(capture)


# File systems allow 255 bytes per file name; the pipeline adds up to ~25 to a raw file's name (its
# temporary `.{name}.{pid}.{random}.part`, its log `{name}.log`). JSON Schema counts characters, not bytes.
MAX_FILE_NAME_BYTES = 200


def _check_file_names(config: dict[str, Any]) -> None:
    """The raw file names the pipeline writes (``source.filename``, the base name of ``source.member``)
    fit a file system's name limit, so Snakemake never fails on them with "File name too long"."""
    for dataset, spec in config["datasets"].items():
        source = spec["source"]
        for key, name in (("filename", source.get("filename")), ("member", source.get("member"))):
            size = len(PurePosixPath(name).name.encode()) if name else 0
            if size > MAX_FILE_NAME_BYTES:
                raise CatrecError(
                    f"invalid config key 'datasets.{dataset}.source.{key}': a file name of {size} bytes; "
                    f"at most {MAX_FILE_NAME_BYTES} (file systems allow 255, less the temporary and log "
                    "names built from it)"
                )


def _check_references(config: dict[str, Any]) -> None:
    """Cross-key checks JSON Schema cannot express: names that must refer to configured entries, the
    hidden size SASRec's heads split (checked whatever ``models`` lists, like every key of the file), and
    file names in bytes."""
    _check_file_names(config)
    model = config["model"]
    keys = ("model.hidden_size", "model.sasrec.num_heads")
    _check_heads(model["hidden_size"], model["sasrec"]["num_heads"], keys, "config key")
    datasets = set(config["datasets"])
    for dataset in config["epsilon_sweep"]["datasets"]:
        if dataset not in datasets:
            raise CatrecError(f"invalid config key 'epsilon_sweep.datasets': unknown dataset '{dataset}'")
    if config["train"]["stack"] is True:
        resolve_layout(config["train"]["layout"], "auto", cuda=False, runs=2)
    fig5_dataset = config["figures"]["fig5"]["dataset"]
    if fig5_dataset not in datasets:
        raise CatrecError(f"invalid config key 'figures.fig5.dataset': unknown dataset '{fig5_dataset}'")
    for figure in ("fig5", "fig6"):
        for method in config["figures"][figure]["methods"]:
            if method not in config["methods"]:
                raise CatrecError(
                    f"invalid config key 'figures.{figure}.methods': '{method}' is not in methods"
                )


def load_config(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file and validate it."""
    path = Path(path)
    text = read_text(path)
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise CatrecError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(config, dict):
        raise CatrecError(f"{path}: the config must be a mapping of keys")
    return validate_config(config)


# ---------------------------------------------------------------------------------------------------------
# Per-stage settings
# ---------------------------------------------------------------------------------------------------------


def plans_gpu(device: str) -> bool:
    """Whether model jobs of a config with this ``device`` run on a GPU, and so declare ``resources: gpu=1``.

    'auto' asks torch on the machine that plans the jobs (Snakemake's). torch is imported only then: every
    Snakemake parse reads this, and a cluster's head node plans for its GPU nodes only with ``device: cuda``.
    """
    if device != "auto":
        return device == "cuda"
    import torch

    return torch.cuda.is_available()


def plans_stack(stack: bool | str, device: str) -> bool:
    """Whether a config's fine-tuning runs at the paper's epsilon are trained as stacks (``train.stack``).

    'auto' stacks where model jobs run on a GPU (``plans_gpu``): on a CPU a stack trains in the padded layout,
    which computes every padded position, so it is slower there than the runs one after the other, packed
    (bench/stack_speed.py times both).
    """
    return plans_gpu(device) if stack == "auto" else bool(stack)


def _settings(stage: str):  # noqa: ANN202
    from catrec.settings import SETTINGS  # catrec.settings reads this module's schema and checks

    if stage not in SETTINGS:
        raise CatrecError(f"unknown stage '{stage}' (expected one of {', '.join(STAGES)})")
    return SETTINGS[stage]


# The dict forms of catrec.settings (PretrainSettings, FinetuneSettings, AttackSettings), for the tests and
# benches that build a stage's --hparams by hand; the rules and the stages use the settings objects.
def stage_keys(stage: str, *, model: str, method: str | None = None) -> tuple[str, ...]:
    """The ``--hparams`` keys ``stage`` reads for ``model`` (finetune: and ``method``): its settings."""
    return _settings(stage).keys(model=model, method=method)


def read_hparams(
    values: Mapping[str, Any], stage: str, *, model: str, method: str | None = None
) -> dict[str, Any]:
    """Validate the ``--hparams`` of one stage (``Settings.from_json``) and return them as a dict."""
    return _settings(stage).from_json(values, model=model, method=method).hparams()


def stage_hparams(
    config: Mapping[str, Any],
    stage: str,
    *,
    dataset: str,
    model: str,
    seed: int | None = None,
    method: str | None = None,
    epsilon: float | None = None,
) -> dict[str, Any]:
    """The ``--hparams`` of one job as a dict (``Settings.from_config(...).hparams()``)."""
    job = {"dataset": dataset, "model": model, "seed": seed, "method": method, "epsilon": epsilon}
    return _settings(stage).from_config(config, job).hparams()


def _declare_check_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", type=Path)


def _run_check_config(args: argparse.Namespace) -> None:
    load_config(args.config)
    print(f"{args.config}: valid")


def _declare_stage_keys(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("stage", choices=STAGES)
    parser.add_argument("--model", choices=MODELS, help="default: every model")
    parser.add_argument("--method", choices=METHODS, help="finetune: default every method")


def _run_stage_keys(args: argparse.Namespace) -> None:
    """One line per config key: the key, then the --hparams key it becomes (the fields of the stage's
    settings, catrec.settings; keys of several models or methods once, in order)."""
    keys: dict[str, str] = {}
    for model in [args.model] if args.model else MODELS:
        methods = [args.method] if args.method or args.stage != "finetune" else METHODS
        for method in methods:
            keys.update(_settings(args.stage).config_keys(model=model, method=method))
    for config_key, hparam in keys.items():
        print(f"{config_key}\t{hparam}")


COMMANDS = (
    Command(
        "check-config", "Validate a config file against the schema.", _declare_check_config, _run_check_config
    ),
    Command(
        "stage-keys",
        "Print the config keys a stage reads (tab: the --hparams key each becomes), from catrec.settings.",
        _declare_stage_keys,
        _run_stage_keys,
    ),
)
