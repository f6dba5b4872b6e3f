"""A prepared TFDS dataset's examples as digests: one sha256 per split over its serialized records.

The records are read in file order (shard 0 first), so two builds digest equal iff they hold
the same examples in the same order, each the same bytes up to the order of its feature map's
entries: a ``tf.train.Example`` is a map from feature name to value, and protobuf writes map
entries in an order that changes from one process to the next (its hash seed), so the digest
takes each record's map entries sorted (:func:`canonical`), each entry's bytes as written.
Used by the builder tests (a checked-in digest of the pre-template code) and
``bench/data_bench.py`` (in-process vs Beam builds).
"""

from __future__ import annotations

import hashlib
import json
import pathlib
import struct


def _records(path: pathlib.Path):
    """The records of one TFRecord file (length, crc, data, crc), without TensorFlow."""
    with open(path, "rb") as f:
        while header := f.read(12):
            (length,) = struct.unpack("<Q", header[:8])
            yield f.read(length)
            f.read(4)


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        pos += 1
        if byte < 0x80:
            return value, pos
        shift += 7


def _fields(data: bytes):
    """(field number, raw bytes of the whole field) of a message whose fields are all length-delimited."""
    pos = 0
    while pos < len(data):
        start = pos
        tag, pos = _varint(data, pos)
        if tag & 7 != 2:
            raise ValueError(f"not a tf.train.Example: field {tag >> 3} has wire type {tag & 7}")
        length, pos = _varint(data, pos)
        pos += length
        yield tag >> 3, data[start:pos], data[pos - length : pos]


def canonical(record: bytes) -> bytes:
    """A serialized tf.train.Example with its feature map entries sorted (their bytes unchanged)."""
    entries = []
    for number, _, features in _fields(record):
        if number != 1:
            raise ValueError(f"not a tf.train.Example: top-level field {number}")
        entries += [whole for _, whole, _ in _fields(features)]
    return b"".join(sorted(entries))


def split_digests(builder_dir: str | pathlib.Path) -> dict[str, dict]:
    """split -> {"examples": n, "sha256": hex} of a prepared builder folder.

    builder_dir: ``<data_dir>/<name>/<config>/<version>``.
    """
    builder_dir = pathlib.Path(builder_dir)
    info = json.loads((builder_dir / "dataset_info.json").read_text())
    out = {}
    for split in info.get("splits", []):
        files = sorted(builder_dir.glob(f"*-{split['name']}.tfrecord-*"))
        digest, count = hashlib.sha256(), 0
        for path in files:
            for record in _records(path):
                record = canonical(record)
                digest.update(struct.pack("<Q", len(record)))
                digest.update(record)
                count += 1
        out[split["name"]] = {"examples": count, "sha256": digest.hexdigest()}
    return out
