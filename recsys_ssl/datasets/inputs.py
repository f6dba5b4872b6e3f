"""From prepared TFDS datasets to batched ``tf.data`` input: one handle per dataset.

    ds = load_dataset("synthetic_catalog/10k")     # builds with TFDS when not yet prepared
    ds.pairs("train")     # unbatched dicts: every spec feature (+ int64 "timestamp")
    ds.items()            # unbatched item dicts, each corpus item once
    ds.item_arrays()      # feature -> numpy object array (bytes / list of bytes): the corpus in memory
    batch(ds.pairs("train"), ds.spec, 1024, shuffle=True, seed=0, repeat=True)

Names: ``synthetic_catalog/{tiny,10k,100k,1m}``, ``movielens/{100k,1m}-{user-item,item-item}``,
``interactions_csv/<name>``, and the named real catalogs of :data:`NAMED_CSV` (``frappe``: read
from the raw data root, built through ``interactions_csv`` with a shipped spec). The builders
keep pairs and the item corpus in two TFDS configs (``<config>`` and its ``-items`` twin); the
handle hides that.

Validation: every name takes a ``-val`` suffix (``frappe-val``, ``synthetic_catalog/10k-val``,
``movielens/100k-user-item-val``): the same dataset whose ``train`` is the original train
minus the validation carve-out (:func:`_common.validation_split`: per query, the last ceil(10%)
of its train pairs by time, or a seeded random 10% when the data has no time order) and whose
``test`` is the carve-out. It never touches the original test split. ``tune`` and early
stopping read it; statistics (vocabularies, frequencies) stay those of the base dataset.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import pathlib
from typing import Callable, Iterable

import numpy as np
import tensorflow_datasets as tfds

from recsys_ssl import features as features_lib
from recsys_ssl import paths
from recsys_ssl.datasets import _common, interactions_csv, movielens, synthetic_catalog


class _LazyTensorFlow:
    """TensorFlow on first use: building a dataset (the builders, datasets/example_writer.py)
    never needs it, and importing it costs ~0.5 GB of the build's memory."""

    def __getattr__(self, name: str):
        from recsys_ssl.tf_setup import tf as module

        return getattr(module, name)


tf = _LazyTensorFlow()

DEFAULT_DATASET = "synthetic_catalog/10k"
SPLITS = _common.PAIRS_SPLITS
DEFAULT_SHUFFLE_BUFFER = 100_000
VALIDATION_SUFFIX = "-val"


@dataclasses.dataclass(frozen=True)
class NamedCsv:
    """A real catalog shipped as a spec, read from ``<raw data root>/<folder>`` (never copied here).

    interactions / items / queries: a file, a glob pattern or a comma-separated list, CSV or
    Parquet (see :mod:`recsys_ssl.datasets.interactions_csv`), relative to the folder.
    """

    folder: str
    interactions: str
    items: str
    spec: str  # under data/specs/
    split_column: str | None = None
    queries: str | None = None


# name -> where its raw files are; built as interactions_csv/<name>.
NAMED_CSV: dict[str, NamedCsv] = {
    "frappe": NamedCsv("frappe", "interactions.csv", "items.csv", "frappe.yaml", split_column="split"),
}


