"""The validation carve-out: ``<dataset>-val`` for every dataset (per query, the last ceil(10%)
of its train pairs by time, or a seeded random 10% without a time order), never touching test.
MovieLens builds it natively (its history feature depends on the split) with the same rule."""

import math

import numpy as np
import pytest
import raw_fixtures

from recsys_ssl.datasets import _common, inputs, interactions_csv, movielens

# (user, movie, rating, timestamp). Per user, sorted by (timestamp, movie id):
#   user 1: 1 2 3 4 5 6 (5 and 6 tie at t=50: id order)  protocol test {5, 6}; train part 1 2 3 4
#           -> validation test {4}, validation train {1, 2, 3}
#   user 2: 6 3 1 2 4 (1 and 2 tie at t=7)                protocol test {4};    train part 6 3 1 2
#           -> validation test {2}, validation train {6, 3, 1}
#   user 3: 6 5 4 3 2 1                                   protocol test {2, 1}; train part 6 5 4 3
#           -> validation test {3}, validation train {6, 5, 4}
RATINGS = [
    (1, 1, 4, 10),
    (1, 2, 3, 20),
    (1, 3, 5, 30),
    (1, 4, 1, 40),
    (1, 6, 2, 50),
    (1, 5, 2, 50),
    (2, 6, 3, 5),
    (2, 3, 3, 6),
    (2, 2, 4, 7),
    (2, 1, 4, 7),
    (2, 4, 5, 9),
]
RATINGS += [(3, m, 3, 7 - m) for m in range(1, 7)]
VALIDATION = {
    "train": [(1, 1), (1, 2), (1, 3), (2, 1), (2, 3), (2, 6), (3, 4), (3, 5), (3, 6)],
    "test": [(1, 4), (2, 2), (3, 3)],
}
PROTOCOL_TEST = [(1, 5), (1, 6), (2, 4), (3, 1), (3, 2)]


def _by_split(table, raw):
    user_ids = raw.users["user_id"].astype(int)
    return {
        split: sorted((int(user_ids[table.query_rows[i]]), int(raw.item_ids[table.item_rows[i]])) for i in rows)
        for split, rows in table.splits.items()
    }


def test_carve_out_applies_the_protocol_rule_within_train(tmp_path):
    raw = movielens.read_raw("100k", raw_fixtures.write_ml100k(tmp_path / "movielens-100k", ratings=RATINGS))
    protocol = _by_split(movielens.user_item_pairs(raw), raw)
    assert protocol["test"] == PROTOCOL_TEST
    carved = _by_split(movielens.user_item_pairs(movielens.train_part(raw)), raw)
    assert carved["train"] == VALIDATION["train"] and carved["test"] == VALIDATION["test"]
    assert sorted(carved["train"] + carved["test"]) == protocol["train"]  # exactly the protocol's train part
    assert len(carved["train_10pct"]) == 1 and set(carved["train_10pct"]) <= set(carved["train"])

    # item -> item: the train part's consecutive pairs; test iff the target is a validation test item.
    item_item = movielens.item_item_pairs(movielens.train_part(raw))
    ids = raw.item_ids
    pairs = {
        s: sorted((int(ids[item_item.query_rows[i]]), int(ids[item_item.item_rows[i]])) for i in rows)
        for s, rows in item_item.splits.items()
    }
    assert pairs["test"] == [(1, 2), (3, 4), (4, 3)]
    assert pairs["train"] == [(1, 2), (2, 3), (3, 1), (5, 4), (6, 3), (6, 5)]


def test_validation_dataset_name_builds_the_carve_out(tmp_path):
    raw_fixtures.write_ml100k(tmp_path / "raw" / "movielens-100k", ratings=RATINGS)
    ds = inputs.load_dataset("movielens/100k-user-item-val", data_dir=tmp_path / "tfds", raw_data_dir=tmp_path / "raw")
    for split in ("train", "test"):
        arrays = ds.pair_columns(split, ["user_id", "movie_id"])
        got = sorted((int(u), int(m)) for u, m in zip(arrays["user_id"], arrays["movie_id"]))
        assert got == VALIDATION[split]
    assert ds.num_items == 6 and ds.validation_of == "movielens/100k-user-item"  # the protocol's corpus
    assert ds.metadata["validation_held_out_test"] == len(PROTOCOL_TEST)
    protocol = inputs.load_dataset(
        "movielens/100k-user-item", data_dir=tmp_path / "tfds", raw_data_dir=tmp_path / "raw"
    )
    assert protocol.num_examples("test") == len(PROTOCOL_TEST) and protocol.num_examples("train") == 12


