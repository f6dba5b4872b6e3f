"""The diagnostics' numpy core against hand-computed values on tiny hand-made arrays."""

import math

import numpy as np
import pytest

from recsys_ssl import diagnostics as dg
from recsys_ssl import evaluate


def test_alignment_of_identical_views_is_zero():
    z = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    assert dg.alignment(z, z.copy()) == 0.0


def test_alignment_by_hand():
    z1 = np.array([[1.0, 0.0], [0.0, 1.0]])
    z2 = np.array([[-1.0, 0.0], [1.0, 0.0]])  # antipodal: |d|^2 = 4; orthogonal: |d|^2 = 2
    assert dg.alignment(z1, z2) == pytest.approx((4.0 + 2.0) / 2)
    assert dg.alignment(z1, z2, alpha=1) == pytest.approx((2.0 + math.sqrt(2.0)) / 2)
    assert dg.alignment(np.zeros((0, 2)), np.zeros((0, 2))) is None
    with pytest.raises(ValueError, match="paired rows"):
        dg.alignment(z1, z2[:1])


def test_uniformity_of_two_antipodal_points():
    z = np.array([[0.0, 1.0], [0.0, -1.0]])  # one pair, |d|^2 = 4
    assert dg.uniformity(z) == pytest.approx(-8.0)
    assert dg.uniformity(z, t=0.5) == pytest.approx(-2.0)
    assert dg.uniformity(z[:1]) is None


def test_uniformity_three_points_by_hand():
    # Unit vectors at 0, 90 and 180 degrees: pair distances^2 = 2, 4, 2.
    z = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    expected = math.log((math.exp(-4.0) + math.exp(-8.0) + math.exp(-4.0)) / 3)
    assert dg.uniformity(z) == pytest.approx(expected, abs=1e-12)
    # Collapsed embeddings: every distance 0, uniformity log(1) = 0 (its maximum).
    assert dg.uniformity(np.tile([[0.6, 0.8]], (5, 1))) == pytest.approx(0.0)


def test_uniformity_samples_pairs_deterministically_when_many():
    rng = np.random.default_rng(3)
    z = dg.normalize_rows(rng.normal(size=(300, 4)))
    i, j = dg.distinct_pairs(300, max_pairs=5000, seed=1)
    assert len(i) == 5000 and (i != j).all() and i.max() < 300 and j.max() < 300
    assert np.array_equal(i, dg.distinct_pairs(300, 5000, seed=1)[0])
    exact = dg.uniformity(z)  # 44,850 pairs <= 200,000: all of them
    sampled = dg.uniformity(z, max_pairs=5000, seed=1)
    assert sampled == dg.uniformity(z, max_pairs=5000, seed=1)
    assert sampled == pytest.approx(exact, abs=0.05)
    a, b = dg.distinct_pairs(4)
    assert sorted(zip(a.tolist(), b.tolist())) == [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]


def test_nearest_head_cosine_on_hand_placed_vectors():
    # head: e1 and e2; tail: (1, 1) / sqrt 2 -> cos 1/sqrt 2 to both; (-1, 0) -> cos 0 to e2, -1 to e1.
    z = np.array([[2.0, 0.0], [0.0, 3.0], [1.0, 1.0], [-1.0, 0.0]])  # rows normalised inside
    head = np.array([True, True, False, False])
    result = dg.nearest_head_cosine(z, head)
    assert result["cosines"] == pytest.approx([1 / math.sqrt(2), 0.0])
    assert result["mean"] == pytest.approx(1 / (2 * math.sqrt(2)))
    assert result["median"] == pytest.approx(1 / (2 * math.sqrt(2)))
    assert result["q25"] == pytest.approx(0.25 / math.sqrt(2)) and result["q75"] == pytest.approx(0.75 / math.sqrt(2))
    assert dg.nearest_head_cosine(z, np.zeros(4, bool))["mean"] is None
    summary = dg.nearest_head_summary(z, head, bins=4)  # bins [-1,-.5) [-.5,0) [0,.5) [.5,1]
    assert summary["histogram"]["counts"] == [0, 0, 1, 1] and summary["tail_items"] == 2
    assert "cosines" not in summary