@dataclasses.dataclass
class Dataset:
    """A prepared dataset: its pairs (train / train_10pct / test), its item corpus and its spec."""

    name: str
    spec: features_lib.FeatureSpec
    pairs_builder: tfds.core.DatasetBuilder
    items_builder: tfds.core.DatasetBuilder
    validation_of: str | None = None  # a validation carve-out (``<name>-val``): the dataset it is carved from

    @property
    def metadata(self) -> dict:
        """The builder's metadata (synthetic: planted_groups, zipf_exponent, seed; all: counts, dropped)."""
        return dict(self.pairs_builder.info.metadata or {})

    items_split = _common.ITEMS_SPLIT

    @property
    def pairs_dir(self) -> str:
        """The prepared pairs config's folder (<tfds_dir>/<builder>/<config>/<version>), for Beam sources."""
        return str(self.pairs_builder.data_dir)

    @property
    def items_dir(self) -> str:
        return str(self.items_builder.data_dir)

    def num_examples(self, split: str) -> int:
        splits = self.pairs_builder.info.splits
        return int(splits[split].num_examples) if _check_split(split) in splits else 0

    @property
    def num_items(self) -> int:
        return int(self.items_builder.info.splits[_common.ITEMS_SPLIT].num_examples)

    def pairs(self, split: str = "train") -> tf.data.Dataset:
        """Unbatched query -> item examples: scalar / 1-D ``tf.string`` per feature, int64 ``timestamp``."""
        if _check_split(split) not in self.pairs_builder.info.splits:  # an empty split (see _common)
            signature = self.pairs_builder.info.features.get_tensor_spec()
            return tf.data.Dataset.from_generator(lambda: iter(()), output_signature=signature)
        return self.pairs_builder.as_dataset(split=split, shuffle_files=False)

    def items(self) -> tf.data.Dataset:
        """Unbatched item examples (item features only), each corpus item exactly once."""
        return self.items_builder.as_dataset(split=_common.ITEMS_SPLIT, shuffle_files=False)

    @functools.cached_property
    def _item_arrays(self) -> dict[str, np.ndarray]:
        return dataset_arrays(self.items(), self.spec)

    def item_arrays(self) -> dict[str, np.ndarray]:
        """feature -> [num_items] object array: bytes (single-valued) or list of bytes (multi-valued)."""
        return dict(self._item_arrays)

    def pair_columns(self, split: str, names: Iterable[str], batch_size: int = 8192) -> dict[str, np.ndarray]:
        """Whole-split string columns: feature -> [P] (single-valued) or [P, max_len] padded with b"".

        Read straight from the TFDS record files in one vectorised parse when the layout is the
        expected one (~15x faster than iterating ``pairs()``), else through ``batch``.
        """
        names = list(names)
        fast = _read_columns_from_records(self, _check_split(split), names)
        if fast is not None:
            return fast
        return collect_columns(batch(self.pairs(split), self.spec, batch_size, features=names), names)