def _pairs(ds, split, q="user_id", i="movie_id"):
    columns = ds.pair_columns(split, [q, i, "timestamp"])
    return sorted(zip(columns[q].tolist(), columns[i].tolist(), columns["timestamp"].tolist()))


def test_generic_view_equals_movielens_native_carve_out(tmp_path):
    raw_fixtures.write_ml100k(tmp_path / "raw" / "movielens-100k", ratings=RATINGS)
    kwargs = dict(data_dir=tmp_path / "tfds", raw_data_dir=tmp_path / "raw")
    native = inputs.load_dataset("movielens/100k-user-item-val", **kwargs)
    generic = inputs.ValidationView("generic-val", inputs.load_dataset("movielens/100k-user-item", **kwargs))
    for split in ("train", "test"):
        assert _pairs(generic, split) == _pairs(native, split)
        assert generic.num_examples(split) == len(VALIDATION[split])
    # The tf.data path agrees with the columnar path.
    got = sorted((int(x["user_id"]), int(x["movie_id"])) for x in generic.pairs("test").as_numpy_iterator())
    assert got == VALIDATION["test"]


def test_validation_split_rule_by_time_and_at_random():
    queries = np.repeat(np.arange(4), [1, 9, 10, 25])
    times = np.arange(len(queries))[::-1].copy()  # newest first in file order
    ties = np.zeros(len(queries), np.int64)
    held = _common.validation_split(queries, times, ties, time_ordered=True)
    for q, n in zip(range(4), [1, 9, 10, 25]):
        mine = held[queries == q]
        assert mine.sum() == math.ceil(0.1 * n)
        # by time: the held-out pairs are the query's latest
        assert times[queries == q][mine].min() > times[queries == q][~mine].max() if (~mine).any() else True
    random_a = _common.validation_split(queries, times, ties, time_ordered=False, seed=0)
    random_b = _common.validation_split(queries, times, ties, time_ordered=False, seed=0)
    random_c = _common.validation_split(queries, times, ties, time_ordered=False, seed=1)
    assert (random_a == random_b).all() and not (random_a == random_c).all()
    assert [random_a[queries == q].sum() for q in range(4)] == [1, 1, 1, 3]


@pytest.mark.timeout(300)
def test_view_of_a_csv_with_a_split_column_is_random_disjoint_and_deterministic(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "csv"
    folder.mkdir()
    lines = ["user,sku,split"] + [
        f"u{u},s{s},{'test' if s % 5 == 0 else 'train'}" for u in range(12) for s in rng.choice(40, 15, replace=False)
    ]
    (folder / "interactions.csv").write_text("\n".join(lines) + "\n")
    (folder / "items.csv").write_text("sku,brand\n" + "\n".join(f"s{s},b{s % 3}" for s in range(40)) + "\n")
    (folder / "spec.yaml").write_text(
        "name: mine\nquery_key: user\nitem_key: sku\nquery_features:\n  - {name: user, kind: categorical}\n"
        "item_features:\n  - {name: sku, kind: categorical}\n  - {name: brand, kind: categorical}\n"
    )
    configs = interactions_csv.make_configs(
        "mine", folder / "interactions.csv", folder / "items.csv", folder / "spec.yaml", split_column="split"
    )
    base = inputs.load_dataset("interactions_csv/mine", data_dir=tmp_path / "tfds", csv_configs=configs)
    view = inputs.load_dataset("interactions_csv/mine-val", data_dir=tmp_path / "tfds")
    assert view.validation_of == "interactions_csv/mine" and not view.time_ordered
    keys = dict(q="user", i="sku")
    train, held, test = (set(_pairs(d, s, **keys)) for d, s in ((view, "train"), (view, "test"), (base, "test")))
    assert not held & train and not held & test and not train & test
    assert held | train == set(_pairs(base, "train", **keys))  # exactly the base train split
    per_query = {}
    for q, _, _ in _pairs(base, "train", **keys):
        per_query[q] = per_query.get(q, 0) + 1
    assert len(held) == sum(math.ceil(0.1 * n) for n in per_query.values())
    again = inputs.load_dataset("interactions_csv/mine-val", data_dir=tmp_path / "tfds")
    assert set(_pairs(again, "test", **keys)) == held  # deterministic
    with pytest.raises(ValueError, match="statistics and MI jobs on interactions_csv/mine"):
        _ = view.pairs_dir
