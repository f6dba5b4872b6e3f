"""A pairs table on disk (:class:`SpilledPairs`): the fast writer's input, in memory that does not
grow with the number of pairs.

Why: :class:`_common.PairsTable` holds every pair's rows and timestamps and the split computes
sort orders over all of them (about 63 bytes a pair at the peak of a ``synthetic_catalog/1m``
build). Here the pairs go to raw numpy column files in a temporary folder (:class:`Spill`,
inside the dataset's incomplete folder, removed when the write ends) and every step reads back
a bounded piece:

- the pair-order columns ``item`` and ``time`` (appended by the generator, read by window);
- each pair's query row, added in whatever order the generator computes it
  (:meth:`SpilledPairs.add_queries`), is bucketed twice: by pair window (``WINDOW`` pairs) for
  the writer, and by query range for the split;
- the split (:meth:`SpilledPairs.finish`) is :func:`_common.temporal_split` applied to one query
  bucket at a time (its rows in pair order, so ties break as in the whole table); the test pair
  ids go to window buckets; the 10% sample of train is :func:`_common.sample_indices` over the
  train pairs' ranks, as :func:`_common.make_splits` draws it;
- :meth:`SpilledPairs.split_parts` yields each split's pairs window by window in pair order:
  the order of the records the fast writer writes (TFDS's writer orders them by key = pair index).

The examples are therefore those of the in-memory table (tests/test_datasets_synthetic.py
compares both). Memory bound: O(``WINDOW``) rows per step plus O(items + queries) counters,
except two terms: a query bucket holds the pairs of ``ceil(pairs / WINDOW)``-th of the queries
(about ``WINDOW`` pairs unless a few queries hold most pairs), and the 10% sample draw is numpy's
own (``Generator.choice`` without replacement builds ``arange(num_train)``: 8 bytes a train pair,
for the moment of the draw, and keeps the sample's ranks, 0.8 bytes a train pair, until the
windows are marked). The files take about 60 bytes a pair of disk.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import weakref
from typing import Iterator

import numpy as np

from recsys_ssl.datasets import _common

WINDOW = 1 << 18  # pairs per window, and about per bucket


class Spill:
    """Numpy columns as raw files in a temporary folder: appended in pieces, read back by row range.

    ``partition`` appends each row of some columns to the files of its bucket
    (``<prefix><bucket>.<column>``); ``bucket`` reads one bucket's columns back.
    """

    def __init__(self, parent: str | None = None):
        self.root = tempfile.mkdtemp(prefix=".pairs-spill-", dir=parent)
        self.dtypes: dict[str, np.dtype] = {}
        self._cleanup = weakref.finalize(self, shutil.rmtree, self.root, True)

    def _path(self, name: str) -> str:
        return os.path.join(self.root, name)

    def append(self, name: str, array: np.ndarray, kind: str | None = None) -> None:
        """Appends ``array`` to column ``name``; ``kind``: the name its dtype is registered under."""
        array = np.ascontiguousarray(array)
        if self.dtypes.setdefault(kind or name, array.dtype) != array.dtype:
            raise ValueError(f"spill column {name!r}: {array.dtype} after {self.dtypes[kind or name]}")
        with open(self._path(name), "ab") as f:
            array.tofile(f)

    def length(self, name: str, kind: str | None = None) -> int:
        path = self._path(name)
        return os.path.getsize(path) // self.dtypes[kind or name].itemsize if os.path.exists(path) else 0

    def read(self, name: str, lo: int = 0, hi: int | None = None, kind: str | None = None) -> np.ndarray:
        """Rows [lo, hi) of column ``name`` (a column never appended to is empty)."""
        dtype = self.dtypes[kind or name]
        hi = self.length(name, kind) if hi is None else min(hi, self.length(name, kind))
        if not os.path.exists(self._path(name)) or hi <= lo:
            return np.zeros(0, dtype)
        return np.fromfile(self._path(name), dtype=dtype, count=hi - lo, offset=lo * dtype.itemsize)

    def partition(self, prefix: str, buckets: np.ndarray, columns: dict[str, np.ndarray]) -> None:
        """Appends row r of every column to bucket ``buckets[r]`` (rows keep their order within a bucket)."""
        order = np.argsort(buckets, kind="stable")
        present, starts = np.unique(buckets[order], return_index=True)
        ends = np.r_[starts[1:], len(order)]
        for name, column in columns.items():
            column = column[order]
            for bucket, lo, hi in zip(present.tolist(), starts.tolist(), ends.tolist()):
                self.append(f"{prefix}{bucket}.{name}", column[lo:hi], kind=f"{prefix}.{name}")

    def bucket(self, prefix: str, bucket: int, names, lo: int = 0, hi: int | None = None) -> dict[str, np.ndarray]:
        return {name: self.read(f"{prefix}{bucket}.{name}", lo, hi, kind=f"{prefix}.{name}") for name in names}

    def bucket_length(self, prefix: str, bucket: int, name: str) -> int:
        return self.length(f"{prefix}{bucket}.{name}", kind=f"{prefix}.{name}")

    def close(self) -> None:
        self._cleanup()


class SpilledPairs:
    """Query -> item pairs on disk, with the split rule of a :class:`_common.SplitRule` made of
    ``groups`` = query rows, ``ties`` = item rows (``synthetic_catalog``'s).

    Filled in three steps: :meth:`add_pairs` (item rows and timestamps, in pair order),
    :meth:`add_queries` (query rows, any order), :meth:`finish` (the split). Then the fast
    writer reads :meth:`split_counts`, :meth:`head_share` and :meth:`split_parts`, as it does
    a :class:`_common.PairsTable`'s.
    """

    def __init__(self, num_pairs: int, num_queries: int, seed: int, parent: str | None = None, window: int = WINDOW):
        self.num_pairs, self.num_queries, self.seed, self.window = int(num_pairs), int(num_queries), seed, window
        self.spill = Spill(parent)
        self.num_windows = -(-self.num_pairs // window)
        # Query buckets: contiguous query ranges, about `window` pairs each on average.
        self.num_query_buckets = int(np.clip(self.num_windows, 1, max(1, num_queries)))
        self._filled = 0
        self.counts: dict[str, int] = {}
        self.items_with_pairs = 0  # set by the generator (it counts the pairs per item)
        self.train_item_counts: np.ndarray | None = None

    def add_pairs(self, item_rows: np.ndarray, timestamps: np.ndarray) -> None:
        """The next pairs' item rows and timestamps (pairs come in pair order)."""
        self.spill.append("item", np.asarray(item_rows, np.int64))
        self.spill.append("time", np.asarray(timestamps, np.int64))
        self._filled += len(item_rows)

    def add_queries(self, pair_ids: np.ndarray, query_rows: np.ndarray, item_rows, timestamps) -> None:
        """The query rows of some pairs (any pairs, any order; with their item rows and timestamps)."""
        pair_ids, query_rows = np.asarray(pair_ids, np.int64), np.asarray(query_rows, np.int64)
        self.spill.partition("qwin", pair_ids // self.window, {"pair": pair_ids, "query": query_rows})
        by_query = {"pair": pair_ids, "query": query_rows, "time": timestamps, "item": item_rows}
        self.spill.partition("qry", query_rows * self.num_query_buckets // self.num_queries, by_query)

    def finish(self, test_fraction: float = _common.TEST_FRACTION) -> None:
        """The split: test pairs per query bucket, then the train sample and the counts per window."""
        if self._filled != self.num_pairs:
            raise ValueError(f"SpilledPairs: {self._filled} pairs added, {self.num_pairs} expected")
        num_test, seen_queries = 0, np.zeros(self.num_queries, bool)
        for bucket in range(self.num_query_buckets):
            rows = self.spill.bucket("qry", bucket, ("pair", "query", "time", "item"))
            order = np.argsort(rows["pair"], kind="stable")  # pair order: ties break as in the whole table
            rows = {name: column[order] for name, column in rows.items()}
            is_test = _common.temporal_split(rows["query"], rows["time"], rows["item"], test_fraction)[1]
            test = rows["pair"][is_test]
            self.spill.partition("test", test // self.window, {"pair": test})
            num_test += len(test)
            seen_queries[rows["query"]] = True
        num_train = self.num_pairs - num_test
        self._mark_sample(_common.sample_indices(num_train, _common.TRAIN_SAMPLE_FRACTION, self.seed + 1))
        self.counts = {"train": num_train, "test": num_test, "queries_with_pairs": int(seen_queries.sum())}

    def _bounds(self, window: int) -> tuple[int, int]:
        return window * self.window, min(self.num_pairs, (window + 1) * self.window)

    def _train_rows(self, window: int) -> np.ndarray:
        """Window-local rows of the window's train pairs."""
        lo, hi = self._bounds(window)
        is_train = np.ones(hi - lo, bool)
        is_train[self.spill.bucket("test", window, ("pair",))["pair"] - lo] = False
        return np.flatnonzero(is_train)

    def _mark_sample(self, sample_ranks: np.ndarray) -> None:
        """Stores each window's sampled pairs (``sample_ranks``: sorted ranks among the train pairs)."""
        rank, counts, num_sampled = 0, None, 0
        for window in range(self.num_windows):
            lo, _ = self._bounds(window)
            train = self._train_rows(window)
            a, b = np.searchsorted(sample_ranks, [rank, rank + len(train)])
            sampled = train[sample_ranks[a:b] - rank] + lo
            self.spill.append(f"sample{window}.pair", sampled.astype(np.int64), kind="sample.pair")
            num_sampled += len(sampled)
            add = np.bincount(self.spill.read("item", lo, lo + self.window)[train])
            counts = add if counts is None else _add_counts(counts, add)
            rank += len(train)
        self.train_item_counts = counts if counts is not None else np.zeros(0, np.int64)
        self.num_sampled = num_sampled

    def split_counts(self) -> dict[str, int]:
        return {"train": self.counts["train"], "train_10pct": self.num_sampled, "test": self.counts["test"]}

    def head_share(self, num_items: int) -> float:
        """:func:`_common.popularity_head_share` of the train pairs' items."""
        counts = np.zeros(num_items, np.int64)
        counts[: len(self.train_item_counts)] = self.train_item_counts
        return _common.head_share_of_counts(counts)

    def window_table(self, window: int) -> _common.PairsTable:
        """The window's pairs (rows: pair index - window start) as an in-memory table."""
        lo, hi = self._bounds(window)
        queries = np.full(hi - lo, -1, np.int64)
        added = self.spill.bucket("qwin", window, ("pair", "query"))
        queries[added["pair"] - lo] = added["query"]
        if (queries < 0).any():
            raise ValueError(f"SpilledPairs: pairs {lo}..{hi} lack query rows")
        return _common.PairsTable(queries, self.spill.read("item", lo, hi), self.spill.read("time", lo, hi), splits={})

    def split_parts(self, split: str, size: int) -> Iterator[tuple[_common.PairsTable, np.ndarray]]:
        """(table, rows) pieces of at most ``size`` pairs: the split's pairs in pair order."""
        for window in range(self.num_windows):
            lo, _ = self._bounds(window)
            if split == "train":
                rows = self._train_rows(window)
            else:
                name = "test" if split == "test" else "sample"
                rows = np.sort(self.spill.bucket(name, window, ("pair",))["pair"]) - lo
            if not len(rows):
                continue
            table = self.window_table(window)
            for start in range(0, len(rows), size):
                yield table, rows[start : start + size]

    def close(self) -> None:
        self.spill.close()


def _add_counts(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if len(a) < len(b):
        a, b = b, a
    a[: len(b)] += b
    return a
