"""The synthetic catalog's oracle: a hand-made catalog, exactness against the sampler, the oracle configs."""

import hashlib

import numpy as np
import pytest

from recsys_ssl import evaluate, oracle
from recsys_ssl.datasets import inputs
from recsys_ssl.datasets import synthetic_catalog as sc

# Hand-made: 3 queries x 5 items, p(item | query) written out; ids given as bytes / str on purpose.
HAND_P = np.array(
    [
        [0.40, 0.30, 0.15, 0.10, 0.05],  # u0
        [0.05, 0.10, 0.15, 0.30, 0.40],  # u1
        [0.50, 0.10, 0.10, 0.10, 0.20],  # u2
    ]
)
HAND_ITEMS = [b"i0", b"i1", b"i2", b"i3", b"i4"]
HAND_QUERIES = [b"u0", b"u1", b"u2"]
HAND_TRAIN = (["u0", "u1", "u1"], ["i0", "i0", "i4"])  # counts i0: 2, i4: 1 -> head (20% of 5 = 1 item) = {i0}
HAND_TEST = (["u0", "u0", "u1", "u1", "u2", "u2"], ["i1", "i3", "i3", "i2", "i0", "i4"])


def _hand_oracle() -> oracle.Oracle:
    # One-hot queries against log-probability items: dot = log p(item | query) exactly.
    return oracle.Oracle(
        np.array(HAND_ITEMS, dtype=object), np.array(HAND_QUERIES, dtype=object), np.eye(3), np.log(HAND_P).T.copy()
    )


def test_hand_made_catalog_recall_computed_by_hand():
    """By hand. Exclusions: u0 {i0}, u1 {i0, i4}, u2 {}. Oracle rankings after exclusions:
    u0: i1 .30, i2 .15 | u1: i3 .30, i2 .15 | u2: i0 .50, i4 .20.
    K=1: u0 hits i1 of {i1, i3} (1/2), u1 i3 of {i3, i2} (1/2), u2 i0 of {i0, i4} (1/2) -> 0.5.
    K=2: u0 1/2, u1 2/2, u2 2/2 -> 5/6.
    Head {i0}: one test pair (u2, i0), hit at K=1 and K=2 -> 1.0.
    Tail: 5 test pairs (u0 i1, u0 i3, u1 i3, u1 i2, u2 i4); hits K=1: u0 i1, u1 i3 -> 2/5;
    K=2: + u1 i2, u2 i4 -> 4/5.
    """
    hand = _hand_oracle()
    np.testing.assert_allclose(np.exp(hand.log_probs([0, 1, 2])), HAND_P, rtol=1e-12)
    corpus = ["i3", "i0", "i4", "i1", "i2"]  # any corpus order: items are matched by id
    got = oracle.oracle_recall(hand, corpus, HAND_TRAIN, HAND_TEST, ks=(1, 2), head_fraction=0.2)
    assert got["recall@1"] == pytest.approx(0.5) and got["recall@2"] == pytest.approx(5 / 6)
    assert got["slices"]["head"]["recall@1"] == 1.0 and got["slices"]["head"]["test_interactions"] == 1
    assert got["slices"]["tail"]["recall@1"] == pytest.approx(2 / 5)
    assert got["slices"]["tail"]["recall@2"] == pytest.approx(4 / 5)
    assert got["counts"]["excluded_pairs"] == 3 and got["head_items"] == 1

    method = {
        "recall@1": 0.25,
        "recall@2": 0.5,
        "definition": {"ks": [1, 2]},
        "slices": {"head": {"recall@1": 0.5, "recall@2": 1.0}, "tail": {"recall@1": 0.1, "recall@2": 0.2}},
    }
    share = oracle.share_of_oracle(method, got)
    assert share["tail"]["recall@2"] == pytest.approx(0.25) and share["tail"]["recall@1"] == pytest.approx(0.25)
    assert share["overall"]["recall@2"] == pytest.approx(0.6) and share["head"]["recall@1"] == pytest.approx(0.5)


def test_oracle_refuses_ids_the_generator_does_not_know():
    with pytest.raises(ValueError, match="unknown to the generator"):
        oracle.oracle_recall(_hand_oracle(), HAND_ITEMS + [b"i9"], HAND_TRAIN, HAND_TEST)