class ValidationView:
    """``<name>-val``: a prepared dataset's train split cut into (train, validation) -- see the module docstring.

    Splits: ``train`` = the base train minus the carve-out; ``train_10pct`` = the base 10%
    sample minus the carve-out; ``test`` = the carve-out (the validation pairs). Pairs are
    matched by (query key, item key, timestamp), so every copy of a repeated interaction falls
    on the same side. The carve-out is computed on demand from the base train split (cheap: one
    columnar read) and kept for the handle's lifetime.
    """

    def __init__(self, name: str, base: Dataset):
        self.name, self.base, self.spec = name, base, base.spec
        self.pairs_builder, self.items_builder = base.pairs_builder, base.items_builder
        self.validation_of = base.name

    items_split = _common.ITEMS_SPLIT
    num_items = property(lambda self: self.base.num_items)
    metadata = property(lambda self: {**self.base.metadata, "validation_of": self.base.name})
    items = property(lambda self: self.base.items)
    item_arrays = property(lambda self: self.base.item_arrays)

    @property
    def pairs_dir(self) -> str:
        raise ValueError(
            f"{self.name} is a validation view of {self.base.name}: run the statistics and MI jobs "
            f"on {self.base.name} (the view reads them)"
        )

    items_dir = property(lambda self: self.base.items_dir)

    @property
    def time_ordered(self) -> bool:
        metadata = self.base.metadata
        if "time_ordered" in metadata:
            return bool(metadata["time_ordered"])
        return not str(metadata.get("split", "")).startswith("column")  # prepared before the flag existed

    def _keys(self, columns: dict[str, np.ndarray]) -> np.ndarray:
        q, i, t = columns[self.spec.query_key], columns[self.spec.item_key], columns[_common.TIMESTAMP]
        return np.array([b"%s\x1f%s\x1f%d" % (a, b, c) for a, b, c in zip(q, i, t)], dtype=object)

    @functools.cached_property
    def validation_keys(self) -> frozenset:
        """The held-out pairs' keys (query \x1f item \x1f timestamp)."""
        columns = self.base.pair_columns("train", [self.spec.query_key, self.spec.item_key, _common.TIMESTAMP])
        item_ids = columns[self.spec.item_key]
        # Ties in time break by item id, numerically when every id is an integer (as the evaluator orders ids).
        numeric = len(item_ids) > 0 and all(i.isdigit() for i in item_ids)
        held_out = _common.validation_split(
            columns[self.spec.query_key],
            columns[_common.TIMESTAMP],
            item_ids.astype(np.int64) if numeric else item_ids,
            self.time_ordered,
        )
        return frozenset(self._keys(columns)[held_out].tolist())

    def _source(self, split: str) -> tuple[str, bool]:
        """(the base split a view split reads, whether it keeps the held-out pairs)."""
        return {"train": ("train", False), "train_10pct": ("train_10pct", False), "test": ("train", True)}[
            _check_split(split)
        ]

    def _mask(self, columns: dict[str, np.ndarray], held_out: bool) -> np.ndarray:
        keys = self.validation_keys
        inside = np.fromiter(
            (k in keys for k in self._keys(columns)), dtype=bool, count=len(columns[_common.TIMESTAMP])
        )
        return inside if held_out else ~inside

    @functools.cached_property
    def _counts(self) -> dict[str, int]:
        """Examples per view split, from one key-column read per base split (not one per call)."""
        key_names = [self.spec.query_key, self.spec.item_key, _common.TIMESTAMP]
        held = {base: self._mask(self.base.pair_columns(base, key_names), True) for base in ("train", "train_10pct")}
        return {
            split: int(held[base].sum() if keep else (~held[base]).sum())
            for split, (base, keep) in ((s, self._source(s)) for s in SPLITS)
        }

    def num_examples(self, split: str) -> int:
        return self._counts[_check_split(split)]

    def pair_columns(self, split: str, names: Iterable[str], batch_size: int = 8192) -> dict[str, np.ndarray]:
        names = list(names)
        base_split, held_out = self._source(split)
        key_names = [self.spec.query_key, self.spec.item_key, _common.TIMESTAMP]
        columns = self.base.pair_columns(base_split, list(dict.fromkeys(names + key_names)), batch_size)
        keep = self._mask(columns, held_out)
        return {name: columns[name][keep] for name in names}

    def pairs(self, split: str = "train") -> tf.data.Dataset:
        base_split, held_out = self._source(split)
        keys = sorted(self.validation_keys)
        table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.constant(keys or [b""], tf.string), tf.ones(max(1, len(keys)), tf.int64)
            ),
            default_value=0,
        )
        q, i = self.spec.query_key, self.spec.item_key

        def wanted(x):
            key = tf.strings.join([x[q], x[i], tf.strings.as_string(x[_common.TIMESTAMP])], separator="\x1f")
            inside = tf.equal(table.lookup(key), 1) if keys else tf.constant(False)
            return inside if held_out else tf.logical_not(inside)

        return self.base.pairs(base_split).filter(wanted)


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; a dataset's pairs have splits {SPLITS}")
    return split


def dataset_arrays(
    dataset: tf.data.Dataset, spec: features_lib.FeatureSpec | None = None, chunk: int = 8192
) -> dict[str, np.ndarray]:
    """An unbatched dataset of string features in memory: feature -> [N] numpy array.

    Scalars become object arrays of bytes (int64 stays int64); 1-D features object arrays of
    lists of bytes.
    """
    parts: dict[str, list] = {name: [] for name in dataset.element_spec}
    for batch_ in dataset.ragged_batch(chunk):
        for name, value in batch_.items():
            if isinstance(value, tf.RaggedTensor):
                parts[name].extend(value.to_list())
            else:
                parts[name].append(value.numpy())
    out = {}
    for name, values in parts.items():
        rank = dataset.element_spec[name].shape.rank
        if rank == 0:
            out[name] = (
                np.concatenate(values) if values else np.zeros(0, dtype=dataset.element_spec[name].dtype.as_numpy_dtype)
            )
        else:
            column = np.empty(len(values), dtype=object)
            column[:] = values
            out[name] = column
    return out


