"""The builders' fast example writer: TFDS's records without TFDS's per-example encoding.

A pair example is a join: the pair's own fields (``timestamp``, pair columns such as a user's
history) plus its query's and its item's features. A ``tf.train.Example`` on the wire is one
field holding a concatenation of map entries (feature name -> ``tf.train.Feature``), so each
item's and each query's entries are serialized ONCE (:func:`row_blobs`) and a record is the
pair's entries followed by the cached query and item bytes (:func:`pair_records`): no
``FeaturesDict.encode_example``, no protobuf objects, no TensorFlow (the driver stays at
~0.1 GB instead of the ~0.6 GB TensorFlow costs).

The files are TFDS's own (:func:`write_split`): TFRecord framing (length, masked crc32c,
data, masked crc32c; the crc32c is computed for a batch of records at once in numpy,
:func:`crc32c`), records in key order (pair index, item row: what TFDS's writer does with
``disable_shuffling``), the shard count and boundaries from TFDS's ``ShardConfig``, the split
infos set on the builder. The examples equal TFDS's up to the order of the map entries (which
protobuf itself varies per process): tests/test_example_writer.py compares the canonical
digests (datasets/digest.py) of every shipped builder fixture with TFDS's own writer.

``RECSYS_SSL_EXAMPLE_WRITER=tfds`` makes the in-process builds use TFDS's writer instead (the
reference of the tests and of ``bench/data_bench.py``). Beam builds always write these records,
with Beam transforms (:mod:`recsys_ssl.datasets.beam_generate`: the same entries, TFDS's
shard boundaries from :func:`shard_bounds`, the split infos from :func:`split_info`).
"""

from __future__ import annotations

import functools
import os
import shutil
from typing import Iterable, Iterator

import numpy as np

WRITER_ENV = "RECSYS_SSL_EXAMPLE_WRITER"
CHUNK = 50_000  # records framed (crc32c) per batch


def enabled() -> bool:
    """Whether the builders write with this module (default) rather than TFDS's writer."""
    value = os.environ.get(WRITER_ENV, "fast")
    if value not in ("fast", "tfds"):
        raise ValueError(f"${WRITER_ENV} must be 'fast' or 'tfds', got {value!r}")
    return value == "fast"


# --- protobuf wire format ------------------------------------------------------------------


def varint(n: int) -> bytes:
    """Protobuf's base-128 varint of a non-negative int (negative int64: its 64-bit two's complement)."""
    n &= (1 << 64) - 1
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_VARINTS = [varint(n) for n in range(1 << 14)]  # the one- and two-byte varints


