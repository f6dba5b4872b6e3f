"""``interactions_csv``: your own catalog, from CSV or Parquet files described by a feature spec.

Inputs (a column is named by the feature's ``column``, else its name):
  interactions: the spec's ``query_key`` and ``item_key`` columns, the ``timestamp`` column when
    the spec names one (integers), and the split column when one is given (``train``/``test``).
    Without a queries input, the other query features are read from this one, row by row.
  items: one row per item: every item feature (multi-valued cells are split on the feature's
    ``separator``, default ``|``; an empty cell is an empty list).
  queries (optional): one row per query: every query feature.

Each input is a file, a glob pattern (``data/interactions-*.csv``) or a comma-separated list of
them (:mod:`recsys_ssl.datasets._shards`): the shards are read one at a time in sorted path
order, and the rows are those of their concatenation. A CSV shard has its own header row; a
``.parquet`` shard is read in row batches, its cells turned into the text a CSV cell would
hold (integers and floats as Python writes them, booleans ``true``/``false``, null an empty
cell), and a multi-valued feature's column may also be a Parquet list column: the same table
as CSV or as Parquet, whole or sharded, builds byte-identical examples. Every shard's header
must be the first one's.

Memory: the reading streams (one shard open at a time, Parquet a batch at a time), but the
tables are held in memory once read (the split needs all of a query's rows, the pairs join
the item and query tables), about the size of the parsed cells.

Split: by the given split column, else per query by time as ../shared/bench/PROTOCOL.md
(sort by (timestamp, item id), the last ceil(20%) to test; without a timestamp column the
order of the shards' concatenation is the time order: a row's time is its line there, the
header being line 1, and a Parquet row counts as one line). ``train_10pct`` is a uniform 10%
sample of train.

Configs are made at build time (``make_configs``): ``<name>`` (pairs) and ``<name>-items``
(the corpus). The spec is saved in the dataset's metadata, so a prepared dataset loads without
the input files.

Bad input: a spec column missing from a header raises ``features.SpecError`` naming the file
and the column; shards whose headers differ, a pattern that matches no file, a malformed row
(field count, non-integer timestamp, bad split value, duplicate id) or a Parquet value with no
CSV form (a list outside a multi-valued column, bytes that are not UTF-8, a struct or date)
raise ValueError naming the file (shard) and the line (CSV) or row (Parquet) and the field;
interactions whose item (or query, when a queries input is given) is unknown are dropped and
counted in the metadata (``dropped``).
"""

from __future__ import annotations

import collections
import dataclasses
import pathlib
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from recsys_ssl import features as features_lib
from recsys_ssl.datasets import _common, _shards, template
from recsys_ssl.datasets._shards import CsvRowError

SPLIT_VALUES = ("train", "test")


@dataclasses.dataclass
class InteractionsCsvConfig(tfds.core.BuilderConfig):
    """Where the CSVs and the spec are. ``kind``: ``pairs`` or ``items``."""

    kind: str = _common.PAIRS
    interactions: str = ""
    items: str = ""
    queries: str = ""
    spec: str = ""
    split_column: str = ""
    seed: int = 0


def make_configs(
    name: str,
    interactions: str,
    items: str,
    spec: str,
    queries: str | None = None,
    split_column: str | None = None,
    seed: int = 0,
) -> tuple[InteractionsCsvConfig, InteractionsCsvConfig]:
    """The (pairs, items) configs of one CSV dataset called ``name``."""
    common = dict(
        interactions=str(interactions),
        items=str(items),
        queries=str(queries or ""),
        spec=str(spec),
        split_column=split_column or "",
        seed=seed,
    )
    return (
        InteractionsCsvConfig(name=name, kind=_common.PAIRS, **common),
        InteractionsCsvConfig(name=_common.items_config_name(name), kind=_common.ITEMS, **common),
    )


def _cell(feature: features_lib.Feature, value):
    """A cell's value: a string, or a multi-valued feature's list (split on its separator)."""
    if feature.multi_valued:
        if isinstance(value, list):  # a Parquet list column
            return [v for v in value if v]
        return [v for v in value.split(feature.separator) if v]
    return value


def _list_columns(features) -> set[str]:
    """The columns whose Parquet cells may be lists: the multi-valued features'."""
    return {f.csv_column for f in features if f.multi_valued}


