"""The numpy evaluation core against an independent brute-force per-query loop and hand-made cases."""

import math

import numpy as np
import pytest

from recsys_ssl import evaluate


def brute_force(queries, items, test_items, exclude, slices, ks, cosine):
    """Per query: score every item in Python, drop exclusions, sort by (-score, index)."""
    per_query = {f"hits@{k}": [] for k in ks} | {f"ap@{k}": [] for k in ks}
    slice_hits = {name: {k: 0 for k in ks} for name in slices}
    slice_total = {name: 0 for name in slices}
    for q, query in enumerate(queries):
        scored = []
        for j, item in enumerate(items):
            if j in set(exclude[q]):
                continue
            score = float(np.dot(query, item))
            if cosine:
                score /= float(np.linalg.norm(query)) * float(np.linalg.norm(item))
            scored.append((-score, j))
        ranking = [j for _, j in sorted(scored)]
        targets = set(test_items[q])
        for name, mask in slices.items():
            slice_total[name] += sum(1 for t in targets if mask[t])
        for k in ks:
            retrieved = ranking[:k]
            found = [j for j in retrieved if j in targets]
            per_query[f"hits@{k}"].append(len(found))
            ap, seen = 0.0, 0
            for i, j in enumerate(retrieved, start=1):
                if j in targets:
                    seen += 1
                    ap += seen / i
            per_query[f"ap@{k}"].append(ap / min(len(targets), k))
            for name, mask in slices.items():
                slice_hits[name][k] += sum(1 for j in found if mask[j])
    sizes = [len(set(t)) for t in test_items]
    expected = {}
    for k in ks:
        expected[f"recall@{k}"] = math.fsum(h / s for h, s in zip(per_query[f"hits@{k}"], sizes)) / len(queries)
        expected[f"map@{k}"] = math.fsum(per_query[f"ap@{k}"]) / len(queries)
        for name in slices:
            total = slice_total[name]
            expected[f"{name}/recall@{k}"] = slice_hits[name][k] / total if total else None
    return expected, per_query


def random_case(rng, num_queries, num_items, dim, dyadic):
    if dyadic:
        # Values in {-2..2}/4: every dot product is exact in float64 whatever the summation
        # order, and many scores tie exactly, which exercises the tie rule.
        queries = rng.integers(-2, 3, size=(num_queries, dim)) / 4.0
        items = rng.integers(-2, 3, size=(num_items, dim)) / 4.0
    else:
        queries = rng.normal(size=(num_queries, dim))
        items = rng.normal(size=(num_items, dim))
    test_items = [rng.choice(num_items, size=rng.integers(1, 6), replace=True).tolist() for _ in range(num_queries)]
    exclude = [rng.choice(num_items, size=rng.integers(0, 12), replace=False).tolist() for _ in range(num_queries)]
    head = rng.random(num_items) < 0.3
    slices = {"head": head, "tail": ~head}
    return queries, items, test_items, exclude, slices


def flat(result, slices, ks):
    out = {}
    for k in ks:
        out[f"recall@{k}"] = result[f"recall@{k}"]
        out[f"map@{k}"] = result[f"map@{k}"]
        for name in slices:
            out[f"{name}/recall@{k}"] = result["slices"][name][f"recall@{k}"]
    return out


@pytest.mark.parametrize("chunk_size", [1, 7, None])
# Largest K 50: ties at the 50th score take the general path; 100 > the 60 items: the whole
# (non-excluded) corpus, never a tie at the threshold.
@pytest.mark.parametrize("ks", [(1, 5, 10, 50), (1, 10, 100)])
def test_matches_brute_force_exactly_with_ties(chunk_size, ks):
    rng = np.random.default_rng(0)
    queries, items, test_items, exclude, slices = random_case(rng, 40, 60, 3, dyadic=True)
    result = evaluate.retrieval_metrics(
        queries,
        items,
        test_items,
        exclude,
        slices,
        ks=ks,
        normalize=False,
        chunk_size=chunk_size,
        return_per_query=True,
    )
    expected, per_query = brute_force(queries, items, test_items, exclude, slices, ks, cosine=False)
    assert flat(result, slices, ks) == expected  # exact, to the last digit
    for key, values in per_query.items():
        assert result["per_query"][key].tolist() == values, key


