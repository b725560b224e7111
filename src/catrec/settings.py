"""One frozen settings object per stage: what ``catrec pretrain`` / ``finetune`` / ``attack`` read, no more.

Each field names the config key it is read from (``setting("train.lr")``; ``{dataset}`` / ``{model}`` are the
job's) and, where only some models or methods read it, which ones. The rule builds the object from the config
for its job (``Settings.from_config(config, job)``) and passes ``to_json()`` as ``--hparams`` (Snakemake
re-runs a job when that JSON changes, so a setting re-runs exactly the jobs that read it); the stage rebuilds
it with ``Settings.from_json`` (the config's rules for each key, exactly the keys of its model and method).
``catrec stage-keys`` prints the same fields (``config_keys``). Nothing changes a settings object once built:
a stage that resolves ``layout`` and ``capture`` passes the resolved values on (``train_config``).

A field that a job's model or method does not read is None and absent from its JSON.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, ClassVar, Self

from catrec.config import _check_heads, _validate, load_schema
from catrec.errors import CatrecError
from catrec.vocabulary import ADVERSARIAL_KEYS_OF, METHODS, MODEL_KEYS_OF

if TYPE_CHECKING:
    from catrec.attack import AttackConfig
    from catrec.models.base import ModelConfig
    from catrec.trainer import TrainConfig

# The job's own values, not config keys: one job per entry of `seeds` and `models`.
JOB = {"seed": "seeds", "model": "models"}


def setting(
    key: str, *, models: tuple[str, ...] | None = None, methods: tuple[str, ...] | None = None
) -> Any:
    """A settings field read from config key ``key`` by ``models`` / ``methods`` (None: by all)."""
    return field(default=None, metadata={"key": key, "models": models, "methods": methods})


def _readers(key: str) -> tuple[str, ...]:
    """The methods whose loss reads an ``adversarial:`` key (``catrec.vocabulary.METHOD_SPECS``)."""
    return tuple(method for method, keys in ADVERSARIAL_KEYS_OF.items() if key in keys)


_TRAINED = tuple(m for m in METHODS if m != "base")  # base evaluates the pretrained model: no schedule
_SASREC, _GRU4REC = ("sasrec",), ("gru4rec",)


@dataclass(frozen=True)
class Settings:
    stage: ClassVar[str]

    @classmethod
    def fields_of(cls, *, model: str, method: str | None = None) -> tuple[Any, ...]:
        """The fields a job of ``model`` (finetune: and ``method``) reads, in order."""
        if cls.stage == "finetune" and method not in METHODS:
            raise CatrecError(f"unknown method '{method}' (expected one of {', '.join(METHODS)})")
        return tuple(
            item
            for item in fields(cls)
            if (item.metadata["models"] is None or model in item.metadata["models"])
            and (item.metadata["methods"] is None or method in item.metadata["methods"])
        )

    @classmethod
    def keys(cls, *, model: str, method: str | None = None) -> tuple[str, ...]:
        """The ``--hparams`` keys of a job of ``model`` (finetune: and ``method``), no more, no less."""
        return tuple(item.name for item in cls.fields_of(model=model, method=method))

    @classmethod
    def config_keys(
        cls, *, model: str, method: str | None = None, dataset: str = "{dataset}"
    ) -> dict[str, str]:
        """The config keys a job reads -> the ``--hparams`` key each becomes, in order."""
        return {
            item.metadata["key"].format(dataset=dataset, model=model): item.name
            for item in cls.fields_of(model=model, method=method)
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any], job: Mapping[str, Any]) -> Self:
        """The settings of one job (``job``: its dataset, model and seed, finetune: method and epsilon, as
        the rule's wildcards name them) from a validated config."""
        model, method = job["model"], job.get("method")
        values: dict[str, Any] = {}
        for item in cls.fields_of(model=model, method=method):
            if item.name in JOB:
                values[item.name] = int(job["seed"]) if item.name == "seed" else model
            elif item.name == "epsilon" and job.get("epsilon") is not None:
                values[item.name] = float(job["epsilon"])  # the run's own (the sweep's), from its path
            else:
                value: Any = config
                for part in item.metadata["key"].format(dataset=job["dataset"], model=model).split("."):
                    value = value[part]
                values[item.name] = value
        return cls(**values)

    @classmethod
    def from_json(cls, values: Mapping[str, Any] | str, *, model: str, method: str | None = None) -> Self:
        """The settings a stage reads from ``--hparams``: the config's rules for each key, and exactly the
        keys of ``model`` (finetune: and ``method``)."""
        values = json.loads(values) if isinstance(values, str) else dict(values)
        schema = load_schema()
        _validate(values, {"$defs": schema["$defs"], "$ref": "#/$defs/hparams"}, "--hparams key")
        expected = cls.keys(model=model, method=method)
        reader = f"{cls.stage} of {method}" if cls.stage == "finetune" else f"{cls.stage} of {model}"
        unknown = [key for key in values if key not in expected]
        if unknown:
            raise CatrecError(f"invalid --hparams key '{unknown[0]}': not read by {reader}")
        missing = [key for key in expected if key not in values]
        if missing:
            raise CatrecError(f"invalid --hparams key '{missing[0]}': required by {reader}")
        if "num_heads" in values:
            _check_heads(
                values["hidden_size"], values["num_heads"], ("hidden_size", "num_heads"), "--hparams key"
            )
        if "model" in values and values["model"] != model:
            raise CatrecError(
                f"invalid --hparams key 'model': '{values['model']}' disagrees with --model {model}"
            )
        return cls(**values)

    @classmethod
    def of(cls, values: Mapping[str, Any], *, model: str, method: str | None = None) -> Self:
        """The settings of a job of ``model`` (finetune: and ``method``) from a mapping that holds at least
        their keys, unchecked: the benches, which time a config's settings without a rule."""
        return cls(**{key: values[key] for key in cls.keys(model=model, method=method)})

    def hparams(self) -> dict[str, Any]:
        """The fields the job reads, in order: ``--hparams`` as a dict."""
        return {
            item.name: getattr(self, item.name)
            for item in fields(self)
            if getattr(self, item.name) is not None
        }

    def to_json(self) -> str:
        """``--hparams``: the rule's params value."""
        return json.dumps(self.hparams(), sort_keys=True)


@dataclass(frozen=True)
class _Schedule(Settings):
    """The training schedule's settings (``catrec.trainer.TrainConfig``)."""

    def train_config(self, layout: str, capture: bool) -> TrainConfig:
        """The schedule, with the layout and capture the stage resolved (``catrec.config.resolve_layout``)."""
        from catrec.trainer import TrainConfig  # torch: not imported where the rules plan

        names = [item.name for item in fields(TrainConfig) if item.name not in ("layout", "capture")]
        return TrainConfig(**{name: getattr(self, name) for name in names}, layout=layout, capture=capture)


@dataclass(frozen=True)
class PretrainSettings(_Schedule):
    stage: ClassVar[str] = "pretrain"
    seed: int = setting("seeds")
    max_len: int = setting("datasets.{dataset}.max_len")
    model: str = setting("models")
    hidden_size: int = setting("model.hidden_size")
    dropout: float = setting("model.dropout")
    num_blocks: int | None = setting("model.{model}.num_blocks", models=_SASREC)
    num_heads: int | None = setting("model.{model}.num_heads", models=_SASREC)
    layer_norm: str | None = setting("model.{model}.layer_norm", models=_SASREC)
    num_layers: int | None = setting("model.{model}.num_layers", models=_GRU4REC)
    batch_size: int = setting("train.batch_size")
    lr: float = setting("train.lr")
    l2: float = setting("train.l2")
    epochs: int = setting("train.pretrain_epochs")
    eval_every: int = setting("train.eval_every")
    checkpoint_every: int = setting("train.checkpoint_every")
    bucket_by_length: bool = setting("train.bucket_by_length")
    layout: str = setting("train.layout")
    capture: bool | str = setting("train.capture")
    precision: str = setting("train.precision")

    def model_config(self, num_items: int) -> ModelConfig:
        """The architecture these settings build, for a dataset of ``num_items`` items."""
        from catrec.models.base import ModelConfig

        keys = ("max_len", "hidden_size", "dropout", *MODEL_KEYS_OF[self.model])
        return ModelConfig(name=self.model, num_items=num_items, **{key: getattr(self, key) for key in keys})


@dataclass(frozen=True)
class FinetuneSettings(_Schedule):
    stage: ClassVar[str] = "finetune"
    seed: int = setting("seeds")
    max_len: int = setting("datasets.{dataset}.max_len")
    batch_size: int | None = setting("train.batch_size", methods=_TRAINED)
    lr: float | None = setting("train.lr", methods=_TRAINED)
    l2: float | None = setting("train.l2", methods=_TRAINED)
    epochs: int | None = setting("train.finetune_epochs", methods=_TRAINED)
    eval_every: int | None = setting("train.eval_every", methods=_TRAINED)
    checkpoint_every: int | None = setting("train.checkpoint_every", methods=_TRAINED)
    bucket_by_length: bool | None = setting("train.bucket_by_length", methods=_TRAINED)
    layout: str | None = setting("train.layout", methods=_TRAINED)
    capture: bool | str | None = setting("train.capture", methods=_TRAINED)
    precision: str | None = setting("train.precision", methods=_TRAINED)
    # The pretraining's epochs: a fine-tuning's curve continues its numbering (base: its one evaluation).
    epoch_offset: int = setting("train.pretrain_epochs")
    model_selection: str | None = setting("adversarial.model_selection", methods=_TRAINED)
    # The `adversarial:` keys, each read by the methods whose loss terms read it (catrec.adversarial).
    epsilon: float | None = setting("adversarial.epsilon", methods=_readers("epsilon"))
    lambda1: float | None = setting("adversarial.lambda1", methods=_readers("lambda1"))
    grad_norm_scope: str | None = setting("adversarial.grad_norm_scope", methods=_readers("grad_norm_scope"))
    init_noise: float | None = setting("adversarial.init_noise", methods=_readers("init_noise"))
    perturb_space: str | None = setting("adversarial.perturb_space", methods=_readers("perturb_space"))
    lambda2: float | None = setting("adversarial.lambda2", methods=_readers("lambda2"))


@dataclass(frozen=True)
class AttackSettings(Settings):
    stage: ClassVar[str] = "attack"
    max_len: int = setting("datasets.{dataset}.max_len")
    positions: list[str] = setting("attack.positions")
    max_k: int = setting("attack.max_k")
    distance: str = setting("attack.distance")
    step_size: float = setting("attack.step_size")
    multi: str = setting("attack.multi")
    random_seed: int = setting("attack.random_seed")

    def attack_config(self) -> AttackConfig:
        """The attacks these settings run."""
        from catrec.attack import AttackConfig

        names = [item.name for item in fields(AttackConfig)]
        return AttackConfig(
            **{name: getattr(self, name) for name in names if name != "positions"},
            positions=tuple(self.positions),
        )


SETTINGS: dict[str, type[Settings]] = {
    s.stage: s for s in (PretrainSettings, FinetuneSettings, AttackSettings)
}