def test_slices_pick_the_right_pairs_and_items():
    items = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    queries = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    pair_items = np.array([0, 1, 2])  # distances^2 0, 2, 4
    slices = {"head": np.array([True, False, False, False]), "tail": np.array([False, True, True, True])}
    out = dg.sliced_alignment(queries, items[pair_items], pair_items, slices)
    assert out["head"] == 0.0 and out["tail"] == pytest.approx(3.0) and out["all"] == pytest.approx(2.0)
    assert out["pairs"] == {"all": 3, "head": 1, "tail": 2}
    uniform = dg.sliced_uniformity(items, slices)
    assert uniform["head"] is None and uniform["items"] == {"all": 4, "head": 1, "tail": 3}
    assert uniform["tail"] == pytest.approx(math.log((math.exp(-8) + math.exp(-4) + math.exp(-4)) / 3))


def test_decile_recall_is_the_evaluators_own():
    rng = np.random.default_rng(0)
    counts = rng.integers(0, 50, 40)
    slices = evaluate.popularity_slices(counts, head_fraction=0.2)
    test = [rng.choice(40, 3, replace=False) for _ in range(12)]
    metrics = evaluate.retrieval_metrics(
        rng.normal(size=(12, 5)), rng.normal(size=(40, 5)), test, slices=slices, ks=(5, 10)
    )
    out = dg.decile_recall(metrics)
    assert out["ks"] == [5, 10]
    assert out["deciles"]["recall@5"] == [metrics["slices"][f"popularity_{b:02d}"]["recall@5"] for b in range(10)]
    assert out["tail"]["recall@10"] == metrics["slices"]["tail"]["recall@10"]
    assert out["overall"]["recall@10"] == metrics["recall@10"]


def test_recall_comes_from_metrics_json_only_when_it_scored_the_same_model(tmp_path):
    import json
    import types

    rng = np.random.default_rng(1)
    slices = evaluate.popularity_slices(rng.integers(0, 9, 30), head_fraction=0.2)
    test = [np.array([q % 30, (q * 7) % 30]) for q in range(8)]
    embedded = {
        "queries": rng.normal(size=(8, 4)),
        "items": rng.normal(size=(30, 4)),
        "slices": slices,
        "prepared": {"test_items": test, "exclude": None},
        "mode": "user-item",
        "per_pair": False,
    }
    trained = types.SimpleNamespace(config=types.SimpleNamespace(to_dict=lambda: {"name": "m", "seed": 0}))
    computed = dg.popularity_recall(tmp_path, "m", trained, embedded, "test", 0.2, (10, 50))
    assert computed["source"].startswith("computed")
    metrics = evaluate.retrieval_metrics(embedded["queries"], embedded["items"], test, slices=slices, ks=(10, 50))
    assert computed["deciles"] == dg.decile_recall(metrics)["deciles"]
    # A metrics.json of this model: read, not recomputed (a marker value shows which one is used).
    metrics["slices"]["popularity_03"]["recall@50"] = 0.123
    metrics.update(config={"name": "m", "seed": 0}, split="test", mode="user-item", per_pair=False, head_fraction=0.2)
    (tmp_path / "eval" / "m").mkdir(parents=True)
    (tmp_path / "eval" / "m" / "metrics.json").write_text(evaluate.to_json(metrics))
    read = dg.popularity_recall(tmp_path, "m", trained, embedded, "test", 0.2, (10, 50))
    assert read["source"].endswith("metrics.json") and read["deciles"]["recall@50"][3] == 0.123
    # ... but not one of another config, split or head fraction.
    for change in ({"config": {"name": "m", "seed": 1}}, {"split": "validation"}, {"head_fraction": 0.1}):
        (tmp_path / "eval" / "m" / "metrics.json").write_text(evaluate.to_json({**metrics, **change}))
        assert dg.popularity_recall(tmp_path, "m", trained, embedded, "test", 0.2, (10, 50))["source"].startswith(
            "computed"
        ), change
    assert json.loads((tmp_path / "eval" / "m" / "metrics.json").read_text())["head_fraction"] == 0.1
