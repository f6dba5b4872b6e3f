"""The method / augmentation registry: a new augmentation is one entry and one function."""

from __future__ import annotations

import model_fixtures as mf
import numpy as np
import pytest

from recsys_ssl import config as cfg
from recsys_ssl import experiment, paths, registry, train
from recsys_ssl.datasets import item_sampler
from recsys_ssl.tf_setup import tf


@pytest.mark.timeout(120)
def test_a_new_augmentation_is_one_registry_entry_and_one_function(monkeypatch, tmp_path):
    traced = []

    # The one function: view 1 masks the id features, view 2 every other maskable feature.
    def ids_vs_rest_masks(features, seed):
        traced.append(features)
        maskable = tf.constant(features.maskable)
        ids = tf.logical_and(maskable, features.id_features)
        return ids, tf.logical_and(maskable, tf.logical_not(ids))

    # The one entry.
    monkeypatch.setitem(registry.AUGMENTATIONS, "ids_vs_rest", registry.Augmentation("ids_vs_rest", ids_vs_rest_masks))

    config = mf.tiny_config("ssl", "ids_vs_rest", epochs=2, steps_per_epoch=25)
    assert config.masks_item_features and config.ssl_drops_values and not config.needs_cfm_groups
    data = mf.training_data()
    data.cfm_groups = None  # it needs no MI job
    manifest = train.run(config, tmp_path / "run", data, verbose=0)

    assert traced and traced[0].cfm_groups is None
    assert manifest["steps"] == 50 and manifest["config"]["augmentation"] == "ids_vs_rest"
    history = manifest["history"]
    assert history["ssl_loss"][-1] < history["ssl_loss"][0] and history["main_loss"][-1] < history["main_loss"][0]
    trained = train.load_trained(tmp_path / "run", config.name)  # and it loads back as a trained model
    assert trained.config.augmentation == "ids_vs_rest"
    items = item_sampler.pad_item_arrays(data.item_arrays, mf.SPEC)
    embedding = trained.model.item_tower({name: tf.constant(values[:4].tolist()) for name, values in items.items()})
    assert embedding.shape == (4, 8) and np.all(np.isfinite(embedding.numpy()))


def test_config_validation_reads_the_registry():
    with pytest.raises(cfg.ConfigError, match="augmentation: method ssl needs one of .*'dropout_only'"):
        cfg.config_from_dict({"name": "x", "method": "ssl", "augmentation": "nope"})
    with pytest.raises(cfg.ConfigError, match="only method ssl takes an augmentation"):
        cfg.config_from_dict({"name": "x", "method": "so", "augmentation": "cfm"})
    with pytest.raises(cfg.ConfigError, match="method: 'nope' is not one of"):
        cfg.config_from_dict({"name": "x", "method": "nope"})


@pytest.mark.parametrize(
    "method,augmentation,expected",
    [
        (
            "baseline",
            None,
            dict(
                uses_ssl_batch=False,
                masks_item_features=False,
                ssl_drops_values=False,
                needs_cfm_groups=False,
                unread_sections=("ssl", "fd"),
            ),
        ),
        (
            "fd",
            None,
            dict(
                uses_ssl_batch=False,
                masks_item_features=True,
                ssl_drops_values=False,
                needs_cfm_groups=False,
                unread_sections=("ssl",),
            ),
        ),
        (
            "so",
            None,
            dict(
                uses_ssl_batch=True,
                masks_item_features=False,
                ssl_drops_values=False,
                needs_cfm_groups=False,
                unread_sections=("fd",),
            ),
        ),
        (
            "ssl",
            "cfm",
            dict(
                uses_ssl_batch=True,
                masks_item_features=True,
                ssl_drops_values=True,
                needs_cfm_groups=True,
                unread_sections=("fd",),
            ),
        ),
        ("ssl", "cfm_no_dropout", dict(masks_item_features=True, ssl_drops_values=False, needs_cfm_groups=True)),
        ("ssl", "rfm", dict(masks_item_features=True, ssl_drops_values=True, needs_cfm_groups=False)),
        ("ssl", "dropout_only", dict(masks_item_features=False, ssl_drops_values=True, needs_cfm_groups=False)),
    ],
)
def test_config_properties_come_from_the_entries(method, augmentation, expected):
    config = cfg.config_from_dict({"name": "x", "method": method, "augmentation": augmentation})
    assert {key: getattr(config, key) for key in expected} == expected


def test_every_entry_names_a_shipped_config_of_its_own_and_a_mask_function():
    assert experiment.DEFAULT_CONFIGS == (
        "baseline",
        "fd",
        "so",
        "ssl_cfm",
        "ssl_rfm",
        "ssl_rfm_no_complement",
        "ssl_cfm_no_dropout",
        "ssl_dropout_only",
    )
    for name, entry in registry.AUGMENTATIONS.items():
        config = cfg.load_config(paths.CONFIGS_DIR / f"{entry.config}.yaml")
        assert (config.method, config.augmentation) == ("ssl", name)
        assert entry.masks is None or callable(entry.mask_function())
    for name, entry in registry.METHODS.items():
        if entry.config:
            assert cfg.load_config(entry.config).method == name


@pytest.mark.timeout(300)
def test_a_new_dataset_family_is_one_registry_entry_and_one_loader(tmp_path, monkeypatch):
    """A family registered in the test (a renamed view of synthetic_catalog/tiny) loads through
    load_dataset, -val included, and unknown names list every family."""
    import dataclasses as dc

    from recsys_ssl.datasets import inputs

    def load_mirror(name, config, data_dir, raw_data_dir, csv_configs, beam_args):
        return dc.replace(inputs.load_dataset(f"synthetic_catalog/{config}", data_dir), name=name)

    families = dict(inputs.DATASET_FAMILIES, mirror=inputs.DatasetFamily("mirror/<size>", load_mirror))
    monkeypatch.setattr(inputs, "DATASET_FAMILIES", families)
    dataset = inputs.load_dataset("mirror/tiny", data_dir=str(tmp_path))
    assert dataset.name == "mirror/tiny" and dataset.num_examples("train") > 0
    validation = inputs.load_dataset("mirror/tiny-val", data_dir=str(tmp_path))
    assert validation.num_examples("train") + validation.num_examples("test") == dataset.num_examples("train")
    with pytest.raises(ValueError, match=r"movielens/.*mirror/<size>"):
        inputs.parse_name("nothing/here")