@pytest.mark.parametrize("setting", [{}, sc.ORACLE_SETTING])
def test_oracle_is_the_samplers_law(setting):
    """p(item | query) of the oracle = the normalised joint p(item) p(query | item), and the sampled pairs follow it."""
    items = sc.generate_items(40, seed=7)
    setting = {"temperature": 0.5, **setting}
    orc = oracle.from_generator(items, seed=7, num_queries=6, zipf_exponent=1.0, **setting)
    model = sc.latent_model(items, 7, 6, **setting)
    logits = model.x.astype(np.float64) @ model.z.astype(np.float64).T  # [items, queries]
    p_q_given_i = np.exp(logits - logits.max(axis=1, keepdims=True))
    p_q_given_i /= p_q_given_i.sum(axis=1, keepdims=True)
    joint = sc.item_popularity(model.rank_to_item, 1.0)[:, None] * p_q_given_i
    expected = (joint / joint.sum(axis=0)).T  # [queries, items]
    np.testing.assert_allclose(np.exp(orc.log_probs(range(6))), expected, rtol=1e-9, atol=1e-15)

    pairs = sc.generate_pairs(items, 300_000, seed=7, num_queries=6, **setting)
    empirical = np.zeros((6, 40))
    np.add.at(empirical, (pairs.query_rows, pairs.item_rows), 1.0)
    empirical /= empirical.sum(axis=1, keepdims=True)
    total_variation = 0.5 * np.abs(empirical - expected).sum(axis=1)
    assert total_variation.max() < 0.02, total_variation


def _digest(config_name: str) -> str:
    items, interactions, table = sc.build_pairs(sc.SyntheticCatalog.builder_configs[config_name])
    h = hashlib.sha256()
    for columns in (items, interactions.queries):
        for name in sorted(columns):
            h.update(repr(list(columns[name])).encode())
    for array in (interactions.query_rows, interactions.item_rows, interactions.timestamps, interactions.item_ranks):
        h.update(np.ascontiguousarray(array, dtype=np.int64).tobytes())
    for split in sorted(table.splits):
        h.update(split.encode())
        h.update(np.asarray(table.splits[split]).tobytes())
    return h.hexdigest()


# Digests of the generator's output before the oracle configs existed (commit 32e4881).
OLD_DIGESTS = {
    "tiny": "3839af1ae057c1fe81981ea25b1d4cf619a03491295e935992ac8d630d4eecb8",
    "10k": "94693e469287da0c93f804c1d12b1aaef31d4a1e7d51205a1ac5327dce91996f",
}
OLD_TINY_TFDS_DIGEST = "1cc9fb498da334640a0fb3140ac67bb0918c383c882268cafd9fda665c244dfa"


@pytest.mark.parametrize("name", sorted(OLD_DIGESTS))
def test_existing_configs_generate_the_same_bytes(name):
    assert _digest(name) == OLD_DIGESTS[name]


def test_existing_tiny_tfds_examples_unchanged(tmp_path):
    dataset = inputs.load_dataset("synthetic_catalog/tiny", data_dir=tmp_path)
    h = hashlib.sha256()
    corpus = dataset.item_arrays()
    for name in sorted(corpus):
        h.update(repr(list(corpus[name])).encode())
    for split in ("train", "test", "train_10pct"):
        arrays = inputs.dataset_arrays(dataset.pairs(split))
        for name in sorted(arrays):
            h.update(name.encode())
            h.update(repr([v.tolist() if hasattr(v, "tolist") else v for v in arrays[name]]).encode())
    assert h.hexdigest() == OLD_TINY_TFDS_DIGEST


def _config_recall(name: str, features_only: bool = False, ks=(50,)) -> dict:
    """The oracle's metrics on a config's test split, from the generator's arrays (no TFDS)."""
    config = sc.SyntheticCatalog.builder_configs[name]
    items, interactions, table = sc.build_pairs(config)
    item_ids, query_ids = items["item_id"], interactions.queries["query_id"]

    def pairs(split):
        rows = table.splits[split]
        return query_ids[table.query_rows[rows]], item_ids[table.item_rows[rows]]

    return oracle.oracle_recall(
        oracle.from_config(config, features_only=features_only), item_ids, pairs("train"), pairs("test"), ks=ks
    )


@pytest.fixture(scope="module")
def oracle_10k():
    return _config_recall("oracle_10k"), _config_recall("oracle_10k", features_only=True)


def test_oracle_config_has_substantial_tail_recall(oracle_10k):
    full, _ = oracle_10k
    assert full["slices"]["tail"]["recall@50"] >= 0.3, full["slices"]["tail"]
    assert full["recall@50"] >= 0.3 and full["slices"]["head"]["recall@50"] > 0.1
    # Today's setting, for contrast: the true p(item | query) ranks few tail items in a top 50.
    assert _config_recall("10k")["slices"]["tail"]["recall@50"] < 0.2


