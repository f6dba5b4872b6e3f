"""The streamed, disk-spilled synthetic pairs (datasets/spilled_pairs.py, synthetic_catalog.spill_pairs)
equal the all-at-once generation and split, piece sizes whatever they are."""

import numpy as np
import pytest

from recsys_ssl.datasets import _common, spilled_pairs
from recsys_ssl.datasets import synthetic_catalog as sc


@pytest.mark.parametrize("size", [1, 7, 1000, 4096, 5_000, 12_345])
def test_pair_chunks_are_numpy_s_three_whole_draws(size):
    items = sc.generate_items(800, seed=4)
    num_pairs = 12_345
    model = sc.latent_model(items, 4, 60)
    rng = sc.latent_model(items, 4, 60).rng  # the same stream, drawn as generate_pairs draws it
    ranks = rng.choice(800, size=num_pairs, p=sc._zipf_probs(800, 1.0))
    uniforms = rng.random(num_pairs)
    timestamps = sc.TIME_START + rng.integers(0, sc.TIME_SPAN, size=num_pairs, dtype=np.int64)
    pieces = list(sc.pair_chunks(model, num_pairs, 1.0, size))
    assert [lo for lo, *_ in pieces] == list(range(0, num_pairs, size))
    np.testing.assert_array_equal(np.concatenate([p[1] for p in pieces]), model.rank_to_item[ranks])
    np.testing.assert_array_equal(np.concatenate([p[2] for p in pieces]), uniforms)
    np.testing.assert_array_equal(np.concatenate([p[3] for p in pieces]), timestamps)


def test_a_positioned_generator_takes_over_the_buffered_32_bit_half():
    rng = np.random.default_rng(9)
    rng.integers(0, 10, size=3)  # an odd number of 32-bit draws: half of a 64-bit output is buffered
    assert rng.bit_generator.state["has_uint32"] == 1
    positioned = sc._positioned(rng, 2 * 101)
    rng.random(2 * 101)
    np.testing.assert_array_equal(positioned.integers(0, 1000, size=50), rng.integers(0, 1000, size=50))


def _columns(parts):
    got = [(t.query_rows[r], t.item_rows[r], t.timestamps[r]) for t, r in parts]
    return [np.concatenate(column) for column in zip(*got)] if got else []


CASES = [
    # items, queries, pairs, softmax chunk (None: generate_pairs' default), window, law
    (3_000, 300, 50_000, None, 4_096, {}),
    (3_000, 300, 50_000, 37, 2_000, {}),  # many softmax chunks, groups of several
    (2_000, 50, 30_000, 400, 1_000, dict(temperature=0.03, unit_queries=True, item_noise=0.1)),  # heavy chunks
    (500, 100, 3_000, None, 1 << 18, {}),  # one window
]


@pytest.mark.parametrize("num_items,num_queries,num_pairs,chunk_size,window,law", CASES)
def test_spilled_pairs_equal_the_in_memory_table(tmp_path, num_items, num_queries, num_pairs, chunk_size, window, law):
    items = sc.generate_items(num_items, seed=2)
    keywords = dict(seed=2, num_queries=num_queries, chunk_size=chunk_size, **law)
    reference = sc.generate_pairs(items, num_pairs, **keywords)
    rule = _common.SplitRule(2, groups=reference.query_rows, ties=reference.item_rows)
    table = _common.PairsTable(reference.query_rows, reference.item_rows, reference.timestamps, rule=rule)
    queries, spilled = sc.spill_pairs(items, num_pairs, parent=str(tmp_path), window=window, **keywords)
    assert list(queries["query_id"]) == list(reference.queries["query_id"])
    assert spilled.split_counts() == table.split_counts()
    assert spilled.num_pairs == table.num_pairs == num_pairs
    assert spilled.head_share(num_items) == table.head_share(num_items)
    assert spilled.counts["queries_with_pairs"] == len(np.unique(reference.query_rows))
    assert spilled.items_with_pairs == len(np.unique(reference.item_rows))
    for split in _common.PAIRS_SPLITS:
        expected = _columns(table.split_parts(split, 1_000))
        for got, want in zip(_columns(spilled.split_parts(split, 777)), expected, strict=True):
            np.testing.assert_array_equal(got, want)
    assert any(tmp_path.iterdir())
    spilled.close()
    assert not any(tmp_path.iterdir())


def test_spill_buckets_keep_row_order_and_read_empty_buckets(tmp_path):
    spill = spilled_pairs.Spill(str(tmp_path))
    spill.partition("b", np.array([2, 0, 2, 2]), {"x": np.array([10, 11, 12, 13])})
    spill.partition("b", np.array([0, 2]), {"x": np.array([14, 15])})
    assert spill.bucket("b", 2, ["x"])["x"].tolist() == [10, 12, 13, 15]
    assert spill.bucket("b", 2, ["x"], 1, 3)["x"].tolist() == [12, 13]
    assert spill.bucket("b", 1, ["x"])["x"].tolist() == [] and spill.bucket_length("b", 0, "x") == 2
    spill.close()
    assert not any(tmp_path.iterdir())