def test_matches_brute_force_with_cosine_on_gaussian_embeddings():
    rng = np.random.default_rng(1)
    ks = (10, 50, 100)
    queries, items, test_items, exclude, slices = random_case(rng, 30, 150, 8, dyadic=False)
    # Scale rows: cosine must not care.
    scaled_items = items * rng.uniform(0.1, 10.0, size=(len(items), 1))
    result = evaluate.retrieval_metrics(queries, scaled_items, test_items, exclude, slices, ks=ks)
    expected, _ = brute_force(queries, items, test_items, exclude, slices, ks, cosine=True)
    assert flat(result, slices, ks) == expected


def test_hand_made_ranking_recall_and_map():
    # One query along x; items score 1.0, 0.5, 0.5, 0.0, -1.0. Tie 1 vs 2 -> index 1 first.
    query = np.array([[1.0, 0.0]])
    items = np.array([[1.0, 0.0], [0.5, 1.0], [0.5, 2.0], [0.0, 1.0], [-1.0, 0.0]])
    # Ranking by dot: 0, 1, 2, 3, 4. Exclude item 0 -> 1, 2, 3, 4. Targets {2, 4}.
    result = evaluate.retrieval_metrics(query, items, [[2, 4]], [[0]], ks=(1, 2, 4), normalize=False)
    assert result["recall@1"] == 0.0
    assert result["recall@2"] == 0.5
    assert result["recall@4"] == 1.0
    assert result["map@1"] == 0.0  # nothing at rank 1; / min(2, 1)
    assert result["map@2"] == (1 / 2) / 2  # hit at rank 2: P@2 = 1/2
    assert result["map@4"] == (1 / 2 + 2 / 4) / 2  # hits at ranks 2 and 4
    assert result["counts"]["test_interactions"] == 2
    assert result["counts"]["excluded_pairs"] == 1


def test_exclusions_shorten_the_list_and_excluded_targets_are_misses():
    query = np.array([[1.0, 0.0]])
    items = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    # Only item 2 left after excluding 0 and 1; target 1 is excluded, target 2 found at rank 1.
    result = evaluate.retrieval_metrics(query, items, [[1, 2]], [[0, 1]], ks=(10,), normalize=False)
    assert result["recall@10"] == 0.5
    assert result["counts"]["test_items_also_excluded"] == 1


def test_top_k_tie_rule_and_invalid_tail():
    scores = np.array([[0.5, 1.0, 0.5, 0.5, -np.inf], [-np.inf, -np.inf, 2.0, -np.inf, -np.inf]])
    indices, valid = evaluate.top_k(scores, 4)
    assert indices[0].tolist() == [1, 0, 2, 3]
    assert valid[0].tolist() == [True] * 4
    assert indices[1, 0] == 2 and valid[1].tolist() == [True, False, False, False]
    # Ties at the threshold: the lower index wins the last places.
    ties = np.array([[0.5, 1.0, 0.5, 0.5], [0.0, 0.0, 0.0, 0.0]])
    assert evaluate.top_k(ties, 2)[0].tolist() == [[1, 0], [0, 1]]
    assert evaluate.top_k(ties, 3)[0].tolist() == [[1, 0, 2], [0, 1, 2]]


def test_bad_inputs_fail_clearly():
    q, x = np.ones((2, 3)), np.ones((4, 3))
    with pytest.raises(ValueError, match="empty test set"):
        evaluate.retrieval_metrics(q, x, [[0], []])
    with pytest.raises(ValueError, match=r"test_items\[1\] has item index 9"):
        evaluate.retrieval_metrics(q, x, [[0], [9]])
    with pytest.raises(ValueError, match="2 test sets for 3 queries"):
        evaluate.retrieval_metrics(np.ones((3, 3)), x, [[0], [1]])
    with pytest.raises(ValueError, match="NaN"):
        evaluate.top_k(np.array([[np.nan, 1.0]]), 1)


# -- slices ----------------------------------------------------------------------------------


