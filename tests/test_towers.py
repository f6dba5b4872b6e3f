"""Towers: lookups, pooling that ignores padding, the masked embedding, L2-normalised output."""

from __future__ import annotations

import numpy as np
import pytest

from recsys_ssl import features
from recsys_ssl.tf_setup import tf
from recsys_ssl.towers import FeatureEmbedding, Tower, build_towers

SINGLE = features.Feature(name="colour", kind="categorical", embedding_dim=3)
MULTI = features.Feature(name="tags", kind="multi_categorical", embedding_dim=3, max_len=3)
HASHED = features.Feature(
    name="city", kind="categorical", embedding_dim=2, vocab=features.Vocabulary(source="hash", buckets=5)
)
VOCAB = {"colour": ["red", "green"], "tags": ["x", "y", "z"]}


def _table(layer: FeatureEmbedding) -> np.ndarray:
    return layer.embedding.embeddings.numpy()


def test_single_valued_lookup_with_oov_and_missing():
    layer = FeatureEmbedding(SINGLE, VOCAB["colour"])
    out = layer(tf.constant(["red", "green", "blue", ""])).numpy()
    table = _table(layer)
    # StringLookup: index 0 is the OOV bucket, then the vocabulary in order; "" (missing) is OOV.
    np.testing.assert_allclose(out, table[[1, 2, 0, 0]])


@pytest.mark.parametrize("pooling", ["mean", "sum"])
def test_multi_valued_pooling_ignores_padding(pooling):
    feature = features.Feature(name="tags", kind="multi_categorical", embedding_dim=3, max_len=3, pooling=pooling)
    layer = FeatureEmbedding(feature, VOCAB["tags"])
    out = layer(tf.constant([["x", "y", ""], ["z", "", ""], ["", "", ""]])).numpy()
    table = _table(layer)
    rows = [table[1] + table[2], table[3], np.zeros(3)]
    if pooling == "mean":
        rows = [rows[0] / 2, rows[1], rows[2]]
    np.testing.assert_allclose(out, np.stack(rows), rtol=1e-6)


def test_hashed_feature_needs_no_vocabulary():
    layer = FeatureEmbedding(HASHED)
    out = layer(tf.constant(["paris", "paris", "rome"])).numpy()
    assert out.shape == (3, 2) and np.allclose(out[0], out[1])


def test_inline_and_empty_vocabularies():
    inline = features.Feature(name="c", kind="categorical", vocab=features.Vocabulary(source="inline", values=("a",)))
    assert FeatureEmbedding(inline).num_ids == 2
    with pytest.raises(ValueError, match="colour.*empty stats vocabulary"):
        FeatureEmbedding(SINGLE, [])


def _tower(masked_embedding="learned"):
    return Tower([SINGLE, MULTI, HASHED], VOCAB, [8, 4], masked_embedding=masked_embedding, name="item_tower")


BATCH = {
    "colour": tf.constant(["red", "green"]),
    "tags": tf.constant([["x", "", ""], ["y", "z", ""]]),
    "city": tf.constant(["a", "b"]),
}


def test_masked_embedding_replaces_exactly_the_masked_features():
    tower = _tower()
    plain = tower.concat_views(tower.lookup(BATCH), [None], [{}])[0].numpy()  # [2, 3 + 3 + 2]
    mask = np.array([[True, False, False], [False, True, True]])
    masked = tower.concat_views(tower.lookup(BATCH), [tf.constant(mask)], [{}])[0].numpy()
    slices = {0: slice(0, 3), 1: slice(3, 6), 2: slice(6, 8)}
    for row in range(2):
        for feature, columns in slices.items():
            if mask[row, feature]:
                np.testing.assert_allclose(masked[row, columns], tower.embeddings[feature].masked.numpy())
            else:
                np.testing.assert_allclose(masked[row, columns], plain[row, columns])


