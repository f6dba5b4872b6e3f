"""The fast example writer (datasets/example_writer.py) writes TFDS's own examples and layout.

The reference is TFDS's writer itself (``RECSYS_SSL_EXAMPLE_WRITER=tfds``: FeaturesDict
encoding + TFDS's serializer and shard writer), built live, and the digests recorded on the
pre-template code (tests/data/builder_digests.json, checked in test_datasets_digests.py, which
runs on the fast writer, the default).
"""

import json
import pathlib
import zlib

import builder_digests
import numpy as np
import pytest
import tensorflow_datasets as tfds

from recsys_ssl.datasets import _common, digest, example_writer, inputs, synthetic_catalog
from recsys_ssl.tf_setup import tf

EXPECTED = json.loads((pathlib.Path(__file__).parent / "data" / "builder_digests.json").read_text())
pytestmark = pytest.mark.timeout(900)


def test_the_default_writer_is_the_fast_one_and_the_variable_picks(monkeypatch):
    monkeypatch.delenv(example_writer.WRITER_ENV, raising=False)
    assert example_writer.enabled()
    monkeypatch.setenv(example_writer.WRITER_ENV, "tfds")
    assert not example_writer.enabled()
    monkeypatch.setenv(example_writer.WRITER_ENV, "other")
    with pytest.raises(ValueError, match="RECSYS_SSL_EXAMPLE_WRITER"):
        example_writer.enabled()


def _crc32c_bitwise(data: bytes) -> int:
    """crc32c bit by bit, from the polynomial (an independent reference)."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def test_crc32c_of_a_batch_equals_the_bitwise_crc_and_the_check_value():
    rng = np.random.default_rng(0)
    records = [rng.bytes(int(n)) for n in rng.integers(0, 300, 50)] + [b"", b"123456789"]
    got = example_writer.crc32c(records).tolist()
    assert got == [_crc32c_bitwise(r) for r in records]
    assert got[-1] == 0xE3069283  # the standard check value of CRC-32C
    assert zlib.crc32(b"123456789") != got[-1]  # not the other crc32


def test_tfrecords_are_read_back_by_tensorflow_with_checksums(tmp_path):
    records = [b"", b"x", bytes(range(256)) * 3]
    path = tmp_path / "r.tfrecord"
    path.write_bytes(example_writer.tfrecords(records))
    # tf.data verifies both crc32c of every record (a wrong one is a DataLossError).
    assert [r.numpy() for r in tf.data.TFRecordDataset(str(path))] == records
    corrupt = bytearray(path.read_bytes())
    corrupt[-1] ^= 1
    path.write_bytes(bytes(corrupt))
    with pytest.raises(tf.errors.DataLossError):
        list(tf.data.TFRecordDataset(str(path)))


def test_entries_parse_as_the_tf_example_tensorflow_makes():
    key = example_writer._key
    record = example_writer.example(
        example_writer.bytes_entry(key("a"), [b"x", "é".encode()])
        + example_writer.bytes_entry(key("e"), [])
        + example_writer.int64_entry(key("t"), [1_600_000_000, -3, 0])
    )
    parsed = tf.train.Example.FromString(record)
    expected = tf.train.Example()
    expected.features.feature["a"].bytes_list.value.extend([b"x", "é".encode()])
    expected.features.feature["e"].bytes_list.SetInParent()
    expected.features.feature["t"].int64_list.value.extend([1_600_000_000, -3, 0])
    assert parsed == expected
    assert digest.canonical(record) == digest.canonical(expected.SerializeToString())


def test_vectorised_int64_entries_parse_as_their_values():
    edges = [0, 1, 127, 128, 16383, 16384, 1_600_000_000, 2**62, 2**63 - 1, -1, -3, -(2**63)]
    values = np.r_[np.array(edges, dtype=np.int64), np.random.default_rng(1).integers(-(2**63), 2**63 - 1, 200)]
    for value, entry in zip(values.tolist(), example_writer.int64_entries("t", values)):
        parsed = tf.train.Example.FromString(example_writer.example(entry))
        assert list(parsed.features.feature["t"].int64_list.value) == [value]


def test_bad_values_name_the_table_the_row_and_the_feature():
    with pytest.raises(ValueError, match=r"items feature 'category' row 1: expected a string"):
        example_writer.column_entries("category", np.array(["a", ["b"], "c"], dtype=object), False, "items")
    with pytest.raises(ValueError, match=r"items feature 'category' row 2: expected a string, got 3"):
        example_writer.column_entries("category", ["a", "b", 3], False, "items")
    with pytest.raises(ValueError, match=r"queries feature 'tags' row 0: expected a list of strings"):
        example_writer.column_entries("tags", ["ab"], True, "queries")
    with pytest.raises(ValueError, match=r"pairs feature 'tags' row 1: expected a string, got int 5"):
        example_writer.column_entries("tags", [["a"], ["b", 5]], True, "pairs")


@pytest.fixture(scope="module")
def fixtures_both_ways(tmp_path_factory):
    """Every shipped builder fixture written by TFDS's writer and by the fast one."""
    out = {}
    with pytest.MonkeyPatch.context() as patch:
        for writer in ("tfds", "fast"):
            patch.setenv(example_writer.WRITER_ENV, writer)
            out[writer] = builder_digests.build_all(tmp_path_factory.mktemp(writer))
    return out


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_fixture_builder_writes_tfds_s_examples_and_split_infos(fixtures_both_ways, name):
    dataset_name, _, kind = name.partition(" ")
    handles = {w: ds[dataset_name] for w, ds in fixtures_both_ways.items()}
    builders = {w: h.items_builder if kind else h.pairs_builder for w, h in handles.items()}
    assert digest.split_digests(builders["fast"].data_dir) == digest.split_digests(builders["tfds"].data_dir)
    assert digest.split_digests(builders["fast"].data_dir) == EXPECTED[name]
    infos = {w: json.loads((pathlib.Path(b.data_dir) / "dataset_info.json").read_text()) for w, b in builders.items()}
    for info in infos.values():
        info.pop("fileFormat", None)
    assert infos["fast"] == infos["tfds"]  # splits (shard lengths, bytes), features, metadata


