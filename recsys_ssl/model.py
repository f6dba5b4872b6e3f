"""The two-tower retrieval model with the paper's SSL task and its baselines (FD, SO).

Training inputs, one element per step::

    {"pairs": {feature: [B] / [B, L] tf.string ...},        # query + item features of B pairs
     "ssl_items": {item feature: [B_ssl] / [B_ssl, L] ...},  # methods ssl and so only: items
                                                             # drawn uniformly from the corpus
     "negative_items": {item feature: [B'] ...}}             # main.mixed_negatives > 0 only: its
                                                             # own uniform draw from the corpus

Loss: ``L_main + alpha * L_self`` (PAPER.md sections 1-2), where

* ``L_main``: ``tfrs.tasks.Retrieval``, in-batch softmax over cosine / tau, with logQ
  correction (``logits - log p_j``, p_j from the statistics job's item frequencies) and
  accidental-hit removal; FD masks/drops item features here. Mixed negative sampling
  (``main.mixed_negatives``) appends the ``negative_items``' embeddings to the in-batch
  candidates, and logQ then uses the mixture's ``Q_j = B p_j + B'/N``
  (``losses.mixed_sampling_probability``).
* ``L_self``: ``losses.contrastive_loss`` between two views of the SSL items through the SAME
  item tower (no projection head). SSL: augmented views (``augment``); SO: un-augmented.

Both losses are tracked as the metrics ``main_loss`` and ``ssl_loss`` (Keras bars, TensorBoard),
plus ``candidates``: how many candidates each query's softmax saw (the global batch when
negatives are gathered across replicas).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import tensorflow_recommenders as tfrs  # noqa: E402  (after tf_setup: Keras 2)

from recsys_ssl import artifacts, augment, losses
from recsys_ssl import config as cfg
from recsys_ssl import features as fs
from recsys_ssl.tf_setup import tf
from recsys_ssl.towers import build_towers


def _ids_to_int(ids: tf.Tensor) -> tf.Tensor:
    """String item ids -> int64 fingerprints, so they can be all-gathered across replicas."""
    return tf.strings.to_hash_bucket_fast(ids, 2**62)


def item_probabilities(item_frequencies: Mapping[str, int]) -> dict[str, float]:
    """p_j for logQ: add-one smoothed frequency over the training pairs.

    Smoothing keeps unseen items finite (an unseen item gets the smallest p, so the largest
    boost, as a rarely sampled negative should). p's scale does not matter: a constant factor
    (e.g. the batch size in "probability of being in a batch") cancels in the softmax.
    """
    total = float(sum(item_frequencies.values())) + len(item_frequencies)
    return {item: (count + 1.0) / total for item, count in item_frequencies.items()}


def _logq_table(item_frequencies: Mapping[str, int] | None, weight: float) -> tf.lookup.StaticHashTable:
    """item id (tf.string) -> p_j ** ``weight`` (float32), for logQ correction; an item not in
    the table gets the smallest value (the rarest item's)."""
    if not item_frequencies:
        raise ValueError(
            "main.logq_correction needs item frequencies (the statistics job's "
            "item_frequencies.tsv); set main.logq_correction: false to train without"
        )
    # p_j ** w: TFRS subtracts log of what it is given, so this subtracts w * log p_j.
    probabilities = {item: p**weight for item, p in item_probabilities(item_frequencies).items()}
    return tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(
            tf.constant(list(probabilities), tf.string), tf.constant(list(probabilities.values()), tf.float32)
        ),
        default_value=min(probabilities.values()),
    )


def _cfm_group_matrix(
    ssl: cfg.SSLConfig, cfm_groups: Mapping | None, item_names: Sequence[str], maskable: np.ndarray
) -> np.ndarray:
    """CFM's [S, F] bool masking groups over the F item features (``augment.cfm_group_matrix``)
    from the MI job's ``cfm_groups.json``; ``ssl.cfm_group_size`` overrides its group size."""
    if not cfm_groups:
        raise ValueError("CFM needs the MI job's cfm_groups.json (run `recsys-ssl mi`)")
    group_size = ssl.cfm_group_size or int(cfm_groups["group_size"])
    return augment.cfm_group_matrix(
        item_names, artifacts.cfm_ranked_partners(cfm_groups, ssl.cfm_grouping), group_size, maskable
    )


