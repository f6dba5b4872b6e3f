"""The feature-statistics Beam job on hand-made fixtures with hand-computed expectations."""

import json

import apache_beam as beam
import pyarrow as pa
import pytest
import yaml
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions
from apache_beam.runners.portability.fn_api_runner import fn_runner
from apache_beam.testing import test_pipeline as beam_test_pipeline
from apache_beam.testing.util import assert_that, equal_to

from pipelines import feature_stats
from pipelines import options as options_lib
from recsys_ssl import artifacts
from recsys_ssl import features as features_lib

SPEC = {
    "name": "tiny",
    "query_key": "user",
    "item_key": "item",
    "query_features": [
        {"name": "user", "kind": "categorical"},
        {"name": "segment", "kind": "categorical", "vocab": {"min_count": 2}},
    ],
    "item_features": [
        {"name": "item", "kind": "categorical"},
        {"name": "genre", "kind": "categorical"},
        {"name": "tags", "kind": "multi_categorical", "max_len": 2, "vocab": {"top_k": 2}, "column": "tag_list"},
    ],
}

ITEMS_CSV = """item,genre,tag_list
i1,rock,x|y|z
i2,jazz,y
i3,,
i4,rock,x|y,EXTRA
i4,jazz,x
i5,pop,z|z
,rock,y
"""
# Line 5 (i4 with 4 fields) is malformed; the last line has an empty item id: both dead-lettered.
# Corpus: i1 i2 i3 i4 i5 (i4 once: its malformed first line is skipped).

PAIRS_CSV = """user,segment,item
u1,s1,i1
u2,s1,i1
u1,s2,i2
u3,s1,i1
u2,,i9
u1,s2,i2
"""
# i9 is not in the corpus: counted, reported.


@pytest.fixture()
def fixture_dir(tmp_path):
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(SPEC))
    (tmp_path / "items.csv").write_text(ITEMS_CSV)
    (tmp_path / "pairs.csv").write_text(PAIRS_CSV)
    return tmp_path


def run_cli(directory, *extra):
    argv = [
        "--items-file",
        str(directory / "items.csv"),
        "--pairs-file",
        str(directory / "pairs.csv"),
        "--spec",
        str(directory / "spec.yaml"),
        "--output-dir",
        str(directory / "stats"),
        "--direct_running_mode=in_memory",
        *extra,
    ]
    assert feature_stats.main(argv) == 0
    return directory / "stats"


def test_stats_job_end_to_end(fixture_dir, capsys):
    out = run_cli(fixture_dir)
    vocab = artifacts.read_vocabularies(out)
    assert vocab["genre"] == ["jazz", "pop", "rock"]  # jazz 2, then pop 1 and rock 1 by value; "" is missing
    assert vocab["tags"] == ["z", "x"]  # occurrences z 3 (z|z twice), x 2, y 2; top_k 2 keeps z, then x by value
    assert vocab["item"] == ["i1", "i2", "i3", "i4", "i5"]
    assert vocab["user"] == ["u1", "u2", "u3"]  # u1 3, u2 2, u3 1
    assert vocab["segment"] == ["s1", "s2"]  # s1 3, s2 2 (min_count 2)
    assert artifacts.read_item_frequencies(out) == {"i1": 3, "i2": 2, "i3": 0, "i4": 0, "i5": 0}
    assert (out / "item_frequencies.tsv").read_text().splitlines() == ["i1\t3", "i2\t2", "i3\t0", "i4\t0", "i5\t0"]
    manifest = artifacts.read_manifest(out)
    counts = manifest["counts"]
    assert counts["items"] == 5 and counts["train_pairs"] == 6
    assert counts["malformed_items"] == 2 and counts["malformed_pairs"] == 0
    assert counts["train_pairs_with_unknown_item"] == 1 and counts["unknown_items_sample"] == ["i9"]
    assert counts["features"]["genre"]["missing"] == 1
    assert counts["features"]["tags"]["missing"] == 1  # i3's empty tag list
    assert counts["features"]["tags"]["rows_over_max_len"] == 1  # i1 has 3 tags, max_len 2
    assert counts["features"]["tags"]["values_truncated"] == 1
    assert counts["features"]["tags"]["oov_rate"] == pytest.approx(2 / 7)  # y's 2 of 7 occurrences
    assert counts["features"]["segment"]["missing"] == 1
    assert manifest["job"] == "stats" and manifest["versions"]["apache-beam"].startswith("2.77")
    dead = [json.loads(line) for line in (out / "dead_letter" / "items.jsonl").read_text().splitlines()]
    assert sorted(d["text"] for d in dead) == sorted(
        ["i4,rock,x|y,EXTRA", json.dumps({"item": "", "genre": "rock", "tags": ["y"]})]
    )
    printed = capsys.readouterr()
    assert "items_malformed_rows" in printed.err and "2 malformed rows" in printed.out


def test_min_count_and_top_k_flags_override_the_spec(fixture_dir):
    out = run_cli(fixture_dir, "--min-count", "3")
    vocab = artifacts.read_vocabularies(out)
    assert vocab["segment"] == ["s1"] and vocab["user"] == ["u1"] and vocab["tags"] == ["z"] and vocab["genre"] == []
    out = run_cli(fixture_dir, "--top-k", "1")
    assert artifacts.read_vocabularies(out)["genre"] == ["jazz"]


