"""inputs: the dataset handle and tf.data batching (padding, truncation, shuffling, determinism)."""

import numpy as np
import pytest
import raw_fixtures

from recsys_ssl.datasets import inputs, interactions_csv


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    root = tmp_path_factory.mktemp("inputs")
    files = raw_fixtures.write_interactions_csv(root / "csv")
    configs = interactions_csv.make_configs(
        "shop", files["interactions"], files["items"], files["spec"], queries=files["queries"]
    )
    return inputs.load_dataset("interactions_csv/shop", data_dir=root / "tfds", csv_configs=configs)


def test_batch_pads_and_truncates_multi_valued_to_max_len(shop):
    (batch,) = list(inputs.batch(shop.items(), shop.spec, 8))
    assert batch["sku"].shape == (4,)
    colors = batch["colors"].numpy()  # max_len 3: d4's 4th color is cut
    assert colors.shape == (4, 3)
    assert colors.tolist() == [
        [b"red", b"blue", b""],
        [b"", b"", b""],
        [b"green", b"", b""],
        [b"red", b"green", b"blue"],
    ]
    assert batch["item_tags"].shape == (4, 2)
    assert inputs.truncation_counts(shop.item_arrays(), shop.spec) == {"colors": 1, "item_tags": 0}


def test_batch_selects_features_and_keeps_timestamp(shop):
    batches = list(inputs.batch(shop.pairs("train"), shop.spec, 4, features=["user", "sku", "timestamp"]))
    assert [set(b) for b in batches] == [{"user", "sku", "timestamp"}] * 2
    assert [int(b["sku"].shape[0]) for b in batches] == [4, 2]
    assert batches[0]["timestamp"].dtype.name == "int64"
    with pytest.raises(KeyError, match="nope"):
        inputs.batch(shop.pairs("train"), shop.spec, 4, features=["nope"])


def _order(dataset):
    return [tuple(b["sku"].numpy().tolist() + b["user"].numpy().tolist()) for b in dataset]


def test_seeded_shuffle_is_deterministic_and_shuffles(shop):
    def make(seed):
        return inputs.batch(shop.pairs("train"), shop.spec, 6, features=["user", "sku"], shuffle=True, seed=seed)

    assert _order(make(1)) == _order(make(1))
    orders = {tuple(_order(make(seed))) for seed in range(6)}
    assert len(orders) > 1
    unshuffled = inputs.batch(shop.pairs("train"), shop.spec, 6, features=["user", "sku"])
    assert sorted(_order(make(3))[0]) == sorted(_order(unshuffled)[0])  # same examples


def test_repeat_and_drop_remainder(shop):
    dataset = inputs.batch(shop.pairs("train"), shop.spec, 4, repeat=True, drop_remainder=True, shuffle=True, seed=0)
    batches = list(dataset.take(5))
    assert all(b["colors"].shape == (4, 3) for b in batches)
    assert dataset.element_spec["colors"].shape.as_list() == [4, 3]


def test_item_arrays_layout(shop):
    arrays = shop.item_arrays()
    assert arrays["sku"].dtype == object and isinstance(arrays["sku"][0], bytes)
    assert isinstance(arrays["colors"][1], list) and arrays["colors"][1] == []
    assert shop.num_items == 4 and len(arrays["brand"]) == 4
    pairs = inputs.dataset_arrays(shop.pairs("test"))
    assert pairs["timestamp"].dtype == np.int64


def test_bad_names_and_splits_are_explained(shop, tmp_path):
    with pytest.raises(ValueError, match="unknown split 'valid'"):
        shop.pairs("valid")
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'"):
        inputs.load_dataset("imagenet", data_dir=tmp_path)
    with pytest.raises(ValueError, match="unknown synthetic_catalog config '5k'"):
        inputs.load_dataset("synthetic_catalog/5k", data_dir=tmp_path)


def test_cli_builds_and_prints_summary(tmp_path, capsys):
    from recsys_ssl.datasets import build

    files = raw_fixtures.write_interactions_csv(tmp_path / "csv")
    rc = build.main(
        [
            "--dataset",
            "interactions_csv/mine",
            "--tfds-dir",
            str(tmp_path / "tfds"),
            "--interactions",
            str(files["interactions"]),
            "--items",
            str(files["items"]),
            "--queries",
            str(files["queries"]),
            "--spec",
            str(files["spec"]),
        ]
    )
    assert rc == 0
    out = capsys.readouterr().out
    summary = __import__("json").loads(out[out.index("{\n") :])
    assert summary["splits"] == {"train": 6, "train_10pct": 1, "test": 3}
    assert summary["items"] == 4 and summary["queries"] == 3 and summary["dropped"] == {}
