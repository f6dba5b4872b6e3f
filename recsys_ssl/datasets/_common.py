"""What the three TFDS builders share: feature dicts from a spec, the temporal split, the 10% sample.

Every builder has *paired* configs, as TFDS's own ``movielens/*`` does: a pairs config
(``<name>``: query -> item examples, splits ``train``, ``train_10pct``, ``test``) and an
item-corpus config (``<name>-items``: each item once, split ``items``). A TFDS config has one
``FeaturesDict``, and pairs and items have different features; :mod:`inputs` hides the pairing
behind one handle.

All feature values are strings: a single-valued feature is a scalar ``tf.string``, a
multi-valued one a 1-D ``tf.string`` of any length (possibly empty). Pairs also carry an
int64 ``timestamp``.
"""

from __future__ import annotations

import dataclasses
import fractions
from typing import Iterable, Iterator

import numpy as np
import tensorflow_datasets as tfds

from recsys_ssl import features as features_lib

VERSION = tfds.core.Version("1.0.0")
PAIRS_SPLITS = ("train", "train_10pct", "test")
ITEMS_SPLIT = "items"
ITEMS_SUFFIX = "-items"
TIMESTAMP = "timestamp"
TEST_FRACTION = 0.2
TRAIN_SAMPLE_FRACTION = 0.1
# The validation carve-out (tuning, early stopping): per query, this share of its TRAIN
# interactions, never touching test (see :func:`validation_split`).
VALIDATION_FRACTION = 0.1
VALIDATION_SEED = 0

PAIRS = "pairs"
ITEMS = "items"


def string_feature() -> tfds.features.Tensor:
    return tfds.features.Tensor(shape=(), dtype=np.str_)


def strings_feature() -> tfds.features.Tensor:
    # A variable-length 1-D tensor: cheaper to encode than Sequence(Text()), same tf.string out.
    return tfds.features.Tensor(shape=(None,), dtype=np.str_)


def _feature_entries(features: Iterable[features_lib.Feature]) -> dict:
    return {f.name: strings_feature() if f.multi_valued else string_feature() for f in features}


def pairs_features(spec: features_lib.FeatureSpec) -> tfds.features.FeaturesDict:
    """Query and item features of ``spec`` plus an int64 ``timestamp``."""
    entries = _feature_entries(spec.query_features + spec.item_features)
    entries[TIMESTAMP] = tfds.features.Scalar(dtype=np.int64)
    return tfds.features.FeaturesDict(entries)


def items_features(spec: features_lib.FeatureSpec) -> tfds.features.FeaturesDict:
    return tfds.features.FeaturesDict(_feature_entries(spec.item_features))


def items_config_name(pairs_config_name: str) -> str:
    return pairs_config_name + ITEMS_SUFFIX


