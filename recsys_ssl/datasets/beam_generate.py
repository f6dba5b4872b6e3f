"""Dataset generation as a Beam pipeline: the split, the 10% sample and the feature joins as keyed transforms.

A builder of the shared template (:class:`template.PairedBuilder`) generates with Beam when
``download_and_prepare`` gets Beam options (``DownloadConfig(beam_runner=..., beam_options=...)``;
``recsys-ssl data --beam [Beam flags]``). The builder's ``read()`` gives the source tables;
they are staged as chunk files (:func:`stage`) that the workers read, and every split's
examples come out of one shared graph::

    pairs (index, query row, item row, timestamp, group, tie)
      | SplitPerQuery:   GroupByKey per query, sort by (timestamp, tie), last ceil(20%) -> test
      | SampleTrain:     each train pair's rank among the train pairs (counts per index bucket,
                         a CombineFn), the uniform 10% sample of those ranks -> train_10pct
      | JoinFeatures:    CoGroupByKey with the query table, then with the item table
      | Partition by split -> TFDS's Beam writer (examples sorted by pair index, as in-process)

so no step holds the pairs or the feature tables whole, and the examples are the in-process
build's, byte for byte (tests/test_datasets_beam.py). A table whose splits are computed by
its builder (MovieLens: the user's history depends on the split) is staged with its split
flags and goes through the joins only. Pairs whose query or item row is missing are dropped
and counted (Beam counters ``generate/pairs_without_query``, ``generate/pairs_without_item``).

The staging folder must be readable by the workers: a local temp folder for the in-process
runner, a shared path (``$RECSYS_SSL_STAGING_DIR``, e.g. gs://...) on a cluster.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from typing import Iterable

import apache_beam as beam
import numpy as np
from apache_beam.io import filesystems

from recsys_ssl.datasets import _common

CHUNK = 50_000  # rows per staged chunk file
BUCKET = 1 << 16  # pair indices per bucket of the train-rank count
STAGING_ENV = "RECSYS_SSL_STAGING_DIR"
NAMESPACE = "generate"
# A pair record through the graph: (index, query row, item row, timestamp, group, tie, splits)
# where splits is a tuple of split names (empty until the split is known).
INDEX, QUERY, ITEM, TIME, GROUP, TIE, SPLITS = range(7)


def _dump(path: str, value) -> str:
    with filesystems.FileSystems.create(path) as f:
        f.write(pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))
    return path


def _load(path: str):
    with filesystems.FileSystems.open(path) as f:
        return pickle.loads(f.read())


def _column_chunks(folder: str, name: str, columns: dict[str, np.ndarray]) -> list[str]:
    n = _common.num_rows(columns)
    return [
        _dump(f"{folder}/{name}-{lo:012d}.pkl", (lo, {k: v[lo : lo + CHUNK] for k, v in columns.items()}))
        for lo in range(0, n, CHUNK)
    ]


def _pair_chunks(folder: str, table: _common.PairsTable) -> list[str]:
    """Chunks of the pair arrays: with the split rule's keys, or with each pair's splits when given."""
    rule = table.rule
    columns = {"query": table.query_rows, "item": table.item_rows, "time": table.timestamps}
    if rule is not None and rule.is_test is None:
        columns.update(group=rule.groups, tie=rule.ties)
    elif rule is not None:
        columns["is_test"] = rule.is_test
    else:
        columns["splits"] = _split_names(table.splits, len(table.item_rows))
    columns.update({f"pair:{k}": v for k, v in table.pair_columns.items()})
    return _column_chunks(folder, "pairs", columns)


def _split_names(splits: dict[str, np.ndarray], n: int) -> np.ndarray:
    names = np.empty(n, dtype=object)
    names[:] = [()] * n
    for split in _common.PAIRS_SPLITS:
        for index in splits[split]:
            names[index] = names[index] + (split,)
    return names


def remove_staging(folder: str) -> None:
    if filesystems.FileSystems.exists(folder):
        filesystems.FileSystems.delete([folder])


def staging_folder() -> str:
    root = os.environ.get(STAGING_ENV)
    if root:
        return f"{root.rstrip('/')}/stage-{os.getpid()}-{np.random.default_rng().integers(1 << 62):x}"
    return tempfile.mkdtemp(prefix="recsys_ssl_stage_")


def stage(tables: _common.Tables, folder: str) -> dict[str, list[str]]:
    """Writes the source tables as chunk files; returns table -> chunk paths."""
    if not filesystems.FileSystems.exists(folder):
        filesystems.FileSystems.mkdirs(folder)
    staged = {"items": _column_chunks(folder, "items", tables.items)}
    if tables.pairs is not None:
        staged["queries"] = _column_chunks(folder, "queries", tables.queries)
        staged["pairs"] = _pair_chunks(folder, tables.pairs)
    return staged


# --- reading the staged chunks (on the workers) ------------------------------------------


def _table_rows(path: str) -> Iterable[tuple[int, dict]]:
    """(row, {feature: value}) of a staged table chunk."""
    lo, columns = _load(path)
    picked = list(columns.items())
    for offset in range(_common.num_rows(columns)):
        yield lo + offset, {name: column[offset] for name, column in picked}


def _pair_records(path: str) -> Iterable[tuple]:
    """Pair records (see SPLITS above) of a staged pair chunk; pair columns ride along in a dict."""
    lo, c = _load(path)
    n = len(c["query"])
    pair_columns = [(k.partition(":")[2], v) for k, v in c.items() if k.startswith("pair:")]
    group = c["group"].tolist() if "group" in c else [None] * n
    tie = c["tie"].tolist() if "tie" in c else [None] * n
    if "splits" in c:
        splits = list(c["splits"])
    elif "is_test" in c:
        splits = [("test",) if t else ("train",) for t in c["is_test"].tolist()]
    else:
        splits = [()] * n
    query, item, time = c["query"].tolist(), c["item"].tolist(), c["time"].tolist()
    for k in range(n):
        extra = {name: column[k] for name, column in pair_columns}
        yield (lo + k, query[k], item[k], time[k], group[k], tie[k], splits[k], extra)


class ReadTable(beam.PTransform):
    """Staged chunk files -> (row, {feature: value})."""

    def __init__(self, paths: list[str]):
        super().__init__()
        self._paths = paths

    def expand(self, pbegin):
        return pbegin | "ChunkPaths" >> beam.Create(self._paths) | "ReadRows" >> beam.FlatMap(_table_rows)


# --- the keyed transforms ----------------------------------------------------------------


def _mark_test(group_pairs, fraction: float):
    """One query's pairs, sorted by (timestamp, tie, index): the last ceil(fraction * n) -> test."""
    _, pairs = group_pairs
    pairs = sorted(pairs, key=lambda p: (p[TIME], p[TIE], p[INDEX]))
    first_test = len(pairs) - int(_common.ceil_fraction(len(pairs), fraction))
    for rank, p in enumerate(pairs):
        yield p[:SPLITS] + (("test",) if rank >= first_test else ("train",),) + p[SPLITS + 1 :]


