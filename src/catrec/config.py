"""Experiment configuration: loading and validation against workflow/schemas/config.schema.yaml.

Errors name the offending key as a dotted path (``train.pretrain_epochs``), so a typo in a 100-line YAML file
is found at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import yaml

from catrec.errors import CatrecError

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"


def _key_path(error: jsonschema.ValidationError) -> str:
    parts = [str(p) for p in error.absolute_path]
    # "required" and "additionalProperties" errors sit on the parent; name the missing/unknown key itself.
    if error.validator == "required" or error.validator == "additionalProperties" and "'" in error.message:
        parts.append(error.message.split("'")[1])
    return ".".join(parts) or "<top level>"


def load_schema(path: Path = SCHEMA_PATH) -> dict[str, Any]:
    with open(path) as handle:
        return yaml.safe_load(handle)


def validate_config(config: dict[str, Any], schema_path: Path = SCHEMA_PATH) -> dict[str, Any]:
    """Validate ``config`` in place and return it; raise CatrecError naming the first bad key."""
    schema = load_schema(schema_path)
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(
        validator.iter_errors(config), key=lambda e: (len(e.absolute_path), list(e.absolute_path))
    )
    if errors:
        error = max(errors, key=lambda e: len(e.absolute_path))
        raise CatrecError(f"invalid config key '{_key_path(error)}': {error.message}")
    _check_references(config)
    return config


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