class TwoTowerModel(tfrs.Model):
    """``query_tower`` and ``item_tower`` (each dict of raw strings -> [B, D] L2-normalised)."""

    def __init__(
        self,
        spec: fs.FeatureSpec,
        config: cfg.ExperimentConfig,
        vocabularies: Mapping[str, Sequence[str]],
        item_frequencies: Mapping[str, int] | None = None,
        cfm_groups: Mapping | None = None,
        for_inference: bool = False,
        corpus_size: int | None = None,
    ):
        """``for_inference``: only the towers are used (no item frequencies / CFM groups needed).
        ``corpus_size``: N, the items the uniform negatives are drawn from (``main.mixed_negatives``;
        None: the items of ``item_frequencies``)."""
        super().__init__()
        spec = spec.scaled_embeddings(config.model.embedding_scale)
        self.spec = spec
        self.config = config
        self.query_tower, self.item_tower = build_towers(
            spec,
            vocabularies,
            config.model.query_hidden,
            config.model.item_hidden,
            config.model.masked_embedding if config.masks_item_features else None,
        )
        self.retrieval_task = tfrs.tasks.Retrieval(
            # Per-example losses: the model averages them (PAPER.md's 1/N) and scales for replicas.
            loss=tf.keras.losses.CategoricalCrossentropy(from_logits=True, reduction=tf.keras.losses.Reduction.NONE),
            temperature=config.main.temperature,
            remove_accidental_hits=config.main.remove_accidental_hits,
        )
        # Keras would SUM each replica's metric results ("auto" off TPU): report the first
        # replica's own values instead (its main/SSL loss, its number of candidates).
        self.distribute_reduction_method = "first"
        self.main_loss_tracker = tf.keras.metrics.Mean(name="main_loss")
        self.ssl_loss_tracker = tf.keras.metrics.Mean(name="ssl_loss")
        self.candidates_tracker = tf.keras.metrics.Mean(name="candidates")

        items = spec.item_features
        self._maskable = np.array([f.maskable for f in items], dtype=bool)
        self._id_features = np.array([f.is_id for f in items], dtype=bool)
        self._multi_valued = [f.name for f in items if f.multi_valued]

        self._probability_table = None
        self._mixed = config.main.mixed_negatives > 0 and not for_inference
        if self._mixed:
            self._corpus_size = corpus_size or len(item_frequencies or {}) or None  # None: unknown (logQ off)
            if self._corpus_size is not None and config.main.mixed_negatives > self._corpus_size:
                raise ValueError(
                    f"main.mixed_negatives {config.main.mixed_negatives} exceeds the {self._corpus_size} items "
                    "of the corpus"
                )
        if config.main.logq_correction and not for_inference:
            # Mixed negatives: the table holds p_j, the weight goes on the mixture Q_j (_logq).
            weight = 1.0 if self._mixed else config.main.logq_weight
            self._probability_table = _logq_table(item_frequencies, weight)

        group_matrix = None
        if config.needs_cfm_groups and not for_inference:
            group_matrix = _cfm_group_matrix(config.ssl, cfm_groups, [f.name for f in items], self._maskable)
        self._mask_inputs = augment.MaskInputs(self._maskable, self._id_features, group_matrix)

    @property
    def metrics(self):
        tracked = [self.main_loss_tracker, self.candidates_tracker]
        if self.config.uses_ssl_batch:
            tracked.insert(1, self.ssl_loss_tracker)
        return tracked

    # -- randomness -----------------------------------------------------------------------
    def _step_seed(self) -> tf.Tensor:
        """[2] seed from (config seed, replica, optimizer step): reproducible, distinct per step and replica."""
        optimizer = getattr(self, "optimizer", None)
        step = tf.cast(optimizer.iterations, tf.int64) if optimizer is not None else tf.constant(0, tf.int64)
        context = tf.distribute.get_replica_context()
        replica = tf.cast(context.replica_id_in_sync_group if context is not None else 0, tf.int64)
        return tf.stack([tf.constant(self.config.seed, tf.int64) * 4096 + replica, step])

    # -- the two tasks --------------------------------------------------------------------
    def item_probability(self, item_ids: tf.Tensor) -> tf.Tensor:
        """[B] tf.string item ids -> [B] float32 p_j (logQ)."""
        return self._probability_table.lookup(item_ids)

    def _logq(self, item_ids: tf.Tensor, negative_ids: tf.Tensor | None) -> tuple[tf.Tensor | None, tf.Tensor | None]:
        """What logQ divides by (** logq_weight) for the in-batch candidates and the uniform ones.

        In-batch only: p_j ** w (the table). Mixed: (Q_j / (B + B')) ** w, Q_j = B p_j + B'/N
        from this replica's B and B' (cross-replica negatives scale both by the replicas: the
        mixture is the same).
        """
        if self._probability_table is None:
            return None, None
        if negative_ids is None:
            return self.item_probability(item_ids), None
        batch = tf.cast(tf.size(item_ids), tf.float32)
        num_uniform = tf.cast(tf.size(negative_ids), tf.float32)
        corpus = tf.constant(float(self._corpus_size), tf.float32)
        weight = self.config.main.logq_weight

        def q(ids):
            return tf.pow(
                losses.mixed_sampling_probability(self.item_probability(ids), batch, num_uniform, corpus), weight
            )

        return q(item_ids), q(negative_ids)

    def _gather(self, *values: tf.Tensor | None) -> list[tf.Tensor | None]:
        """Each value's rows from every replica (``train.cross_replica_negatives``), else as is."""
        if not self.config.train.cross_replica_negatives:
            return list(values)
        return [None if v is None else losses.gather_across_replicas(v) for v in values]

    def main_loss(
        self,
        pairs: Mapping[str, tf.Tensor],
        training: bool,
        seed: tf.Tensor,
        negative_items: Mapping[str, tf.Tensor] | None = None,
    ) -> tf.Tensor:
        """Mean softmax loss of this replica's pairs over the in-batch candidates, plus the
        uniform ``negative_items`` (mixed negative sampling) when given."""
        query = self.query_tower(pairs)
        if self.config.method_entry.main_feature_dropout and training:
            seed_mask, seed_drop = augment.split_seed(seed, 2)
            looked_up = self.item_tower.lookup(pairs)
            keep = augment.dropout_keep_masks(
                {name: looked_up[name][1] for name in self._multi_valued}, self.config.fd.dropout_rate, seed_drop
            )
            mask = augment.feature_dropout_masks(
                tf.shape(query)[0], self._maskable, self.config.fd.mask_rate, seed_mask
            )
            candidates = self.item_tower.encode(looked_up, mask, keep)
        else:
            candidates = self.item_tower(pairs)
        item_ids = pairs[self.spec.item_key]
        negative_ids = None if negative_items is None else negative_items[self.spec.item_key]
        probability, negative_probability = self._logq(item_ids, negative_ids)
        hits = self.config.main.remove_accidental_hits
        ids = _ids_to_int(item_ids) if hits else None
        candidates, probability, ids = self._gather(candidates, probability, ids)
        if negative_items is not None:
            # Appended after the in-batch candidates: the positives stay on the diagonal.
            negatives, negative_probability, negative_ids = self._gather(
                self.item_tower(negative_items), negative_probability, _ids_to_int(negative_ids) if hits else None
            )
            candidates = tf.concat([candidates, negatives], axis=0)
            probability = None if probability is None else tf.concat([probability, negative_probability], axis=0)
            ids = None if ids is None else tf.concat([ids, negative_ids], axis=0)
        per_example = self.retrieval_task(
            query,
            candidates,
            candidate_sampling_probability=probability,
            candidate_ids=ids,
            compute_metrics=False,
            compute_batch_metrics=False,
        )
        self.candidates_tracker.update_state(tf.cast(tf.shape(candidates)[0], tf.float32))
        return tf.reduce_mean(per_example)

    def ssl_views(self, items: Mapping[str, tf.Tensor], seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """The two views' embeddings [B, D] each, through the same item tower."""
        augmentation = self.config.augmentation_entry
        if augmentation is None:  # SO: both views are the plain item embedding
            z = self.item_tower(items)
            return z, z
        seed_mask, seed_1, seed_2 = augment.split_seed(seed, 3)
        mask_1 = mask_2 = None
        if augmentation.masks_features:
            mask_1, mask_2 = augmentation.mask_function()(self._mask_inputs, seed_mask)
        mask_1, mask_2 = augment.place_ids(mask_1, mask_2, self._id_features, self._maskable, self.config.ssl.id_views)
        rate = self.config.ssl.dropout_rate if augmentation.drops_values else 0.0
        # One string lookup for both views; each view drops values (augment.dropout_keep_masks,
        # the same dropout as FD's) and masks its own features.
        looked_up = self.item_tower.lookup(items)
        valid = {name: looked_up[name][1] for name in self._multi_valued}
        keep_1 = augment.dropout_keep_masks(valid, rate, seed_1)
        keep_2 = augment.dropout_keep_masks(valid, rate, seed_2)
        z, z_prime = self.item_tower.encode_views(looked_up, [mask_1, mask_2], [keep_1, keep_2])
        return z, z_prime

    def ssl_loss(self, items: Mapping[str, tf.Tensor], seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        z, z_prime = self.ssl_views(items, seed)
        return losses.contrastive_loss(
            z, z_prime, self.config.ssl.temperature, cross_replica=self.config.train.cross_replica_negatives
        )

    def compute_loss(self, inputs, training: bool = False) -> tf.Tensor:
        pairs = inputs["pairs"]
        seed_main, seed_ssl = augment.split_seed(self._step_seed(), 2)
        main = self.main_loss(pairs, training, seed_main, inputs.get("negative_items") if self._mixed else None)
        self.main_loss_tracker.update_state(main)
        total = main
        if self.config.uses_ssl_batch and "ssl_items" in inputs:
            ssl, _, _ = self.ssl_loss(inputs["ssl_items"], seed_ssl)
            self.ssl_loss_tracker.update_state(ssl)
            total = total + self.config.ssl.alpha * ssl
        # Gradients are summed over replicas: divide so the update follows the global mean.
        return total / tf.cast(losses.num_replicas(), total.dtype)
