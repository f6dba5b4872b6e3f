"""Query and item towers built from the feature spec.

Per feature: a string lookup (vocabulary from the statistics job, an inline list, or hash
bins), an embedding table, and a "masked" embedding (learned per feature, or a fixed zero
vector) that replaces the feature's embedding where the SSL/FD mask says so. Multi-valued
features are mean- or sum-pooled over their non-padding values. The feature embeddings are
concatenated, passed through an MLP whose last width is the output size, and L2-normalised.
"""

from __future__ import annotations

from typing import Mapping, Sequence

from recsys_ssl import features as fs
from recsys_ssl.tf_setup import tf


def _lookup_layer(feature: fs.Feature, vocabulary: Sequence[str] | None) -> tuple[tf.keras.layers.Layer, int]:
    """(string -> id layer, number of ids) for a feature's vocab: hashed, inline, or the stats job's."""
    vocab = feature.vocab
    if vocab.source == "hash":
        return tf.keras.layers.Hashing(num_bins=vocab.buckets, name=f"hash_{feature.name}"), vocab.buckets
    values = list(vocab.values) if vocab.source == "inline" else list(vocabulary or [])
    if not values:
        raise ValueError(
            f"feature {feature.name!r}: empty {vocab.source} vocabulary "
            "(run the statistics job, or check the spec's vocab)"
        )
    layer = tf.keras.layers.StringLookup(
        vocabulary=values, num_oov_indices=vocab.oov_buckets, mask_token=None, name=f"lookup_{feature.name}"
    )
    return layer, len(values) + vocab.oov_buckets


class FeatureEmbedding(tf.keras.layers.Layer):
    """One feature: raw strings -> [B, embedding_dim], with an optional mask.

    Single-valued input: [B] tf.string ("" = missing, an out-of-vocabulary value).
    Multi-valued input: [B, L] tf.string padded with ""; padding is ignored by the pooling,
    and an example with no values pools to the zero vector.
    """

    def __init__(
        self,
        feature: fs.Feature,
        vocabulary: Sequence[str] | None = None,
        masked_embedding: str | None = "learned",
        shared: "FeatureEmbedding | None" = None,
        **kwargs,
    ):
        """``shared``: another feature's layer whose lookup and table this one reuses (its
        ``vocabulary`` is then ignored; the spec checked that the widths agree)."""
        super().__init__(name=kwargs.pop("name", f"embed_{feature.name}"), **kwargs)
        self.feature = feature
        if shared is not None:
            self.lookup_layer, self.num_ids, self.embedding = shared.lookup_layer, shared.num_ids, shared.embedding
        else:
            self.lookup_layer, self.num_ids = _lookup_layer(feature, vocabulary)
            self.embedding = tf.keras.layers.Embedding(
                self.num_ids, feature.embedding_dim, name=f"table_{feature.name}"
            )
        # None: this feature is never masked (query towers, unmaskable features, no-masking methods),
        # so it gets no masked embedding at all (an unused weight would have no gradient).
        self.masked = None
        if masked_embedding is not None:
            self.masked = self.add_weight(
                name=f"masked_{feature.name}",
                shape=[feature.embedding_dim],
                initializer="zeros" if masked_embedding == "zeros" else tf.keras.initializers.RandomNormal(stddev=0.05),
                trainable=masked_embedding == "learned",
            )

    def lookup(self, values: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor | None]:
        """Raw strings -> (ids [B] or [B, L] int64, valid [B, L] bool for multi-valued else None)."""
        ids = tf.cast(self.lookup_layer(values), tf.int64)
        valid = tf.not_equal(values, fs.PADDING) if self.feature.multi_valued else None
        return ids, valid

    def embed(self, ids: tf.Tensor, valid: tf.Tensor | None = None, mask: tf.Tensor | None = None) -> tf.Tensor:
        """Looked-up ids -> [B, D]: pooled over ``valid`` values, masked where ``mask``."""
        return self.pool_and_mask(self.embedding(ids), valid, mask)

    def pool_and_mask(
        self, embedded: tf.Tensor, valid: tf.Tensor | None = None, mask: tf.Tensor | None = None
    ) -> tf.Tensor:
        """Gathered embeddings ([B, D] or [B, L, D]) -> [B, D]: pooled over ``valid``, then masked."""
        if self.feature.multi_valued:
            weights = tf.cast(valid, embedded.dtype)[..., tf.newaxis]
            embedded = tf.reduce_sum(embedded * weights, axis=1)
            if self.feature.pooling == "mean":
                embedded = embedded / tf.maximum(tf.reduce_sum(weights, axis=1), 1.0)
        if mask is not None:
            if self.masked is None:
                raise ValueError(f"feature {self.feature.name!r} was built without a masked embedding")
            mask = tf.cast(mask, tf.bool)
            if mask.shape.rank == 0:  # one mask for the whole batch
                mask = tf.fill(tf.shape(embedded)[:1], mask)
            embedded = tf.where(mask[:, tf.newaxis], self.masked[tf.newaxis, :], embedded)
        return embedded

    def call(self, values: tf.Tensor, mask: tf.Tensor | None = None) -> tf.Tensor:
        """values: [B] or [B, L] tf.string; mask: None, a scalar or [B] bool -> [B, D]."""
        ids, valid = self.lookup(values)
        return self.embed(ids, valid, mask)


