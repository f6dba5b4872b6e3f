"""Evaluation of a really trained tiny model (tests/model_fixtures.py): train -> load -> evaluate."""

import model_fixtures as fx
import numpy as np
import pytest

from recsys_ssl import evaluate, train
from recsys_ssl.datasets import item_sampler


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    config = fx.tiny_config("baseline", epochs=1, steps_per_epoch=60)
    train.run(config, run_dir, fx.training_data(), verbose=0)
    return run_dir, config.name


def brute_force_recall(query_vectors, item_vectors, test_sets, exclude_sets, k):
    recalls = []
    for q, vector in enumerate(query_vectors):
        scores = [(-float(np.dot(vector, item)), j) for j, item in enumerate(item_vectors) if j not in exclude_sets[q]]
        top = {j for _, j in sorted(scores)[:k]}
        recalls.append(len(top & test_sets[q]) / len(test_sets[q]))
    return recalls


@pytest.mark.timeout(180)
def test_trained_model_end_to_end(trained_run, tmp_path):
    run_dir, name = trained_run
    trained = train.load_trained(run_dir, name)
    items = fx.make_items()
    train_pairs = fx.make_pairs(items, 2048)  # the pairs training_data() used
    test_pairs = fx.make_pairs(items, 300, seed=7)
    corpus = item_sampler.pad_item_arrays(items, fx.SPEC)
    fx.write_artifacts(tmp_path, items, train_pairs)  # stats/item_frequencies.tsv, for the cross-check
    result = evaluate.evaluate_arrays(
        trained,
        fx.SPEC,
        corpus,
        (train_pairs["query_id"], train_pairs["item_id"]),
        test_pairs,
        ks=(10, 50),
        head_fraction=0.2,
        batch_size=40,
        stats_dir=tmp_path / "stats",
    )
    assert result["mode"] == evaluate.USER_ITEM
    assert result["stats_item_frequencies"] == "agrees"
    assert result["counts"]["items"] == 96 and result["head_items"] == 19

    # Independent expectation: embed with the towers directly, brute-force per query.
    from recsys_ssl.tf_setup import tf

    item_vectors = trained.model.item_tower({k: tf.constant(v) for k, v in corpus.items()}).numpy().astype(np.float64)
    ids = [i.decode() for i in items["item_id"]]
    queries = sorted(set(test_pairs["query_id"].tolist()))
    first = [int(np.flatnonzero(test_pairs["query_id"] == q)[0]) for q in queries]
    query_vectors = (
        trained.model.query_tower({f: tf.constant(test_pairs[f][first]) for f in fx.SPEC.query_feature_names})
        .numpy()
        .astype(np.float64)
    )
    test_sets = [{ids.index(i.decode()) for i in test_pairs["item_id"][test_pairs["query_id"] == q]} for q in queries]
    exclude_sets = [
        {ids.index(i.decode()) for i in train_pairs["item_id"][train_pairs["query_id"] == q]} for q in queries
    ]
    item_vectors /= np.linalg.norm(item_vectors, axis=1, keepdims=True)
    query_vectors /= np.linalg.norm(query_vectors, axis=1, keepdims=True)
    for k in (10, 50):
        expected = brute_force_recall(query_vectors, item_vectors, test_sets, exclude_sets, k)
        assert result[f"recall@{k}"] == pytest.approx(float(np.mean(expected)), abs=1e-12)
    # Training helped: random embeddings under the same test and exclusion sets do worse.
    rng = np.random.default_rng(0)
    random_recall = np.mean(
        [
            evaluate.retrieval_metrics(
                rng.normal(size=(len(queries), 8)),
                rng.normal(size=(96, 8)),
                [sorted(t) for t in test_sets],
                [sorted(e) for e in exclude_sets],
                ks=(10,),
            )["recall@10"]
            for _ in range(5)
        ]
    )
    assert result["recall@10"] > 1.2 * random_recall