def parse_name(name: str) -> tuple[str, str]:
    builder, _, config = name.partition("/")
    if builder not in DATASET_FAMILIES or not config:
        patterns = [family.pattern for family in DATASET_FAMILIES.values()] + list(NAMED_CSV)
        raise ValueError(
            f"unknown dataset {name!r}: expected one of {', '.join(patterns)}; any of them with a "
            f"{VALIDATION_SUFFIX!r} suffix for its validation carve-out"
        )
    return builder, config


def base_name(name: str) -> str:
    """The dataset a name's statistics come from: ``frappe-val`` -> ``frappe``."""
    return name[: -len(VALIDATION_SUFFIX)] if name.endswith(VALIDATION_SUFFIX) else name


def _native_validation(name: str) -> bool:
    """MovieLens builds its carve-out as a TFDS config (its history feature depends on the split)."""
    builder, _, config = name.partition("/")
    return builder == "movielens" and config in {c.name for c in movielens.Movielens.BUILDER_CONFIGS}


def _under(folder: pathlib.Path, files: str) -> str:
    """``files`` (a file, a glob pattern or a comma-separated list of them) under ``folder``."""
    return ",".join(str(folder / part.strip()) for part in files.split(",") if part.strip())


def _load_named_csv(name: str, data_dir, raw_data_dir) -> Dataset:
    """A :data:`NAMED_CSV` catalog: its raw files under the raw data root, built once as interactions_csv/<name>."""
    named = NAMED_CSV[name]
    root = pathlib.Path(data_dir or paths.tfds_dir()) / "interactions_csv"
    prepared = all(
        (root / c / str(_common.VERSION) / "dataset_info.json").exists()
        for c in (name, _common.items_config_name(name))
    )
    csv_configs = None
    if not prepared:
        folder = paths.raw_data_root(str(raw_data_dir) if raw_data_dir else None) / named.folder
        if not folder.is_dir():
            raise FileNotFoundError(
                f"dataset {name!r} reads {folder}/ ({named.interactions}, {named.items}); "
                f"pass --data-dir or set {paths.DATA_ENV} to the folder that holds {named.folder}/"
            )
        csv_configs = interactions_csv.make_configs(
            name,
            _under(folder, named.interactions),
            _under(folder, named.items),
            paths.SPECS_DIR / named.spec,
            queries=_under(folder, named.queries) if named.queries else None,
            split_column=named.split_column,
        )
    dataset = load_dataset(f"interactions_csv/{name}", data_dir, raw_data_dir, csv_configs=csv_configs)
    return dataclasses.replace(dataset, name=name)


def _prepare(builder: tfds.core.DatasetBuilder, manual_dir: pathlib.Path | None = None, beam_args=None) -> None:
    """Builds ``builder`` unless prepared: in-process, or with Beam when ``beam_args`` is a list
    of Beam pipeline flags (``[]``: the local FnApiRunner, 2 worker processes)."""
    if builder.is_prepared():
        return
    beam = {}
    if beam_args is not None:
        from recsys_ssl import beam_runner as beam_options  # Beam only when asked for

        options = beam_options.pipeline_options(beam_args)
        beam = dict(beam_runner=beam_options.make_runner(options), beam_options=options)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(
            manual_dir=str(manual_dir) if manual_dir else None, try_download_gcs=False, **beam
        )
    )