def test_head_tail_on_a_hand_made_corpus():
    # ids as strings: numeric order puts "9" before "10" on count ties.
    ids = ["10", "9", "3", "4", "5", "6", "7", "8", "1", "2"]
    counts = [5, 5, 7, 0, 1, 1, 0, 2, 3, 0]
    # Popularity: "3"(7), then count 5: "9" before "10", then "1"(3), "8"(2), "5"(1), "6"(1), zeros "2","4","7".
    order = evaluate.popularity_order(counts, ids)
    assert [ids[i] for i in order] == ["3", "9", "10", "1", "8", "5", "6", "2", "4", "7"]
    assert evaluate.head_mask(counts, 0.2, ids).tolist() == [False, True, True] + [False] * 7  # "3", "9"
    head10 = evaluate.head_mask(counts, 0.1, ids)
    assert np.flatnonzero(head10).tolist() == [2]
    buckets = evaluate.popularity_buckets(counts, ids, num_buckets=5)
    assert [buckets[ids.index(i)] for i in ["3", "9", "10", "1", "8", "5", "6", "2", "4", "7"]] == [
        0,
        0,
        1,
        1,
        2,
        2,
        3,
        3,
        4,
        4,
    ]


def test_head_counts_follow_the_protocol():
    assert evaluate.head_item_count(1682, 0.2) == 336
    assert evaluate.head_item_count(1682, 0.1) == 168
    assert evaluate.head_item_count(100, 0.29) == 29
    with pytest.raises(ValueError):
        evaluate.head_item_count(10, 1.5)


def test_string_ids_sort_as_strings():
    order = evaluate.popularity_order([1, 1, 1], ["b", "a10", "a9"])
    assert order.tolist() == [1, 2, 0]


def test_slice_recall_is_a_micro_average():
    # Two queries; head = {0}. Query A: targets {0, 1}, retrieves 0 at rank 1 (hit, head) and 1
    # not in top-1. Query B: targets {1}, retrieves 1 (hit, tail).
    items = np.array([[1.0, 0.0], [0.0, 1.0]])
    queries = np.array([[1.0, 0.0], [0.0, 1.0]])
    head = np.array([True, False])
    result = evaluate.retrieval_metrics(queries, items, [[0, 1], [1]], slices={"head": head, "tail": ~head}, ks=(1,))
    assert result["slices"]["head"] == {"recall@1": 1.0, "test_interactions": 1, "items": 1}
    assert result["slices"]["tail"]["recall@1"] == 0.5  # 1 hit of 2 tail interactions (micro)
    assert result["recall@1"] == (0.5 + 1.0) / 2  # macro over queries
    empty = evaluate.retrieval_metrics(queries, items, [[1], [1]], slices={"head": head}, ks=(1,))
    assert empty["slices"]["head"]["recall@1"] is None


def test_popularity_slices_partition_the_corpus():
    rng = np.random.default_rng(3)
    counts = rng.integers(0, 20, size=1682)
    slices = evaluate.popularity_slices(counts, [str(i + 1) for i in range(1682)], head_fraction=0.2)
    assert slices["head"].sum() == 336 and (slices["head"] ^ slices["tail"]).all()
    assert slices["head_10pct"].sum() == 168 and (slices["head_20pct"] == slices["head"]).all()
    assert (slices["head_10pct"] <= slices["head"]).all()  # the top 10% is inside the top 20%
    deciles = np.stack([slices[f"popularity_{b:02d}"] for b in range(10)])
    assert (deciles.sum(axis=0) == 1).all()
    assert sorted(deciles.sum(axis=1).tolist()) == [168] * 8 + [169] * 2
    # The most popular decile holds the top items; the head is exactly the top 336.
    assert counts[slices["popularity_00"]].min() >= counts[slices["popularity_09"]].max()


# -- interactions -> queries ----------------------------------------------------------------


