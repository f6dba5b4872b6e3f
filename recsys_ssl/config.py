"""Experiment configs: one YAML file per method under ``data/configs/`` -> ``ExperimentConfig``.

A config holds every knob of one training run (model shape, main task, SSL task, FD, the
optimizer and the schedule). One source of truth per knob: the dataclass defaults below ARE
the base config; a method's YAML holds only what differs (``method``, ``augmentation``, a few
knobs); ``--set section.field=value`` layers on top (:func:`with_overrides`); knobs left
``None`` are derived from the catalog when training starts (:func:`resolve_auto`).
``recsys-ssl train --print-config`` prints the resolved config, which is also what a run's
manifest records.
Unknown or ill-typed fields fail with the file and the field, e.g.
``data/configs/x.yaml: ssl.alpha: must be a number, got 'high'``.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
import types
import typing
from typing import Any, Iterable, Mapping

import yaml

from recsys_ssl import registry
from recsys_ssl.features import FieldError

MASKED_EMBEDDINGS = ("learned", "zeros")
CFM_GROUPINGS = ("plugin", "adjusted", "normalized")  # artifacts.GROUPINGS: what CFM's groups rank by
ID_VIEWS = ("split", "both", "none")  # augment.ID_VIEWS: where the item id goes in the SSL views
OPTIMIZERS = ("adagrad", "adam", "sgd")
STRATEGIES = ("auto", "default", "mirrored", "multi_worker", "parameter_server")
DATA_FRACTIONS = ("full", "10pct")


class ConfigError(FieldError):
    """An experiment config that does not validate; the message names the file and the field."""


@dataclasses.dataclass
class ModelConfig:
    """Tower shapes. ``*_hidden``: MLP widths; the last one is the output embedding size."""

    query_hidden: list[int] = dataclasses.field(default_factory=lambda: [256, 64])
    item_hidden: list[int] = dataclasses.field(default_factory=lambda: [256, 64])
    masked_embedding: str = "learned"  # "learned": one trainable vector per feature; "zeros"
    embedding_scale: float = 1.0  # every feature's spec embedding_dim times this (a width knob for tune)


@dataclasses.dataclass
class MainTaskConfig:
    """The supervised retrieval task (in-batch softmax)."""

    # Tuned on ML-100K's validation carve-out; robust on Frappe (docs/training.md, "Defaults that adapt ...").
    temperature: float = 0.1
    logq_correction: bool = True
    # logits - logq_weight * log p_j. 1: Yi et al.'s full correction (the in-batch softmax then
    # estimates the full softmax, popularity included); 0: none (in-batch negatives are drawn by
    # popularity, so the scores learn p(j|q) / p(j), which favours the tail). In between trades
    # head for tail recall, like the popularity discount of item-based recommenders.
    logq_weight: float = 1.0
    remove_accidental_hits: bool = True
    # Mixed negative sampling (Yang et al. 2020): B' items drawn uniformly from the corpus each
    # step (their own draw, independent of the SSL batch), whose item-tower embeddings join the
    # B in-batch candidates: every query's softmax sees B + B' candidates. 0: off (in-batch
    # only). In-batch negatives are drawn by popularity, so a tail item is almost never one;
    # uniform negatives are. logQ then uses the mixture's expected count
    # Q_j = B * p_j + B' / N (N: the corpus; losses.mixed_sampling_probability, which divides
    # it by B + B') for every candidate, and a uniform candidate equal to a query's positive is an accidental hit.
    # A global count, split across replicas like the main batch (gathered back with
    # train.cross_replica_negatives); at most the corpus size.
    mixed_negatives: int = 0


@dataclasses.dataclass
class SSLConfig:
    """The self-supervised task on uniformly sampled items (methods ``ssl`` and ``so``).

    batch_size: SSL items per step (None: the main batch size).
    dropout_rate: d_r, per-value dropout of multi-valued features, independently per view.
    cfm_group_size: |F_m| (None: the MI job's ``group_size``, i.e. round(k/2)).
    cfm_grouping: the dependence CFM's groups rank partners by: ``plugin`` MI (the paper's),
      ``adjusted`` MI (chance-corrected: plug-in MI favours features with many values) or
      ``normalized`` MI (MI / sqrt(H_i H_j)); all three are in the MI job's cfm_groups.json.
    id_views: where the item id goes in the two views: ``split`` (as the augmentation draws it:
      one view under RFM and CFM, the paper's), ``both`` (unmasked in both) or ``none``
      (masked in both); :func:`recsys_ssl.augment.place_ids`.
    """

    alpha: float = 1.0
    temperature: float = 0.07
    batch_size: int | None = None
    dropout_rate: float = 0.3
    cfm_group_size: int | None = None
    cfm_grouping: str = "plugin"
    id_views: str = "split"


@dataclasses.dataclass
class FDConfig:
    """Feature dropout on the item tower in the main task (method ``fd``).

    mask_rate: probability that an item feature of an example is replaced by its masked
    embedding; dropout_rate: per-value dropout of multi-valued features.
    """

    mask_rate: float = 0.3
    dropout_rate: float = 0.3


@dataclasses.dataclass
class TrainConfig:
    """Optimizer and schedule. ``steps``: total steps (None: ``epochs`` passes over the pairs).

    batch_size / epochs None: derived from the catalog by :func:`resolve_auto` (printed by
    ``train``): the batch is ~2% of the training pairs (a power of two in [16, 256]) and the
    run lasts at least ``min_steps`` steps, so a small catalog still gets a few hundred updates.
    early_stopping: on a dataset with a validation carve-out (``<name>-val``), evaluate exact
    Recall@``early_stopping_k`` on it after every epoch, keep the best epoch's weights and stop
    after ``early_stopping_patience`` epochs without improvement.
    ema_momentum: Polyak / EMA weight averaging (None: off; else a momentum in [0, 1), e.g.
    0.99 or 0.999). The optimizer keeps ``average = m * average + (1 - m) * weights`` after
    every step (tf_keras ``use_ema``; the averages are optimizer variables, so backups and a
    resumed run keep them) while training follows the raw weights. Everything that reads the
    trained model reads the averages: the per-epoch validation evaluation (early stopping and
    the best epoch's weights), the final weights saved under ``weights/`` and so what
    ``evaluate`` and ``export`` read. The per-epoch ``checkpoints/`` hold the raw weights
    (and the averages among the optimizer's variables).
    weight_decay: decoupled weight decay (tf_keras optimizers' ``weight_decay``: after every
    step each trained variable, embedding tables included, shrinks by ``learning_rate *
    weight_decay`` of itself; None or 0: off). It is the project's only regularizer: the rows of
    rare items shrink between their few updates, so their representation leans on the shared
    feature embeddings.
    """

    batch_size: int | None = None
    learning_rate: float = 0.1
    optimizer: str = "adagrad"
    epochs: int | None = None
    min_steps: int = 600
    early_stopping: bool = True
    early_stopping_patience: int = 3
    early_stopping_k: int = 50
    steps: int | None = None
    steps_per_epoch: int | None = None  # None: one pass over the training pairs
    backup_every_steps: int = 100  # BackupAndRestore save_freq
    data_fraction: str = "full"
    strategy: str = "auto"
    cross_replica_negatives: bool = False
    ema_momentum: float | None = None  # None: no weight averaging (see the class docstring)
    weight_decay: float | None = None  # None: no weight decay (see the class docstring)


@dataclasses.dataclass
class ExperimentConfig:
    name: str
    method: str = "baseline"
    augmentation: str | None = None  # ssl only
    dataset: str = "synthetic_catalog/10k"
    seed: int = 0
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    main: MainTaskConfig = dataclasses.field(default_factory=MainTaskConfig)
    ssl: SSLConfig = dataclasses.field(default_factory=SSLConfig)
    fd: FDConfig = dataclasses.field(default_factory=FDConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    source: str = "<memory>"

    # What the method and augmentation do, from their registry entries (recsys_ssl.registry).
    @property
    def method_entry(self) -> registry.Method:
        return registry.METHODS[self.method]

    @property
    def augmentation_entry(self) -> registry.Augmentation | None:
        """The SSL augmentation's entry; None for a method without augmented views."""
        return registry.AUGMENTATIONS[self.augmentation] if self.method_entry.augmented else None

    @property
    def uses_ssl_batch(self) -> bool:
        """Whether training draws a uniform SSL item batch each step (SSL and SO)."""
        return self.method_entry.ssl_batch

    @property
    def masks_item_features(self) -> bool:
        """Whether the item tower needs masked embeddings (FD's main task, or SSL views that mask)."""
        augmentation = self.augmentation_entry
        return self.method_entry.main_feature_dropout or (
            augmentation is not None and (augmentation.masks_features or self.ssl.id_views == "none")
        )

    @property
    def ssl_drops_values(self) -> bool:
        """Whether the SSL views drop multi-valued values (``ssl.dropout_rate``)."""
        return self.augmentation_entry is not None and self.augmentation_entry.drops_values

    @property
    def needs_cfm_groups(self) -> bool:
        """Whether training reads the MI job's CFM groups."""
        return self.augmentation_entry is not None and self.augmentation_entry.needs_cfm_groups

    @property
    def unread_sections(self) -> tuple[str, ...]:
        """Config sections this method never reads (a baseline ignores ``ssl`` and ``fd``)."""
        return tuple(s for s in registry.OPTIONAL_SECTIONS if s not in self.method_entry.sections)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out.pop("source")
        return out


# -- parsing ------------------------------------------------------------------------------

_fail = ConfigError.at


def _coerce(value: Any, annotation: Any, source: str, field: str) -> Any:
    """Checks ``value`` against a dataclass field's annotation (a small, strict subset)."""
    hint = annotation
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        if value is None:
            return None
        hint = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is list:
        if not isinstance(value, list) or not value:
            raise _fail(source, field, f"must be a non-empty list, got {value!r}")
        return [_coerce(v, args[0], source, f"{field}[{i}]") for i, v in enumerate(value)]
    if hint is bool:
        if not isinstance(value, bool):
            raise _fail(source, field, f"must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _fail(source, field, f"must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _fail(source, field, f"must be a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise _fail(source, field, f"must be a string, got {value!r}")
        return value
    raise TypeError(f"unsupported annotation {hint!r}")  # a bug here, not in the file


def _parse_section(cls, raw: Any, source: str, prefix: str):
    if raw is None:
        return cls()
    if not isinstance(raw, dict):
        raise _fail(source, prefix, f"must be a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = set(raw) - fields
    if unknown:
        raise _fail(source, f"{prefix}.{sorted(unknown)[0]}", f"unknown field; known: {sorted(fields)}")
    return cls(**{k: _coerce(v, hints[k], source, f"{prefix}.{k}") for k, v in raw.items()})


_SECTIONS = {"model": ModelConfig, "main": MainTaskConfig, "ssl": SSLConfig, "fd": FDConfig, "train": TrainConfig}
_TOP = {"name", "method", "augmentation", "dataset", "seed"}


def config_from_dict(raw: Any, source: str = "<memory>") -> ExperimentConfig:
    """Validates a parsed config; every error names ``source`` and the offending field."""
    if not isinstance(raw, dict):
        raise _fail(source, "<top>", f"a config is a mapping, got {type(raw).__name__}")
    unknown = set(raw) - _TOP - set(_SECTIONS)
    if unknown:
        raise _fail(source, sorted(unknown)[0], f"unknown field; known: {sorted(_TOP | set(_SECTIONS))}")
    name = raw.get("name")
    if not isinstance(name, str) or not name or "/" in name:
        raise _fail(source, "name", f"must be a non-empty string without '/', got {name!r}")
    method = raw.get("method", "baseline")
    if method not in registry.METHODS:
        raise _fail(source, "method", f"{method!r} is not one of {tuple(registry.METHODS)}")
    augmentation = raw.get("augmentation")
    augmented = tuple(m for m, entry in registry.METHODS.items() if entry.augmented)
    if method in augmented and augmentation not in registry.AUGMENTATIONS:
        raise _fail(
            source,
            "augmentation",
            f"method {method} needs one of {tuple(registry.AUGMENTATIONS)}, got {augmentation!r}",
        )
    if method not in augmented and augmentation is not None:
        raise _fail(
            source, "augmentation", f"only method {' or '.join(augmented)} takes an augmentation (method is {method!r})"
        )
    config = ExperimentConfig(
        name=name,
        method=method,
        augmentation=augmentation,
        dataset=_coerce(raw.get("dataset", "synthetic_catalog/10k"), str, source, "dataset"),
        seed=_coerce(raw.get("seed", 0), int, source, "seed"),
        source=source,
        **{key: _parse_section(cls, raw.get(key), source, key) for key, cls in _SECTIONS.items()},
    )
    validate(config)
    return config


def validate(config: ExperimentConfig) -> None:
    """Range checks shared by files and CLI overrides."""
    s = config.source
    if config.model.masked_embedding not in MASKED_EMBEDDINGS:
        raise _fail(s, "model.masked_embedding", f"{config.model.masked_embedding!r} is not one of {MASKED_EMBEDDINGS}")
    if config.model.query_hidden[-1] != config.model.item_hidden[-1]:
        raise _fail(
            s,
            "model.item_hidden",
            "the last width of both towers (the embedding size) must match: "
            f"{config.model.query_hidden[-1]} != {config.model.item_hidden[-1]}",
        )
    for field, value in (
        ("main.temperature", config.main.temperature),
        ("ssl.temperature", config.ssl.temperature),
        ("model.embedding_scale", config.model.embedding_scale),
        ("train.learning_rate", config.train.learning_rate),
    ):
        if value <= 0:
            raise _fail(s, field, f"must be positive, got {value}")
    for field, value in (
        ("ssl.dropout_rate", config.ssl.dropout_rate),
        ("fd.mask_rate", config.fd.mask_rate),
        ("fd.dropout_rate", config.fd.dropout_rate),
        ("train.ema_momentum", config.train.ema_momentum),  # None: off
        ("train.weight_decay", config.train.weight_decay),  # None: off
    ):
        if value is not None and not 0.0 <= value < 1.0:
            raise _fail(s, field, f"must be in [0, 1), got {value}")
    for field, value in (
        ("ssl.alpha", config.ssl.alpha),
        ("main.logq_weight", config.main.logq_weight),
        ("main.mixed_negatives", config.main.mixed_negatives),  # 0: off
    ):
        if value < 0:
            raise _fail(s, field, f"must be non-negative, got {value}")
    for field, value in (
        ("train.batch_size", config.train.batch_size),
        ("train.epochs", config.train.epochs),
        ("train.min_steps", config.train.min_steps),
        ("train.early_stopping_patience", config.train.early_stopping_patience),
        ("train.early_stopping_k", config.train.early_stopping_k),
        ("train.backup_every_steps", config.train.backup_every_steps),
        ("train.steps", config.train.steps),
        ("train.steps_per_epoch", config.train.steps_per_epoch),
        ("ssl.batch_size", config.ssl.batch_size),
        ("ssl.cfm_group_size", config.ssl.cfm_group_size),
    ):
        if value is not None and value < 1:
            raise _fail(s, field, f"must be a positive integer, got {value}")
    if config.ssl.id_views not in ID_VIEWS:
        raise _fail(s, "ssl.id_views", f"{config.ssl.id_views!r} is not one of {ID_VIEWS}")
    if config.ssl.cfm_grouping not in CFM_GROUPINGS:
        raise _fail(s, "ssl.cfm_grouping", f"{config.ssl.cfm_grouping!r} is not one of {CFM_GROUPINGS}")
    if config.train.optimizer not in OPTIMIZERS:
        raise _fail(s, "train.optimizer", f"{config.train.optimizer!r} is not one of {OPTIMIZERS}")
    if config.train.strategy not in STRATEGIES:
        raise _fail(s, "train.strategy", f"{config.train.strategy!r} is not one of {STRATEGIES}")
    if config.train.data_fraction not in DATA_FRACTIONS:
        raise _fail(s, "train.data_fraction", f"{config.train.data_fraction!r} is not one of {DATA_FRACTIONS}")


def to_yaml(config: ExperimentConfig) -> str:
    """The complete config as YAML: ``load_config`` of it gives ``config`` back."""
    return yaml.safe_dump(config.to_dict(), sort_keys=False, default_flow_style=False)


def load_config(path: str | pathlib.Path) -> ExperimentConfig:
    """Loads and validates a YAML config; a bare name (``ssl_cfm``) means ``data/configs/<name>.yaml``."""
    path = pathlib.Path(path)
    if not path.exists() and not path.suffix:
        from recsys_ssl.paths import CONFIGS_DIR

        path = CONFIGS_DIR / f"{path.name}.yaml"
    if not path.exists():
        raise FileNotFoundError(f"experiment config {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from error
    return config_from_dict(raw, source=str(path))


# -- overrides (``--set``) and values derived from the catalog -------------------------------


def parse_override(text: str, scopes: tuple[str, ...] = (), scope_name: str = "SCOPE") -> tuple[str, Any]:
    """``[SCOPE:]FIELD=VALUE`` -> (field, value); VALUE is read as YAML, as in a config file
    (``false`` is a bool, ``[512, 128]`` a list, ``0.3`` a number). A ``SCOPE:`` prefix (one of
    ``scopes``, e.g. a data regime of ``experiment``) is kept in the returned field."""
    field, sep, value = text.partition("=")
    scope, colon, bare = field.partition(":")
    if not sep or not field or (colon and (scope not in scopes or not bare)):
        example = " or 10pct:train.epochs=40" if scopes else ""
        raise ValueError(
            f"{text!r}: expected {f'[{scope_name}:]' if scopes else ''}FIELD=VALUE, e.g. train.steps=200"
            f"{example}" + (f" ({scope_name.lower()}s {scopes})" if scopes else "")
        )
    try:
        return field, yaml.safe_load(value)
    except yaml.YAMLError as error:
        raise ValueError(f"{text!r}: the value is not valid YAML: {error}") from None


def with_overrides(
    config: ExperimentConfig, overrides: Mapping[str, Any] | Iterable[tuple[str, Any]], source: str = "--set"
) -> ExperimentConfig:
    """``config`` with ``{"train.steps": 100, "seed": 1, ...}`` applied, type-checked as a file is.

    An unknown knob fails naming it (``--set: train.stpes: unknown field; known: [...]``).
    """
    raw = config.to_dict()
    items = overrides.items() if isinstance(overrides, Mapping) else overrides
    for field, value in items:
        section, _, key = field.rpartition(".")
        if not section:
            if key not in _TOP:
                raise _fail(source, field, f"unknown field; known: {sorted(_TOP)} or SECTION.FIELD")
            raw[key] = value
            continue
        if section not in _SECTIONS:
            raise _fail(source, field, f"unknown section {section!r}; known: {sorted(_SECTIONS)}")
        known = {f.name for f in dataclasses.fields(_SECTIONS[section])}
        if key not in known:
            raise _fail(source, field, f"unknown field; known: {sorted(known)}")
        raw[section][key] = value
    return config_from_dict(raw, source=f"{config.source} with {source}")


def _power_of_two_at_most(n: float) -> int:
    return 1 << max(0, int(math.floor(math.log2(max(1.0, n)))))


AUTO_BATCH_SHARE = 0.02  # the main batch: ~2% of the training pairs ...
AUTO_BATCH_RANGE = (16, 256)  # ... as a power of two in this range
AUTO_MIN_EPOCHS = 8
AUTO_FIELDS = ("train.batch_size", "train.epochs", "ssl.batch_size")  # None: derived by resolve_auto


def resolve_auto(config: ExperimentConfig, num_pairs: int, num_items: int) -> tuple[ExperimentConfig, list[str]]:
    """Fills the knobs left to the catalog (``None``); returns the concrete config and what was derived.

    * ``train.batch_size``: ~``AUTO_BATCH_SHARE`` of the pairs, a power of two in ``AUTO_BATCH_RANGE``
      (an in-batch softmax over a big share of a small catalog's pairs sees the same negatives
      every step and learns popularity; measured on Frappe, docs/training.md "Defaults that adapt to the catalog").
    * ``train.epochs``: at least ``AUTO_MIN_EPOCHS``, and enough for ``train.min_steps`` steps
      (unless ``train.steps`` sets the length).
    * ``ssl.batch_size`` (SSL / SO): the main batch, capped at half the corpus (uniform item
      batches must fit in it: a 300-item catalog gets 128).
    """
    derived: list[str] = []
    train = {}
    batch = config.train.batch_size
    if batch is None:
        low, high = AUTO_BATCH_RANGE
        batch = min(high, max(low, _power_of_two_at_most(AUTO_BATCH_SHARE * num_pairs)))
        train["batch_size"] = batch
        derived.append(
            f"train.batch_size={batch} (~{AUTO_BATCH_SHARE:.0%} of {num_pairs} pairs, "
            f"power of two in {list(AUTO_BATCH_RANGE)})"
        )
    if config.train.epochs is None and not config.train.steps:  # train.steps fixes the length itself
        steps_per_epoch = config.train.steps_per_epoch or max(1, num_pairs // batch)
        epochs = max(AUTO_MIN_EPOCHS, math.ceil(config.train.min_steps / steps_per_epoch))
        train["epochs"] = epochs
        derived.append(
            f"train.epochs={epochs} ({steps_per_epoch} steps per epoch, at least {AUTO_MIN_EPOCHS} epochs "
            f"and {config.train.min_steps} steps)"
        )
    ssl = {}
    if config.uses_ssl_batch and config.ssl.batch_size is None:
        ssl_batch = min(batch, _power_of_two_at_most(num_items / 2))
        ssl["batch_size"] = ssl_batch
        derived.append(f"ssl.batch_size={ssl_batch} (the main batch, at most half the {num_items} items)")
    if not derived:
        return config, derived
    return replace(config, train=train, ssl=ssl), derived


def replace(config: ExperimentConfig, **sections: dict[str, Any]) -> ExperimentConfig:
    """A copy with some fields changed: ``replace(c, train={"steps": 10}, top={"seed": 1})``."""
    top = sections.pop("top", {})
    changed = {key: dataclasses.replace(getattr(config, key), **values) for key, values in sections.items()}
    out = dataclasses.replace(config, **top, **changed)
    validate(out)
    return out
