"""synthetic_catalog: determinism, the Zipf law, planted feature groups, feature-driven relevance, TFDS build."""

import collections
import itertools

import numpy as np
import pytest

from recsys_ssl.datasets import inputs
from recsys_ssl.datasets import synthetic_catalog as sc


def _numpy_mi(a, b) -> float:
    """Plug-in MI in nats; a multi-valued item spreads its unit mass evenly over its value pairs."""
    joint = collections.Counter()
    for va, vb in zip(a, b):
        la = (va if isinstance(va, list) else [va]) or [b""]
        lb = (vb if isinstance(vb, list) else [vb]) or [b""]
        weight = 1.0 / (len(la) * len(lb))
        for x in la:
            for y in lb:
                joint[x, y] += weight
    n = sum(joint.values())
    pa, pb = collections.Counter(), collections.Counter()
    for (x, y), c in joint.items():
        pa[x] += c
        pb[y] += c
    return sum(c / n * np.log(c * n / (pa[x] * pb[y])) for (x, y), c in joint.items())


def test_generation_is_deterministic_by_seed():
    a, b, c = sc.generate_items(300, seed=3), sc.generate_items(300, seed=3), sc.generate_items(300, seed=4)
    for name in sc.ITEM_FEATURES:
        assert list(a[name]) == list(b[name])
    assert list(a["developer"]) != list(c["developer"])
    p1, p2 = sc.generate_pairs(a, 1000, seed=3, num_queries=50), sc.generate_pairs(b, 1000, seed=3, num_queries=50)
    np.testing.assert_array_equal(p1.item_rows, p2.item_rows)
    np.testing.assert_array_equal(p1.query_rows, p2.query_rows)


def test_item_layout_matches_item_arrays_contract():
    items = sc.generate_items(200)
    assert set(items) == set(sc.ITEM_FEATURES) == set(sc.spec().item_feature_names)
    assert len(set(items["item_id"])) == 200
    for name, column in items.items():
        assert column.dtype == object and len(column) == 200
        if name in sc.MULTI_VALUED:
            assert all(isinstance(v, list) and v and all(isinstance(x, bytes) for x in v) for v in column)
        else:
            assert all(isinstance(v, bytes) for v in column)


@pytest.mark.parametrize("exponent", [0.8, 1.2])
def test_popularity_follows_configured_zipf(exponent):
    items = sc.generate_items(5_000, seed=1)
    pairs = sc.generate_pairs(items, 200_000, seed=1, zipf_exponent=exponent, num_queries=200)
    counts = np.sort(np.bincount(pairs.item_rows, minlength=5_000))[::-1]
    ranks = np.arange(1, 501)  # ranks 1..N/10: enough counts per rank for a log-log fit
    slope = np.polyfit(np.log(ranks), np.log(counts[:500]), 1)[0]
    assert abs(-slope - exponent) < 0.1, (slope, exponent)
    # The recorded ranks are the law's ranks: rank-1 item count ~ N * p(1).
    top = np.flatnonzero(pairs.item_ranks == 0)[0]
    p1 = 1.0 / np.sum(np.arange(1, 5_001, dtype=float) ** -exponent)
    assert abs(np.sum(pairs.item_rows == top) / 200_000 - p1) < 5 * np.sqrt(p1 / 200_000)


def test_planted_groups_are_each_features_top_mi_partner():
    items = sc.generate_items(10_000)
    names = [n for n in sc.ITEM_FEATURES if n != "item_id"]
    mi = np.zeros((len(names), len(names)))
    for i, j in itertools.combinations(range(len(names)), 2):
        mi[i, j] = mi[j, i] = _numpy_mi(items[names[i]], items[names[j]])
    group_of = {f: g for g in sc.PLANTED_GROUPS for f in g}
    for i, name in enumerate(names):
        if name in group_of:
            partner = names[int(np.argmax(mi[i]))]
            assert partner in group_of[name], (name, partner, mi[i])
    # Not copies: a planted pair shares far less than the feature's entropy.
    category = names.index("category")
    assert mi[category, names.index("subcategory")] < 0.9 * _numpy_mi(items["category"], items["category"])


def test_item_features_drive_which_queries_pick_an_item():
    items = sc.generate_items(2_000, seed=2)
    pairs = sc.generate_pairs(items, 40_000, seed=2, num_queries=300)
    segments = pairs.queries["query_segment"][pairs.query_rows]
    categories = items["category"][pairs.item_rows]
    observed = _numpy_mi(list(segments), list(categories))
    shuffled = _numpy_mi(list(np.random.default_rng(0).permutation(segments)), list(categories))
    assert observed > 10 * shuffled
    # Queries prefer items of their own country (the shared latent table).
    same_country = np.mean(pairs.queries["query_country"][pairs.query_rows] == items["country"][pairs.item_rows])
    baseline = np.mean(
        np.random.default_rng(1).permutation(pairs.queries["query_country"][pairs.query_rows])
        == items["country"][pairs.item_rows]
    )
    assert same_country > 1.3 * baseline


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return inputs.load_dataset("synthetic_catalog/tiny", data_dir=tmp_path_factory.mktemp("tfds"))


