"""The validation carve-out (``movielens/<release>-<task>-val``): PROTOCOL.md's split applied
again within the protocol's train part, with the protocol's test interactions left out."""
from recsys_ssl.datasets import inputs, movielens

import raw_fixtures

# (user, movie, rating, timestamp). Per user, sorted by (timestamp, movie id):
#   user 1: 1 2 3 4 5 6 (5 and 6 tie at t=50: id order)  protocol test {5, 6}; train part 1 2 3 4
#           -> validation test {4}, validation train {1, 2, 3}
#   user 2: 6 3 1 2 4 (1 and 2 tie at t=7)                protocol test {4};    train part 6 3 1 2
#           -> validation test {2}, validation train {6, 3, 1}
#   user 3: 6 5 4 3 2 1                                   protocol test {2, 1}; train part 6 5 4 3
#           -> validation test {3}, validation train {6, 5, 4}
RATINGS = [(1, 1, 4, 10), (1, 2, 3, 20), (1, 3, 5, 30), (1, 4, 1, 40), (1, 6, 2, 50), (1, 5, 2, 50),
           (2, 6, 3, 5), (2, 3, 3, 6), (2, 2, 4, 7), (2, 1, 4, 7), (2, 4, 5, 9)]
RATINGS += [(3, m, 3, 7 - m) for m in range(1, 7)]
VALIDATION = {
    "train": [(1, 1), (1, 2), (1, 3), (2, 1), (2, 3), (2, 6), (3, 4), (3, 5), (3, 6)],
    "test": [(1, 4), (2, 2), (3, 3)],
}
PROTOCOL_TEST = [(1, 5), (1, 6), (2, 4), (3, 1), (3, 2)]


def _by_split(table, raw):
    user_ids = raw.users["user_id"].astype(int)
    return {split: sorted((int(user_ids[table.query_rows[i]]), int(raw.item_ids[table.item_rows[i]])) for i in rows)
            for split, rows in table.splits.items()}


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
    pairs = {s: sorted((int(ids[item_item.query_rows[i]]), int(ids[item_item.item_rows[i]])) for i in rows)
             for s, rows in item_item.splits.items()}
    assert pairs["test"] == [(1, 2), (3, 4), (4, 3)]
    assert pairs["train"] == [(1, 2), (2, 3), (3, 1), (5, 4), (6, 3), (6, 5)]


def test_validation_dataset_name_builds_the_carve_out(tmp_path):
    raw_fixtures.write_ml100k(tmp_path / "raw" / "movielens-100k", ratings=RATINGS)
    ds = inputs.load_dataset("movielens/100k-user-item-val", data_dir=tmp_path / "tfds", raw_data_dir=tmp_path / "raw")
    for split in ("train", "test"):
        arrays = ds.pair_arrays(split, features=["user_id", "movie_id"])
        got = sorted((int(u), int(m)) for u, m in zip(arrays["user_id"], arrays["movie_id"]))
        assert got == VALIDATION[split]
    assert ds.num_items == 6  # the same corpus as the protocol's dataset
    assert ds.metadata["validation_held_out_test"] == len(PROTOCOL_TEST)
    protocol = inputs.load_dataset("movielens/100k-user-item", data_dir=tmp_path / "tfds", raw_data_dir=tmp_path / "raw")
    assert protocol.num_examples("test") == len(PROTOCOL_TEST) and protocol.num_examples("train") == 12