def ceil_fraction(n: np.ndarray, fraction: float) -> np.ndarray:
    """ceil(fraction * n) in exact integer arithmetic (in floats, 0.55 * 100 is 55.00000000000001)."""
    frac = fractions.Fraction(fraction).limit_denominator(10_000)
    return -((-np.asarray(n, dtype=np.int64) * frac.numerator) // frac.denominator)


def temporal_split(
    query_ids: np.ndarray, timestamps: np.ndarray, tie_keys: np.ndarray, test_fraction: float = TEST_FRACTION
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The protocol split (../shared/bench/PROTOCOL.md), vectorised.

    Per query, interactions are sorted by (timestamp, tie_key); the last
    ceil(test_fraction * n_q) go to test.

    Args:
      query_ids, timestamps, tie_keys: [N] arrays (any sortable dtypes).
    Returns:
      order: [N] int64 indices sorting the interactions by (query, timestamp, tie_key);
      is_test: [N] bool, in the ORIGINAL order;
      position: [N] int64, each interaction's rank within its query (0 = oldest), original order.
    """
    n = len(query_ids)
    order = np.lexsort((tie_keys, timestamps, query_ids)).astype(np.int64)
    sorted_queries = np.asarray(query_ids)[order]
    starts = np.flatnonzero(np.r_[True, sorted_queries[1:] != sorted_queries[:-1]]) if n else np.zeros(0, np.int64)
    sizes = np.diff(np.r_[starts, n])
    rank = np.arange(n, dtype=np.int64) - np.repeat(starts, sizes)
    size_of = np.repeat(sizes, sizes)
    test_sorted = rank >= size_of - ceil_fraction(size_of, test_fraction)
    is_test = np.empty(n, dtype=bool)
    is_test[order] = test_sorted
    position = np.empty(n, dtype=np.int64)
    position[order] = rank
    return order, is_test, position


def validation_split(
    query_ids: np.ndarray,
    timestamps: np.ndarray,
    tie_keys: np.ndarray,
    time_ordered: bool,
    fraction: float = VALIDATION_FRACTION,
    seed: int = VALIDATION_SEED,
) -> np.ndarray:
    """The validation carve-out of a TRAIN split: [N] bool, True for the pairs held out.

    Per query, ceil(fraction * n_q) of its n_q train interactions: the last ones by
    (timestamp, tie_key) when the data is ``time_ordered`` (the test split's own rule, applied
    inside train), else a seeded uniform draw (a dataset whose test split is random, e.g. a
    CSV split column without timestamps). Deterministic for a given input and seed.
    """
    if time_ordered:
        return temporal_split(query_ids, timestamps, tie_keys, fraction)[1]
    # Random per query: rank each query's pairs by a seeded random key instead of by time.
    random_keys = np.random.default_rng(seed).random(len(query_ids))
    return temporal_split(query_ids, random_keys, tie_keys, fraction)[1]


def sample_indices(n: int, fraction: float, seed: int) -> np.ndarray:
    """A uniform sample without replacement of round(fraction * n) of range(n) (at least 1 if n), sorted."""
    size = max(1, int(round(fraction * n))) if n else 0
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=size, replace=False)) if size else np.zeros(0, np.int64)


@dataclasses.dataclass
class SplitRule:
    """How a pairs table splits, as data: the in-process build applies it with numpy
    (:func:`temporal_split`, :func:`make_splits`), the Beam build as keyed transforms
    (:mod:`recsys_ssl.datasets.beam_generate`); both give the same index sets.

    groups, ties: [N] the query each pair belongs to and the tie-breaker after the timestamp
      (per group, the last ceil(test_fraction * n) by (timestamp, tie) go to test);
    is_test: [N] bool, a split given by the data (e.g. a CSV split column) instead.
    """

    seed: int
    groups: np.ndarray | None = None
    ties: np.ndarray | None = None
    is_test: np.ndarray | None = None
    test_fraction: float = TEST_FRACTION


class PairsTable:
    """Query -> item pairs as index arrays into a query table and an item table.

    query_rows, item_rows, timestamps: [N] int64; ``splits``: split -> index array into them,
      given, or computed on first use from ``rule`` (a :class:`SplitRule`).
    pair_columns: query features that belong to the pair rather than to its query row (e.g. the
      user's history as of the interaction): name -> [N] object array.
    """

    def __init__(self, query_rows, item_rows, timestamps, splits=None, pair_columns=None, rule=None):
        if (splits is None) == (rule is None):
            raise ValueError("PairsTable needs exactly one of splits and rule")
        self.query_rows, self.item_rows, self.timestamps = query_rows, item_rows, timestamps
        self.pair_columns = dict(pair_columns or {})
        self.rule = rule
        self._splits = splits

    @property
    def splits(self) -> dict[str, np.ndarray]:
        if self._splits is None:
            rule = self.rule
            is_test = rule.is_test
            if is_test is None:
                is_test = temporal_split(rule.groups, self.timestamps, rule.ties, rule.test_fraction)[1]
            self._splits = make_splits(is_test, rule.seed)
        return self._splits

    def split_counts(self) -> dict[str, int]:
        return {name: int(len(rows)) for name, rows in self.splits.items()}

    @property
    def num_pairs(self) -> int:
        return int(len(self.item_rows))

    def head_share(self, num_items: int) -> float:
        """:func:`popularity_head_share` of the train split's items."""
        return popularity_head_share(self.item_rows[self.splits["train"]], num_items)

    def split_parts(self, split: str, size: int) -> Iterator[tuple[PairsTable, np.ndarray]]:
        """(table, rows) pieces of at most ``size`` pairs: the split's pairs in index order (the
        fast writer's input; datasets/spilled_pairs.py has the same on disk)."""
        rows = np.sort(self.splits[split])  # TFDS's writer orders the examples by key
        for start in range(0, len(rows), size):
            yield self, rows[start : start + size]


def make_splits(is_test: np.ndarray, seed: int, shuffle: bool = True) -> dict[str, np.ndarray]:
    """train / train_10pct / test index arrays; pairs are written in a seeded random order.

    TFDS's own shuffling is disabled (it costs a second pass over the data); writing in a
    seeded permutation keeps files deterministic and unsorted by query.
    """
    train = np.flatnonzero(~is_test)
    test = np.flatnonzero(is_test)
    sample = train[sample_indices(len(train), TRAIN_SAMPLE_FRACTION, seed + 1)]
    rng = np.random.default_rng(seed + 2)
    splits = {"train": train, "train_10pct": sample, "test": test}
    if shuffle:
        splits = {name: rng.permutation(rows) for name, rows in splits.items()}
    return splits


def pair_examples(
    pairs: PairsTable,
    split: str,
    query_columns: dict[str, np.ndarray],
    item_columns: dict[str, np.ndarray],
) -> Iterator[tuple[int, dict]]:
    """TFDS examples of one split: the query's, the pair's and the item's features joined, plus timestamp."""
    query_picked = list(query_columns.items())
    item_picked = list(item_columns.items())
    pair_picked = list(pairs.pair_columns.items())
    for index in pairs.splits[split]:
        q, i = pairs.query_rows[index], pairs.item_rows[index]
        example = {name: column[q] for name, column in query_picked}
        for name, column in pair_picked:
            example[name] = column[index]
        for name, column in item_picked:
            example[name] = column[i]
        example[TIMESTAMP] = int(pairs.timestamps[index])
        yield int(index), example


def item_examples(item_columns: dict[str, np.ndarray]) -> Iterator[tuple[int, dict]]:
    picked = list(item_columns.items())
    n = len(picked[0][1])
    for row in range(n):
        yield row, {name: column[row] for name, column in picked}


def to_str_columns(columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Object arrays of bytes / lists of bytes -> object arrays of str / lists of str (for TFDS)."""
    out = {}
    for name, column in columns.items():
        if len(column) and isinstance(column[0], (list, tuple)):
            decoded = np.empty(len(column), dtype=object)
            decoded[:] = [[v.decode() if isinstance(v, bytes) else v for v in values] for values in column]
        elif len(column) and isinstance(column[0], bytes):
            decoded = np.array([v.decode() for v in column], dtype=object)
        else:
            decoded = column
        out[name] = decoded
    return out


def popularity_head_share(item_rows: np.ndarray, num_items: int, head_fraction: float = 0.2) -> float:
    """Share of interactions that go to the top ``head_fraction`` of items by count."""
    return head_share_of_counts(np.bincount(item_rows, minlength=num_items), head_fraction)


def head_share_of_counts(counts: np.ndarray, head_fraction: float = 0.2) -> float:
    """:func:`popularity_head_share` from the per-item interaction counts."""
    if counts.sum() == 0:
        return 0.0
    counts = np.sort(counts)[::-1]
    head = max(1, int(round(head_fraction * len(counts))))
    return float(counts[:head].sum() / counts.sum())


@dataclasses.dataclass
class Tables:
    """What a builder's ``read()`` returns.

    items: feature -> [num_items] object array of str (list of str for multi-valued features).
    metadata: added to the dataset's metadata (``counts`` is merged with the split counts).
    queries, pairs: a pairs config's query table (feature -> [num_queries] object array) and
      the pairs as rows into it and into ``items``; None for an items config.

    The fast writer empties ``items`` as it serializes it (datasets/example_writer.py
    ``row_blobs(release=True)``): ``read()`` returns tables it does not keep.
    """

    items: dict[str, np.ndarray]
    metadata: dict
    queries: dict[str, np.ndarray] | None = None
    pairs: PairsTable | None = None


def num_rows(columns: dict[str, np.ndarray]) -> int:
    return len(next(iter(columns.values()))) if columns else 0