def test_tfds_tiny_build_splits_and_corpus(tiny):
    size = dict(zip(("num_items", "num_queries", "num_pairs"), sc.SIZES["tiny"]))
    assert tiny.num_items == size["num_items"]
    counts = {s: tiny.num_examples(s) for s in inputs.SPLITS}
    assert counts["train"] + counts["test"] == size["num_pairs"]
    assert counts["train_10pct"] == round(0.1 * counts["train"])
    assert tiny.metadata["planted_groups"] == sc.PLANTED_GROUPS and tiny.metadata["zipf_exponent"] == 1.0

    corpus = tiny.item_arrays()
    expected = sc.generate_items(size["num_items"])
    for name in sc.ITEM_FEATURES:
        assert list(corpus[name]) == list(expected[name])

    train, test, sample = (inputs.dataset_arrays(tiny.pairs(s)) for s in ("train", "test", "train_10pct"))
    # Every pair carries exactly its item's corpus features.
    row_of = {item_id: i for i, item_id in enumerate(corpus["item_id"])}
    for k in range(0, len(test["item_id"]), 97):
        row = row_of[test["item_id"][k]]
        assert test["tags"][k] == corpus["tags"][row] and test["developer"][k] == corpus["developer"][row]
    # Per query, every test pair is no older than any train pair.
    last_train = collections.defaultdict(int)
    for q, t in zip(train["query_id"], train["timestamp"]):
        last_train[q] = max(last_train[q], t)
    assert all(t >= last_train[q] for q, t in zip(test["query_id"], test["timestamp"]))
    keys = lambda a: set(zip(a["query_id"], a["item_id"], a["timestamp"]))  # noqa: E731
    assert keys(sample) <= keys(train)


def test_tail_items_are_learnable_from_features():
    """Scoring items by the latent model's feature term alone finds held-out tail items far above chance."""
    num_items, k = 2_000, 50
    items = sc.generate_items(num_items, seed=5)
    pairs = sc.generate_pairs(items, 20_000, seed=5, num_queries=300)
    _, is_test, _ = sc._common.temporal_split(pairs.query_rows, pairs.timestamps, pairs.item_rows)
    train_counts = np.bincount(pairs.item_rows[~is_test], minlength=num_items)
    tail = train_counts <= np.sort(train_counts)[::-1][num_items // 5]  # outside the top 20%
    scores = sc.query_latents(pairs.queries, seed=5) @ sc.item_latents(items, seed=5).T  # [queries, items]
    top_k = np.argpartition(-scores, k, axis=1)[:, :k]
    in_top = np.zeros_like(scores, dtype=bool)
    np.put_along_axis(in_top, top_k, True, axis=1)
    test_tail = is_test & tail[pairs.item_rows]
    recall = in_top[pairs.query_rows[test_tail], pairs.item_rows[test_tail]].mean()
    assert recall > 5 * k / num_items, recall


def _item_latents_whole(items, seed):
    """item_latents as first written: each feature's [items, 16] addend made whole (the reference)."""
    n = len(items["item_id"])
    x = np.random.default_rng([seed, 3]).normal(0.0, sc.ITEM_NOISE / np.sqrt(sc.LATENT_DIM), (n, sc.LATENT_DIM))
    for name, weight in sc.LATENT_WEIGHTS.items():
        if name not in sc.MULTI_VALUED:
            x += sc._single_latents(seed, name, items[name], weight)
            continue
        column = items[name]
        lengths = np.fromiter((len(v) for v in column), dtype=np.int64, count=len(column))
        flat = np.array([v for values in column for v in values], dtype=bytes)
        out = np.zeros((len(column), sc.LATENT_DIM))
        values, codes = np.unique(flat, return_inverse=True)
        rows = np.repeat(np.arange(len(column)), lengths)
        np.add.at(out, rows, sc._value_latents(seed, name, values, weight)[codes.ravel()])
        x += out / np.maximum(lengths, 1)[:, None]
    return x


@pytest.mark.parametrize("step", [7, 1 << 16])
def test_item_latents_in_row_slices_are_the_whole_sums_bit_for_bit(monkeypatch, step):
    items = sc.generate_items(3_000, seed=2)
    monkeypatch.setattr(sc, "LATENT_SLICE", step)
    np.testing.assert_array_equal(sc.item_latents(items, seed=2), _item_latents_whole(items, seed=2))
