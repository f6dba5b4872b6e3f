"""Dataset generation as a Beam pipeline: the split, the 10% sample, the feature joins and the
writer as keyed transforms, built from Beam's primitives only (GroupByKey, Flatten, ParDo).

A builder of the shared template (:class:`template.PairedBuilder`) generates with Beam when
``download_and_prepare`` gets Beam options (``DownloadConfig(beam_runner=..., beam_options=...)``;
``recsys-ssl data --beam [Beam flags]``): :func:`generate`. The builder's ``read()`` gives the
source tables; they are staged as chunk files (:func:`stage`) that the workers read, and every
split's examples come out of one graph::

    pairs (index, query row, item row, timestamp, group, tie, splits, own entries)
      | SplitPerQuery:   GroupByKey per query, sort by (timestamp, tie), last ceil(20%) -> test
      | SampleTrain:     each train pair's rank among the train pairs (a count per index bucket,
                         the counts gathered under one key), the uniform 10% sample of those
                         ranks -> train_10pct
      | JoinFeatures:    CoGroupByKey with the query table, then with the item table
      | WriteSplits:     each example's rank in its split (examples and bytes per bucket, gathered
                         under one key: TFDS's shard count and boundaries), GroupByKey per shard,
                         each shard file written in key order; per split, its shard lengths and
                         bytes -> a small info file that the builder reads after the run

The records are the fast writer's (:mod:`recsys_ssl.datasets.example_writer`): the staged query
and item rows are serialized once per chunk (``row_blobs``), each pair's own entries (pair
columns, timestamp) as its chunk is read, and a record is the pair's entries followed by its
query's and its item's, so the shards are the in-process build's byte for byte
(tests/test_datasets_beam.py) and TFDS's own writer's up to the order of map entries.

No step holds the pairs or the feature tables whole: the global steps gather one size per
bucket of BUCKET pair indices. There is no side input and no multi-output ParDo, and every
branch ends in the pipeline's last transform, so it runs on Beam 2.77's DaskRunner (which
computes only what the last transform needs, gives every output of a multi-output ParDo to
each consumer, and fails TFDS's own Beam writer: tests/test_dask_runner.py builds on Dask).

A table whose splits are computed by its builder (MovieLens: the user's history depends on the
split) is staged with its split flags and goes through the joins only. Pairs whose query or
item row is missing are dropped and counted (Beam counters ``generate/pairs_without_query``,
``generate/pairs_without_item``); ``generate/examples_written`` counts the examples written.

The staging folder must be readable and writable by the workers: a local temp folder for the
in-process runner, a shared path (``$RECSYS_SSL_STAGING_DIR``, e.g. gs://...) on a cluster. The
workers write the shards into the TFDS data_dir, so on a cluster that is a shared path too.
"""

from __future__ import annotations

import collections
import json
import os
import pickle
import tempfile
from typing import Iterable

import apache_beam as beam
import numpy as np
from apache_beam.io import filesystems
from apache_beam.io.filesystem import CompressionTypes

from recsys_ssl import beam_runner
from recsys_ssl.datasets import _common, example_writer

CHUNK = 50_000  # rows per staged chunk file
BUCKET = 1 << 16  # keys (pair indices, item rows) per bucket of the gathered counts and sizes
STAGING_ENV = "RECSYS_SSL_STAGING_DIR"
NAMESPACE = "generate"
# A pair record through the graph: (index, query row, item row, timestamp, group, tie, splits,
# entries) where splits is a tuple of split names (empty until the split is known) and entries
# the serialized map entries gathered so far (the pair's own, then its query's, then its item's).
INDEX, QUERY, ITEM, TIME, GROUP, TIE, SPLITS, ENTRIES = range(8)


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


def _table_blobs(path: str, multi_valued: dict[str, bool], where: str) -> Iterable[tuple[int, bytes]]:
    """(row, its serialized map entries) of a staged table chunk."""
    lo, columns = _load(path)
    blobs = example_writer.row_blobs(columns, multi_valued, where)
    return zip(range(lo, lo + len(blobs)), blobs)


def _pair_records(path: str, multi_valued: dict[str, bool]) -> Iterable[tuple]:
    """Pair records (see ENTRIES above) of a staged pair chunk, with the pair's own entries."""
    lo, c = _load(path)
    n = len(c["query"])
    pair_columns = {k.partition(":")[2]: v for k, v in c.items() if k.startswith("pair:")}
    own = example_writer.pair_entries(pair_columns, c["time"], multi_valued)
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
        yield (lo + k, query[k], item[k], time[k], group[k], tie[k], splits[k], own[k])