def _read_table(inputs: str, spec: features_lib.FeatureSpec, features: tuple, key: str, what: str):
    """Reads a one-row-per-entity input -> (columns: feature -> object array, index: key -> row)."""
    table = _shards.Table(inputs, "items" if key == spec.item_key else "queries", _list_columns(features))
    features_lib.check_columns(spec, table.header, features, str(table.paths[0]))
    positions = [(f, table.header.index(f.csv_column)) for f in features]
    key_position = table.header.index(spec.feature(key).csv_column)
    records, index = [], {}
    for shard, line_no, _, fields in table.rows():
        key_value = fields[key_position]
        if key_value in index:
            _, first_shard, first_line = index[key_value]
            first = f"on line {first_line}" if first_shard is shard else f"at {first_shard.where(first_line)}"
            raise CsvRowError(f"{shard.where(line_no)}: duplicate {what} {key_value!r} (first {first})")
        index[key_value] = (len(records), shard, line_no)
        records.append([_cell(f, fields[p]) for f, p in positions])
    if not records:  # a header alone would build an empty corpus (TFDS then fails without naming the file)
        raise CsvRowError(f"{table.name}: no {what} rows after the header")
    columns = {}
    for i, (feature, _) in enumerate(positions):
        column = np.empty(len(records), dtype=object)
        column[:] = [r[i] for r in records]
        columns[feature.name] = column
    return columns, {k: row for k, (row, _, _) in index.items()}


@dataclasses.dataclass
class CsvData:
    """Parsed CSVs: the item and query tables, the pairs (rows into them) and what was dropped."""

    items: dict[str, np.ndarray]
    queries: dict[str, np.ndarray]
    pairs: _common.PairsTable
    dropped: dict[str, int]


@dataclasses.dataclass
class _Layout:
    """Where the interactions input keeps what :func:`read_csvs` needs (column positions)."""

    path: pathlib.Path  # the first shard (the header's file)
    query: int
    item: int
    timestamp: int | None
    split: int | None
    per_row_query: list  # (feature, position) of query features read per row (no queries file)


def _interactions_layout(config: InteractionsCsvConfig, spec: features_lib.FeatureSpec, table) -> _Layout:
    """Checks the interactions header against the spec; a missing column raises SpecError naming it."""
    path, header = table.paths[0], table.header
    query_key, item_key = spec.feature(spec.query_key), spec.feature(spec.item_key)
    per_row_query = []
    if config.queries:
        features_lib.check_columns(spec, header, (query_key, item_key), str(path))
    else:
        features_lib.check_columns(spec, header, spec.query_features + (item_key,), str(path))
        per_row_query = [(f, header.index(f.csv_column)) for f in spec.query_features]
    for column, role in ((spec.timestamp, "timestamp"), (config.split_column, "split column")):
        if column and column not in header:
            raise features_lib.SpecError(f"{path}: {role} column {column!r} is missing; the header has {header}")
    return _Layout(
        path,
        header.index(query_key.csv_column),
        header.index(item_key.csv_column),
        header.index(spec.timestamp) if spec.timestamp else None,
        header.index(config.split_column) if config.split_column else None,
        per_row_query,
    )


def read_csvs(config: InteractionsCsvConfig, spec: features_lib.FeatureSpec) -> CsvData:
    items, item_index = _read_table(config.items, spec, spec.item_features, spec.item_key, "item id")
    queries, query_index = None, None
    if config.queries:
        queries, query_index = _read_table(config.queries, spec, spec.query_features, spec.query_key, "query id")
    table = _shards.Table(
        config.interactions, "interactions", () if config.queries else _list_columns(spec.query_features)
    )
    layout = _interactions_layout(config, spec, table)
    read = _read_interactions(table.rows(), layout, config, spec, item_index, query_index)
    if not read["item_rows"]:  # nothing to train or evaluate on: say why rather than build empty splits
        dropped = read["dropped"]
        raise CsvRowError(
            f"{table.name}: no usable interactions"
            + (f" (dropped: {dict(dropped)})" if dropped else " (no rows after the header)")
        )
    if queries is None:
        queries = _query_columns([feature for feature, _ in layout.per_row_query], read["row_queries"])
    item_rows = np.asarray(read["item_rows"], dtype=np.int64)
    timestamps = np.asarray(read["timestamps"], dtype=np.int64)
    if layout.split is None:
        groups = np.asarray(read["query_groups"], dtype=np.int64)
        rule = _common.SplitRule(config.seed, groups=groups, ties=items[spec.item_key][item_rows].astype(str))
    else:
        rule = _common.SplitRule(config.seed, is_test=np.asarray(read["is_test"], dtype=bool))
    query_rows = np.asarray(read["query_rows"], dtype=np.int64)
    table = _common.PairsTable(query_rows, item_rows, timestamps, rule=rule)
    return CsvData(items=items, queries=queries, pairs=table, dropped=dict(read["dropped"]))


