"""Defaults that adapt to the catalog: what ``resolve_auto`` derives, and every shipped method
config training and evaluating on a 300-item, 2,000-pair catalog (where a fixed batch of 512
used to stop SSL/SO with "SSL batch size 512 exceeds the 300 items")."""

import model_fixtures
import numpy as np
import pytest

from recsys_ssl import config as cfg
from recsys_ssl import evaluate, paths, train
from recsys_ssl.tf_setup import tf

SHIPPED = sorted(p.stem for p in paths.CONFIGS_DIR.glob("*.yaml"))


def test_resolve_auto_derives_batch_epochs_and_ssl_batch_from_the_catalog():
    config = cfg.load_config("ssl_cfm")
    assert config.train.batch_size is None and config.train.epochs is None and config.ssl.batch_size is None
    small, derived = cfg.resolve_auto(config, num_pairs=2000, num_items=300)
    # 2% of 2,000 pairs = 40 -> 32; 62 steps per epoch -> ceil(600 / 62) = 10 epochs; SSL batch <= 150 -> 32.
    assert (small.train.batch_size, small.train.epochs, small.ssl.batch_size) == (32, 10, 32)
    assert len(derived) == 3 and "train.batch_size=32" in derived[0]
    big, _ = cfg.resolve_auto(config, num_pairs=80_000, num_items=1682)
    assert (big.train.batch_size, big.train.epochs, big.ssl.batch_size) == (256, 8, 256)
    tiny_corpus, _ = cfg.resolve_auto(config, num_pairs=80_000, num_items=100)
    assert tiny_corpus.ssl.batch_size == 32  # half the corpus, a power of two
    fixed = cfg.with_overrides(config, {"train.batch_size": 128, "train.epochs": 3, "ssl.batch_size": 64})
    assert cfg.resolve_auto(fixed, 2000, 300) == (fixed, [])  # explicit values are kept


def test_shipped_configs_hold_only_differences_from_the_base():
    base = cfg.ExperimentConfig(name="base").to_dict()
    for name in SHIPPED:
        import yaml

        raw = yaml.safe_load((paths.CONFIGS_DIR / f"{name}.yaml").read_text())
        cfg.load_config(name)  # every knob known and valid
        for section, values in raw.items():
            if isinstance(values, dict):
                for key, value in values.items():
                    assert base[section][key] != value, f"{name}.yaml repeats the base value {section}.{key}={value!r}"
            elif section not in ("name", "method", "augmentation"):
                assert base[section] != values, f"{name}.yaml repeats the base value {section}={values!r}"


@pytest.mark.timeout(600)
def test_every_shipped_config_trains_and_evaluates_on_a_300_item_catalog(tmp_path):
    data = model_fixtures.training_data(num_items=300, num_pairs=2000)
    items = data.item_arrays
    held_out = model_fixtures.make_pairs(items, 400, seed=7)
    train_pairs = model_fixtures.make_pairs(items, 2000)  # training_data's pairs (same seed)
    for name in SHIPPED:
        # Fewer steps than the shipped default (600) keep the test short; the batch sizes are the derived ones.
        config = cfg.with_overrides(cfg.load_config(name), {"train.min_steps": 60, "train.epochs": None})
        tf.keras.backend.clear_session()
        manifest = train.run(config, tmp_path / "run", data, name=name, verbose=0)
        resolved = manifest["config"]
        assert resolved["train"]["batch_size"] == 32, name
        if config.uses_ssl_batch:
            assert resolved["ssl"]["batch_size"] <= 150, name
        trained = train.load_trained(tmp_path / "run", name)
        metrics = evaluate.evaluate_arrays(
            trained,
            data.spec,
            item_arrays_dense(items, data.spec),
            (train_pairs["query_id"], train_pairs["item_id"]),
            held_out,
            ks=(10, 50),
            quiet=True,
        )
        assert np.isfinite(metrics["recall@50"]) and metrics["counts"]["items"] == 300
        # Better than ranking at random (50 of ~290 candidates: ~0.17).
        assert metrics["recall@50"] > 0.25, (name, metrics["recall@50"])


def item_arrays_dense(items, spec):
    from recsys_ssl.datasets import item_sampler

    return item_sampler.pad_item_arrays(items, spec)