def _field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: tag byte, varint length, payload."""
    n = len(payload)
    return tag + (_VARINTS[n] if n < 16384 else varint(n)) + payload


def _key(name: str) -> bytes:
    return _field(b"\x0a", name.encode())


def bytes_entry(key: bytes, values: Iterable[bytes]) -> bytes:
    """A ``Features.feature`` map entry: key -> Feature(bytes_list=BytesList(value=values))."""
    feature = _field(b"\x0a", b"".join(_field(b"\x0a", v) for v in values))
    return _field(b"\x0a", key + _field(b"\x12", feature))


def int64_entry(key: bytes, values: Iterable[int]) -> bytes:
    """A map entry key -> Feature(int64_list=Int64List(value=values)) (packed; empty: no field)."""
    packed = b"".join(varint(int(v)) for v in values)
    feature = _field(b"\x1a", _field(b"\x0a", packed) if packed else b"")
    return _field(b"\x0a", key + _field(b"\x12", feature))


def example(entries: bytes) -> bytes:
    """A serialized ``tf.train.Example`` from its concatenated map entries."""
    return _field(b"\x0a", entries)


def _as_bytes(value, where: str) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    raise ValueError(f"{where}: expected a string, got {type(value).__name__} {value!r}")


class _Entries(dict):
    """value (a string, or a tuple of strings when multi-valued) -> its map entry, made on first
    use (feature values and value lists repeat across rows)."""

    def __init__(self, name: str, multi_valued: bool, where: str):
        super().__init__()
        self.key, self.multi_valued, self.where = _key(name), multi_valued, where
        self.fields: dict = {}  # multi-valued: value -> its BytesList field

    def _value_field(self, value) -> bytes:
        field = self.fields[value] = _field(b"\x0a", _as_bytes(value, self.where))
        return field

    def __missing__(self, value):
        if self.multi_valued:
            fields = self.fields
            bytes_list = b"".join([fields[v] if v in fields else self._value_field(v) for v in value])
            entry = _field(b"\x0a", self.key + _field(b"\x12", _field(b"\x0a", bytes_list)))
        else:
            entry = _single_entry(self.key, _as_bytes(value, self.where))
        self[value] = entry
        return entry


@functools.lru_cache(maxsize=None)
def _single_prefix(key: bytes, n: int) -> bytes:
    """The bytes before a value of length n in its one-value map entry (they depend on n only)."""
    entry = bytes_entry(key, [b"\0" * n])
    return entry[: len(entry) - n]


def _single_entry(key: bytes, value: bytes) -> bytes:
    """``bytes_entry(key, [value])``, from a cached prefix."""
    return _single_prefix(key, len(value)) + value


def column_entries(name: str, column, multi_valued: bool, where: str = "") -> list[bytes]:
    """Each row's map entry of one string feature (a list of strings per row when ``multi_valued``).

    where: names the table in errors (``items``, ``queries``, ``pairs``): a bad value raises
    ValueError naming the table, the row and the feature.
    """
    where = f"{where} feature {name!r}"
    entries = _Entries(name, multi_valued, where)
    try:
        if multi_valued:
            if any(isinstance(values, (str, bytes)) for values in column):
                raise TypeError("a string where a list is expected")
            return list(map(entries.__getitem__, map(tuple, column)))
        return list(map(entries.__getitem__, column))
    except (TypeError, ValueError):  # not hashable, not iterable or not a string: find the row
        _raise_bad_row(column, multi_valued, where)
        raise


def _raise_bad_row(column, multi_valued: bool, where: str) -> None:
    for row, value in enumerate(column):
        if not multi_valued and not isinstance(value, (str, bytes)):
            raise ValueError(f"{where} row {row}: expected a string, got {value!r}") from None
        if multi_valued and (isinstance(value, (str, bytes)) or not hasattr(value, "__iter__")):
            raise ValueError(f"{where} row {row}: expected a list of strings, got {value!r}") from None
        if multi_valued and not all(isinstance(v, (str, bytes)) for v in value):
            bad = next(v for v in value if not isinstance(v, (str, bytes)))
            raise ValueError(f"{where} row {row}: expected a string, got {type(bad).__name__} {bad!r}") from None


def row_blobs(
    columns: dict, multi_valued: dict[str, bool], where: str, chunk: int = 100_000, release: bool = False
) -> list[bytes]:
    """Per row, the concatenated map entries of all ``columns`` (serialized once, joined per record).

    release: set each serialized row of the (object array) columns to None, so that a big table's
      values are freed as their bytes are made (the table and its bytes are never both whole).
    """
    n = len(next(iter(columns.values()))) if columns else 0
    out: list[bytes] = []
    for lo in range(0, n, chunk):
        parts = [column_entries(k, v[lo : lo + chunk], multi_valued[k], where) for k, v in columns.items()]
        out += [b"".join(row) for row in zip(*parts)]
        for column in columns.values() if release else ():
            if isinstance(column, np.ndarray) and column.dtype == object:
                column[lo : lo + chunk] = None
    return out


def multi_valued_of(features) -> dict[str, bool]:
    """feature name -> whether it is 1-D, from a TFDS ``FeaturesDict``."""
    return {name: len(feature.shape) == 1 for name, feature in features.items()}


# --- records ---------------------------------------------------------------------------------


def pair_records(
    pairs, indices: np.ndarray, query_blobs: list[bytes], item_blobs: list[bytes], multi_valued: dict[str, bool]
) -> list[bytes]:
    """The serialized examples of the pairs at ``indices`` (a ``_common.PairsTable``): timestamp,
    pair columns, the query's and the item's cached entries."""
    queries = pairs.query_rows[indices].tolist()
    items = pairs.item_rows[indices].tolist()
    pair_columns = {k: v[indices] for k, v in pairs.pair_columns.items()}
    own = pair_entries(pair_columns, pairs.timestamps[indices], multi_valued)
    field, varints = _field, _VARINTS
    return [
        b"\x0a" + varints[len(inner)] + inner if len(inner) < 16384 else field(b"\x0a", inner)
        for inner in [p + query_blobs[q] + item_blobs[i] for p, q, i in zip(own, queries, items)]
    ]


def pair_entries(pair_columns: dict, timestamps: np.ndarray, multi_valued: dict[str, bool]) -> list[bytes]:
    """Per pair, its own map entries (the first part of its record): its pair columns', then its timestamp's."""
    from recsys_ssl.datasets import _common

    own = [column_entries(k, v, multi_valued[k], "pairs") for k, v in pair_columns.items()]
    own.append(int64_entries(_common.TIMESTAMP, timestamps))
    return [b"".join(row) for row in zip(*own)]


def int64_entries(name: str, values: np.ndarray) -> list[bytes]:
    """Each value's one-int64 map entry (``int64_entry(key, [v])``): the varints in numpy, then a
    cached prefix per varint length."""
    key = _key(name)
    unsigned = np.asarray(values, dtype=np.int64).view(np.uint64)
    groups = (unsigned[:, None] >> (7 * np.arange(10, dtype=np.uint64))) & np.uint64(0x7F)  # [n, 10]
    nonzero = groups != 0
    lengths = np.where(nonzero.any(axis=1), 10 - np.argmax(nonzero[:, ::-1], axis=1), 1)  # significant groups
    continued = np.arange(10)[None, :] < (lengths - 1)[:, None]
    raw = (groups | (continued.astype(np.uint64) << np.uint64(7))).astype(np.uint8).tobytes()
    prefixes = {n: _int64_prefix(key, n) for n in set(lengths.tolist())}
    return [prefixes[n] + raw[10 * r : 10 * r + n] for r, n in enumerate(lengths.tolist())]


def _int64_prefix(key: bytes, n: int) -> bytes:
    """The bytes before an n-byte varint in a one-value int64 map entry."""
    entry = int64_entry(key, [1 << (7 * (n - 1))])
    return entry[:-n]


# --- TFRecord framing --------------------------------------------------------------------


def _crc_table() -> np.ndarray:
    table = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        table = np.where(table & 1, (table >> 1) ^ np.uint32(0x82F63B78), table >> 1).astype(np.uint32)
    return table


CRC_TABLE = _crc_table()


def crc32c(records: list[bytes]) -> np.ndarray:
    """[n] uint32 crc32c (Castagnoli) of each record, a batch at once: the records sorted by
    length (longest first) and laid out as columns, one table step per byte position over the
    records still that long."""
    n = len(records)
    lengths = np.fromiter(map(len, records), dtype=np.int64, count=n)
    order = np.argsort(-lengths, kind="stable")
    width = int(lengths.max()) if n else 0
    padded = b"".join(records[k].ljust(width, b"\0") for k in order.tolist())
    columns = np.frombuffer(padded, dtype=np.uint8).reshape(n, width).T.copy()
    active = np.searchsorted(-lengths[order], -np.arange(width), side="left")  # rows longer than j
    crc = np.full(n, 0xFFFFFFFF, dtype=np.uint32)
    index, looked_up = np.empty(n, dtype=np.intp), np.empty(n, dtype=np.uint32)
    for j in range(width):  # crc = TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8), in place
        k = active[j]
        c, i, t = crc[:k], index[:k], looked_up[:k]
        np.bitwise_xor(c, columns[j, :k], out=i, casting="unsafe")
        np.bitwise_and(i, 0xFF, out=i)
        np.take(CRC_TABLE, i, out=t)
        np.right_shift(c, 8, out=c)
        np.bitwise_xor(c, t, out=c)
    out = np.empty(n, dtype=np.uint32)
    out[order] = crc ^ np.uint32(0xFFFFFFFF)
    return out


def _masked(crc: np.ndarray) -> np.ndarray:
    crc = crc.astype(np.uint64)
    return ((((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF).astype("<u4")


def tfrecords(records: list[bytes]) -> bytes:
    """``records`` framed as a TFRecord file's bytes: length, masked crc32c of it, data, masked crc32c."""
    if not records:
        return b""
    lengths = np.fromiter(map(len, records), dtype="<u8", count=len(records))
    distinct = np.unique(lengths)  # the header (length + its crc) depends on the length only
    crcs = _masked(crc32c([n.tobytes() for n in distinct])).tobytes()
    header = {int(n): n.tobytes() + crcs[4 * k : 4 * k + 4] for k, n in enumerate(distinct)}
    data_crcs = _masked(crc32c(records)).tobytes()
    return b"".join(header[len(r)] + r + data_crcs[4 * k : 4 * k + 4] for k, r in enumerate(records))


