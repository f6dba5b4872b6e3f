"""SSL item batches drawn uniformly from the item corpus (not from the training pairs).

The paper (section 2 of PAPER.md) samples the SSL batch from the corpus because the
training pairs' item marginal is power-law: the SSL task should see tail items as often as
head items. Each batch is drawn without replacement: the corpus is reshuffled every pass
and cut into full batches (the last partial batch of a pass is dropped, so no batch holds an
item twice, and every item is equally likely to be dropped, which keeps the marginal uniform).
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from recsys_ssl import features as fs
from recsys_ssl.tf_setup import tf


def pad_item_arrays(item_arrays: Mapping[str, np.ndarray], spec: fs.FeatureSpec) -> dict[str, np.ndarray]:
    """The corpus as dense arrays: single-valued [N] bytes, multi-valued [N, max_len] padded with b"".

    item_arrays: feature -> object array (bytes, or a list of bytes for multi-valued), as
    ``inputs.item_arrays()`` gives. Values beyond ``max_len`` are truncated (like batching).
    """
    missing = [f.name for f in spec.item_features if f.name not in item_arrays]
    if missing:
        raise KeyError(f"item corpus lacks item features {missing} of spec {spec.source}")
    sizes = {len(item_arrays[f.name]) for f in spec.item_features}
    if len(sizes) != 1:
        raise ValueError(f"item corpus features have different lengths: {sizes}")
    return {feature.name: fs.dense_column(item_arrays[feature.name], feature) for feature in spec.item_features}


def uniform_item_batches(
    item_arrays: Mapping[str, np.ndarray],
    spec: fs.FeatureSpec,
    batch_size: int,
    seed: int | None = None,
    padded: bool = False,
    what: str = "SSL batch size",
) -> tf.data.Dataset:
    """An endless tf.data.Dataset of item batches, uniform over the corpus, no repeats in a batch.

    Yields dicts of [B] tf.string (single-valued) and [B, max_len] tf.string (multi-valued).
    ``padded=True`` means ``item_arrays`` already went through ``pad_item_arrays``. ``what``
    names the knob that set ``batch_size`` in the error when it exceeds the corpus.
    """
    dense = dict(item_arrays) if padded else pad_item_arrays(item_arrays, spec)
    num_items = len(dense[spec.item_key])
    if batch_size > num_items:
        raise ValueError(f"{what} {batch_size} exceeds the {num_items} items of the corpus")
    corpus = {name: tf.constant(array.tolist(), tf.string) for name, array in dense.items()}
    # Shuffle and batch row indices, then gather whole batches: per-batch vectorised work
    # instead of per-item string dicts flowing through the shuffle buffer.
    return (
        tf.data.Dataset.range(num_items)
        .shuffle(num_items, seed=seed, reshuffle_each_iteration=True)
        .batch(batch_size, drop_remainder=True)
        .repeat()
        .map(lambda rows: {name: tf.gather(column, rows) for name, column in corpus.items()})
    )
