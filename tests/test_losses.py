"""Losses against numpy: the contrastive loss (L_self), the logQ correction's sign."""

from __future__ import annotations

import numpy as np
import tensorflow_recommenders as tfrs  # noqa: E402,F811

from recsys_ssl import losses
from recsys_ssl.model import item_probabilities
from recsys_ssl.tf_setup import tf


def _unit(rng, shape):
    x = rng.normal(size=shape).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _numpy_contrastive(z, z_prime, tau):
    logits = z @ z_prime.T / tau
    log_softmax = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    return -np.mean(np.diag(log_softmax))


def test_contrastive_loss_matches_numpy():
    rng = np.random.default_rng(0)
    z, z_prime = _unit(rng, (6, 5)), _unit(rng, (6, 5))
    for tau in (0.07, 0.5, 1.0):
        loss, logits, labels = losses.contrastive_loss(tf.constant(z), tf.constant(z_prime), tau)
        np.testing.assert_allclose(loss.numpy(), _numpy_contrastive(z, z_prime, tau), rtol=1e-5)
        np.testing.assert_allclose(logits.numpy(), z @ z_prime.T / tau, rtol=1e-5)
        np.testing.assert_array_equal(labels.numpy(), np.eye(6))


def test_contrastive_loss_is_low_when_views_agree_and_high_when_they_do_not():
    rng = np.random.default_rng(1)
    z = _unit(rng, (8, 16))
    agree, _, _ = losses.contrastive_loss(tf.constant(z), tf.constant(z), 0.1)
    shuffled, _, _ = losses.contrastive_loss(tf.constant(z), tf.constant(z[::-1].copy()), 0.1)
    assert agree.numpy() < 0.5 < np.log(8) < shuffled.numpy()


def test_gather_across_replicas_is_identity_on_one_device():
    x = tf.constant([[1.0], [2.0]])
    np.testing.assert_array_equal(losses.gather_across_replicas(x).numpy(), x.numpy())


def test_tfrs_retrieval_subtracts_log_p_for_logq():
    """The model's main task is tfrs.tasks.Retrieval; pin that its candidate_sampling_probability
    subtracts log p (so a frequent negative's logit goes down), against a numpy softmax."""
    rng = np.random.default_rng(2)
    q, c = _unit(rng, (4, 3)), _unit(rng, (4, 3))
    p = np.array([0.6, 0.2, 0.15, 0.05], np.float32)
    tau = 0.2
    task = tfrs.tasks.Retrieval(
        loss=tf.keras.losses.CategoricalCrossentropy(from_logits=True, reduction=tf.keras.losses.Reduction.NONE),
        temperature=tau,
    )
    per_example = task(
        tf.constant(q), tf.constant(c), candidate_sampling_probability=tf.constant(p), compute_metrics=False
    ).numpy()
    logits = q @ c.T / tau - np.log(p)[None, :]
    expected = -np.diag(logits - np.log(np.exp(logits).sum(axis=1, keepdims=True)))
    np.testing.assert_allclose(per_example, expected, rtol=1e-5)
    # Raising item 0's probability lowers its logit: every query whose positive is NOT item 0
    # sees a weaker negative, so its loss goes down.
    p_more = p.copy()
    p_more[0] = 0.9
    more = task(
        tf.constant(q), tf.constant(c), candidate_sampling_probability=tf.constant(p_more), compute_metrics=False
    ).numpy()
    assert np.all(more[1:] < per_example[1:]) and more[0] > per_example[0] - 1e-6


def test_tfrs_retrieval_removes_accidental_hits():
    q = tf.constant([[1.0, 0.0], [0.0, 1.0]])
    c = tf.constant([[1.0, 0.0], [1.0, 0.0]])  # the same item twice
    task = tfrs.tasks.Retrieval(
        loss=tf.keras.losses.CategoricalCrossentropy(from_logits=True, reduction=tf.keras.losses.Reduction.NONE),
        remove_accidental_hits=True,
    )
    per_example = task(q, c, candidate_ids=tf.constant([7, 7], tf.int64), compute_metrics=False).numpy()
    np.testing.assert_allclose(per_example[0], 0.0, atol=1e-5)  # its duplicate is not a negative


def test_item_probabilities_are_smoothed_and_ordered_by_frequency():
    p = item_probabilities({"a": 9, "b": 1, "c": 0})
    assert p["a"] > p["b"] > p["c"] > 0
    np.testing.assert_allclose(sum(p.values()), 1.0)
    np.testing.assert_allclose(p["a"], 10 / 13)
