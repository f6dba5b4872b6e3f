"""interactions_csv: your CSVs + a spec -> TFDS; single- and multi-valued features, splits, bad input."""

import pytest
import raw_fixtures

from recsys_ssl import features as features_lib
from recsys_ssl.datasets import inputs


def _load(tmp_path, name="shop", split_column=None, with_queries=True, **write_kwargs):
    configs = raw_fixtures.interactions_csv_configs(
        tmp_path / "csv", name, split_column, with_queries=with_queries, **write_kwargs
    )
    return inputs.load_dataset(f"interactions_csv/{name}", data_dir=tmp_path / "tfds", csv_configs=configs)


def _rows(arrays, *keys):
    return sorted(zip(*(arrays[k] for k in keys)))


def test_builds_with_single_and_multi_valued_features(tmp_path):
    ds = _load(tmp_path)
    assert ds.spec.name == "tiny_csv" and ds.spec.feature("colors").multi_valued
    items = ds.item_arrays()
    assert list(items["sku"]) == [b"a1", b"b2", b"c3", b"d4"]
    assert list(items["brand"]) == [b"acme", b"bolt", b"acme", b"core"]
    assert list(items["colors"]) == [[b"red", b"blue"], [], [b"green"], [b"red", b"green", b"blue", b"black"]]
    assert list(items["item_tags"]) == [[b"new", b"sale"], [b"sale"], [], [b"new"]]  # column "tags"
    # Split by time per query: u1 5 rows -> last 1, u2 3 rows -> last 1 (a1 @ 9), u3 1 row -> test.
    test = inputs.dataset_arrays(ds.pairs("test"))
    assert _rows(test, "user", "sku", "timestamp") == [(b"u1", b"d4", 50), (b"u2", b"a1", 9), (b"u3", b"d4", 1)]
    assert _rows(test, "user", "region") == [(b"u1", b"eu"), (b"u2", b"us"), (b"u3", b"eu")]
    assert ds.num_examples("train") == 6 and ds.num_examples("train_10pct") == 1
    assert ds.metadata["dropped"] == {}


def test_prepared_dataset_loads_without_the_csvs(tmp_path):
    _load(tmp_path)
    ds = inputs.load_dataset("interactions_csv/shop", data_dir=tmp_path / "tfds")
    assert ds.spec.item_key == "sku" and ds.num_examples("test") == 3
    with pytest.raises(FileNotFoundError, match="interactions_csv/other is not prepared"):
        inputs.load_dataset("interactions_csv/other", data_dir=tmp_path / "tfds")


def test_split_column_and_query_features_from_interactions(tmp_path):
    ds = _load(tmp_path, split_column="split", with_queries=False)
    train = inputs.dataset_arrays(ds.pairs("train"))
    assert _rows(train, "user", "sku", "region") == sorted(
        (u.encode(), s.encode(), dict(raw_fixtures.CSV_QUERIES)[u].encode())
        for u, s, _, split in raw_fixtures.CSV_INTERACTIONS
        if split == "train"
    )
    assert ds.num_examples("test") == 3


def test_unknown_item_is_counted(tmp_path):
    ds = _load(tmp_path, extra_interaction_lines=("u1,zz9,60,train",))
    assert ds.metadata["dropped"] == {"unknown item id (not in items.csv)": 1}
    assert ds.num_examples("train") + ds.num_examples("test") == len(raw_fixtures.CSV_INTERACTIONS)


def test_spec_csv_mismatch_names_the_column(tmp_path):
    spec = dict(raw_fixtures.CSV_SPEC)
    spec["item_features"] = spec["item_features"] + [{"name": "size", "kind": "categorical"}]
    with pytest.raises(features_lib.SpecError, match=r"items\.csv: column 'size'"):
        _load(tmp_path, spec=spec)


@pytest.mark.parametrize(
    "line, message",
    [
        ("u1,a1", r"interactions\.csv:11: expected 4 fields"),
        ("u1,a1,later,train", r"interactions\.csv:11: timestamp 'ts' must be an integer, got 'later'"),
    ],
)
def test_malformed_row_names_file_and_line(tmp_path, line, message):
    with pytest.raises(ValueError, match=message):
        _load(tmp_path, extra_interaction_lines=(line,))


def test_bad_split_value_names_file_and_line(tmp_path):
    with pytest.raises(ValueError, match=r"interactions\.csv:11: split column 'split' must be one of"):
        _load(tmp_path, split_column="split", extra_interaction_lines=("u1,a1,60,valid",))
