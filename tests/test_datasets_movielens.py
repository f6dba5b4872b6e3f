"""MovieLens builder: raw parsing (100K and 1M formats), the protocol split, item->item pairs, bad input."""

import numpy as np
import pytest
import raw_fixtures

from recsys_ssl.datasets import inputs, movielens


def _pairs_by_split(table):
    return {
        split: sorted((int(table.query_rows[i]), int(table.item_rows[i])) for i in rows)
        for split, rows in table.splits.items()
    }


@pytest.fixture(scope="module")
def ml100k_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("raw")
    raw_fixtures.write_ml100k(root / "movielens-100k")
    return root


def test_ml100k_raw_features(ml100k_root):
    raw = movielens.read_raw("100k", ml100k_root / "movielens-100k")
    items = {k: list(v) for k, v in raw.items.items()}
    assert items["movie_id"] == ["1", "2", "3", "4", "5", "6"]
    assert items["movie_genres"][0] == ["Animation", "Children's", "Comedy"]
    assert items["movie_title_tokens"][2] == ["shawshank", "redemption", "the"]
    assert items["movie_title_tokens"][4] == ["bel", "ami", "amélie"]  # latin-1 decoded
    assert items["movie_release_year"][:4] == ["1995", "1995", "1994", ""]  # item 4: no date
    assert items["movie_release_decade"][:5] == ["1990s", "1990s", "1990s", "", "1980s"]
    users = {k: list(v) for k, v in raw.users.items()}
    assert users == {
        "user_id": ["1", "2", "3"],
        "bucketized_user_age": ["18", "50", "1"],
        "user_gender": ["M", "F", "M"],
        "user_occupation_text": ["technician", "other", "student"],
        "user_zip_prefix": ["857", "940", "T8H"],
    }
    assert len(raw.user_rows) == 16 and raw.dropped == {}


def test_protocol_split_user_item(ml100k_root):
    raw = movielens.read_raw("100k", ml100k_root / "movielens-100k")
    table = movielens.user_item_pairs(raw)
    by_split = _pairs_by_split(table)
    # Rows: user r = user id r+1, movie r = movie id r+1. Test: the last ceil(0.2 n_u) by (time, movie id).
    assert by_split["test"] == [(0, 4), (0, 5), (1, 4), (2, 4)]
    assert len(by_split["train"]) == 12
    assert set(by_split["train_10pct"]) <= set(by_split["train"]) and len(by_split["train_10pct"]) == 1


def test_recent_movies_see_only_the_past_and_test_pairs_only_the_train_part(ml100k_root):
    raw = movielens.read_raw("100k", ml100k_root / "movielens-100k")
    table = movielens.user_item_pairs(raw, recent_length=2)
    recent = table.pair_columns[movielens.RECENT_FEATURE]
    history = {(int(q), int(i)): list(h) for q, i, h in zip(table.query_rows, table.item_rows, recent)}
    # User 1 watched movies 1, 2, 3, 4 (train) then 5, 6 (test); user 3 watched 2, 1, 3, 4 then 5.
    assert [history[(0, i)] for i in range(4)] == [[], ["1"], ["2", "1"], ["3", "2"]]
    assert history[(0, 4)] == history[(0, 5)] == ["4", "3"]  # movie 5 is NOT in movie 6's history
    assert [history[(2, i)] for i in (1, 0, 2, 3, 4)] == [[], ["2"], ["1", "2"], ["3", "1"], ["4", "3"]]


def test_item_item_pairs_follow_time_and_target_rule(ml100k_root):
    raw = movielens.read_raw("100k", ml100k_root / "movielens-100k")
    table = movielens.item_item_pairs(raw)
    by_split = _pairs_by_split(table)
    # (seed row, target row) = (movie id - 1, movie id - 1); user 1 tie at t=300 ordered 2 then 3.
    expected_train = [
        (0, 1),
        (1, 2),
        (2, 3),  # user 1: 1->2->3->4
        (0, 1),
        (1, 2),
        (2, 3),  # user 2: 1->2->3->4
        (1, 0),
        (0, 2),
        (2, 3),
    ]  # user 3: 2->1->3->4
    expected_test = [(3, 4), (4, 5), (3, 4), (3, 4)]  # targets in the users' test parts
    assert by_split["train"] == sorted(expected_train)
    assert by_split["test"] == sorted(expected_test)


def test_ml1m_format_parses(tmp_path):
    folder = raw_fixtures.write_ml1m(tmp_path / "movielens-1m")
    raw = movielens.read_raw("1m", folder)
    assert list(raw.items["movie_genres"][2]) == ["Adventure", "Sci-Fi"]
    assert list(raw.items["movie_release_year"]) == ["1995"] * 3
    assert raw.items["movie_title_tokens"][2] == ["cité", "des", "enfants", "perdus", "la"]
    assert list(raw.users["user_occupation_text"]) == ["K-12 student", "self-employed"]
    assert list(raw.users["bucketized_user_age"]) == ["1", "56"]
    assert list(raw.users["user_gender"]) == ["F", "M"]
    by_split = _pairs_by_split(movielens.user_item_pairs(raw))
    assert by_split["test"] == [(0, 1), (1, 1)]  # both users' latest movie is movie 2