def load_dataset(
    name: str = DEFAULT_DATASET,
    data_dir: str | os.PathLike | None = None,
    raw_data_dir: str | os.PathLike | None = None,
    *,
    csv_configs: tuple | None = None,
    beam_args: list[str] | None = None,
) -> Dataset:
    """The handle of a dataset, built with TFDS (never downloading) if it is not prepared yet.

    data_dir: TFDS data_dir (default ``paths.tfds_dir()``).
    raw_data_dir: the raw data root holding ``movielens-100k/`` etc. (default ``paths.raw_data_root()``).
    csv_configs: for ``interactions_csv/<name>`` not yet prepared, ``interactions_csv.make_configs(...)``.
    beam_args: build with Beam (datasets/beam_generate.py): Beam pipeline flags, ``[]`` for the
      local runner; None (default): in-process.
    """
    if name.endswith(VALIDATION_SUFFIX) and not _native_validation(name):
        base = load_dataset(
            name[: -len(VALIDATION_SUFFIX)], data_dir, raw_data_dir, csv_configs=csv_configs, beam_args=beam_args
        )
        return ValidationView(name, base)
    if name in NAMED_CSV:
        return _load_named_csv(name, data_dir, raw_data_dir)
    builder_name, config = parse_name(name)
    family = DATASET_FAMILIES[builder_name]
    return family.load(name, config, str(data_dir or paths.tfds_dir()), raw_data_dir, csv_configs, beam_args)


def _load_synthetic(name: str, config: str, data_dir: str, raw_data_dir, csv_configs, beam_args=None) -> Dataset:
    if config not in synthetic_catalog.SIZES:
        raise ValueError(f"unknown synthetic_catalog config {config!r}; sizes: {list(synthetic_catalog.SIZES)}")
    pairs = synthetic_catalog.SyntheticCatalog(config=config, data_dir=data_dir)
    items = synthetic_catalog.SyntheticCatalog(config=_common.items_config_name(config), data_dir=data_dir)
    _prepare(items, beam_args=beam_args)
    _prepare(pairs, beam_args=beam_args)
    return Dataset(name, synthetic_catalog.spec(), pairs, items)


def _load_movielens(name: str, config: str, data_dir: str, raw_data_dir, csv_configs, beam_args=None) -> Dataset:
    names = [c.name for c in movielens.Movielens.BUILDER_CONFIGS if c.task != "items"]
    if config not in names:
        raise ValueError(f"unknown movielens config {config!r}; configs: {names}")
    pairs = movielens.Movielens(config=config, data_dir=data_dir)
    items = movielens.Movielens(config=movielens.items_config_name(config), data_dir=data_dir)
    release, task = pairs.builder_config.release, pairs.builder_config.task
    if not (pairs.is_prepared() and items.is_prepared()):
        manual_dir = movielens.default_manual_dir(release, str(raw_data_dir) if raw_data_dir else None)
        _prepare(items, manual_dir, beam_args)
        _prepare(pairs, manual_dir, beam_args)
    return Dataset(
        name,
        movielens.spec_for(task),
        pairs,
        items,
        validation_of=base_name(name) if pairs.builder_config.validation else None,
    )


def _load_interactions_csv(name: str, config: str, data_dir: str, raw_data_dir, csv_configs, beam_args=None) -> Dataset:
    """Configs are made at build time (``csv_configs``); a prepared dataset loads from its folder."""
    root = pathlib.Path(data_dir) / "interactions_csv"
    dirs = [root / c / str(_common.VERSION) for c in (config, _common.items_config_name(config))]
    if not all((d / "dataset_info.json").exists() for d in dirs):
        if csv_configs is None:
            raise FileNotFoundError(
                f"interactions_csv/{config} is not prepared in {data_dir}; build it first: recsys-ssl data "
                f"--dataset interactions_csv/{config} --interactions F --items F [--queries F] --spec S"
            )
        for csv_config in reversed(csv_configs):  # items first, as the others
            _prepare(interactions_csv.InteractionsCsv(config=csv_config, data_dir=data_dir), beam_args=beam_args)
    pairs, items = (tfds.builder_from_directory(str(d)) for d in dirs)
    metadata = pairs.info.metadata
    if csv_configs is not None:
        wanted = {
            "interactions": csv_configs[0].interactions,
            "items": csv_configs[0].items,
            "queries": csv_configs[0].queries,
        }
        if wanted != metadata.get("files"):
            logging.warning(
                "interactions_csv/%s is already prepared in %s from %s; not rebuilding from %s "
                "(delete that folder to rebuild)",
                config,
                root,
                metadata.get("files"),
                wanted,
            )
    spec = features_lib.spec_from_dict(
        metadata["spec"], source=metadata.get("spec_path") or f"interactions_csv/{config}"
    )
    return Dataset(name, spec, pairs, items)