def test_a_batch_wide_mask_and_the_zero_masked_embedding():
    tower = _tower("zeros")
    masked = tower.concat_views(tower.lookup(BATCH), [tf.constant([False, True, False])], [{}])[0].numpy()
    np.testing.assert_allclose(masked[:, 3:6], 0.0)
    assert not tower.embeddings[1].masked.trainable


def test_tower_output_is_l2_normalised_and_ignores_extra_features():
    tower = _tower()
    out = tower({**BATCH, "unrelated": tf.constant(["q", "r"])}).numpy()
    assert out.shape == (2, 4)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-5)


def test_tower_names_missing_features():
    with pytest.raises(KeyError, match="tags"):
        _tower()({"colour": BATCH["colour"], "city": BATCH["city"]})


def test_dropping_on_ids_equals_dropping_the_strings():
    """The model drops values after one shared lookup; it must equal replacing the strings by padding."""
    from recsys_ssl import augment

    tower = _tower()
    seed = tf.constant([4, 2], tf.int64)
    looked_up = tower.lookup(BATCH)
    keep = augment.dropout_keep_masks({"tags": looked_up["tags"][1]}, 0.5, seed)
    dropped = dict(BATCH, tags=tf.where(keep["tags"], BATCH["tags"], ""))  # the dropped strings, as padding
    mask = tf.constant([True, False, False])
    np.testing.assert_allclose(
        tower.encode(looked_up, mask, keep).numpy(), tower(dropped, feature_mask=mask).numpy(), rtol=1e-6
    )


def test_encode_views_equals_encoding_each_view():
    from recsys_ssl import augment

    tower = _tower()
    looked_up = tower.lookup(BATCH)
    masks = [tf.constant([True, False, False]), tf.constant([False, True, True])]
    keeps = [
        augment.dropout_keep_masks({"tags": looked_up["tags"][1]}, 0.5, tf.constant([s, 1], tf.int64)) for s in (1, 2)
    ]
    views = tower.encode_views(looked_up, masks, keeps)
    for view, mask, keep in zip(views, masks, keeps):
        np.testing.assert_allclose(view.numpy(), tower.encode(looked_up, mask, keep).numpy(), rtol=1e-5, atol=1e-6)


def test_a_query_history_shares_the_item_id_table():
    spec = features.spec_from_dict(
        {
            "name": "shared",
            "query_key": "user",
            "item_key": "item",
            "query_features": [
                {"name": "user", "kind": "categorical", "embedding_dim": 2},
                {
                    "name": "history",
                    "kind": "multi_categorical",
                    "max_len": 2,
                    "embedding_dim": 3,
                    "shares_embedding": "item",
                },
            ],
            "item_features": [{"name": "item", "kind": "categorical", "embedding_dim": 3}],
        }
    )
    # The history's own vocabulary is ignored: it reads item ids through the item table.
    query, item = build_towers(spec, {"user": ["u"], "history": ["zzz"], "item": ["a", "b"]}, [4], [4])
    history_layer = query.embeddings[1]
    item_layer = item.embeddings[0]
    assert history_layer.embedding is item_layer.embedding
    pooled = history_layer(tf.constant([["a", "b"], ["b", ""]])).numpy()
    table = _table(item_layer)
    np.testing.assert_allclose(pooled, np.stack([(table[1] + table[2]) / 2, table[2]]), rtol=1e-6)
    # One variable: a step that only uses the query tower moves the item tower's embedding of "b".
    batch = {"user": tf.constant(["u"]), "history": tf.constant([["b", ""]])}
    before = item({"item": tf.constant(["b"])}).numpy()
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(query(batch)[:, 0])
    grads = tape.gradient(loss, query.trainable_variables)
    tf.keras.optimizers.SGD(1.0).apply_gradients(zip(grads, query.trainable_variables))
    assert not np.allclose(item({"item": tf.constant(["b"])}).numpy(), before)
    names = [v.name for v in query.trainable_variables + item.trainable_variables]
    assert (
        sum("table_item" in n for n in names) == 2
        and len({id(v) for v in query.trainable_variables + item.trainable_variables}) == len(names) - 1
    )
