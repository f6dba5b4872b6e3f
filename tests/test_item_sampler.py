"""The SSL batch: uniform over the item corpus (not the training distribution), no repeats in a batch."""

from __future__ import annotations

import collections

import numpy as np
import pytest
from model_fixtures import SPEC, make_items, make_pairs

from recsys_ssl.datasets import item_sampler


def _erfc_p(z: float) -> float:
    import math

    return 0.5 * math.erfc(z / math.sqrt(2))


def test_ssl_batches_are_uniform_over_the_corpus_not_the_training_distribution():
    items = make_items(96)
    pairs = make_pairs(items, 4000)
    batches = item_sampler.uniform_item_batches(items, SPEC, batch_size=24, seed=3).take(400)
    counts = collections.Counter()
    for batch in batches.as_numpy_iterator():
        ids = batch["item_id"]
        assert len(set(ids)) == len(ids)  # without replacement within a batch
        counts.update(ids)
    ssl = np.array([counts[i] for i in items["item_id"]], float)
    assert ssl.sum() == 400 * 24
    assert _erfc_p(_wilson_hilferty(ssl)) > 0.001  # consistent with uniform
    # The training pairs' item marginal is far from uniform (power law): the same test rejects it.
    train_counts = collections.Counter(pairs["item_id"])
    train = np.array([train_counts[i] for i in items["item_id"]], float)
    assert _erfc_p(_wilson_hilferty(train)) < 1e-6


def _wilson_hilferty(counts: np.ndarray) -> float:
    """The chi-square uniformity statistic as an approximately standard-normal z."""
    expected = counts.sum() / len(counts)
    statistic = ((counts - expected) ** 2 / expected).sum()
    k = len(counts) - 1
    return ((statistic / k) ** (1 / 3) - (1 - 2 / (9 * k))) / np.sqrt(2 / (9 * k))


def test_batches_are_padded_like_training_batches():
    items = make_items(10)
    batch = next(item_sampler.uniform_item_batches(items, SPEC, batch_size=4, seed=0).as_numpy_iterator())
    assert batch["item_id"].shape == (4,) and batch["tags"].shape == (4, 4)
    dense = item_sampler.pad_item_arrays(items, SPEC)
    for row, item in enumerate(batch["item_id"]):
        index = list(items["item_id"]).index(item)
        np.testing.assert_array_equal(batch["tags"][row], dense["tags"][index])
        assert set(batch["tags"][row][len(items["tags"][index]) :]) <= {b""}


def test_a_batch_larger_than_the_corpus_is_an_error():
    with pytest.raises(ValueError, match="exceeds the 10 items"):
        item_sampler.uniform_item_batches(make_items(10), SPEC, batch_size=11)


def test_missing_item_features_are_named():
    items = make_items(10)
    del items["tags"]
    with pytest.raises(KeyError, match="tags"):
        item_sampler.pad_item_arrays(items, SPEC)