class ReadTable(beam.PTransform):
    """Staged chunk files -> (row, its serialized map entries); ``where`` names the table in errors."""

    def __init__(self, paths: list[str], multi_valued: dict[str, bool], where: str):
        super().__init__()
        self._paths, self._multi_valued, self._where = paths, multi_valued, where

    def expand(self, pbegin):
        return (
            pbegin
            | "ChunkPaths" >> beam.Create(self._paths)
            | "ReadRows" >> beam.FlatMap(_table_blobs, self._multi_valued, self._where)
        )


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


class Gather(beam.PTransform):
    """(key, value) -> one element: (None, every (key, value)), by a GroupByKey on one key
    (a global view without a side input: Beam 2.77's DaskRunner handed TFDS's writer the side
    input of a global combine empty, and re-evaluates side inputs per consumer). For small
    collections only: one count or size per bucket."""

    def expand(self, pcoll):
        return pcoll | "OneKey" >> beam.Map(lambda kv: (None, kv)) | "GroupAll" >> beam.GroupByKey()


def _bucket_samples(gathered, seed: int):
    """Every (bucket, its train pairs), gathered -> (bucket, positions in the bucket, index order,
    of its pairs in the sample): the sample is ``sample_indices(n_train, 10%, seed)`` of the
    train pairs' ranks (index order), as :func:`_common.make_splits` draws it."""
    counts = sorted(gathered[1])
    offsets = np.r_[0, np.cumsum([count for _, count in counts], dtype=np.int64)]
    sample = _common.sample_indices(int(offsets[-1]), _common.TRAIN_SAMPLE_FRACTION, seed)
    cuts = np.searchsorted(sample, offsets)
    for k, (bucket, _) in enumerate(counts):
        yield bucket, (sample[cuts[k] : cuts[k + 1]] - offsets[k]).tolist()


def _sample_bucket(joined):
    """A bucket's train pairs and their sampled positions -> the pairs, in the sample: train_10pct too."""
    _, grouped = joined
    (positions,) = grouped["sample"]
    pairs = sorted(grouped["pairs"], key=lambda p: p[INDEX])
    picked = np.zeros(len(pairs), dtype=bool)
    picked[positions] = True
    for p, in_sample in zip(pairs, picked.tolist()):
        yield p[:SPLITS] + (("train", "train_10pct") if in_sample else ("train",),) + p[SPLITS + 1 :]