def test_tfds_build_100k_and_1m(ml100k_root, tmp_path):
    tfds_dir = tmp_path / "tfds"
    ds = inputs.load_dataset("movielens/100k-user-item", data_dir=tfds_dir, raw_data_dir=ml100k_root)
    assert {s: ds.num_examples(s) for s in inputs.SPLITS} == {"train": 12, "train_10pct": 1, "test": 4}
    assert ds.num_items == 6
    assert ds.metadata["counts"]["interactions"] == 16 and ds.metadata["counts"]["users"] == 3
    test = inputs.dataset_arrays(ds.pairs("test"))
    assert sorted(zip(test["user_id"], test["movie_id"])) == [(b"1", b"5"), (b"1", b"6"), (b"2", b"5"), (b"3", b"5")]
    first = {k: v[0] for k, v in test.items()}
    assert set(first) == set(ds.spec.feature_names) | {"timestamp"}
    items = ds.item_arrays()
    assert list(items["movie_id"]) == [b"1", b"2", b"3", b"4", b"5", b"6"]
    assert items["movie_genres"][3] == [b"unknown"]

    raw_fixtures.write_ml1m(tmp_path / "raw1m" / "movielens-1m")
    ds = inputs.load_dataset("movielens/1m-item-item", data_dir=tfds_dir, raw_data_dir=tmp_path / "raw1m")
    test = inputs.dataset_arrays(ds.pairs("test"))
    assert sorted(zip(test["seed_movie_id"], test["movie_id"])) == [(b"1", b"2"), (b"3", b"2")]
    assert ds.num_examples("train") == 2 and ds.num_examples("train_10pct") == 1
    assert ds.spec.query_key == "seed_movie_id"


def test_missing_raw_file_names_file_and_manual_dir(tmp_path):
    folder = raw_fixtures.write_ml100k(tmp_path / "movielens-100k")
    (folder / "u.user").unlink()
    with pytest.raises(FileNotFoundError, match=r"u\.user.*manual_dir .*movielens-100k"):
        movielens.read_raw("100k", folder)


def test_cli_reports_missing_manual_dir(tmp_path, capsys):
    from recsys_ssl import cli

    rc = cli.main(
        [
            "data",
            "--dataset",
            "movielens/1m-user-item",
            "--data-dir",
            str(tmp_path),
            "--tfds-dir",
            str(tmp_path / "tfds"),
        ]
    )
    assert rc == 2
    assert f"manual_dir {tmp_path / 'movielens-1m'} does not exist" in capsys.readouterr().err


@pytest.mark.parametrize(
    "bad_line, message",
    [
        ("1\t2\t3", r"u\.data:17: expected 4 fields"),
        ("1\tx\t3\t5", r"u\.data:17: movie id must be an integer, got 'x'"),
    ],
)
def test_malformed_row_names_file_and_line(tmp_path, bad_line, message):
    folder = raw_fixtures.write_ml100k(tmp_path / "movielens-100k", extra_rating_lines=(bad_line,))
    with pytest.raises(ValueError, match=message):
        movielens.read_raw("100k", folder)


def test_unknown_ids_are_counted_not_silently_dropped(tmp_path):
    folder = raw_fixtures.write_ml100k(tmp_path / "movielens-100k", extra_rating_lines=("1\t99\t3\t5", "42\t1\t3\t5"))
    raw = movielens.read_raw("100k", folder)
    assert len(raw.user_rows) == 16
    assert raw.dropped == {"unknown movie id (not in u.item)": 1, "unknown user id (not in u.user)": 1}


def test_duplicate_movie_id_is_an_error(tmp_path):
    folder = raw_fixtures.write_ml100k(
        tmp_path / "movielens-100k", extra_item_lines=("3|Again (1990)|01-Jan-1990||x|" + "|".join(["0"] * 19),)
    )
    with pytest.raises(ValueError, match=r"u\.item:7: duplicate movie id 3"):
        movielens.read_raw("100k", folder)


def test_age_bucket_matches_tfds_buckets():
    ages = [1, 17, 18, 24, 25, 34, 35, 44, 45, 49, 50, 55, 56, 73]
    assert [movielens.age_bucket(a) for a in ages] == [
        "1",
        "1",
        "18",
        "18",
        "25",
        "25",
        "35",
        "35",
        "45",
        "45",
        "50",
        "50",
        "56",
        "56",
    ]
    assert np.all(movielens._common.ceil_fraction(np.array([5, 20, 35, 36]), 0.2) == [1, 4, 7, 8])
