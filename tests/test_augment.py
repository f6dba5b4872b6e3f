"""Augmentations: RFM/CFM masks and multi-valued dropout against hand-made expectations."""

from __future__ import annotations

import numpy as np
import pytest

from recsys_ssl import artifacts, augment
from recsys_ssl.tf_setup import tf

NAMES = ["item_id", "category", "subcategory", "developer", "tags", "country", "language", "price", "year"]
IDS = np.array([True] + [False] * 8)
MI_FEATURES = NAMES[1:]
# Planted groups: {category, subcategory, developer, tags}, {country, language}, {price}, {year}.
_GROUPS = [{"category", "subcategory", "developer", "tags"}, {"country", "language"}, {"price"}, {"year"}]


def _mi() -> np.ndarray:
    k = len(MI_FEATURES)
    mi = np.full((k, k), 0.01)
    for i, a in enumerate(MI_FEATURES):
        for j, b in enumerate(MI_FEATURES):
            if any(a in g and b in g for g in _GROUPS):
                mi[i, j] = 1.0 + 0.1 * (i + j) / k
    np.fill_diagonal(mi, 2.0)
    return mi


def _seeds(n):
    return [tf.constant([7, i], tf.int64) for i in range(n)]


def test_rfm_masks_cover_every_maskable_feature_exactly_once():
    maskable = np.array([True] * 8 + [False])  # the last feature is not maskable
    sizes = set()
    for seed in _seeds(50):
        m1, m2 = (m.numpy() for m in augment.rfm_masks(maskable, seed))
        np.testing.assert_array_equal(m1.astype(int) + m2.astype(int), maskable.astype(int))
        sizes.add(int(m1.sum()))
    assert sizes == {4}  # floor(k/2) of the k = 8 maskable features in view 1


def test_rfm_masks_are_random_splits():
    splits = {tuple(augment.rfm_masks([True] * 6, seed)[0].numpy()) for seed in _seeds(60)}
    assert len(splits) > 10  # C(6,3) = 20 possible


def test_rfm_without_complement_draws_independent_halves():
    masks = [tuple(m.numpy() for m in augment.rfm_no_complement_masks([True] * 6, seed)) for seed in _seeds(40)]
    overlapping = sum(np.any(np.array(a) & np.array(b)) for a, b in masks)
    assert overlapping > 20  # complements would never overlap
    assert all(np.array(a).sum() == 3 and np.array(b).sum() == 3 for a, b in masks)


def test_cfm_group_matrix_takes_each_seed_and_its_top_partners():
    groups = artifacts.cfm_groups(MI_FEATURES, _mi(), group_size=4)
    matrix = augment.cfm_group_matrix(NAMES, groups["ranked_partners"], 4)
    assert matrix.shape == (8, 9)
    for row, seed in zip(matrix, MI_FEATURES):
        masked = {NAMES[i] for i in np.flatnonzero(row)}
        assert masked == set(groups["groups"][seed])
        assert seed in masked and "item_id" not in masked and len(masked) == 4
    category_row = matrix[MI_FEATURES.index("category")]
    assert {NAMES[i] for i in np.flatnonzero(category_row)} == {"category", "subcategory", "developer", "tags"}


def test_cfm_masks_correlated_features_together_and_the_views_are_complements():
    groups = artifacts.cfm_groups(MI_FEATURES, _mi(), group_size=4)
    matrix = augment.cfm_group_matrix(NAMES, groups["ranked_partners"], 4)
    maskable = np.ones(9, bool)
    seen_rows, id_in_view_1 = set(), []
    for seed in _seeds(200):
        m1, m2 = (m.numpy() for m in augment.cfm_masks(matrix, IDS, maskable, seed))
        np.testing.assert_array_equal(m1 ^ m2, maskable)  # complements: every feature in exactly one view
        without_id = m1 & ~IDS
        row = next(i for i, r in enumerate(matrix) if np.array_equal(r, without_id))
        seen_rows.add(tuple(without_id))
        id_in_view_1.append(bool(m1[0]))
        seed_feature = MI_FEATURES[row]
        partners = groups["groups"][seed_feature]
        # The seed and ALL its top-MI partners are masked together in view 1, none in view 2
        # (PAPER.md section 6: splitting them would re-create the shortcut).
        assert all(m1[NAMES.index(p)] for p in partners) and not any(m2[NAMES.index(p)] for p in partners)
        if seed_feature == "category":
            assert m1[NAMES.index("subcategory")] and m1[NAMES.index("developer")] and m1[NAMES.index("tags")]
    assert seen_rows == {tuple(r) for r in matrix}  # every seed's group drawn (identical groups coincide)
    assert 0.35 < np.mean(id_in_view_1) < 0.65  # the id follows a fair coin


def test_cfm_masking_a_seed_masks_its_partner_in_the_same_view():
    # Two correlated pairs: whichever feature is the seed, its twin is masked with it,
    # never on the opposite view.
    names = ["a", "a_twin", "b", "b_twin"]
    mi = np.array([[1, 0.9, 0.1, 0.1], [0.9, 1, 0.1, 0.1], [0.1, 0.1, 1, 0.8], [0.1, 0.1, 0.8, 1]], float)
    groups = artifacts.cfm_groups(names, mi, group_size=2)
    matrix = augment.cfm_group_matrix(names, groups["ranked_partners"], 2)
    for seed in _seeds(40):
        m1, m2 = (m.numpy() for m in augment.cfm_masks(matrix, [False] * 4, [True] * 4, seed))
        assert m1[0] == m1[1] and m1[2] == m1[3] and m1[0] != m1[2]


def test_dropout_keep_rate_and_seeds():
    valid = tf.constant([[True, True, True, False], [True, False, False, False]] * 500)
    seed = tf.constant([1, 2], tf.int64)
    keep = augment.dropout_keep_masks({"tags": valid}, 0.3, seed)["tags"].numpy()
    assert keep.shape == (1000, 4) and abs(1 - keep.mean() - 0.3) < 0.03
    same = augment.dropout_keep_masks({"tags": valid}, 0.3, seed)["tags"].numpy()
    other = augment.dropout_keep_masks({"tags": valid}, 0.3, tf.constant([1, 3], tf.int64))["tags"].numpy()
    assert np.array_equal(keep, same) and not np.array_equal(keep, other)  # seeded, independent per view
    two = augment.dropout_keep_masks({"a": valid, "b": valid}, 0.3, seed)
    assert not np.array_equal(two["a"].numpy(), two["b"].numpy())  # each feature its own draw
    assert augment.dropout_keep_masks({"tags": valid}, 0.0, seed) == {}


def test_feature_dropout_masks_rate_and_maskable():
    mask = augment.feature_dropout_masks(4000, [True, True, False], 0.25, tf.constant([0, 1], tf.int64)).numpy()
    assert mask.shape == (4000, 3) and not mask[:, 2].any()
    assert abs(mask[:, :2].mean() - 0.25) < 0.02


def test_cfm_group_matrix_rejects_a_bad_group_size():
    groups = artifacts.cfm_groups(MI_FEATURES, _mi())
    with pytest.raises(ValueError, match="group size"):
        augment.cfm_group_matrix(NAMES, groups["ranked_partners"], 20)
