"""SSL augmentations as pure tensor functions: feature masks (RFM, CFM) and per-value dropout.

Every function is stateless: randomness comes from a ``seed`` (int32/int64 tensor of shape
[2], as ``tf.random.stateless_*`` take), so a step's augmentation is reproducible and the same
under any distribution strategy. Masks are boolean over the item tower's features in spec
order, ``True`` = replace that feature by its masked embedding. A mask of shape [F] applies to
the whole batch (the paper draws one split per batch); [B, F] masks are per example.

The two stages (PAPER.md section 3): 1. feature masking, complementary between the views;
2. dropout of the values of multi-valued features, independently per view.
"""

from __future__ import annotations

from typing import Mapping, NamedTuple, Sequence

import numpy as np

from recsys_ssl.tf_setup import tf


def split_seed(seed: tf.Tensor, num: int) -> list[tf.Tensor]:
    """``num`` independent [2] seeds derived from one."""
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=num)
    return [seeds[i] for i in range(num)]


def _random_half(maskable: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """[F] bool: a uniformly random subset of floor(k/2) of the k maskable features."""
    maskable = tf.convert_to_tensor(maskable, tf.bool)
    scores = tf.random.stateless_uniform(tf.shape(maskable), seed=seed)
    # Unmaskable features sort last, so they are never drawn.
    scores = tf.where(maskable, scores, 2.0)
    ranks = tf.argsort(tf.argsort(scores))
    k = tf.reduce_sum(tf.cast(maskable, tf.int32))
    return ranks < k // 2


def rfm_masks(maskable: Sequence[bool] | tf.Tensor, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Random feature masking: a random half of the maskable features in view 1, the rest in view 2.

    Args:
      maskable: [F] bool, which item features may be masked (ids included).
      seed: [2] int seed.
    Returns:
      (mask_1, mask_2), each [F] bool; over the maskable features they are complements, so
      every maskable feature is masked in exactly one view.
    """
    maskable = tf.convert_to_tensor(maskable, tf.bool)
    mask_1 = _random_half(maskable, seed)
    return mask_1, tf.logical_and(maskable, tf.logical_not(mask_1))


def rfm_no_complement_masks(maskable: Sequence[bool] | tf.Tensor, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """RFM ablation: each view masks its own independent random half ([F] bool each)."""
    seed_1, seed_2 = split_seed(seed, 2)
    return _random_half(maskable, seed_1), _random_half(maskable, seed_2)


def cfm_group_matrix(
    feature_names: Sequence[str],
    ranked_partners: Mapping[str, Sequence[str]],
    group_size: int,
    maskable: Sequence[bool] | None = None,
) -> np.ndarray:
    """The CFM masking groups as a [S, F] bool matrix, one row per seed feature.

    Row s masks the seed and its ``group_size - 1`` highest-MI partners (from the MI job's
    ``ranked_partners``: every other MI feature, MI descending, ties by name), restricted to
    maskable features. Seeds are the maskable features that have MI rankings (the non-id
    features), in ``feature_names`` order.
    """
    names = list(feature_names)
    index = {name: i for i, name in enumerate(names)}
    maskable = [True] * len(names) if maskable is None else list(maskable)
    seeds = [n for n in names if n in ranked_partners and maskable[index[n]]]
    if not seeds:
        raise ValueError(f"CFM: none of the features {names} has MI partners; got seeds {sorted(ranked_partners)}")
    if not 1 <= group_size <= len(seeds):
        raise ValueError(f"CFM: group size {group_size} must be between 1 and the {len(seeds)} maskable MI features")
    rows = np.zeros((len(seeds), len(names)), dtype=bool)
    for s, seed in enumerate(seeds):
        partners = [p for p in ranked_partners[seed] if p in index and maskable[index[p]] and p in ranked_partners]
        for name in [seed] + partners[: group_size - 1]:
            rows[s, index[name]] = True
    return rows


def cfm_masks(
    groups: np.ndarray | tf.Tensor,
    id_features: Sequence[bool] | tf.Tensor,
    maskable: Sequence[bool] | tf.Tensor,
    seed: tf.Tensor,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Correlated feature masking: a seed's group is masked TOGETHER in view 1, the rest in view 2.

    Args:
      groups: [S, F] bool from ``cfm_group_matrix``; the seed row is drawn uniformly.
      id_features: [F] bool; each maskable id feature joins view 1's mask or view 2's by a
        fair coin (ids carry no MI, so they have no group).
      maskable: [F] bool.
      seed: [2] int seed.
    Returns:
      (mask_1, mask_2), [F] bool, complements over the maskable features. Correlated
      features are never split across the views, which would let each view predict the
      other's masked features (the shortcut CFM removes, PAPER.md section 6).
    """
    groups = tf.convert_to_tensor(groups, tf.bool)
    id_features = tf.convert_to_tensor(id_features, tf.bool)
    maskable = tf.convert_to_tensor(maskable, tf.bool)
    seed_row, seed_coin = split_seed(seed, 2)
    row = tf.random.stateless_uniform([], seed=seed_row, minval=0, maxval=tf.shape(groups)[0], dtype=tf.int32)
    coins = tf.random.stateless_uniform(tf.shape(id_features), seed=seed_coin) < 0.5
    ids_in_1 = tf.logical_and(tf.logical_and(id_features, maskable), coins)
    mask_1 = tf.logical_or(tf.gather(groups, row), ids_in_1)
    return mask_1, tf.logical_and(maskable, tf.logical_not(mask_1))


ID_VIEWS = ("split", "both", "none")


def place_ids(
    mask_1: tf.Tensor | None,
    mask_2: tf.Tensor | None,
    id_features: Sequence[bool] | tf.Tensor,
    maskable: Sequence[bool] | tf.Tensor,
    id_views: str,
) -> tuple[tf.Tensor | None, tf.Tensor | None]:
    """Where the item-id features go in the two views (``ssl.id_views``), after the augmentation drew its masks.

    ``split``: as drawn (RFM and CFM put each id in exactly one view, the paper's setting);
    ``both``: unmasked in both views (the two views share the id, as in the variants whose
    views overlap); ``none``: masked in both (the views agree on features only).
    mask_1, mask_2: [F] or [B, F] bool, or None (an augmentation that masks nothing).
    """
    if id_views == "split":
        return mask_1, mask_2
    if id_views not in ID_VIEWS:
        raise ValueError(f"ssl.id_views must be one of {ID_VIEWS}, got {id_views!r}")
    ids = tf.logical_and(tf.convert_to_tensor(id_features, tf.bool), tf.convert_to_tensor(maskable, tf.bool))
    if mask_1 is None:
        if id_views == "both":  # nothing is masked anyway
            return None, None
        mask_1 = mask_2 = tf.zeros_like(ids)
    if id_views == "both":
        return tf.logical_and(mask_1, tf.logical_not(ids)), tf.logical_and(mask_2, tf.logical_not(ids))
    return tf.logical_or(mask_1, ids), tf.logical_or(mask_2, ids)


class MaskInputs(NamedTuple):
    """What a registry mask function reads of the item tower's features (spec order)."""

    maskable: np.ndarray  # [F] bool
    id_features: np.ndarray  # [F] bool
    cfm_groups: np.ndarray | None = None  # [S, F] bool, for augmentations that need CFM groups


# The registry's mask functions (``registry.AUGMENTATIONS``): (MaskInputs, seed) -> (mask_1, mask_2).
def rfm_view_masks(features: MaskInputs, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    return rfm_masks(features.maskable, seed)


def rfm_no_complement_view_masks(features: MaskInputs, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    return rfm_no_complement_masks(features.maskable, seed)


def cfm_view_masks(features: MaskInputs, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    return cfm_masks(features.cfm_groups, features.id_features, features.maskable, seed)


def feature_dropout_masks(
    batch_size: tf.Tensor | int, maskable: Sequence[bool] | tf.Tensor, rate: float, seed: tf.Tensor
) -> tf.Tensor:
    """FD baseline: [B, F] bool, each maskable feature of each example masked with probability ``rate``."""
    maskable = tf.convert_to_tensor(maskable, tf.bool)
    draws = tf.random.stateless_uniform(tf.stack([batch_size, tf.size(maskable)]), seed=seed)
    return tf.logical_and(draws < rate, maskable[tf.newaxis, :])


def dropout_keep(shape: tf.Tensor, rate: float, seed: tf.Tensor) -> tf.Tensor:
    """Per-value dropout of a multi-valued feature: [B, L] bool, True = the value is kept
    (each value dropped with probability ``rate``). The towers pool only valid and kept values,
    so a dropped value acts as padding; padding stays padding."""
    return tf.random.stateless_uniform(shape, seed=seed) >= rate


def dropout_keep_masks(valid: Mapping[str, tf.Tensor], rate: float, seed: tf.Tensor) -> dict[str, tf.Tensor]:
    """Per multi-valued feature (``valid``: name -> its [B, L] valid values), its ``dropout_keep``
    mask, each from its own seed split off ``seed``: the one dropout of FD and of the SSL views."""
    names = list(valid)
    if rate <= 0.0 or not names:
        return {}
    return {
        name: dropout_keep(tf.shape(valid[name]), rate, sub_seed)
        for name, sub_seed in zip(names, split_seed(seed, len(names)))
    }