class SplitPerQuery(beam.PTransform):
    """The protocol split, keyed: per query (GroupByKey), sorted by (timestamp, tie), the
    last ceil(fraction * n) pairs -> ``test``, the rest ``train`` (= :func:`_common.temporal_split`).
    The validation carve-out is the same transform on the train pairs with fraction 0.1."""

    def __init__(self, fraction: float = _common.TEST_FRACTION):
        super().__init__()
        self._fraction = fraction

    def expand(self, pairs):
        return (
            pairs
            | "KeyByQuery" >> beam.Map(lambda p: (p[GROUP], p))
            | "GroupByQuery" >> beam.GroupByKey()
            | "LatestToTest" >> beam.FlatMap(_mark_test, self._fraction)
        )


def _bucket_offsets(counts: list[tuple[int, int]]) -> dict[int, int]:
    """bucket -> number of train pairs in the buckets before it."""
    offsets, total = {}, 0
    for bucket, count in sorted(counts):
        offsets[bucket] = total
        total += count
    return offsets


def _sample_bucket(bucket_pairs, offsets: dict, sample: np.ndarray):
    """A bucket's train pairs in index order: rank among all train pairs; in the sample -> train_10pct too."""
    bucket, pairs = bucket_pairs
    pairs = sorted(pairs, key=lambda p: p[INDEX])
    ranks = offsets[bucket] + np.arange(len(pairs))
    hit = np.searchsorted(sample, ranks)
    picked = (hit < len(sample)) & (sample[np.minimum(hit, len(sample) - 1)] == ranks) if len(sample) else hit < 0
    for p, in_sample in zip(pairs, picked.tolist()):
        yield p[:SPLITS] + (("train", "train_10pct") if in_sample else ("train",),) + p[SPLITS + 1 :]


