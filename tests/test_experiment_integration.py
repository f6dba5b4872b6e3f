"""A real tiny grid: TFDS synthetic_catalog/tiny -> train (2 regimes) -> evaluate -> tables, then resume."""

import collections
import json

import numpy as np
import pytest

from recsys_ssl import artifacts, evaluate_cli, experiment
from recsys_ssl.datasets import inputs
from recsys_ssl.paths import RunLayout

CONFIG = """\
name: tiny_baseline
method: baseline
dataset: synthetic_catalog/tiny
model: {query_hidden: [16, 8], item_hidden: [16, 8]}
main: {temperature: 0.2}
train: {batch_size: 64, learning_rate: 0.1, steps: 15, backup_every_steps: 50}
"""


def write_stats(run_dir, dataset):
    """The statistics job's artifacts (contract format) computed here from the dataset."""
    spec = dataset.spec
    items = dataset.item_arrays()
    pairs = dataset.pair_columns("train", spec.query_feature_names + [spec.item_key])
    vocab = {}
    for feature in spec.item_features + spec.query_features:
        column = (items if feature in spec.item_features else pairs)[feature.name]
        values = [v for row in column for v in (row if feature.multi_valued else [row]) if v]
        counts = collections.Counter(v.decode() for v in values)
        vocab[feature.name] = [v for v, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]
    files = {f"vocab/{name}.txt": artifacts.vocab_text(values) for name, values in vocab.items()}
    train_counts = collections.Counter(i.decode() for i in pairs[spec.item_key])
    frequencies = sorted(
        ((i.decode(), train_counts.get(i.decode(), 0)) for i in items[spec.item_key]), key=lambda kv: (-kv[1], kv[0])
    )
    files[artifacts.ITEM_FREQUENCIES] = artifacts.item_frequencies_text(frequencies)
    files[artifacts.MANIFEST] = artifacts.dumps_json(
        artifacts.make_manifest(
            "stats",
            dataset=dataset.name,
            spec=spec.to_dict(),
            inputs={},
            counts={"vocab_sizes": {k: len(v) for k, v in vocab.items()}},
        )
    )
    artifacts.write_files(str(RunLayout(run_dir).stats), files)


@pytest.mark.timeout(300)
def test_tiny_grid_runs_resumes_and_reports(tmp_path, capsys):
    run_dir = tmp_path / "run"
    dataset = inputs.load_dataset("synthetic_catalog/tiny", data_dir=str(RunLayout(run_dir).tfds))
    write_stats(run_dir, dataset)
    config = tmp_path / "tiny_baseline.yaml"
    config.write_text(CONFIG)
    argv = [
        "--run-dir",
        str(run_dir),
        "--name",
        "t",
        "--configs",
        str(config),
        "--seeds",
        "0",
        "--regimes",
        "full",
        "10pct",
        "--quiet",
        "--head-fraction",
        "0.1",
    ]
    assert experiment.main(argv) == 0
    cells = ["tiny_baseline-full-seed0", "tiny_baseline-10pct-seed0"]
    metrics = {c: json.loads((RunLayout(run_dir).eval(c) / "metrics.json").read_text()) for c in cells}
    manifests = {c: json.loads((RunLayout(run_dir).train(c) / "manifest.json").read_text()) for c in cells}
    assert manifests[cells[1]]["inputs"]["split"] == "train_10pct" and manifests[cells[0]]["steps"] == 15
    full = metrics[cells[0]]
    # The whole corpus is scored; the test set is the same for both regimes, and so are the slices.
    assert full["counts"]["items"] == 500 and full["head_items"] == 50 and full["mode"] == "user-item"
    assert full["counts"] == metrics[cells[1]]["counts"]
    assert full["stats_item_frequencies"] == "agrees"
    assert full["counts"]["test_interactions"] > 0 and 0.0 <= full["recall@100"] <= 1.0
    out_dir = run_dir / "experiments" / "t"
    for name in ("results.json", "results.csv", "results.md", "recall50_by_popularity_full.png"):
        assert (out_dir / name).exists(), name
    assert "| tiny_baseline |" in (out_dir / "results.md").read_text()

    # Resume: nothing is retrained or re-evaluated.
    stamps = {
        c: (
            (RunLayout(run_dir).eval(c) / "metrics.json").stat().st_mtime_ns,
            (RunLayout(run_dir).train(c) / "manifest.json").stat().st_mtime_ns,
        )
        for c in cells
    }
    capsys.readouterr()
    assert experiment.main(argv) == 0
    assert capsys.readouterr().out.count("done before") == 2
    assert stamps == {
        c: (
            (RunLayout(run_dir).eval(c) / "metrics.json").stat().st_mtime_ns,
            (RunLayout(run_dir).train(c) / "manifest.json").stat().st_mtime_ns,
        )
        for c in cells
    }

    # A rerun asking for another config must not silently reuse the finished cells.
    with pytest.raises(ValueError, match=r"train.steps: 15 \(stored\) != 16 \(asked\)"):
        experiment.main(argv + ["--set", "train.steps=16"])
    with pytest.raises(ValueError, match="evaluated with --head-fraction 0.1, this grid asks 0.2"):
        experiment.main(argv + ["--head-fraction", "0.2"])

    # The evaluate CLI on one cell, with the protocol's head fraction, recomputes the same recall.
    assert evaluate_cli.main(["--run-dir", str(run_dir), "--name", cells[0], "--head-fraction", "0.2"]) == 0
    printed = capsys.readouterr().out
    assert "overall" in printed and "head = top 20% = 100 items" in printed
    again = json.loads((RunLayout(run_dir).eval(cells[0]) / "metrics.json").read_text())
    assert again["recall@10"] == full["recall@10"] and np.isclose(again["map@50"], full["map@50"])
    assert again["slices"]["head_10pct"] == full["slices"]["head"]


@pytest.mark.timeout(120)
def test_fast_split_reader_matches_the_dataset_handle(tmp_path):
    dataset = inputs.load_dataset("synthetic_catalog/tiny", data_dir=str(tmp_path / "tfds"))
    spec = dataset.spec
    names = [spec.query_key, spec.item_key, "query_segment", "tags", "title_tokens"]
    fast = inputs._read_columns_from_records(dataset, "test", names)
    assert fast is not None
    handle = inputs.collect_columns(inputs.batch(dataset.pairs("test"), spec, 256, features=names), names)
    for name in names:
        assert fast[name].tolist() == handle[name].tolist(), name
    assert fast["tags"].shape == (dataset.num_examples("test"), spec.feature("tags").max_len)
    # The int64 timestamp comes back as int64, equal to the handle's.
    with_time = inputs._read_columns_from_records(dataset, "test", [spec.item_key, "timestamp"])
    assert with_time["timestamp"].dtype == np.int64
    timestamps = inputs.collect_columns(
        inputs.batch(dataset.pairs("test"), spec, 256, features=["timestamp"]), ["timestamp"]
    )
    assert with_time["timestamp"].tolist() == timestamps["timestamp"].tolist()
