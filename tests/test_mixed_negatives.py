"""Mixed negative sampling (``main.mixed_negatives``, Yang et al. 2020): B' uniform corpus items
join the B in-batch candidates, logQ corrects by the mixture Q_j = B p_j + B'/N, and a uniform
candidate equal to a query's positive is an accidental hit. Checked against numpy."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import model_fixtures as mf
import numpy as np
import pytest

from recsys_ssl import augment, losses, train, tune
from recsys_ssl import config as cfg
from recsys_ssl.datasets import item_sampler
from recsys_ssl.model import TwoTowerModel
from recsys_ssl.tf_setup import tf

ROOT = pathlib.Path(__file__).resolve().parents[1]
B, B_PRIME, N = 32, 8, 96  # tiny_config's batch, the uniform draw, the fixture corpus


@pytest.fixture(scope="module")
def data():
    return mf.training_data()


def _config(mixed: int = B_PRIME, **main):
    return cfg.replace(mf.tiny_config(), main={"mixed_negatives": mixed, **main})


def _p(frequencies: dict[str, int], ids) -> np.ndarray:
    """p_j, independently of the model: add-one smoothed share of the training pairs."""
    total = sum(frequencies.values()) + len(frequencies)
    return np.array([(frequencies[i.decode()] + 1) / total for i in ids])


def reference_loss(q, c, n, pos_ids, neg_ids, p_pos, p_neg, temperature, weight, num_uniform, corpus):
    """Per-row softmax loss in numpy: candidates [c; n], logits - w log Q, Q = B p + B'/N,
    accidental hits (a candidate with the row's positive id, other than the positive) removed."""
    batch = len(pos_ids)
    candidates = np.concatenate([c, n]) if n is not None else c
    ids = np.concatenate([pos_ids, neg_ids]) if n is not None else pos_ids
    p = np.concatenate([p_pos, p_neg]) if n is not None else p_pos
    mixture = batch * p + num_uniform / corpus
    logits = q @ candidates.T / temperature - weight * np.log(mixture)[None, :]
    hits = (pos_ids[:, None] == ids[None, :]) & ~np.eye(batch, len(ids), dtype=bool)
    logits[hits] = -np.inf
    logits -= logits.max(axis=1, keepdims=True)
    return -logits[np.arange(batch), np.arange(batch)] + np.log(np.exp(logits).sum(axis=1))


def test_mixed_sampling_probability_is_the_expected_count():
    p = np.array([0.5, 0.3, 0.15, 0.05])
    # Expected counts B p_j + B'/N = [2.2, 1.4, 0.8, 0.4], over the B + B' = 6 candidate slots.
    expected = np.array([2.2, 1.4, 0.8, 0.4]) / 6
    np.testing.assert_allclose(losses.mixed_sampling_probability(p, 4, 2, 10), expected)
    np.testing.assert_array_equal(losses.mixed_sampling_probability(p, 4, 0, 10), 4 * p / 4)  # in-batch only: p_j
    q = losses.mixed_sampling_probability(tf.constant(p, tf.float32), 4.0, 2.0, 10.0)
    np.testing.assert_allclose(q.numpy(), expected, rtol=1e-6)
    # A distribution over the corpus (p over 10 items, 6 of them unseen): sums to 1, each <= 1.
    corpus_p = np.concatenate([p * 0.7, np.full(6, 0.05)])
    mixed = losses.mixed_sampling_probability(corpus_p, 4, 2, 10)
    np.testing.assert_allclose(mixed.sum(), 1.0)
    assert np.all(mixed <= 1)


def _batch(data, config, seed=0):
    return next(iter(train.training_dataset(config, data, seed=seed)))


@pytest.mark.parametrize("weight", [1.0, 0.6])
def test_main_loss_matches_the_numpy_reference(data, weight):
    config = _config(logq_weight=weight)
    model = TwoTowerModel(data.spec, config, data.vocabularies, data.item_frequencies, corpus_size=N)
    batch = _batch(data, config)
    pairs, negatives = batch["pairs"], dict(batch["negative_items"])
    # Make the first two uniform items the positives of queries 0 and 5: accidental hits to remove.
    for name in negatives:
        negatives[name] = tf.concat([tf.gather(pairs[name], [0, 5]), negatives[name][2:]], axis=0)
    key = data.spec.item_key
    pos_ids, neg_ids = pairs[key].numpy(), negatives[key].numpy()
    expected = reference_loss(
        model.query_tower(pairs).numpy(),
        model.item_tower(pairs).numpy(),
        model.item_tower(negatives).numpy(),
        pos_ids,
        neg_ids,
        _p(data.item_frequencies, pos_ids),
        _p(data.item_frequencies, neg_ids),
        config.main.temperature,
        weight,
        B_PRIME,
        N,
    ).mean()
    got = model.main_loss(pairs, False, tf.constant([0, 0], tf.int64), negatives).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4)
    # The hits matter: without removal the loss is different (the uniform copies compete).
    no_removal = TwoTowerModel(
        data.spec, _config(logq_weight=weight, remove_accidental_hits=False), data.vocabularies, data.item_frequencies
    )
    train.build_towers_now(model, data.spec)
    train.build_towers_now(no_removal, data.spec)
    no_removal.set_weights(model.get_weights())
    assert no_removal.main_loss(pairs, False, tf.constant([0, 0], tf.int64), negatives).numpy() > got + 1e-3