class SampleTrain(beam.PTransform):
    """``train_10pct``: :func:`_common.make_splits`' uniform sample, keyed. A train pair's rank
    among the train pairs (index order) = the train pairs in earlier index buckets (counted by a
    CombineFn) + its rank in its bucket (GroupByKey per bucket); the sample is
    ``sample_indices(n_train, 10%, seed + 1)`` of those ranks."""

    def __init__(self, seed: int):
        super().__init__()
        self._seed = seed

    def expand(self, pairs):
        test = pairs | "TestPairs" >> beam.Filter(lambda p: "test" in p[SPLITS])
        train = pairs | "TrainPairs" >> beam.Filter(lambda p: "test" not in p[SPLITS])
        by_bucket = train | "KeyByBucket" >> beam.Map(lambda p: (p[INDEX] // BUCKET, p))
        counts = by_bucket | "CountPerBucket" >> beam.combiners.Count.PerKey()
        offsets = counts | "AllCounts" >> beam.combiners.ToList() | "Offsets" >> beam.Map(_bucket_offsets)
        n_train = train | "CountTrain" >> beam.CombineGlobally(beam.combiners.CountCombineFn())
        seed = self._seed + 1
        sample = n_train | "DrawSample" >> beam.Map(
            lambda n: _common.sample_indices(n, _common.TRAIN_SAMPLE_FRACTION, seed)
        )
        sampled = (
            by_bucket
            | "GroupByBucket" >> beam.GroupByKey()
            | "MarkSample"
            >> beam.FlatMap(
                _sample_bucket, offsets=beam.pvalue.AsSingleton(offsets), sample=beam.pvalue.AsSingleton(sample)
            )
        )
        return (sampled, test) | "TrainAndTest" >> beam.Flatten()


def _attach(joined, role: str):
    """CoGroupByKey output -> the pairs with the row's features merged in (a missing row: counted, dropped)."""
    _, grouped = joined
    rows = list(grouped["row"])
    if not rows:
        dropped = sum(1 for _ in grouped["pairs"])
        beam.metrics.Metrics.counter(NAMESPACE, f"pairs_without_{role}").inc(dropped)
        return
    features = rows[0]
    for p in grouped["pairs"]:
        merged = dict(p[-1])
        merged.update(features)
        yield p[:-1] + (merged,)


def _example(p):
    """(split, (index, example)) for each split the pair is in: the query, pair and item features, timestamp."""
    example = dict(p[-1])
    example[_common.TIMESTAMP] = int(p[TIME])
    for split in p[SPLITS]:
        yield split, (p[INDEX], example)


class JoinFeatures(beam.PTransform):
    """Pair records -> (split, (index, example)): CoGroupByKey with the query table on the
    query row, then with the item table on the item row."""

    def __init__(self, queries, items):
        super().__init__()
        self._queries, self._items = queries, items

    def expand(self, pairs):
        with_query = (
            {"pairs": pairs | "KeyByQueryRow" >> beam.Map(lambda p: (p[QUERY], p)), "row": self._queries}
            | "JoinQueries" >> beam.CoGroupByKey()
            | "AttachQuery" >> beam.FlatMap(_attach, "query")
        )
        return (
            {"pairs": with_query | "KeyByItemRow" >> beam.Map(lambda p: (p[ITEM], p)), "row": self._items}
            | "JoinItems" >> beam.CoGroupByKey()
            | "AttachItem" >> beam.FlatMap(_attach, "item")
            | "Examples" >> beam.FlatMap(_example)
        )


class PairExamples(beam.PTransform):
    """The whole graph of a pairs config, from the staged chunks to (split, (index, example))."""

    def __init__(self, staged: dict, rule):
        super().__init__()
        self._staged, self._rule = staged, rule

    def expand(self, pbegin):
        pairs = pbegin | "PairChunks" >> beam.Create(self._staged["pairs"]) | "ReadPairs" >> beam.FlatMap(_pair_records)
        rule = self._rule
        if rule is not None and rule.is_test is None:
            pairs = pairs | "SplitPerQuery" >> SplitPerQuery(rule.test_fraction)
        if rule is not None:
            pairs = pairs | "SampleTrain" >> SampleTrain(rule.seed)
        queries = pbegin | "QueryTable" >> ReadTable(self._staged["queries"])
        items = pbegin | "ItemTable" >> ReadTable(self._staged["items"])
        return pairs | "JoinFeatures" >> JoinFeatures(queries, items)


class _SplitOf(beam.PTransform):
    """One split's (index, example), out of the graph its builder shares between the splits."""

    def __init__(self, shared: dict, split: str):
        super().__init__()
        self._shared, self._split = shared, split

    def expand(self, pbegin):
        key = id(pbegin.pipeline)
        if key not in self._shared:  # the first split builds the graph; the others reuse it
            examples = pbegin | "PairExamples" >> self._shared["graph"]
            parts = examples | "BySplit" >> beam.Partition(
                lambda e, n: _common.PAIRS_SPLITS.index(e[0]), len(_common.PAIRS_SPLITS)
            )
            self._shared[key] = dict(zip(_common.PAIRS_SPLITS, parts))
        return self._shared[key][self._split] | f"{self._split}Examples" >> beam.Values()


def nonempty_splits(table: _common.PairsTable) -> list[str]:
    """The splits that get pairs, known before the pipeline runs (TFDS cannot write an empty split)."""
    rule = table.rule
    if rule is None:
        return [split for split in _common.PAIRS_SPLITS if len(table.splits[split])]
    n = len(table.item_rows)
    if rule.is_test is not None:
        num_test = int(np.count_nonzero(rule.is_test))
        has = {"train": num_test < n, "test": num_test > 0}
    else:  # a query with one pair has it in test; train is empty iff every query has one pair
        has = {"train": len(np.unique(rule.groups)) < n, "test": n > 0}
    has["train_10pct"] = has["train"]
    return [split for split in _common.PAIRS_SPLITS if has[split]]


def split_transforms(tables: _common.Tables, folder: str) -> dict[str, beam.PTransform]:
    """split -> a PTransform of its (index, example) pairs (what ``_split_generators`` returns);
    the tables are staged in ``folder`` (:func:`staging_folder`; the caller deletes it after the run)."""
    staged = stage(tables, folder)
    if tables.pairs is None:
        return {_common.ITEMS_SPLIT: ReadTable(staged["items"])}
    shared = {"graph": PairExamples(staged, tables.pairs.rule)}
    return {split: _SplitOf(shared, split) for split in nonempty_splits(tables.pairs)}