# --- TFDS's layout -------------------------------------------------------------------------


def write_split(builder, split: str, batches: Iterator[list[bytes]], shard_config=None):
    """Writes one split's records (batches of serialized examples, in key order) as TFDS's
    shards of ``builder`` (inside ``download_and_prepare``); returns its ``SplitInfo``.

    The records stream into one file; its shard count (TFDS's ``ShardConfig`` from the split's
    total size, as TFDS's writer computes it) is known at the end, then the file is cut into
    TFDS's shards at TFDS's boundaries.
    """
    template = builder._get_filename_template(split_name=split)
    staging = os.path.join(os.fspath(builder.data_path), f".{split}.tfrecord.tmp")
    sizes = []
    with open(staging, "wb") as f:
        for records in batches:
            f.write(tfrecords(records))
            sizes.append(np.fromiter(map(len, records), dtype=np.int64, count=len(records)))
    sizes = np.concatenate(sizes) if sizes else np.zeros(0, np.int64)
    total = int(sizes.sum())
    bounds = shard_bounds(total, len(sizes), shard_config)
    num_shards = len(bounds)
    offsets = np.r_[0, np.cumsum(sizes + 16)]  # 16: the TFRecord framing of a record
    _cut(
        staging,
        [int(offsets[b]) for b in [0] + bounds],
        [template.sharded_filepath(shard_index=k, num_shards=num_shards) for k in range(num_shards)],
    )
    return split_info(split, template, np.diff([0] + bounds).tolist(), total)


