"""TwoTowerModel: every method learns (both losses go down), and the loss is L_main + alpha * L_self."""

from __future__ import annotations

import model_fixtures as mf
import numpy as np
import pytest

from recsys_ssl import augment, losses, train
from recsys_ssl import config as cfg
from recsys_ssl.model import TwoTowerModel
from recsys_ssl.tf_setup import tf

METHODS = [
    ("baseline", None),
    ("fd", None),
    ("so", None),
    ("ssl", "rfm"),
    ("ssl", "rfm_no_complement"),
    ("ssl", "cfm"),
    ("ssl", "cfm_no_dropout"),
    ("ssl", "dropout_only"),
]


@pytest.fixture(scope="module")
def data():
    return mf.training_data()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("method,augmentation", METHODS)
def test_training_lowers_both_losses(data, method, augmentation):
    config = mf.tiny_config(method, augmentation)
    tf.keras.utils.set_random_seed(0)
    model = train.build_model(config, data)
    history = model.fit(train.training_dataset(config, data, seed=0), epochs=4, steps_per_epoch=25, verbose=0).history
    assert history["main_loss"][-1] < history["main_loss"][0] - 0.2, history["main_loss"]
    if config.uses_ssl_batch:
        assert history["ssl_loss"][-1] < history["ssl_loss"][0] - 0.2, history["ssl_loss"]
    else:
        assert "ssl_loss" not in history


def _batch(data, config):
    return next(iter(train.training_dataset(config, data, seed=0)))


def test_total_loss_is_main_plus_alpha_times_ssl(data):
    config = cfg.replace(mf.tiny_config("ssl", "cfm"), ssl={"alpha": 0.3})
    model = TwoTowerModel(data.spec, config, data.vocabularies, data.item_frequencies, data.cfm_groups)
    batch = _batch(data, config)
    total = model.compute_loss(batch, training=True).numpy()
    seed_main, seed_ssl = augment.split_seed(model._step_seed(), 2)
    main = model.main_loss(batch["pairs"], True, seed_main).numpy()
    ssl = model.ssl_loss(batch["ssl_items"], seed_ssl)[0].numpy()
    np.testing.assert_allclose(total, main + 0.3 * ssl, rtol=1e-5)


def test_ssl_views_share_the_item_tower_and_so_is_unaugmented(data):
    config = mf.tiny_config("so")
    model = TwoTowerModel(data.spec, config, data.vocabularies, data.item_frequencies)
    items = _batch(data, config)["ssl_items"]
    z, z_prime = model.ssl_views(items, tf.constant([0, 0], tf.int64))
    np.testing.assert_allclose(z.numpy(), z_prime.numpy())
    np.testing.assert_allclose(z.numpy(), model.item_tower(items).numpy())
    loss, logits, _ = model.ssl_loss(items, tf.constant([0, 0], tf.int64))
    expected, _, _ = losses.contrastive_loss(z, z, config.ssl.temperature)
    np.testing.assert_allclose(loss.numpy(), expected.numpy(), rtol=1e-6)


def test_cfm_views_differ_and_use_the_same_tower(data):
    config = mf.tiny_config("ssl", "cfm_no_dropout")
    model = TwoTowerModel(data.spec, config, data.vocabularies, data.item_frequencies, data.cfm_groups)
    items = _batch(data, config)["ssl_items"]
    z, z_prime = model.ssl_views(items, tf.constant([5, 1], tf.int64))
    train.build_towers_now(model, data.spec)
    assert not np.allclose(z.numpy(), z_prime.numpy())
    assert len(model.trainable_variables) == len(model.query_tower.trainable_variables) + len(
        model.item_tower.trainable_variables
    )  # no projection head, no second item tower


def test_model_logq_gives_a_more_frequent_item_a_higher_probability(data):
    model = TwoTowerModel(data.spec, mf.tiny_config(), data.vocabularies, data.item_frequencies)
    by_count = sorted(data.item_frequencies.items(), key=lambda kv: kv[1])
    rare, frequent = by_count[0][0], by_count[-1][0]
    p = model.item_probability(tf.constant([rare, frequent, "never-seen-item"])).numpy()
    assert p[1] > p[0] >= p[2] > 0


def test_logq_weight_scales_the_correction(data):
    """logits - w * log p_j: with the same weights, w = 0.5 gives the loss numpy computes from the
    w = 1 model's tensors."""
    full = TwoTowerModel(data.spec, mf.tiny_config(), data.vocabularies, data.item_frequencies)
    half = TwoTowerModel(
        data.spec, cfg.replace(mf.tiny_config(), main={"logq_weight": 0.5}), data.vocabularies, data.item_frequencies
    )
    pairs = _batch(data, mf.tiny_config())["pairs"]
    train.build_towers_now(full, data.spec)
    train.build_towers_now(half, data.spec)
    half.set_weights(full.get_weights())
    ids = pairs[data.spec.item_key]
    np.testing.assert_allclose(half.item_probability(ids).numpy(), full.item_probability(ids).numpy() ** 0.5, rtol=1e-6)
    seed = tf.constant([0, 0], tf.int64)
    q = tf.math.l2_normalize(full.query_tower(pairs), -1).numpy()
    c = tf.math.l2_normalize(full.item_tower(pairs), -1).numpy()
    logits = q @ c.T / mf.tiny_config().main.temperature - 0.5 * np.log(full.item_probability(ids).numpy())[None, :]
    raw_ids = ids.numpy()
    logits[(raw_ids[:, None] == raw_ids[None, :]) & ~np.eye(len(raw_ids), dtype=bool)] = -np.inf  # accidental hits
    logits -= logits.max(axis=1, keepdims=True)
    expected = np.mean(-np.diag(logits) + np.log(np.exp(logits).sum(axis=1)))
    np.testing.assert_allclose(half.main_loss(pairs, False, seed).numpy(), expected, rtol=1e-4)


def test_logq_needs_item_frequencies(data):
    with pytest.raises(ValueError, match="item frequencies"):
        TwoTowerModel(data.spec, mf.tiny_config(), data.vocabularies, None)