def test_zero_mixed_negatives_is_the_in_batch_loss(data):
    config = _config(mixed=0, logq_weight=0.6)
    model = TwoTowerModel(data.spec, config, data.vocabularies, data.item_frequencies)
    batch = _batch(data, config)
    assert set(batch) == {"pairs"}  # no uniform draw in the input pipeline
    pairs = batch["pairs"]
    ids = pairs[data.spec.item_key].numpy()
    p = _p(data.item_frequencies, ids)
    np.testing.assert_allclose(model.item_probability(pairs[data.spec.item_key]).numpy(), p**0.6, rtol=1e-6)
    expected = reference_loss(
        model.query_tower(pairs).numpy(),
        model.item_tower(pairs).numpy(),
        None,
        ids,
        None,
        p,
        None,
        config.main.temperature,
        0.6,
        0,
        N,
    ).mean()
    seed_main, _ = augment.split_seed(model._step_seed(), 2)
    main = model.main_loss(pairs, True, seed_main).numpy()
    np.testing.assert_allclose(main, expected, rtol=1e-4)
    np.testing.assert_allclose(model.compute_loss(batch, training=True).numpy(), main, rtol=1e-6)
    assert model.candidates_tracker.result().numpy() == B


def test_candidates_are_the_batch_plus_the_uniform_items(data):
    config = _config()
    model = TwoTowerModel(data.spec, config, data.vocabularies, data.item_frequencies)
    model.compute_loss(_batch(data, config), training=True)
    assert model.candidates_tracker.result().numpy() == B + B_PRIME


def test_uniform_items_come_from_the_corpus_reproducibly_per_seed(data):
    config = _config(mixed=48)
    key = data.spec.item_key
    corpus = set(data.item_arrays[key].tolist())

    def draws(seed, steps=6):
        stream = iter(train.training_dataset(config, data, seed=seed))
        return [next(stream)["negative_items"][key].numpy().tolist() for _ in range(steps)]

    first = draws(0)
    assert first == draws(0) and first != draws(1)
    for ids in first:
        assert len(ids) == 48 and len(set(ids)) == 48 and set(ids) <= corpus  # no repeats in a draw
    # Uniform: over 6 draws of half the corpus every item shows up about 3 times, tail items too.
    counts = np.unique(np.concatenate(first), return_counts=True)[1]
    assert len(counts) > 0.9 * N and counts.max() <= 6


def test_mixed_negatives_and_ssl_are_separate_draws(data):
    config = cfg.replace(mf.tiny_config("so"), main={"mixed_negatives": 16}, ssl={"batch_size": 24})
    batch = _batch(data, config)
    key = data.spec.item_key
    assert batch["negative_items"][key].shape == (16,) and batch["ssl_items"][key].shape == (24,)


def test_config_errors_name_the_field(data):
    for bad in (-1, "many", 1.5):
        with pytest.raises(cfg.ConfigError, match="main.mixed_negatives"):
            cfg.with_overrides(mf.tiny_config(), {"main.mixed_negatives": bad})
    too_many = _config(mixed=N + 1)
    with pytest.raises(ValueError, match=f"main.mixed_negatives {N + 1} exceeds the {N} items"):
        train.training_dataset(too_many, data, seed=0)
    with pytest.raises(ValueError, match=f"main.mixed_negatives {N + 1} exceeds the {N} items"):
        TwoTowerModel(data.spec, too_many, data.vocabularies, data.item_frequencies)
    TwoTowerModel(data.spec, too_many, data.vocabularies, for_inference=True)  # serving ignores it


def test_tune_leaves_mixed_negatives_to_set():
    """Not searched (it lowered a Frappe study's best, docs/tuning.md): a study's --set fixes it for every trial."""
    baseline = cfg.load_config("baseline")
    assert "main.mixed_negatives" not in {k.field for k in tune.search_space(baseline, 20000, 4082, 5)}
    fixed = cfg.with_overrides(baseline, {"main.mixed_negatives": 256})
    assert "main.mixed_negatives" not in {k.field for k in tune.search_space(fixed, 20000, 4082, 5)}
    config = tune.apply_params(fixed, {"main.temperature": 0.2})
    assert config.main.mixed_negatives == 256 and config.main.temperature == 0.2


