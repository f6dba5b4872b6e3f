"""Losses as pure functions returning ``(loss, logits, labels)`` (the simclr objective style).

``contrastive_loss`` is PAPER.md's L_self (and, on un-augmented items, the SO baseline);
``gather_across_replicas`` lets either task use the negatives of every replica (the global
batch) instead of only the local one; ``mixed_sampling_probability`` is logQ's sampling
probability when uniform corpus negatives are mixed into the in-batch ones (``main.mixed_negatives``).
"""

from __future__ import annotations

from recsys_ssl.tf_setup import tf


def num_replicas() -> int:
    """Replicas in sync under the current strategy (1 without one)."""
    return tf.distribute.get_strategy().num_replicas_in_sync


def gather_across_replicas(values: tf.Tensor) -> tf.Tensor:
    """[local_B, ...] -> [global_B, ...]: every replica's rows, THIS replica's rows first.

    Putting the local rows first keeps the positives on the diagonal of [local_B, global_B]
    logits (what ``tfrs.tasks.Retrieval`` assumes: ``labels = eye(num_queries, num_candidates)``).
    Gradients flow back to the replica that produced each row. Outside a multi-replica
    replica context this returns ``values`` unchanged. Replicas must have equal local batches
    (the input pipeline drops remainders).
    """
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return values
    gathered = context.all_gather(values, axis=0)
    local = tf.shape(values)[0]
    replica = tf.cast(context.replica_id_in_sync_group, tf.int32)
    return tf.roll(gathered, shift=-replica * local, axis=0)


def contrastive_loss(
    z: tf.Tensor, z_prime: tf.Tensor, temperature: float, cross_replica: bool = False
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """In-batch softmax between two views of the same items.

    ``L = -1/N sum_i log( exp(<z_i, z'_i>/tau) / sum_j exp(<z_i, z'_j>/tau) )`` with the
    positives the two views of one item and the negatives the other items' second view.

    Args:
      z, z_prime: [B, D] L2-normalised embeddings of view 1 and view 2.
      temperature: tau.
      cross_replica: take the negatives z'_j from every replica (global batch).
    Returns:
      loss: scalar, the mean over this replica's B rows.
      logits: [B, B_global] (B_global = B without cross_replica), positives on the diagonal.
      labels: [B, B_global] one-hot.
    """
    candidates = gather_across_replicas(z_prime) if cross_replica else z_prime
    logits = tf.matmul(z, candidates, transpose_b=True) / temperature
    labels = tf.one_hot(tf.range(tf.shape(z)[0]), tf.shape(candidates)[0], dtype=logits.dtype)
    loss = tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(labels=labels, logits=logits))
    return loss, logits, labels


def mixed_sampling_probability(p_in_batch, batch_size, num_uniform, corpus_size):
    """Mixed negative sampling's (Yang et al. 2020) candidate sampling probability, for logQ.

    The candidates are ``batch_size`` in-batch items (item j drawn with probability p_j, its
    share of the training pairs) plus ``num_uniform`` items drawn uniformly from the
    ``corpus_size`` items, so item j's expected count among them is
    ``Q_j = batch_size * p_j + num_uniform / corpus_size``. Q_j (up to a constant factor,
    which cancels in the softmax) is the sampling probability of EVERY candidate, in-batch or
    uniform. Returned divided by the candidates ``batch_size + num_uniform``: the probability
    that a candidate slot holds item j (it sums to 1 over the corpus, and stays <= 1, which
    matters: ``tfrs`` clips the probabilities it is given to [1e-6, 1]). ``num_uniform = 0``
    gives ``p_in_batch`` itself. Works on numpy arrays / floats and on float tensors alike.
    """
    return (batch_size * p_in_batch + num_uniform / corpus_size) / (batch_size + num_uniform)