def test_prepare_queries_user_item_excludes_train_items_and_counts_drops():
    item_ids = ["10", "20", "30", "40"]
    train = (["u1", "u1", "u2", "u1"], ["10", "20", "20", "99"])  # "99" is not in the corpus
    test = ([b"u2", b"u1", b"u1", b"u3", b"u1"], [b"30", b"40", b"30", b"77", b"40"])
    prepared = evaluate.prepare_queries(test, train, item_ids, evaluate.USER_ITEM)
    assert prepared["queries"].tolist() == [b"u1", b"u2"]  # u3 has no known test item
    assert [t.tolist() for t in prepared["test_items"]] == [[3, 2, 3], [2]]
    assert [sorted(e.tolist()) for e in prepared["exclude"]] == [[0, 1], [1]]
    assert prepared["first_pair"].tolist() == [1, 0]  # u1 first appears at pair 1, u2 at pair 0
    assert prepared["train_counts"].tolist() == [1, 2, 0, 0]
    assert prepared["dropped"] == {
        "test_pairs_item_not_in_corpus": 1,
        "train_pairs_item_not_in_corpus": 1,
        "queries_without_known_test_item": 1,
    }


def test_prepare_queries_item_item_excludes_the_seed_only():
    item_ids = [b"1", b"2", b"3"]
    prepared = evaluate.prepare_queries(
        ([b"1", b"2", b"5"], [b"2", b"3", b"1"]), ([b"1"], [b"3"]), item_ids, evaluate.ITEM_ITEM
    )
    assert prepared["queries"].tolist() == [b"1", b"2", b"5"]
    assert [e.tolist() for e in prepared["exclude"]] == [[0], [1], []]  # seed "5" is not an item


def test_mode_is_inferred_from_the_spec_keys():
    assert evaluate.resolve_mode("auto", "user_id", "movie_id") == evaluate.USER_ITEM
    assert evaluate.resolve_mode("auto", "seed_movie_id", "movie_id") == evaluate.ITEM_ITEM
    assert evaluate.resolve_mode("item-item", "user_id", "movie_id") == evaluate.ITEM_ITEM
    with pytest.raises(ValueError, match="mode"):
        evaluate.resolve_mode("users", "user_id", "movie_id")


def test_duplicate_corpus_ids_fail():
    with pytest.raises(ValueError, match="1 duplicate item ids"):
        evaluate.prepare_queries(([], []), ([], []), ["a", "b", "a"], evaluate.USER_ITEM)


def test_format_table_and_json_round_trip(tmp_path):
    queries = np.eye(3)
    head = np.array([True, False, False])
    result = evaluate.retrieval_metrics(
        queries, np.eye(3), [[0], [1], [2]], slices={"head": head, "tail": ~head}, ks=(1, 2)
    )
    table = evaluate.format_table(result).splitlines()
    assert table[0].split() == ["slice", "pairs", "recall@1", "recall@2", "map@1", "map@2"]
    assert table[1].split() == ["overall", "3", "1.0000", "1.0000", "1.0000", "1.0000"]
    assert table[2].split()[:4] == ["head", "1", "1.0000", "1.0000"] and table[2].split()[4:] == ["-", "-"]
    by_method = evaluate.format_table(by_method={"baseline": result, "ssl_cfm": result}).splitlines()
    assert by_method[0].split() == ["method"] + table[0].split() and len(by_method) == 7
    assert by_method[4].split() == ["ssl_cfm"] + table[1].split()
    path = evaluate.write_metrics(tmp_path, "exp", result)
    assert path == tmp_path / "eval" / "exp" / "metrics.json"
    import json

    assert json.loads(path.read_text())["slices"]["tail"]["recall@1"] == 1.0


def test_prepare_queries_per_pair_makes_one_query_per_test_pair():
    item_ids = [b"1", b"2", b"3"]
    test = ([b"1", b"1", b"2", b"3"], [b"2", b"3", b"9", b"1"])  # the third pair's item is unknown
    prepared = evaluate.prepare_queries(test, ([], []), item_ids, evaluate.ITEM_ITEM, per_pair=True)
    assert prepared["queries"].tolist() == [b"1", b"1", b"3"]
    assert prepared["first_pair"].tolist() == [0, 1, 3]
    assert [t.tolist() for t in prepared["test_items"]] == [[1], [2], [0]]
    assert [e.tolist() for e in prepared["exclude"]] == [[0], [0], [2]]
    assert prepared["dropped"]["test_pairs_item_not_in_corpus"] == 1
    assert prepared["dropped"]["queries_without_known_test_item"] == 1
