"""Generation as a Beam pipeline (datasets/beam_generate.py): the same examples as in-process, keyed transforms."""

import json
import pathlib

import apache_beam as beam
import builder_digests
import numpy as np
import pytest
from apache_beam.testing.util import assert_that, equal_to

from pipelines import options as beam_options
from recsys_ssl.datasets import _common, beam_generate, inputs

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


def test_a_pair_without_its_item_is_dropped_and_counted():
    queries = [(0, {"q": "a"})]
    items = [(0, {"i": "x"})]
    pairs = [(0, 0, 0, 5, 0, 0, ("train",), {}), (1, 0, 7, 6, 0, 0, ("test",), {})]  # item row 7 is unknown

    def build(pipeline):
        out = (
            pipeline
            | "Pairs" >> beam.Create(pairs)
            | beam_generate.JoinFeatures(pipeline | "Q" >> beam.Create(queries), pipeline | "I" >> beam.Create(items))
        )
        assert_that(out, equal_to([("train", (0, {"q": "a", "i": "x", "timestamp": 5}))]))

    result = _run(build).run()
    counters = beam_options.counters(result)
    assert counters.get("pairs_without_item") == 1 and "pairs_without_query" not in counters


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
