"""Generation as a Beam pipeline (datasets/beam_generate.py): the same examples as in-process, keyed transforms."""

import json
import pathlib

import apache_beam as beam
import builder_digests
import numpy as np
import pytest
from apache_beam.testing.util import assert_that, equal_to
from etils import epath
from tensorflow_datasets.core import naming
from tensorflow_datasets.core.utils import shard_utils

from pipelines import options as beam_options
from recsys_ssl.datasets import _common, beam_generate, example_writer, inputs
from recsys_ssl.tf_setup import tf

EXPECTED = json.loads((pathlib.Path(__file__).parent / "data" / "builder_digests.json").read_text())
pytestmark = pytest.mark.timeout(900)  # 18 Beam builds in the module fixture
IN_MEMORY = ["--direct_running_mode=in_memory"]  # one process: the tests' runs are small


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    datasets = builder_digests.build_all(tmp_path_factory.mktemp("beam"), beam_args=IN_MEMORY)
    return builder_digests.digests(datasets), datasets


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_beam_build_writes_the_in_process_examples_byte_for_byte(built, name):
    assert built[0][name] == EXPECTED[name]


def test_beam_build_counts_come_from_the_pipeline(built):
    counts = built[1]["synthetic_catalog/tiny"].metadata["counts"]
    assert {s: counts[s] for s in inputs.SPLITS} == {
        s: EXPECTED["synthetic_catalog/tiny"][s]["examples"] for s in inputs.SPLITS
    }


def _run(build):
    options = beam_options.pipeline_options(IN_MEMORY)
    with beam.Pipeline(runner=beam_options.make_runner(options), options=options) as pipeline:
        build(pipeline)
    return pipeline