def test_oracle_config_item_marginal_is_zipf():
    """The item law is the default's Zipf(1.0): log-log slope of sorted item counts, ranks 1..300, in [-1.05, -0.95]."""
    config = sc.SyntheticCatalog.builder_configs["oracle_10k"]
    _, interactions, _ = sc.build_pairs(config)
    counts = np.sort(np.bincount(interactions.item_rows, minlength=config.num_items))[::-1]
    ranks = np.arange(1, 301)
    slope = np.polyfit(np.log(ranks), np.log(counts[:300]), 1)[0]
    assert -1.05 <= slope <= -0.95, slope
    assert config.zipf_exponent == 1.0 and config.temperature < sc.TEMPERATURE and config.unit_queries


def test_oracle_config_relevance_is_a_function_of_item_features(oracle_10k):
    """The feature oracle (item latents from the item's feature values alone, no per-item noise;
    the same popularity prior) recovers >= 95% of the full oracle's Recall@50, overall and tail."""
    full, features = oracle_10k
    assert features["recall@50"] >= 0.95 * full["recall@50"]
    assert features["slices"]["tail"]["recall@50"] >= 0.95 * full["slices"]["tail"]["recall@50"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A run folder holding synthetic_catalog/tiny under <run>/tfds, and the oracle's metrics on it."""
    from recsys_ssl.paths import tfds_dir

    run_dir = tmp_path_factory.mktemp("run")
    dataset = inputs.load_dataset("synthetic_catalog/tiny", data_dir=str(tfds_dir(run_dir)))
    return run_dir, dataset, oracle.dataset_recall(dataset, ks=(10, 50))


def _fake_method(own: dict) -> dict:
    """A model's metrics.json whose head / tail Recall@50 are half the oracle's (overall: equal)."""
    method = {key: own[key] for key in ("recall@10", "recall@50", "map@10", "map@50", "counts", "definition")}
    method["slices"] = {
        s: {**own["slices"][s], "recall@50": own["slices"][s]["recall@50"] / 2} for s in ("head", "tail")
    }
    method.update(
        dataset="synthetic_catalog/tiny",
        split="test",
        mode=evaluate.USER_ITEM,
        per_pair=False,
        head_fraction=evaluate.PROTOCOL_HEAD_FRACTION,
    )
    return method


def test_command_adds_oracle_and_share_to_metrics_json(tiny_run):
    """``python -m recsys_ssl.oracle --name``: TFDS data, the evaluator's layout, and the share of the oracle."""
    import json

    from recsys_ssl.paths import RunLayout

    run_dir, _, own = tiny_run
    assert own["recall@50"] == pytest.approx(_config_recall("tiny", ks=(10, 50))["recall@50"])
    evaluate.write_metrics(run_dir, "half", _fake_method(own))
    assert oracle.main(["--run-dir", str(run_dir), "--name", "half"]) == 0
    written = json.loads((RunLayout(run_dir).eval("half") / "metrics.json").read_text())
    assert written["oracle"]["slices"]["tail"]["recall@50"] == pytest.approx(own["slices"]["tail"]["recall@50"])
    assert written["share_of_oracle"]["tail"]["recall@50"] == pytest.approx(0.5)
    assert written["share_of_oracle"]["overall"]["recall@10"] == pytest.approx(1.0)
    assert "oracle" in oracle.format_report(written)


def test_evaluate_run_with_oracle_writes_it_next_to_the_model(tiny_run, monkeypatch):
    """The ``recsys-ssl evaluate --oracle`` hook (the model side stubbed: its metrics are given)."""
    import types

    from recsys_ssl import checkpoints

    run_dir, _, own = tiny_run
    trained = types.SimpleNamespace(config=types.SimpleNamespace(dataset="synthetic_catalog/tiny", to_dict=dict))
    monkeypatch.setattr(checkpoints, "load_trained", lambda *args: trained)
    monkeypatch.setattr(evaluate, "evaluate_model", lambda *args, **kwargs: _fake_method(own))
    without = evaluate.run(run_dir, "stub", ks=(10, 50))
    assert "oracle" not in without
    metrics = evaluate.run(run_dir, "stub", ks=(10, 50), extend=oracle.attach)
    assert metrics["share_of_oracle"]["tail"]["recall@50"] == pytest.approx(0.5)
    assert metrics["oracle"]["recall@50"] == pytest.approx(own["recall@50"])