def test_value_counts_combine_fn_with_assert_that():
    spec = features_lib.spec_from_dict(SPEC)
    features = [spec.feature("genre"), spec.feature("tags")]
    batches = [
        pa.table({"genre": ["rock", "", "jazz"], "tags": pa.array([["x", "y"], [], ["x"]], pa.list_(pa.string()))}),
        pa.table({"genre": ["rock"], "tags": pa.array([["y", "y", "z"]], pa.list_(pa.string()))}),
    ]
    options = PipelineOptions(["--direct_running_mode=in_memory"])
    with beam_test_pipeline.TestPipeline(runner=fn_runner.FnApiRunner(), options=options) as p:
        counts = (
            p
            | beam.Create(batches)
            | "Count" >> beam.CombineGlobally(feature_stats.ValueCountsFn(features))
            | beam.FlatMap(
                lambda c: [
                    (
                        name,
                        tuple(zip(t[0].column("value").to_pylist(), t[0].column("count").to_pylist())),
                        c.numbers[name]["missing"],
                    )
                    for name, t in sorted(c.parts.items())
                ]
            )
        )
        assert_that(
            counts,
            equal_to([("genre", (("rock", 2), ("jazz", 1)), 1), ("tags", (("y", 3), ("x", 2), ("z", 1)), 1)]),
        )


def test_local_runner_defaults_are_multi_process_and_never_prism():
    options = options_lib.pipeline_options([])
    direct = options.view_as(DirectOptions)
    assert (direct.direct_running_mode, direct.direct_num_workers) == ("multi_processing", 2)
    assert type(options_lib.make_pipeline(options).runner).__name__ == "FnApiRunner"
    passed = options_lib.pipeline_options(
        ["--runner=FlinkRunner", "--flink_master=host:8081", "--temp_location=/tmp/x"]
    )
    assert passed.get_all_options()["flink_master"] == "host:8081"
    assert passed.get_all_options()["temp_location"] == "/tmp/x"
    assert options_lib.pipeline_options(["--direct_num_workers=4"]).view_as(DirectOptions).direct_num_workers == 4


@pytest.mark.timeout(180)
def test_stats_and_mi_on_a_prepared_tfds_dataset(tmp_path):
    """The default input path: a project dataset, read in the workers from its TFRecord files."""
    import collections

    from pipelines import mutual_info
    from recsys_ssl.datasets import inputs

    tfds_dir = str(tmp_path / "tfds")
    common = [
        "--dataset",
        "synthetic_catalog/tiny",
        "--tfds-dir",
        tfds_dir,
        "--run-dir",
        str(tmp_path / "run"),
        "--direct_running_mode=in_memory",
    ]
    assert feature_stats.main(common) == 0
    assert mutual_info.main(common) == 0
    dataset = inputs.load_dataset("synthetic_catalog/tiny", data_dir=tfds_dir)
    train_items = collections.Counter(
        x.decode() for x in dataset.pair_columns("train", [dataset.spec.item_key])["item_id"]
    )
    corpus = [x.decode() for x in dataset.item_arrays()["item_id"]]
    frequencies = artifacts.read_item_frequencies(tmp_path / "run" / "stats")
    assert frequencies == {item: train_items[item] for item in corpus}
    manifest = artifacts.read_manifest(tmp_path / "run" / "stats")
    assert manifest["dataset"] == "synthetic_catalog/tiny" and manifest["counts"]["items"] == len(corpus)
    assert manifest["counts"]["train_pairs"] == sum(train_items.values())
    features, _ = artifacts.read_mi(tmp_path / "run" / "mi")
    assert features == dataset.spec.mi_features


@pytest.mark.timeout(300)
def test_the_10pct_regime_gets_its_own_item_frequencies(tmp_path):
    """``stats --split train_10pct`` counts only the regime's pairs; training on 10% data reads them
    (or counts them itself when the job has not run), never the full split's."""
    import collections

    from recsys_ssl import config as cfg
    from recsys_ssl import train
    from recsys_ssl.datasets import inputs

    tfds_dir, run_dir = str(tmp_path / "tfds"), tmp_path / "run"
    common = [
        "--dataset",
        "synthetic_catalog/tiny",
        "--tfds-dir",
        tfds_dir,
        "--run-dir",
        str(run_dir),
        "--direct_running_mode=in_memory",
    ]
    assert feature_stats.main(common) == 0
    dataset = inputs.load_dataset("synthetic_catalog/tiny", data_dir=tfds_dir)
    corpus = [x.decode() for x in dataset.item_arrays()["item_id"]]

    def counts(split):
        counted = collections.Counter(x.decode() for x in dataset.pair_columns(split, ["item_id"])["item_id"])
        return {item: counted[item] for item in corpus}

    assert counts("train_10pct") != counts("train")
    config = cfg.with_overrides(
        cfg.load_config("baseline"), {"dataset": "synthetic_catalog/tiny", "train.data_fraction": "10pct"}
    )
    data = train.load_training_data(config, run_dir, tfds_dir=tfds_dir)  # no stats_10pct yet: counted in-process
    assert data.item_frequencies == counts("train_10pct")
    assert feature_stats.main(common + ["--split", "train_10pct"]) == 0
    assert artifacts.read_item_frequencies(run_dir / "stats_10pct") == counts("train_10pct")
    assert artifacts.read_manifest(run_dir / "stats_10pct")["inputs"]["train_pairs"]["split"] == "train_10pct"
    (run_dir / "stats_10pct" / artifacts.ITEM_FREQUENCIES).write_text("".join(f"{i}\t7\n" for i in corpus))
    assert set(train.load_training_data(config, run_dir, tfds_dir=tfds_dir).item_frequencies.values()) == {7}
    full = cfg.with_overrides(config, {"train.data_fraction": "full"})
    assert train.load_training_data(full, run_dir, tfds_dir=tfds_dir).item_frequencies == counts("train")
    with pytest.raises(SystemExit, match="--split"):
        feature_stats.main(["--items-file", "x.csv", "--spec", "tiny", "--split", "train_10pct"])
