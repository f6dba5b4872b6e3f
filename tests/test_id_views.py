"""``ssl.id_views``: the item id in one view (split), in both, or in neither."""

from __future__ import annotations

import model_fixtures as mf
import numpy as np
import pytest

from recsys_ssl import augment, train
from recsys_ssl import config as cfg
from recsys_ssl.tf_setup import tf

# Features: item_id (id), category, tags, colour (not maskable).
IDS = np.array([True, False, False, False])
MASKABLE = np.array([True, True, True, False])


@pytest.mark.parametrize(
    "drawn_1,drawn_2",
    [
        ([True, False, True, False], [False, True, False, False]),
        ([False, True, False, False], [True, False, True, False]),
    ],
)
def test_place_ids_by_hand(drawn_1, drawn_2):
    m1, m2 = tf.constant(drawn_1), tf.constant(drawn_2)
    split = augment.place_ids(m1, m2, IDS, MASKABLE, "split")
    assert [m.numpy().tolist() for m in split] == [drawn_1, drawn_2]
    both = [m.numpy().tolist() for m in augment.place_ids(m1, m2, IDS, MASKABLE, "both")]
    assert both == [[False] + drawn_1[1:], [False] + drawn_2[1:]]  # the id is visible in both views
    none = [m.numpy().tolist() for m in augment.place_ids(m1, m2, IDS, MASKABLE, "none")]
    assert none == [[True] + drawn_1[1:], [True] + drawn_2[1:]]  # masked in both; the rest as drawn
    # Per-example [B, F] masks too.
    batch = augment.place_ids(tf.constant([drawn_1] * 3), tf.constant([drawn_2] * 3), IDS, MASKABLE, "both")
    assert batch[0].numpy()[:, 0].tolist() == [False] * 3


def test_without_feature_masks():
    assert augment.place_ids(None, None, IDS, MASKABLE, "both") == (None, None)
    m1, m2 = augment.place_ids(None, None, IDS, MASKABLE, "none")
    assert m1.numpy().tolist() == m2.numpy().tolist() == IDS.tolist()
    with pytest.raises(ValueError, match="ssl.id_views"):
        augment.place_ids(None, None, IDS, MASKABLE, "half")


@pytest.mark.timeout(180)
@pytest.mark.parametrize("augmentation,id_views", [("cfm", "both"), ("rfm", "none"), ("dropout_only", "none")])
def test_training_with_each_id_placement(augmentation, id_views):
    data = mf.training_data()
    config = cfg.replace(mf.tiny_config("ssl", augmentation), ssl={"id_views": id_views})
    tf.keras.utils.set_random_seed(0)
    model = train.build_model(config, data)
    history = model.fit(train.training_dataset(config, data, seed=0), epochs=2, steps_per_epoch=15, verbose=0).history
    assert history["ssl_loss"][-1] < history["ssl_loss"][0], history["ssl_loss"]


def test_a_bad_value_names_the_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nmethod: ssl\naugmentation: rfm\nssl: {id_views: sometimes}\n")
    with pytest.raises(cfg.ConfigError, match=r"bad.yaml: ssl.id_views: 'sometimes' is not one of"):
        cfg.load_config(bad)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("id_views,depends_on_id", [("split", True), ("both", True), ("none", False)])
def test_the_views_see_the_id_only_where_placed(id_views, depends_on_id):
    """With ``none`` neither view's embedding depends on the item id; otherwise (at least) one does."""
    data = mf.training_data()
    config = cfg.replace(mf.tiny_config("ssl", "rfm"), ssl={"id_views": id_views, "dropout_rate": 0.0})
    tf.keras.utils.set_random_seed(0)
    model = train.build_model(config, data)
    items = next(iter(train.training_dataset(config, data, seed=0)))["ssl_items"]
    other = dict(items, item_id=tf.roll(items["item_id"], shift=1, axis=0))  # every item gets another's id
    seed = tf.constant([3, 4], tf.int64)
    z, z_prime = model.ssl_views(items, seed)
    w, w_prime = model.ssl_views(other, seed)
    changed = not (np.allclose(z, w) and np.allclose(z_prime, w_prime))
    assert changed == depends_on_id
    if id_views == "both":  # visible in each view
        assert not np.allclose(z, w) and not np.allclose(z_prime, w_prime)