class Tower(tf.keras.Model):
    """Feature embeddings -> concat -> MLP -> L2 normalise: [B, hidden_sizes[-1]] float32.

    ``tower(features)``: a dict of raw string tensors (extra keys are ignored).
    ``tower(features, feature_mask=m)``: m is [F] or [B, F] bool over ``feature_names`` (spec
    order); True replaces that feature by its masked embedding.
    """

    def __init__(
        self,
        features: Sequence[fs.Feature],
        vocabularies: Mapping[str, Sequence[str]],
        hidden_sizes: Sequence[int],
        masked_embedding: str | None = "learned",
        shared: Mapping[str, FeatureEmbedding] | None = None,
        **kwargs,
    ):
        """``shared``: feature name -> another tower's FeatureEmbedding, for the features whose
        spec says ``shares_embedding`` (the item tower's layer of that name)."""
        super().__init__(**kwargs)
        self.features = tuple(features)
        self.feature_names = [f.name for f in self.features]
        shared = shared or {}
        missing = [f.name for f in self.features if f.shares_embedding and f.shares_embedding not in shared]
        if missing:
            raise ValueError(
                f"tower {self.name}: features {missing} share another tower's embedding, "
                f"which was not given (build both towers with build_towers)"
            )
        self.embeddings = [
            FeatureEmbedding(
                f,
                vocabularies.get(f.name),
                masked_embedding=masked_embedding if f.maskable else None,
                shared=shared.get(f.shares_embedding),
            )
            for f in self.features
        ]
        layers = [
            tf.keras.layers.Dense(width, activation="relu", name=f"hidden_{i}")
            for i, width in enumerate(hidden_sizes[:-1])
        ]
        layers.append(tf.keras.layers.Dense(hidden_sizes[-1], name="output"))
        self.mlp = tf.keras.Sequential(layers, name="mlp")
        self.output_dim = int(hidden_sizes[-1])

    def call(self, inputs: Mapping[str, tf.Tensor], feature_mask: tf.Tensor | None = None) -> tf.Tensor:
        return self.encode(self.lookup(inputs), feature_mask)

    def lookup(self, inputs: Mapping[str, tf.Tensor]) -> dict[str, tuple[tf.Tensor, tf.Tensor | None]]:
        """Raw strings -> per feature (ids, valid). Lets several views of one batch share one lookup."""
        missing = [name for name in self.feature_names if name not in inputs]
        if missing:
            raise KeyError(f"tower {self.name}: input lacks features {missing}; got {sorted(inputs)}")
        return {name: layer.lookup(inputs[name]) for name, layer in zip(self.feature_names, self.embeddings)}

    def encode(
        self,
        looked_up: Mapping[str, tuple[tf.Tensor, tf.Tensor | None]],
        feature_mask: tf.Tensor | None = None,
        keep: Mapping[str, tf.Tensor] | None = None,
    ) -> tf.Tensor:
        """Looked-up ids -> [B, D] L2-normalised; ``keep[name]`` ([B, L] bool) drops multi-valued values.
        One view of :meth:`encode_views`."""
        return self.encode_views(looked_up, [feature_mask], [keep or {}])[0]

    def encode_views(
        self,
        looked_up: Mapping[str, tuple[tf.Tensor, tf.Tensor | None]],
        feature_masks: Sequence[tf.Tensor | None],
        keeps: Sequence[Mapping[str, tf.Tensor]],
    ) -> list[tf.Tensor]:
        """Several views of ONE batch -> a [B, D] embedding per view (``encode`` of each view).

        The embedding rows are gathered once and shared (:meth:`concat_views`); the views go
        through the MLP as one [V * B] batch. Same result as ``encode`` per view, at a fraction
        of the cost.
        """
        per_view = self.concat_views(looked_up, feature_masks, keeps)
        if len(per_view) == 1:  # one view (``encode``, serving): no stacking
            return [tf.math.l2_normalize(self.mlp(per_view[0]), axis=-1)]
        stacked = tf.concat(per_view, axis=0)
        return tf.split(tf.math.l2_normalize(self.mlp(stacked), axis=-1), len(per_view), axis=0)

    def concat_views(
        self,
        looked_up: Mapping[str, tuple[tf.Tensor, tf.Tensor | None]],
        feature_masks: Sequence[tf.Tensor | None],
        keeps: Sequence[Mapping[str, tf.Tensor]],
    ) -> list[tf.Tensor]:
        """The MLP's input per view: [B, sum of feature widths], features in spec order.

        Each view pools with its own dropout (``keeps[v]``: name -> [B, L] kept values) and
        replaces the features its mask (``feature_masks[v]``: [F] or [B, F] bool) marks by their
        masked embeddings; the embedding rows are gathered once for all views.
        """
        feature_masks = [None if m is None else tf.convert_to_tensor(m) for m in feature_masks]
        per_view: list[list[tf.Tensor]] = [[] for _ in feature_masks]
        for i, (name, layer) in enumerate(zip(self.feature_names, self.embeddings)):
            ids, valid = looked_up[name]
            gathered = layer.embedding(ids)
            for v, (mask, keep) in enumerate(zip(feature_masks, keeps)):
                view_valid = tf.logical_and(valid, keep[name]) if name in keep else valid
                feature_mask = None if mask is None or layer.masked is None else mask[..., i]
                per_view[v].append(layer.pool_and_mask(gathered, view_valid, feature_mask))
        return [tf.concat(parts, axis=-1) for parts in per_view]


def build_towers(
    spec: fs.FeatureSpec,
    vocabularies: Mapping[str, Sequence[str]],
    query_hidden: Sequence[int],
    item_hidden: Sequence[int],
    masked_embedding: str | None = "learned",
) -> tuple[Tower, Tower]:
    """(query_tower, item_tower) for a spec; ``masked_embedding=None``: the item tower is never masked.

    A query feature with ``shares_embedding: F`` reads its values through the item tower's
    lookup and table of feature F (one variable, trained by both towers).
    """
    item = Tower(spec.item_features, vocabularies, item_hidden, masked_embedding, name="item_tower")
    shared = {layer.feature.name: layer for layer in item.embeddings}
    query = Tower(spec.query_features, vocabularies, query_hidden, None, shared=shared, name="query_tower")
    return query, item