class SampleTrain(beam.PTransform):
    """``train_10pct``: :func:`_common.make_splits`' uniform sample, keyed. A train pair's rank
    among the train pairs (index order) = the train pairs in earlier index buckets (a count per
    bucket, the counts gathered under one key) + its rank in its bucket; the sample is
    ``sample_indices(n_train, 10%, seed + 1)`` of those ranks, handed to each bucket's pairs by
    a CoGroupByKey."""

    def __init__(self, seed: int, bucket: int = BUCKET):
        super().__init__()
        self._seed, self._bucket = seed, bucket

    def expand(self, pairs):
        test = pairs | "TestPairs" >> beam.Filter(lambda p: "test" in p[SPLITS])
        train = pairs | "TrainPairs" >> beam.Filter(lambda p: "test" not in p[SPLITS])
        by_bucket = train | "KeyByBucket" >> beam.Map(lambda p, bucket: (p[INDEX] // bucket, p), self._bucket)
        samples = (
            by_bucket
            | "CountPerBucket" >> beam.combiners.Count.PerKey()
            | "AllCounts" >> Gather()
            | "DrawSample" >> beam.FlatMap(_bucket_samples, self._seed + 1)
        )
        sampled = (
            {"pairs": by_bucket, "sample": samples}
            | "JoinSample" >> beam.CoGroupByKey()
            | "MarkSample" >> beam.FlatMap(_sample_bucket)
        )
        return (sampled, test) | "TrainAndTest" >> beam.Flatten()


def _attach(joined, role: str):
    """CoGroupByKey output -> the pairs with the row's entries appended (a missing row: counted, dropped)."""
    _, grouped = joined
    rows = list(grouped["row"])
    if not rows:
        dropped = sum(1 for _ in grouped["pairs"])
        beam.metrics.Metrics.counter(NAMESPACE, f"pairs_without_{role}").inc(dropped)
        return
    entries = rows[0]
    for p in grouped["pairs"]:
        yield p[:ENTRIES] + (p[ENTRIES] + entries,)


def _example(p):
    """(split, (index, serialized example)) for each split the pair is in."""
    record = example_writer.example(p[ENTRIES])
    for split in p[SPLITS]:
        yield split, (p[INDEX], record)


class JoinFeatures(beam.PTransform):
    """Pair records -> (split, (index, serialized example)): CoGroupByKey with the query table
    ((row, entries)) on the query row, then with the item table on the item row."""

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
    """The whole graph of a pairs config, from the staged chunks to (split, (index, serialized example))."""

    def __init__(self, staged: dict, rule, multi_valued: dict[str, bool]):
        super().__init__()
        self._staged, self._rule, self._multi_valued = staged, rule, multi_valued

    def expand(self, pbegin):
        pairs = (
            pbegin
            | "PairChunks" >> beam.Create(self._staged["pairs"])
            | "ReadPairs" >> beam.FlatMap(_pair_records, self._multi_valued)
        )
        rule = self._rule
        if rule is not None and rule.is_test is None:
            pairs = pairs | "SplitPerQuery" >> SplitPerQuery(rule.test_fraction)
        if rule is not None:
            pairs = pairs | "SampleTrain" >> SampleTrain(rule.seed)
        queries = pbegin | "QueryTable" >> ReadTable(self._staged["queries"], self._multi_valued, "queries")
        items = pbegin | "ItemTable" >> ReadTable(self._staged["items"], self._multi_valued, "items")
        return pairs | "JoinFeatures" >> JoinFeatures(queries, items)


class ItemExamples(beam.PTransform):
    """An items config: the staged item table -> ("items", (row, serialized example))."""

    def __init__(self, paths: list[str], multi_valued: dict[str, bool]):
        super().__init__()
        self._paths, self._multi_valued = paths, multi_valued

    def expand(self, pbegin):
        return (
            pbegin
            | "ItemTable" >> ReadTable(self._paths, self._multi_valued, "items")
            | "Examples" >> beam.Map(lambda row: (_common.ITEMS_SPLIT, (row[0], example_writer.example(row[1]))))
        )


# --- the writer: TFDS's shards and split infos ------------------------------------------------


def _bucket_size(example, bucket: int) -> tuple:
    split, (index, record) = example
    return (split, index // bucket), (1, len(record))


def _sum_sizes(sizes) -> tuple[int, int]:
    """(examples, bytes) summed (a CombineFn: it also merges its own partial sums)."""
    examples = num_bytes = 0
    for count, size in sizes:
        examples, num_bytes = examples + count, num_bytes + size
    return examples, num_bytes


def _shard_layouts(gathered, shard_config):
    """Every ((split, bucket), (examples, bytes)), gathered -> per bucket ((split, bucket), (rank
    of its first example in its split, the split's number of shards, the first shard it writes
    to, the ends of the shards it writes to)): TFDS's shard count and boundaries of each split."""
    by_split = collections.defaultdict(list)
    for (split, bucket), (count, size) in gathered[1]:
        by_split[split].append((bucket, count, size))
    for split, buckets in by_split.items():
        buckets.sort()
        offsets = np.r_[0, np.cumsum([count for _, count, _ in buckets], dtype=np.int64)]
        ends = np.array(example_writer.shard_bounds(sum(size for *_, size in buckets), int(offsets[-1]), shard_config))
        first = np.searchsorted(ends, offsets[:-1], side="right")
        last = np.searchsorted(ends, offsets[1:] - 1, side="right")
        for k, (bucket, _, _) in enumerate(buckets):
            layout = (int(offsets[k]), len(ends), int(first[k]), ends[first[k] : last[k] + 1].tolist())
            yield (split, bucket), layout


def _assign_shards(joined):
    """A bucket's examples and its layout -> ((split, shard, number of shards), (index, record))."""
    (split, _), grouped = joined
    ((offset, num_shards, first, ends),) = grouped["layout"]
    examples = sorted(grouped["examples"], key=lambda e: e[0])  # key order, as TFDS's writer
    shards = first + np.searchsorted(ends, offset + np.arange(len(examples)), side="right")
    for shard, example in zip(shards.tolist(), examples):
        yield (split, shard, num_shards), example


def _write_shard(keyed, templates: dict) -> tuple:
    """One shard's examples -> its TFRecord file, in key order; (split, (shard, shards, examples, bytes))."""
    (split, shard, num_shards), examples = keyed
    records = [record for _, record in sorted(examples, key=lambda e: e[0])]
    path = os.fspath(templates[split].sharded_filepath(shard_index=shard, num_shards=num_shards))
    with filesystems.FileSystems.create(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        for batch in example_writer.batches(records):
            f.write(example_writer.tfrecords(batch))
    beam.metrics.Metrics.counter(NAMESPACE, "examples_written").inc(len(records))
    return split, (shard, num_shards, len(records), sum(map(len, records)))


def info_path(folder: str, split: str) -> str:
    return f"{folder}/{split}.split_info.json"


def _write_info(keyed, folder: str) -> str:
    """A split's written shards -> its info file (shard lengths, bytes), read by :func:`read_infos`."""
    split, shards = keyed
    shards = sorted(shards)
    info = {
        "num_shards": shards[0][1],
        "shard_lengths": [examples for _, _, examples, _ in shards],
        "num_bytes": sum(size for *_, size in shards),
    }
    with filesystems.FileSystems.create(info_path(folder, split)) as f:
        f.write(json.dumps(info).encode())
    return info_path(folder, split)


class WriteSplits(beam.PTransform):
    """(split, (index, serialized example)) -> TFDS's shards of each split, and an info file per
    split in ``folder``: the writer of :func:`example_writer.write_split` as keyed transforms.

    templates: split -> the builder's ``ShardedFileTemplate`` of it (``_get_filename_template``).
    shard_config: TFDS's ``ShardConfig`` (the download config's).
    bucket: keys per bucket (the unit of the gathered sizes and of the ranking).
    """

    def __init__(self, templates: dict, shard_config, folder: str, bucket: int = BUCKET):
        super().__init__()
        self._templates, self._shard_config, self._folder = templates, shard_config, folder
        self._bucket = bucket

    def expand(self, examples):
        by_bucket = examples | "KeyByBucket" >> beam.Map(
            lambda e, bucket: ((e[0], e[1][0] // bucket), e[1]), self._bucket
        )
        layouts = (
            examples
            | "Sizes" >> beam.Map(_bucket_size, self._bucket)
            | "SizePerBucket" >> beam.CombinePerKey(_sum_sizes)
            | "AllSizes" >> Gather()
            | "ShardLayouts" >> beam.FlatMap(_shard_layouts, self._shard_config)
        )
        return (
            {"examples": by_bucket, "layout": layouts}
            | "JoinLayout" >> beam.CoGroupByKey()
            | "AssignShards" >> beam.FlatMap(_assign_shards)
            | "GroupByShard" >> beam.GroupByKey()
            | "WriteShard" >> beam.Map(_write_shard, self._templates)
            | "GroupBySplit" >> beam.GroupByKey()
            | "WriteInfo" >> beam.Map(_write_info, self._folder)
        )


def read_infos(folder: str, splits) -> dict[str, tuple[list[int], int]]:
    """split -> (shard lengths, bytes) of the splits written (a split without examples has no file)."""
    out = {}
    for split in splits:
        path = info_path(folder, split)
        if not filesystems.FileSystems.exists(path):
            continue
        with filesystems.FileSystems.open(path) as f:
            info = json.loads(f.read())
        if len(info["shard_lengths"]) != info["num_shards"]:
            raise RuntimeError(f"split {split}: {len(info['shard_lengths'])} of {info['num_shards']} shards written")
        out[split] = (info["shard_lengths"], info["num_bytes"])
    return out


def generate(tables: _common.Tables, multi_valued: dict[str, bool], templates: dict, shard_config, download_config):
    """Builds the examples of ``tables`` with Beam (the download config's runner and options) and
    writes them as TFDS's shards; returns split -> (shard lengths, bytes) of the non-empty splits.

    multi_valued: feature -> whether it is 1-D (``example_writer.multi_valued_of``).
    templates: split -> the builder's ``ShardedFileTemplate`` of every split it may write.
    """
    folder = staging_folder()
    try:
        staged = stage(tables, folder)
        pipeline = beam.Pipeline(runner=download_config.beam_runner, options=download_config.beam_options)
        if tables.pairs is None:
            examples = pipeline | "ItemExamples" >> ItemExamples(staged["items"], multi_valued)
        else:
            examples = pipeline | "PairExamples" >> PairExamples(staged, tables.pairs.rule, multi_valued)
        _ = examples | "WriteSplits" >> WriteSplits(templates, shard_config, folder)  # the last transform
        beam_runner.run_and_report(pipeline, "data")
        return read_infos(folder, templates)
    finally:
        remove_staging(folder)
