"""The feature spec: which features the query and item towers read, and how.

A spec is a small YAML (or JSON) file under ``data/specs/``::

    name: movielens-user-item
    query_key: user_id           # the feature that identifies a query (evaluation groups by it)
    item_key: movie_id           # the feature that identifies an item (retrieval returns it)
    query_features:
      - {name: user_id, kind: categorical, embedding_dim: 32}
    item_features:
      - {name: movie_id, kind: categorical, embedding_dim: 32}
      - {name: movie_genres, kind: multi_categorical, max_len: 6, embedding_dim: 16}

Every feature value is a string: a single-valued (``categorical``) feature is a scalar
``tf.string`` per example, a multi-valued (``multi_categorical``) one a list of strings,
padded with ``""`` to ``max_len`` once batched (``""`` is padding, never a value).

This module imports nothing heavy: Beam jobs, TFDS builders and the model all read it.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any, Iterable, Sequence

import numpy as np
import yaml

CATEGORICAL = "categorical"
MULTI_CATEGORICAL = "multi_categorical"
KINDS = (CATEGORICAL, MULTI_CATEGORICAL)

VOCAB_SOURCES = ("stats", "inline", "hash")
POOLINGS = ("mean", "sum")
PADDING = ""  # the padding value of multi-valued features; never a real value.


class FieldError(ValueError):
    """A file (spec, experiment config) that does not validate; the message names the file and the field."""

    @classmethod
    def at(cls, source: str, field: str, message: str) -> FieldError:
        """``<source>: <field>: <message>``, e.g. ``data/configs/x.yaml: ssl.alpha: must be a number``."""
        return cls(f"{source}: {field}: {message}")


class SpecError(FieldError):
    """A feature spec that does not validate; the message names the file and the field."""


@dataclasses.dataclass(frozen=True)
class Vocabulary:
    """Where a feature's vocabulary comes from.

    source: ``stats`` (the Beam feature-statistics job, frequency ranked), ``inline``
      (``values`` listed in the spec) or ``hash`` (``buckets`` hash bins, no vocabulary).
    min_count / top_k: applied by the statistics job to ``stats`` vocabularies.
    oov_buckets: how many out-of-vocabulary bins the lookup layer reserves.
    """

    source: str = "stats"
    values: tuple[str, ...] = ()
    buckets: int = 0
    min_count: int = 1
    top_k: int | None = None
    oov_buckets: int = 1


@dataclasses.dataclass(frozen=True)
class Feature:
    """One categorical feature of a tower.

    name: the feature's key in the dataset examples.
    kind: ``categorical`` (one value) or ``multi_categorical`` (a bag of values).
    embedding_dim: width of the feature's embedding.
    max_len: multi-valued only: values kept per example (the rest are counted as truncated).
    pooling: multi-valued only: ``mean`` or ``sum`` of the value embeddings.
    is_id: the identifier feature of its side (unique per item/query). It is excluded from
      mutual information (MI with a unique key degenerates to the other feature's entropy).
    maskable: whether SSL feature masking may mask it.
    column: the column in a CSV file (defaults to ``name``).
    separator: multi-valued only: the separator between values in a CSV cell.
    shares_embedding: query features only: the item feature whose vocabulary and embedding
      table this feature reuses (a history of item ids read through the item tower's id
      table, so what the item side learns about an item reaches the queries that hold it).
    """

    name: str
    kind: str
    embedding_dim: int = 32
    vocab: Vocabulary = dataclasses.field(default_factory=Vocabulary)
    max_len: int = 0
    pooling: str = "mean"
    is_id: bool = False
    maskable: bool = True
    column: str = ""
    separator: str = "|"
    shares_embedding: str = ""

    @property
    def multi_valued(self) -> bool:
        return self.kind == MULTI_CATEGORICAL

    @property
    def csv_column(self) -> str:
        return self.column or self.name


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
    """The features of both towers, plus which feature keys a query and an item."""

    name: str
    query_key: str
    item_key: str
    query_features: tuple[Feature, ...]
    item_features: tuple[Feature, ...]
    timestamp: str | None = None
    source: str = "<memory>"

    # -- lookups ---------------------------------------------------------------------
    def feature(self, name: str) -> Feature:
        for feature in self.query_features + self.item_features:
            if feature.name == name:
                return feature
        raise KeyError(f"{self.source}: no feature named {name!r}; known: {self.feature_names}")

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.query_features + self.item_features]

    @property
    def item_feature_names(self) -> list[str]:
        return [f.name for f in self.item_features]

    @property
    def query_feature_names(self) -> list[str]:
        return [f.name for f in self.query_features]

    @property
    def mi_features(self) -> list[str]:
        """Item features that mutual information is computed over (not ids), in spec order."""
        return [f.name for f in self.item_features if not f.is_id]

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out.pop("source")
        return out

    def scaled_embeddings(self, factor: float) -> "FeatureSpec":
        """Every feature's ``embedding_dim`` times ``factor`` (rounded, at least 1); shared
        embeddings stay equal, as both sides scale alike."""
        if factor == 1.0:
            return self

        def scale(features: tuple[Feature, ...]) -> tuple[Feature, ...]:
            return tuple(
                dataclasses.replace(f, embedding_dim=max(1, round(f.embedding_dim * factor))) for f in features
            )

        return dataclasses.replace(
            self, query_features=scale(self.query_features), item_features=scale(self.item_features)
        )


# -- loading and validation ---------------------------------------------------------------

_FEATURE_FIELDS = {f.name for f in dataclasses.fields(Feature)} | {"id"}
_VOCAB_FIELDS = {f.name for f in dataclasses.fields(Vocabulary)}
_SPEC_FIELDS = {"name", "query_key", "item_key", "query_features", "item_features", "timestamp"}


_fail = SpecError.at


def _positive_int(value: Any, source: str, field: str, allow_zero: bool = False) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < (0 if allow_zero else 1):
        raise _fail(source, field, f"must be a {'non-negative' if allow_zero else 'positive'} integer, got {value!r}")
    return value


def _parse_vocab(raw: Any, source: str, field: str) -> Vocabulary:
    if raw is None:
        return Vocabulary()
    if isinstance(raw, str):
        raw = {"source": raw}
    if isinstance(raw, list):
        raw = {"source": "inline", "values": raw}
    if not isinstance(raw, dict):
        raise _fail(source, field, f"must be a mapping, a source name or a list of values, got {raw!r}")
    unknown = set(raw) - _VOCAB_FIELDS
    if unknown:
        raise _fail(source, f"{field}.{sorted(unknown)[0]}", f"unknown field; known: {sorted(_VOCAB_FIELDS)}")
    vocab_source = raw.get("source", "stats")
    if vocab_source not in VOCAB_SOURCES:
        raise _fail(source, f"{field}.source", f"{vocab_source!r} is not one of {VOCAB_SOURCES}")
    values = tuple(str(v) for v in raw.get("values") or ())
    if vocab_source == "inline" and not values:
        raise _fail(source, f"{field}.values", "an inline vocabulary needs at least one value")
    if PADDING in values:
        raise _fail(source, f"{field}.values", "the empty string is the padding value, not a vocabulary entry")
    buckets = raw.get("buckets", 0)
    if vocab_source == "hash":
        _positive_int(buckets, source, f"{field}.buckets")
    top_k = raw.get("top_k")
    if top_k is not None:
        _positive_int(top_k, source, f"{field}.top_k")
    return Vocabulary(
        source=vocab_source,
        values=values,
        buckets=buckets,
        min_count=_positive_int(raw.get("min_count", 1), source, f"{field}.min_count"),
        top_k=top_k,
        oov_buckets=_positive_int(raw.get("oov_buckets", 1), source, f"{field}.oov_buckets"),
    )


def _parse_feature(raw: Any, source: str, field: str) -> Feature:
    if not isinstance(raw, dict):
        raise _fail(source, field, f"must be a mapping with at least name and kind, got {raw!r}")
    unknown = set(raw) - _FEATURE_FIELDS
    if unknown:
        raise _fail(
            source, f"{field}.{sorted(unknown)[0]}", f"unknown field; known: {sorted(_FEATURE_FIELDS - {'is_id'})}"
        )
    name = raw.get("name")
    if not isinstance(name, str) or not name.isidentifier():
        raise _fail(source, f"{field}.name", f"must be an identifier-like string, got {name!r}")
    field = f"{field}({name})"
    kind = raw.get("kind")
    if kind not in KINDS:
        raise _fail(source, f"{field}.kind", f"{kind!r} is not one of {KINDS}")
    max_len = raw.get("max_len", 0)
    if kind == MULTI_CATEGORICAL:
        _positive_int(max_len, source, f"{field}.max_len")
    elif max_len:
        raise _fail(source, f"{field}.max_len", "only multi_categorical features have max_len")
    pooling = raw.get("pooling", "mean")
    if pooling not in POOLINGS:
        raise _fail(source, f"{field}.pooling", f"{pooling!r} is not one of {POOLINGS}")
    for flag in ("id", "is_id", "maskable"):
        if flag in raw and not isinstance(raw[flag], bool):
            raise _fail(source, f"{field}.{flag}", f"must be true or false, got {raw[flag]!r}")
    separator = raw.get("separator", "|")
    if not isinstance(separator, str) or not separator:
        raise _fail(source, f"{field}.separator", f"must be a non-empty string, got {separator!r}")
    return Feature(
        name=name,
        kind=kind,
        embedding_dim=_positive_int(raw.get("embedding_dim", 32), source, f"{field}.embedding_dim"),
        vocab=_parse_vocab(raw.get("vocab"), source, f"{field}.vocab"),
        max_len=max_len,
        pooling=pooling,
        is_id=bool(raw.get("id", raw.get("is_id", False))),
        maskable=bool(raw.get("maskable", True)),
        column=str(raw.get("column", "")),
        separator=separator,
        shares_embedding=_optional_name(raw.get("shares_embedding", ""), source, f"{field}.shares_embedding"),
    )


def _optional_name(value: Any, source: str, field: str) -> str:
    if not isinstance(value, str):
        raise _fail(source, field, f"must be a feature name, got {value!r}")
    return value


def _parse_side(raw: dict, key: str, source: str) -> tuple[Feature, ...]:
    features = raw.get(key)
    if not isinstance(features, list) or not features:
        raise _fail(source, key, "must be a non-empty list of features")
    return tuple(_parse_feature(f, source, f"{key}[{i}]") for i, f in enumerate(features))


def spec_from_dict(raw: Any, source: str = "<memory>") -> FeatureSpec:
    """Validates a parsed spec; every error names ``source`` and the offending field."""
    if not isinstance(raw, dict):
        raise _fail(source, "<top>", f"a spec is a mapping, got {type(raw).__name__}")
    unknown = set(raw) - _SPEC_FIELDS
    if unknown:
        raise _fail(source, sorted(unknown)[0], f"unknown field; known: {sorted(_SPEC_FIELDS)}")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise _fail(source, "name", f"must be a non-empty string, got {name!r}")
    query_features = _parse_side(raw, "query_features", source)
    item_features = _parse_side(raw, "item_features", source)
    seen: dict[str, str] = {}
    for side, features in (("query_features", query_features), ("item_features", item_features)):
        for feature in features:
            if feature.name in seen:
                raise _fail(
                    source, f"{side}({feature.name}).name", f"duplicate feature name (also in {seen[feature.name]})"
                )
            seen[feature.name] = side
    for key_field, side, features in (
        ("query_key", "query_features", query_features),
        ("item_key", "item_features", item_features),
    ):
        key = raw.get(key_field)
        names = [f.name for f in features]
        if key not in names:
            raise _fail(source, key_field, f"{key!r} is not one of the {side}: {names}")
        if next(f for f in features if f.name == key).multi_valued:
            raise _fail(source, key_field, f"{key!r} must be single-valued")
    _check_shared_embeddings(query_features, item_features, source)
    timestamp = raw.get("timestamp")
    if timestamp is not None and not isinstance(timestamp, str):
        raise _fail(source, "timestamp", f"must be a column name, got {timestamp!r}")
    # A side's key feature is its id feature unless the spec says ``id: false``.
    item_features = _mark_key_as_id(item_features, raw["item_key"], raw["item_features"])
    query_features = _mark_key_as_id(query_features, raw["query_key"], raw["query_features"])
    return FeatureSpec(
        name=name,
        query_key=raw["query_key"],
        item_key=raw["item_key"],
        query_features=query_features,
        item_features=item_features,
        timestamp=timestamp,
        source=source,
    )


def _check_shared_embeddings(
    query_features: tuple[Feature, ...], item_features: tuple[Feature, ...], source: str
) -> None:
    items = {f.name: f for f in item_features}
    for feature in item_features:
        if feature.shares_embedding:
            raise _fail(
                source,
                f"item_features({feature.name}).shares_embedding",
                "only query features can share an item feature's embedding table",
            )
    for feature in query_features:
        if not feature.shares_embedding:
            continue
        field = f"query_features({feature.name}).shares_embedding"
        target = items.get(feature.shares_embedding)
        if target is None:
            raise _fail(source, field, f"{feature.shares_embedding!r} is not one of the item_features: {sorted(items)}")
        if target.embedding_dim != feature.embedding_dim:
            raise _fail(
                source,
                field,
                f"embedding_dim {feature.embedding_dim} differs from {target.name}'s "
                f"{target.embedding_dim}; a shared table has one width",
            )


def _mark_key_as_id(features: tuple[Feature, ...], key: str, raw_features: list[dict]) -> tuple[Feature, ...]:
    explicit = {f["name"] for f in raw_features if "id" in f or "is_id" in f}
    return tuple(dataclasses.replace(f, is_id=True) if f.name == key and key not in explicit else f for f in features)


def load_spec(path: str | pathlib.Path) -> FeatureSpec:
    """Loads and validates a YAML or JSON feature spec file.

    A bare name (``movielens_user_item``) resolves to ``data/specs/<name>.yaml``.
    """
    path = pathlib.Path(path)
    if not path.exists() and not path.suffix:
        from recsys_ssl.paths import SPECS_DIR

        path = SPECS_DIR / f"{path.name}.yaml"
    if not path.exists():
        raise FileNotFoundError(f"feature spec {path} does not exist")
    text = path.read_text()
    try:
        raw = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        raise SpecError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {error}") from error
    return spec_from_dict(raw, source=str(path))


def check_columns(spec: FeatureSpec, columns: Iterable[str], features: Iterable[Feature], file: str) -> None:
    """Raises SpecError naming the first spec column missing from a file's header."""
    columns = list(columns)
    for feature in features:
        if feature.csv_column not in columns:
            raise SpecError(
                f"{file}: column {feature.csv_column!r} (feature {feature.name!r} of spec "
                f"{spec.source}) is missing; the header has {columns}"
            )


# -- values as the towers take them ------------------------------------------------------------


def as_bytes(value: Any) -> bytes:
    """A feature value (bytes, str or a number) as bytes; str is UTF-8 encoded."""
    return value if isinstance(value, bytes) else str(value).encode("utf-8")


def dense_column(column: Sequence[Any], feature: Feature) -> np.ndarray:
    """One feature's values of N examples as the towers take them, an object array of bytes:
    single-valued [N]; multi-valued [N, max_len], each row's values cut to ``max_len`` and
    padded with b"" (``PADDING``). A multi-valued row is a list of values or an already
    padded row."""
    if not feature.multi_valued:
        return np.asarray([as_bytes(v) for v in column], dtype=object)
    dense = np.full((len(column), feature.max_len), PADDING.encode(), dtype=object)
    for row, values in enumerate(column):
        values = list(values)[: feature.max_len]
        dense[row, : len(values)] = [as_bytes(v) for v in values]
    return dense
