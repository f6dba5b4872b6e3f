"""Weight decay (``train.weight_decay``): the optimizer step against a numpy reference of the
decoupled rule, the config's range check, and the tuning knob."""

from __future__ import annotations

import model_fixtures
import numpy as np
import pytest

from recsys_ssl import config as cfg
from recsys_ssl import train
from recsys_ssl.tf_setup import tf


def _one_sgd_step(weight_decay: float | None, lr: float = 0.5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(weights before, gradient, weights after) of one SGD step on a Dense layer's kernel."""
    tf.keras.utils.set_random_seed(0)
    model = tf.keras.Sequential([tf.keras.layers.Dense(2, use_bias=False, input_shape=(3,))])
    config = model_fixtures.tiny_config(optimizer="sgd", learning_rate=lr, weight_decay=weight_decay)
    optimizer = train.make_optimizer(config)
    x = np.array([[1.0, -2.0, 0.5]], np.float32)
    before = model.trainable_variables[0].numpy().copy()
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(model(x) ** 2)
    (gradient,) = tape.gradient(loss, model.trainable_variables)
    optimizer.apply_gradients([(gradient, model.trainable_variables[0])])
    return before, gradient.numpy(), model.trainable_variables[0].numpy()


def test_decoupled_weight_decay_matches_numpy():
    """tf_keras's decoupled rule: ``w <- w - lr * wd * w``, then the plain SGD step on the
    gradient taken at the old weights."""
    lr, wd = 0.5, 0.1
    before, gradient, after = _one_sgd_step(wd, lr)
    np.testing.assert_allclose(after, before * (1 - lr * wd) - lr * gradient, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("off", [None, 0.0])
def test_off_is_a_plain_step(off):
    before, gradient, after = _one_sgd_step(off)
    np.testing.assert_allclose(after, before - 0.5 * gradient, rtol=1e-5, atol=1e-6)


def test_sparse_embedding_rows_decay_too():
    """An embedding table's rows that the batch did not touch shrink as well: that is what
    moves a rare item toward its shared feature embeddings between its few updates."""
    tf.keras.utils.set_random_seed(0)
    table = tf.Variable(np.ones((4, 2), np.float32))
    config = model_fixtures.tiny_config(optimizer="adagrad", learning_rate=0.2, weight_decay=0.5)
    optimizer = train.make_optimizer(config)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.gather(table, [1]))
    optimizer.apply_gradients([(tape.gradient(loss, table), table)])
    untouched = table.numpy()[[0, 2, 3]]
    np.testing.assert_allclose(untouched, np.full((3, 2), 1 - 0.2 * 0.5), rtol=1e-6)
    assert (table.numpy()[1] < untouched[0]).all()  # the touched row also took its gradient step


@pytest.mark.parametrize("value", [-0.1, 1.0])
def test_out_of_range_names_the_field(value):
    with pytest.raises(ValueError, match=r"train\.weight_decay: must be in \[0, 1\)"):
        model_fixtures.tiny_config(weight_decay=value)


def test_round_trips_through_yaml(tmp_path):
    config = model_fixtures.tiny_config(weight_decay=0.004)
    path = tmp_path / "c.yaml"
    path.write_text(cfg.to_yaml(config))
    assert cfg.load_config(path).train.weight_decay == pytest.approx(0.004)