@pytest.mark.timeout(180)
def test_short_training_run_learns_and_is_reproducible(data):
    config = cfg.replace(mf.tiny_config("so"), main={"mixed_negatives": 24})

    def fit():
        tf.keras.backend.clear_session()
        tf.keras.utils.set_random_seed(0)
        model = train.build_model(config, data)
        dataset = train.training_dataset(config, data, seed=0)
        return model, model.fit(dataset, epochs=3, steps_per_epoch=25, verbose=0).history

    model, history = fit()
    assert history["main_loss"][-1] < history["main_loss"][0] - 0.2, history["main_loss"]
    assert history["candidates"] == [B + 24] * 3
    _, again = fit()
    np.testing.assert_allclose(again["main_loss"], history["main_loss"], rtol=1e-5)
    # Evaluate: held-out pairs of the same queries rank their category's items high.
    items = item_sampler.pad_item_arrays(data.item_arrays, data.spec)
    held_out = mf.make_pairs(data.item_arrays, 256, seed=7)
    item_embeddings = model.item_tower({k: tf.constant(v.tolist()) for k, v in items.items()}).numpy()
    query = model.query_tower({k: tf.constant(v.tolist()) for k, v in held_out.items()}).numpy()
    top = np.argsort(-query @ item_embeddings.T, axis=1)[:, :20]
    rows = {item: i for i, item in enumerate(items[data.spec.item_key].tolist())}
    positives = np.array([rows[i] for i in held_out[data.spec.item_key].tolist()])
    recall = np.mean([p in t for p, t in zip(positives, top)])
    assert recall > 0.35, recall  # random: 20 / 96 ~ 0.21


_CROSS_REPLICA = """
import json, sys
sys.path.insert(0, "tests")
import model_fixtures as mf
from recsys_ssl.tf_setup import tf
from recsys_ssl import config as cfg, train
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
config = cfg.replace(mf.tiny_config(), main={"mixed_negatives": 8}, train={"cross_replica_negatives": True})
data = mf.training_data()
with strategy.scope():
    model = train.build_model(config, data)
dataset = train.training_dataset(config, data, seed=0)
batch = next(iter(dataset))
seed = tf.constant([0, 0], tf.int64)
def replica_fn(inputs):
    loss = model.main_loss(inputs["pairs"], False, seed, inputs["negative_items"])
    return loss, model.candidates_tracker.result()
# The same global batch, split between the replicas (16 pairs and 4 uniform items each).
distributed = strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensors(batch))
loss, count = strategy.run(replica_fn, args=(next(iter(distributed)),))
key = data.spec.item_key
print(json.dumps({
    "losses": [float(t.numpy()) for t in strategy.experimental_local_results(loss)],
    "candidates": [float(t.numpy()) for t in strategy.experimental_local_results(count)],
    "q": model.query_tower(batch["pairs"]).numpy().tolist(),
    "c": model.item_tower(batch["pairs"]).numpy().tolist(),
    "n": model.item_tower(batch["negative_items"]).numpy().tolist(),
    "pos": [i.decode() for i in batch["pairs"][key].numpy()],
    "neg": [i.decode() for i in batch["negative_items"][key].numpy()],
}))
"""


@pytest.mark.timeout(150)
def test_cross_replica_negatives_gather_the_uniform_items_too(data):
    """Two replicas (2 logical CPUs, a fresh process): each replica's softmax runs over the global
    batch's 32 in-batch and 8 uniform candidates, and its loss is the numpy loss of its rows."""
    result = subprocess.run(
        [sys.executable, "-c", _CROSS_REPLICA],
        capture_output=True,
        text=True,
        timeout=140,
        cwd=str(ROOT),
        env=dict(os.environ, CUDA_VISIBLE_DEVICES="", PYTHONPATH=str(ROOT), TF_USE_LEGACY_KERAS="1"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(out["candidates"]) == {B + B_PRIME} and len(out["losses"]) == 2
    pos = np.array([i.encode() for i in out["pos"]], dtype=object)
    neg = np.array([i.encode() for i in out["neg"]], dtype=object)
    per_row = reference_loss(
        np.array(out["q"]),
        np.array(out["c"]),
        np.array(out["n"]),
        pos,
        neg,
        _p(data.item_frequencies, pos),
        _p(data.item_frequencies, neg),
        mf.tiny_config().main.temperature,
        1.0,
        B_PRIME,
        N,
    )
    np.testing.assert_allclose(out["losses"], [per_row[:16].mean(), per_row[16:].mean()], rtol=1e-4)
