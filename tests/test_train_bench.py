"""bench/train_bench.py --input-only: the input pipeline alone vs the model step, on a tiny catalog."""

from __future__ import annotations

import json
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _bench():
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import train_bench
    finally:
        sys.path.remove(str(ROOT / "bench"))
    return train_bench


@pytest.mark.timeout(300)
def test_input_only_mode_measures_the_input_the_train_step_and_the_model_step(tmp_path):
    train_bench = _bench()
    out = tmp_path / "result.json"
    args = ["--input-only", "--items", "600", "--pairs", "3000", "--batch-size", "64"]
    assert train_bench.main([*args, "--steps", "3", "--skip", "2", "--repeats", "2", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert (result["items"], result["pairs"], result["batch_size"]) == (600, 3000, 64)
    assert set(result["methods"]) == {"baseline", "ssl_cfm"}
    for by_clock in result["methods"].values():
        for clock in ("wall", "cpu"):
            per_repeat = by_clock[clock]["per_repeat"]
            assert all(len(per_repeat[stage]) == 2 and min(per_repeat[stage]) > 0 for stage in train_bench.STAGES)
            # The ratios are each repeat's own (adjacent measurements), their median reported.
            for a, b in train_bench.RATIOS:
                ratios = [x / y for x, y in zip(per_repeat[a], per_repeat[b])]
                assert per_repeat[f"{a}/{b}"] == pytest.approx(ratios)
                assert by_clock[clock]["ratios"][f"{a}/{b}"] == pytest.approx(
                    sorted(ratios)[0] / 2 + sorted(ratios)[1] / 2
                )
    rows = train_bench.markdown_rows(result)
    assert len(rows) == 2 + 4 and rows[2].startswith("| baseline | cpu | ")


@pytest.mark.timeout(300)
def test_input_only_mode_reads_the_tfds_pairs_and_the_batch_parsed_reference(tmp_path):
    import collections

    from recsys_ssl.datasets import inputs

    train_bench = _bench()
    tfds_dir = str(tmp_path / "tfds")
    dataset = inputs.load_dataset("synthetic_catalog/tiny", data_dir=tfds_dir)  # builds it (seconds)
    out = tmp_path / "result.json"
    args = ["--input-only", "--catalog", "tiny", "--tfds-dir", tfds_dir, "--batch-size", "64", "--steps", "2"]
    assert train_bench.main([*args, "--skip", "1", "--repeats", "1", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["pairs"] == dataset.num_examples("train") and "TFDS" in result["sources"]["dataset"]
    readers = result["pairs_readers"]
    assert len(readers) == 2 and all(r["wall"] > 0 and r["cpu"] > 0 for r in readers.values())
    # The reference reader yields the split's own pairs, every spec feature at the training batch's shape.
    num_batches = dataset.num_examples("train") // 64
    batches = list(train_bench.batch_parsed_pairs("synthetic_catalog/tiny", tfds_dir, 64, 0).take(num_batches))
    spec = dataset.spec
    for feature in spec.query_features + spec.item_features:
        assert batches[0][feature.name].shape == ([64, feature.max_len] if feature.multi_valued else [64])
    read = collections.Counter(i for b in batches for i in b[spec.item_key].numpy().tolist())
    split = collections.Counter(dataset.pair_columns("train", [spec.item_key])[spec.item_key].tolist())
    assert sum(read.values()) == 64 * num_batches and not read - split  # one pass, no pair twice
