"""The shared split helpers against a plain-Python per-query reference."""

import collections
import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from recsys_ssl.datasets import _common


def _reference_test_set(queries, timestamps, items):
    by_query = collections.defaultdict(list)
    for i, (q, t, item) in enumerate(zip(queries, timestamps, items)):
        by_query[q].append((t, item, i))
    test = set()
    for rows in by_query.values():
        rows.sort()
        n_test = -(-len(rows) // 5)  # ceil(0.2 n)
        test.update(i for _, _, i in rows[len(rows) - n_test :])
    return test


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 20), st.integers(0, 9)), max_size=80))
def test_temporal_split_matches_reference(rows):
    queries = np.array([r[0] for r in rows], dtype=np.int64)
    timestamps = np.array([r[1] for r in rows], dtype=np.int64)
    items = np.array([r[2] for r in rows], dtype=np.int64)
    _, is_test, position = _common.temporal_split(queries, timestamps, items)
    assert set(np.flatnonzero(is_test)) == _reference_test_set(queries, timestamps, items)
    for q in set(queries.tolist()):  # positions are each query's time ranks 0..n-1
        assert sorted(position[queries == q].tolist()) == list(range(int(np.sum(queries == q))))


def test_ceil_fraction_is_exact_where_floats_are_not():
    n = np.arange(1, 200)
    assert _common.ceil_fraction(n, 0.2).tolist() == [(k + 4) // 5 for k in n]
    assert _common.ceil_fraction(np.array([100, 180]), 0.55).tolist() == [55, 99]
    assert math.ceil(0.55 * 100) == 56  # the float trap the integer version avoids


def test_ten_percent_sample_is_uniform_subset_and_seeded():
    a, b = _common.sample_indices(1000, 0.1, seed=3), _common.sample_indices(1000, 0.1, seed=3)
    assert len(a) == 100 and len(set(a.tolist())) == 100 and np.array_equal(a, b)
    assert not np.array_equal(a, _common.sample_indices(1000, 0.1, seed=4))
    assert len(_common.sample_indices(4, 0.1, seed=0)) == 1 and len(_common.sample_indices(0, 0.1, seed=0)) == 0
    # Uniform: over many seeds every index is picked about 10% of the time.
    hits = np.zeros(50)
    for seed in range(400):
        hits[_common.sample_indices(50, 0.1, seed)] += 1
    assert np.all(np.abs(hits / 400 - 0.1) < 0.06)