def test_the_fast_build_reads_back_through_the_loader(fixtures_both_ways):
    columns = {}
    for writer, datasets in fixtures_both_ways.items():
        ds = datasets["movielens/100k-user-item"]
        names = ds.spec.query_feature_names + ds.spec.item_feature_names
        columns[writer] = [{k: v.tolist() for k, v in ds.pair_columns(s, names).items()} for s in inputs.SPLITS]
        columns[writer].append({k: v.tolist() for k, v in ds.item_arrays().items()})
        columns[writer].append([ex["timestamp"].numpy() for ex in ds.pairs("test")])
    assert columns["fast"] == columns["tfds"]
    key = ds.spec.query_feature_names[0]
    assert len(columns["fast"][0][key]) == ds.num_examples("train") > 0


def _build(name: str, data_dir, writer: str, monkeypatch, **download):
    monkeypatch.setenv(example_writer.WRITER_ENV, writer)
    builder = synthetic_catalog.SyntheticCatalog(config=name, data_dir=data_dir)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(try_download_gcs=False, **download))
    return builder


def test_synthetic_10k_equals_tfds_s_build(tmp_path, monkeypatch):
    for name in ("10k", _common.items_config_name("10k")):
        fast = _build(name, tmp_path / "fast", "fast", monkeypatch)
        reference = _build(name, tmp_path / "tfds", "tfds", monkeypatch)
        assert digest.split_digests(fast.data_dir) == digest.split_digests(reference.data_dir)
        assert fast.info.splits.to_proto() == reference.info.splits.to_proto()
        assert dict(fast.info.metadata) == dict(reference.info.metadata)


def test_shards_are_cut_at_tfds_s_boundaries(tmp_path, monkeypatch):
    fast = _build("tiny", tmp_path / "fast", "fast", monkeypatch, num_shards=3)
    reference = _build("tiny", tmp_path / "tfds", "tfds", monkeypatch, num_shards=3)
    for split in ("train", "test"):
        files = sorted(pathlib.Path(fast.data_dir).glob(f"*-{split}.tfrecord-*"))
        assert [f.name for f in files] == [f"synthetic_catalog-{split}.tfrecord-0000{k}-of-00003" for k in range(3)]
        assert [f.read_bytes() for f in files] != []
        lengths = [sum(1 for _ in digest._records(f)) for f in files]
        assert (
            lengths == list(reference.info.splits[split].shard_lengths) == list(fast.info.splits[split].shard_lengths)
        )
    assert digest.split_digests(fast.data_dir) == digest.split_digests(reference.data_dir)
    assert len(list(fast.as_dataset(split="train"))) == fast.info.splits["train"].num_examples


def test_recsys_ssl_data_builds_without_importing_tensorflow(tmp_path):
    import subprocess
    import sys

    code = (
        "import sys; from recsys_ssl.datasets import build; "
        f"build.main(['--dataset', 'synthetic_catalog/tiny', '--tfds-dir', {str(tmp_path)!r}]); "
        "print('TENSORFLOW', 'tensorflow' in sys.modules)"
    )
    root = pathlib.Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, check=True).stdout
    assert out.splitlines()[-1] == "TENSORFLOW False"
    assert (
        json.loads(out[out.index("{\n") : out.rindex("TENSORFLOW")])["splits"]["train"]
        == EXPECTED["synthetic_catalog/tiny"]["train"]["examples"]
    )
    found = digest.split_digests(tmp_path / "synthetic_catalog" / "tiny" / str(_common.VERSION))
    assert found == EXPECTED["synthetic_catalog/tiny"]
