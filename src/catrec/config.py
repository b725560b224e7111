"""Experiment configuration: loading and validation against workflow/schemas/config.schema.yaml.

Errors name the offending key as a dotted path (``train.pretrain_epochs``), so a typo in a 100-line YAML file
is found at once. Numbers must be finite (YAML's ``.nan``/``.inf`` pass JSON Schema's ``minimum``) and
integers real integers (``3.0`` epochs is refused). The ``--hparams`` of the training commands, which the
rules build from the config, are checked by the same rules (``validate_hparams``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from catrec.errors import CatrecError

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"

# JSON Schema counts 3.0 as an integer; range(3.0) and friends do not.
_Validator = jsonschema.validators.extend(
    jsonschema.Draft202012Validator,
    type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine(
        "integer", lambda _, value: isinstance(value, int) and not isinstance(value, bool)
    ),
)

# Each --hparams key and the config key whose rules it follows (common.smk's hparams() maps one to the other);
# "*" is any dataset or list item. Every key of the adversarial: and attack: sections is an --hparams key too.
_HPARAM_RULES = {
    "seed": "seed",
    "device": "device",
    "threads": "threads",
    "max_len": "datasets.*.max_len",
    "model": "models.*",
    "hidden_size": "model.hidden_size",
    "dropout": "model.dropout",
    "num_blocks": "model.sasrec.num_blocks",
    "num_heads": "model.sasrec.num_heads",
    "layer_norm": "model.sasrec.layer_norm",
    "num_layers": "model.gru4rec.num_layers",
    "batch_size": "train.batch_size",
    "lr": "train.lr",
    "l2": "train.l2",
    "epochs": "train.finetune_epochs",  # the same rule as train.pretrain_epochs
    "epoch_offset": "train.pretrain_epochs",
    "eval_every": "train.eval_every",
    "checkpoint_every": "train.checkpoint_every",
    "bucket_by_length": "train.bucket_by_length",
}
_HPARAM_SECTIONS = ("adversarial", "attack")


def _key_path(error: jsonschema.ValidationError) -> str:
    parts = [str(p) for p in error.absolute_path]
    # "required" and "additionalProperties" errors sit on the parent; name the missing/unknown key itself.
    if error.validator == "required" or error.validator == "additionalProperties" and "'" in error.message:
        parts.append(error.message.split("'")[1])
    return ".".join(parts) or "<top level>"


def load_schema(path: Path = SCHEMA_PATH) -> dict[str, Any]:
    with open(path) as handle:
        return yaml.safe_load(handle)


def _check_finite(value: Any, what: str, path: tuple[str, ...] = ()) -> None:
    """Raise CatrecError naming the first nan or infinite number anywhere in ``value`` (dicts and lists)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise CatrecError(f"invalid {what} key '{'.'.join(path)}': {value} is not a finite number")
    if isinstance(value, dict | list):
        for key, child in value.items() if isinstance(value, dict) else enumerate(value):
            _check_finite(child, what, (*path, str(key)))


def _validate(instance: Any, schema: dict[str, Any], what: str) -> None:
    """Finite numbers, then the schema; raise CatrecError naming the deepest bad key of ``what``."""
    _check_finite(instance, what)
    errors = sorted(
        _Validator(schema).iter_errors(instance), key=lambda e: (len(e.absolute_path), list(e.absolute_path))
    )
    if errors:
        error = max(errors, key=lambda e: len(e.absolute_path))
        message = error.message
        if error.validator == "pattern" and "description" in error.schema:  # say what, not the regex
            message = f"{error.instance!r} is not {error.schema['description']}"
        raise CatrecError(f"invalid {what} key '{_key_path(error)}': {message}")


def validate_config(config: dict[str, Any], schema_path: Path = SCHEMA_PATH) -> dict[str, Any]:
    """Validate ``config`` in place and return it; raise CatrecError naming the first bad key."""
    _validate(config, load_schema(schema_path), "config")
    _check_references(config)
    return config


def _rule(schema: dict[str, Any], dotted: str) -> dict[str, Any]:
    """The schema of the config key ``dotted``."""
    node = schema
    for part in dotted.split("."):
        if part == "*":
            node = node["items"] if "items" in node else node["additionalProperties"]
        else:
            node = node["properties"][part]
    return node


def validate_hparams(values: Mapping[str, Any], schema_path: Path = SCHEMA_PATH) -> dict[str, Any]:
    """Check ``--hparams`` with the rules of the config keys they come from; return them as a dict.

    One JSON object may serve every training command (each reads the keys it needs), so a key of any stage is
    allowed, but every value must be finite and in range, and an unknown key (a typo) is refused.
    """
    schema = load_schema(schema_path)
    rules = {key: _rule(schema, dotted) for key, dotted in _HPARAM_RULES.items()}
    for section in _HPARAM_SECTIONS:
        rules.update(schema["properties"][section]["properties"])
    hparams_schema = {
        "type": "object",
        "additionalProperties": False,
        "properties": rules,
        "$defs": schema["$defs"],
    }
    _validate(dict(values), hparams_schema, "--hparams")
    return dict(values)


def _check_references(config: dict[str, Any]) -> None:
    """Cross-key checks JSON Schema cannot express: names that must refer to configured entries."""
    datasets = set(config["datasets"])
    for dataset in config["epsilon_sweep"]["datasets"]:
        if dataset not in datasets:
            raise CatrecError(f"invalid config key 'epsilon_sweep.datasets': unknown dataset '{dataset}'")
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
    try:
        with open(path) as handle:
            config = yaml.safe_load(handle)
    except FileNotFoundError as exc:
        raise CatrecError(f"config file not found: {path}") from exc
    except yaml.YAMLError as exc:
        raise CatrecError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(config, dict):
        raise CatrecError(f"{path}: the config must be a mapping of keys")
    return validate_config(config)