def shard_bounds(num_bytes: int, num_examples: int, shard_config=None) -> list[int]:
    """The end (exclusive) of each shard, in examples: TFDS's shard count for a split of this
    size (its ``ShardConfig``) and TFDS's boundaries."""
    from tensorflow_datasets.core.utils import shard_utils

    num_shards = (shard_config or shard_utils.ShardConfig()).get_number_shards(num_bytes, num_examples)
    return list(shard_utils.get_shard_boundaries(num_examples, num_shards))


def split_info(split: str, template, shard_lengths: list[int], num_bytes: int):
    """TFDS's ``SplitInfo`` of a written split (``num_bytes``: the serialized examples, unframed)."""
    import tensorflow_datasets as tfds

    return tfds.core.SplitInfo(name=split, shard_lengths=shard_lengths, num_bytes=num_bytes, filename_template=template)


def _cut(staging: str, byte_bounds: list[int], paths: list) -> None:
    """Moves byte ranges [bounds[k], bounds[k+1]) of ``staging`` into ``paths[k]``."""
    if len(paths) == 1:
        os.replace(staging, os.fspath(paths[0]))
        return
    with open(staging, "rb") as source:
        for path, lo, hi in zip(paths, byte_bounds[:-1], byte_bounds[1:]):
            source.seek(lo)
            with open(os.fspath(path), "wb") as out:
                shutil.copyfileobj(_Range(source, hi - lo), out, 1 << 22)
    os.remove(staging)


class _Range:
    """The next ``size`` bytes of an open file, as a readable for ``shutil.copyfileobj``."""

    def __init__(self, f, size: int):
        self.f, self.left = f, size

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        data = self.f.read(n)
        self.left -= len(data)
        return data


def batches(items, size: int = CHUNK) -> Iterator:
    for lo in range(0, len(items), size):
        yield items[lo : lo + size]


def item_records(blobs: list[bytes]) -> Iterator[list[bytes]]:
    """Batches of the items split's records: each item's cached entries as an example."""
    for chunk in batches(blobs):
        yield [example(blob) for blob in chunk]


def is_local(path) -> bool:
    return "://" not in os.fspath(path)