def test_split_per_query_is_the_protocol_split():
    rng = np.random.default_rng(3)
    n = 400
    groups, times, ties = rng.integers(0, 30, n), rng.integers(0, 8, n), rng.integers(0, 5, n)
    expected = []  # by hand: per group, sorted by (time, tie, index), the last ceil(20%) are test
    for g in set(groups.tolist()):
        rows = sorted((times[i], ties[i], i) for i in range(n) if groups[i] == g)
        k = -(-len(rows) * 2 // 10)
        expected += [(i, "test" if r >= len(rows) - k else "train") for r, (_, _, i) in enumerate(rows)]
    records = [(i, 0, 0, int(times[i]), int(groups[i]), int(ties[i]), (), {}) for i in range(n)]

    def build(pipeline):
        out = pipeline | beam.Create(records) | beam_generate.SplitPerQuery(0.2) | beam.Map(lambda p: (p[0], p[6][0]))
        assert_that(out, equal_to(expected))

    _run(build)
    assert sorted(expected) == sorted(
        zip(range(n), np.where(_common.temporal_split(groups, times, ties)[1], "test", "train"))
    )


def _features(example) -> tuple:
    """(split, index, {feature: values}) of a (split, (index, serialized example)), parsed by TensorFlow."""
    split, (index, record) = example
    features = tf.train.Example.FromString(record).features.feature
    return split, index, {k: list(v.bytes_list.value) or list(v.int64_list.value) for k, v in features.items()}


def test_a_pair_without_its_item_is_dropped_and_counted():
    queries = [(0, example_writer.column_entries("q", [b"a"], False)[0])]
    items = [(0, example_writer.column_entries("i", [b"x"], False)[0])]
    own = example_writer.int64_entries("timestamp", np.array([5, 6]))
    pairs = [(0, 0, 0, 5, 0, 0, ("train",), own[0]), (1, 0, 7, 6, 0, 0, ("test",), own[1])]  # item row 7 is unknown

    def build(pipeline):
        out = (
            pipeline
            | "Pairs" >> beam.Create(pairs)
            | beam_generate.JoinFeatures(pipeline | "Q" >> beam.Create(queries), pipeline | "I" >> beam.Create(items))
            | beam.Map(_features)
        )
        assert_that(out, equal_to([("train", 0, {"q": [b"a"], "i": [b"x"], "timestamp": [5]})]))

    result = _run(build).run()
    counters = beam_options.counters(result)
    assert counters.get("pairs_without_item") == 1 and "pairs_without_query" not in counters


def test_sample_train_draws_the_in_process_sample_across_buckets():
    rng = np.random.default_rng(5)
    n, seed = 500, 11
    is_test = rng.random(n) < 0.3
    is_test[32:64] = True  # buckets 2 and 3 (16 pairs each) hold no train pair
    records = [(int(i), 0, 0, 0, 0, 0, ("test",) if is_test[i] else ("train",), b"") for i in rng.permutation(n)]
    sampled = set(_common.make_splits(is_test, seed, shuffle=False)["train_10pct"].tolist())
    expected = [
        (i, ("test",) if is_test[i] else ("train", "train_10pct") if i in sampled else ("train",)) for i in range(n)
    ]
    assert 0 < len(sampled) < n

    def build(pipeline):
        out = (
            pipeline
            | beam.Create(records)
            | beam_generate.SampleTrain(seed, bucket=16)
            | beam.Map(lambda p: (p[0], p[6]))
        )
        assert_that(out, equal_to(expected))

    _run(build)


def test_write_splits_writes_each_split_in_key_order_at_tfds_shard_boundaries(tmp_path):
    rng = np.random.default_rng(7)
    records = {
        "train": {int(i): rng.bytes(int(rng.integers(1, 40))) for i in rng.choice(5000, 700, replace=False)},
        "test": {int(i): rng.bytes(3) for i in (9, 2, 400, 7, 64)},
    }
    elements = [(split, kv) for split in records for kv in records[split].items()]
    elements = [elements[k] for k in rng.permutation(len(elements))]
    templates = {
        split: naming.ShardedFileTemplate(
            data_dir=epath.Path(tmp_path), dataset_name="d", split=split, filetype_suffix="tfrecord"
        )
        for split in _common.PAIRS_SPLITS
    }
    info_folder = str(tmp_path / "info")
    shard_config = shard_utils.ShardConfig(num_shards=3)

    def build(pipeline):
        _ = (
            pipeline
            | beam.Create(elements)
            | beam_generate.WriteSplits(templates, shard_config, info_folder, bucket=64)
        )

    _run(build)
    # round(n * k / 3) for k = 1, 2, 3: the shard ends TFDS's writer uses
    lengths = {"train": [233, 234, 233], "test": [2, 1, 2]}
    infos = beam_generate.read_infos(info_folder, templates)
    assert infos == {s: (lengths[s], sum(map(len, records[s].values()))) for s in lengths}  # no train_10pct
    for split, by_index in records.items():
        files = sorted(tmp_path.glob(f"d-{split}.tfrecord-*-of-00003"))
        written = [[r.numpy() for r in tf.data.TFRecordDataset(str(f))] for f in files]  # TF checks the crcs
        assert [len(shard) for shard in written] == lengths[split]
        assert sum(written, []) == [by_index[i] for i in sorted(by_index)]


def test_cli_builds_with_beam_and_refuses_beam_flags_without_it(tmp_path, capsys, monkeypatch):
    from recsys_ssl.datasets import build

    monkeypatch.setenv(beam_generate.STAGING_ENV, str(tmp_path / "staging"))

    with pytest.raises(SystemExit):
        build.main(["--dataset", "synthetic_catalog/tiny", "--tfds-dir", str(tmp_path), "--runner=DaskRunner"])
    assert "Beam options go with --beam" in capsys.readouterr().err
    argv = ["--dataset", "synthetic_catalog/tiny", "--tfds-dir", str(tmp_path), "--beam", *IN_MEMORY]
    assert build.main(argv) == 0
    ds = inputs.load_dataset("synthetic_catalog/tiny", data_dir=tmp_path)
    assert ds.metadata["counts"]["head_share"] is None  # built by Beam (in-process computes it)
    assert ds.num_examples("train") == EXPECTED["synthetic_catalog/tiny"]["train"]["examples"]
    assert not list((tmp_path / "staging").iterdir())  # the staged chunks are deleted after the build