def _read_interactions(rows, layout: _Layout, config, spec, item_index: dict, query_index: dict | None) -> dict:
    """The interaction rows as lists (query/item rows, timestamps, test flags, query groups) and drop counts."""
    out = {k: [] for k in ("query_rows", "item_rows", "timestamps", "is_test", "query_groups", "row_queries")}
    dropped: collections.Counter = collections.Counter()
    query_codes: dict[str, int] = {}
    for shard, line_no, order, fields in rows:
        where = shard.where(line_no)
        item_row = item_index.get(fields[layout.item])
        if item_row is None:
            dropped[f"unknown item id (not in {_shards.display_name(config.items)})"] += 1
            continue
        if query_index is not None:
            query_row = query_index.get(fields[layout.query])
            if query_row is None:
                dropped[f"unknown query id (not in {_shards.display_name(config.queries)})"] += 1
                continue
        else:
            query_row = len(out["row_queries"])
            out["row_queries"].append([_cell(f, fields[p]) for f, p in layout.per_row_query])
        out["timestamps"].append(_timestamp(fields, layout.timestamp, spec.timestamp, where, order))
        if layout.split is not None:
            out["is_test"].append(_is_test(fields[layout.split], config.split_column, where))
        out["query_rows"].append(query_row)
        # The split groups by query id (not by row) when query features come per row.
        out["query_groups"].append(query_codes.setdefault(fields[layout.query], len(query_codes)))
        out["item_rows"].append(item_row)
    out["dropped"] = dropped
    return out


def _timestamp(fields: list, position: int | None, column: str | None, where: str, order: int) -> int:
    """The row's timestamp column as an integer; without one, ``order``: its line number in the
    shards' concatenation (file order is time order)."""
    if position is None:
        return order
    try:
        return int(fields[position])
    except (ValueError, TypeError):
        raise CsvRowError(f"{where}: timestamp {column!r} must be an integer, got {fields[position]!r}") from None


def _is_test(value: str, column: str, where: str) -> bool:
    """The split column's value: test (True) or train (False)."""
    split = value.strip().lower()
    if split not in SPLIT_VALUES:
        raise CsvRowError(f"{where}: split column {column!r} must be one of {SPLIT_VALUES}, got {value!r}")
    return split == "test"


def _query_columns(features: list[features_lib.Feature], row_queries: list[list]) -> dict[str, np.ndarray]:
    """Per-row query features as columns: feature -> [rows] object array."""
    queries = {}
    for i, feature in enumerate(features):
        column = np.empty(len(row_queries), dtype=object)
        column[:] = [r[i] for r in row_queries]
        queries[feature.name] = column
    return queries


class InteractionsCsv(template.PairedBuilder, skip_registration=True):
    """Your CSVs as TFDS: build with a config from :func:`make_configs`."""

    def spec(self) -> features_lib.FeatureSpec:
        if not self.builder_config or not self.builder_config.spec:
            raise ValueError("interactions_csv needs a config from interactions_csv.make_configs(...) with a spec")
        return features_lib.load_spec(self.builder_config.spec)

    def static_metadata(self) -> dict:
        config = self.builder_config
        spec = self.spec()
        return dict(
            spec=spec.to_dict(),
            spec_path=config.spec,
            files={"interactions": config.interactions, "items": config.items, "queries": config.queries},
            split=(
                f"column {config.split_column}" if config.split_column else "per query by time, last ceil(20%) to test"
            ),
            # Whether pair order means time (a timestamp column, or file order without a split
            # column): the validation carve-out then holds out the latest pairs, else a random draw.
            time_ordered=bool(spec.timestamp) or not config.split_column,
        )

    def read(self, dl_manager: Any) -> _common.Tables:
        spec = self.spec()
        data = read_csvs(self.builder_config, spec)
        counts = {"items": len(data.items[spec.item_key])}
        metadata = {"counts": counts, "dropped": data.dropped}
        items = _common.to_str_columns(data.items)
        if self.is_items():
            return _common.Tables(items, metadata)
        counts["queries"] = int(len(np.unique(data.queries[spec.query_key])))
        return _common.Tables(items, metadata, data.queries, data.pairs)