@dataclasses.dataclass(frozen=True)
class DatasetFamily:
    """One TFDS builder family: how its names read, and how a name becomes a :class:`Dataset`.

    load(name, config, tfds data_dir, raw data root, csv_configs, beam_args) -> Dataset.
    """

    pattern: str  # how its dataset names read, for error messages
    load: Callable[..., Dataset]


# builder -> family: a new dataset family is one entry and one loader (catalogs that are CSV
# files under the raw data root are one NAMED_CSV entry instead).
DATASET_FAMILIES: dict[str, DatasetFamily] = {
    "synthetic_catalog": DatasetFamily(
        f"synthetic_catalog/<size> ({', '.join(synthetic_catalog.SIZES)})", _load_synthetic
    ),
    "movielens": DatasetFamily("movielens/<100k|1m>-<user-item|item-item>", _load_movielens),
    "interactions_csv": DatasetFamily("interactions_csv/<name>", _load_interactions_csv),
}


def batch(
    dataset: tf.data.Dataset,
    spec: features_lib.FeatureSpec,
    batch_size: int,
    *,
    features: Iterable[str] | None = None,
    shuffle: bool = False,
    seed: int | None = None,
    deterministic: bool = True,
    repeat: bool = False,
    drop_remainder: bool = False,
    shuffle_buffer: int | None = None,
) -> tf.data.Dataset:
    """Batched, optionally shuffled and repeated, prefetched input.

    Returns dicts of [B] ``tf.string`` (single-valued), [B, max_len] ``tf.string`` (multi-valued
    spec features: truncated to max_len, padded with ""), [B] int64 ``timestamp``. A 1-D
    feature not in the spec is padded to the batch's longest.

    features: the keys to keep (default: all). shuffle_buffer: default min(100k, dataset size).
    deterministic: fixed element order (with ``seed``, the same order every run).
    """
    keys = list(features) if features is not None else list(dataset.element_spec)
    missing = [k for k in keys if k not in dataset.element_spec]
    if missing:
        raise KeyError(f"features {missing} are not in the dataset; it has {sorted(dataset.element_spec)}")
    dataset = dataset.map(lambda x: {k: x[k] for k in keys})
    if shuffle:
        if shuffle_buffer is None:
            size = int(dataset.cardinality())
            shuffle_buffer = DEFAULT_SHUFFLE_BUFFER if size < 0 else max(1, min(size, DEFAULT_SHUFFLE_BUFFER))
        dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        dataset = dataset.repeat()
    dataset = dataset.ragged_batch(batch_size, drop_remainder=drop_remainder)
    widths = {}
    for key in keys:
        if dataset.element_spec[key].shape.rank == 2:  # ragged [B, None]
            known = key in spec.feature_names and spec.feature(key).multi_valued
            widths[key] = spec.feature(key).max_len if known else None

    def pad(batch_: dict) -> dict:
        out = dict(batch_)
        for key, width in widths.items():
            out[key] = batch_[key].to_tensor(default_value=features_lib.PADDING, shape=[None, width])
        return out

    dataset = dataset.map(pad, num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    options = tf.data.Options()
    options.deterministic = deterministic
    return dataset.with_options(options).prefetch(tf.data.AUTOTUNE)


def truncation_counts(arrays: dict[str, np.ndarray], spec: features_lib.FeatureSpec) -> dict[str, int]:
    """Values beyond max_len per multi-valued spec feature (what :func:`batch` truncates), for reports."""
    out = {}
    for name, column in arrays.items():
        if name in spec.feature_names and spec.feature(name).multi_valued:
            max_len = spec.feature(name).max_len
            out[name] = int(sum(max(0, len(values) - max_len) for values in column))
    return out


# -- whole splits as columns (evaluation, statistics in numpy) -------------------------------


def _concat_padded(parts: list[np.ndarray]) -> np.ndarray:
    """Concatenates [B_i] or [B_i, L_i] string arrays, padding multi-valued ones with b""."""
    if parts[0].ndim == 1:
        return np.concatenate(parts)
    width = max(p.shape[1] for p in parts)
    return np.concatenate([np.pad(p, ((0, 0), (0, width - p.shape[1])), constant_values=b"") for p in parts])


def collect_columns(batches: tf.data.Dataset, names: list[str]) -> dict[str, np.ndarray]:
    """Iterates a batched tf.data.Dataset once: feature -> numpy array over all rows."""
    columns: dict[str, list[np.ndarray]] = {name: [] for name in names}
    for batch_ in batches:
        for name in names:
            columns[name].append(batch_[name].numpy())
    return {name: _concat_padded(parts) if parts else np.zeros(0, dtype=object) for name, parts in columns.items()}


def _read_columns_from_records(dataset: "Dataset", split: str, names: list[str]) -> dict[str, np.ndarray] | None:
    """String feature columns of a split straight from the TFDS record files, or None.

    TFDS stores each example as a tf.train.Example keyed by feature name (a ``Text`` feature:
    one bytes value), so whole batches of records parse in one vectorised
    ``tf.io.parse_example``: ~15x faster than the per-example decoding of ``pairs()`` (MovieLens-100K's
    80k training pairs: 0.5 s instead of 9 s); a multi-valued feature (``Sequence(Text)``, a
    bytes list) comes back [P, max_len] padded with b"", as ``inputs.batch`` gives it. Anything
    unexpected (a feature of another type, a builder without record files, a count that
    differs from the split's) returns None and the caller reads through the dataset handle.
    """
    try:
        builder = dataset.pairs_builder
        features = builder.info.features
        integers = {name for name in names if features[name].shape == () and features[name].tf_dtype == tf.int64}
        if any(
            features[name].shape not in ((), (None,)) or features[name].tf_dtype != tf.string
            for name in names
            if name not in integers
        ):
            return None
        # Multi-valued features: the spec's max_len, truncated and padded with "" as inputs.batch does.
        widths = {name: dataset.spec.feature(name).max_len for name in names if features[name].shape == (None,)}
        info = builder.info.splits[split]
        files = [str(pathlib.Path(builder.data_dir) / f) for f in info.filenames]
        parse = {
            name: tf.io.VarLenFeature(tf.string)
            if name in widths
            else tf.io.FixedLenFeature([], tf.int64 if name in integers else tf.string)
            for name in names
        }

        def parse_batch(records):
            parsed = tf.io.parse_example(records, parse)
            for name, width in widths.items():
                dense = tf.sparse.to_dense(parsed[name], default_value="")[:, :width]
                parsed[name] = tf.pad(dense, [[0, 0], [0, width - tf.shape(dense)[1]]])
            return parsed

        records = tf.data.TFRecordDataset(files).batch(65536).map(parse_batch)
        columns: dict[str, list[np.ndarray]] = {name: [] for name in names}
        for batch in records.as_numpy_iterator():
            for name in names:
                columns[name].append(batch[name])
        out = {
            name: (np.concatenate(parts) if name in integers else np.concatenate(parts).astype(object))
            if parts
            else np.zeros(0, np.int64 if name in integers else object)
            for name, parts in columns.items()
        }
    except (AttributeError, KeyError, TypeError, ValueError, tf.errors.OpError) as error:
        logging.getLogger(__name__).info("reading %s through tf.data (%s: %s)", split, type(error).__name__, error)
        return None
    if any(len(column) != int(info.num_examples) for column in out.values()):
        return None
    return out
