"""The ScaNN item index: exact search reference, tuning to a recall target, add, save/load."""

from __future__ import annotations

import json

import numpy as np
import pytest
import test_export_fixtures as fx

from recsys_ssl import index as index_lib


def _unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _clustered(n, d, clusters, seed):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, d))
    return _unit(centres[rng.integers(clusters, size=n)] + 0.5 * rng.normal(size=(n, d)))


def test_exact_top_k_matches_a_full_sort():
    rng = np.random.default_rng(0)
    items, queries = _unit(rng.normal(size=(300, 8))), _unit(rng.normal(size=(7, 8)))
    rows, scores = index_lib.exact_top_k(queries, items, 5, chunk=3)
    full = queries @ items.T
    np.testing.assert_array_equal(rows, np.argsort(-full, axis=1)[:, :5])
    np.testing.assert_allclose(scores, np.sort(full, axis=1)[:, ::-1][:, :5], rtol=1e-6)
    assert index_lib.exact_top_k(queries, items[:3], 5)[0].shape == (7, 3)  # k > N: all items


def test_recall_at_k():
    assert index_lib.recall_at_k([["a", "b"], ["c", "x"]], [["b", "a"], ["c", "d"]]) == 0.75


@pytest.mark.timeout(120)
def test_tuning_reaches_the_target_recall_on_held_out_queries():
    items = _clustered(6000, 16, 40, seed=1)
    queries = _clustered(400, 16, 40, seed=2)
    ids = [f"item{i}" for i in range(len(items))]
    index, report = index_lib.tune(
        items, ids, queries, target_recall=0.9, k=10, brute_force_below=1000, log=lambda *a: None
    )
    assert report["config"]["algorithm"] == "tree_ah"
    assert 1 <= report["config"]["num_leaves_to_search"] <= report["config"]["num_leaves"]
    assert report["candidates"], "no candidate config was timed"
    # Independent check on fresh queries with the chosen (default) search parameters.
    fresh = _clustered(300, 16, 40, seed=3)
    got, _ = index.search(fresh, 10)
    exact_rows, _ = index_lib.exact_top_k(fresh, items, 10)
    recall = index_lib.recall_at_k(got, [[ids[r] for r in row] for row in exact_rows])
    assert recall >= 0.85, recall  # target 0.9 on held-out data; small slack for a new sample
    assert report["recall"] >= 0.9


def test_brute_force_below_the_threshold_is_exact():
    items = _clustered(500, 8, 5, seed=4)
    queries = _clustered(50, 8, 5, seed=5)
    index, report = index_lib.tune(items, [str(i) for i in range(500)], queries, log=lambda *a: None)
    assert report["config"]["algorithm"] == "brute_force" and report["recall"] == 1.0


def test_search_excludes_items_and_add_makes_new_items_retrievable(tmp_path):
    items = _clustered(400, 8, 4, seed=6)
    ids = [f"i{i}" for i in range(400)]
    index = index_lib.ItemIndex.build(items, ids, index_lib.IndexConfig("brute_force", k=5))
    got, scores = index.search(items[:2], 5)
    assert got[0][0] == "i0" and got[1][0] == "i1"
    excluded, _ = index.search(items[:2], 5, exclude=[["i0", got[0][1]], []])
    assert excluded[0] == got[0][2:] + excluded[0][3:] and len(excluded[0]) == 5 and "i0" not in excluded[0]
    assert excluded[1] == got[1]

    new = _clustered(3, 8, 3, seed=7)
    assert index.add(["n0", "n1", "i5"], new) == (2, 1)  # two new, i5 replaced
    got, scores = index.search(new, 1)
    assert [g[0] for g in got] == ["n0", "n1", "i5"]
    np.testing.assert_allclose([s[0] for s in scores], [1.0, 1.0, 1.0], atol=1e-5)
    np.testing.assert_allclose(index.embeddings[5], new[2])
    assert index.size == 402

    index.save(tmp_path / "idx")
    loaded = index_lib.ItemIndex.load(tmp_path / "idx")
    assert loaded.item_ids == index.item_ids and loaded.size == 402
    assert [g[0] for g in loaded.search(new, 1)[0]] == ["n0", "n1", "i5"]
    assert (tmp_path / "idx" / "item_ids.txt").read_text().split()[-2:] == ["n0", "n1"]


def test_duplicate_ids_are_refused():
    with pytest.raises(ValueError, match="duplicate item ids: \\['a'\\]"):
        index_lib.ItemIndex.build(np.eye(3, dtype=np.float32), ["a", "b", "a"], index_lib.IndexConfig())


@pytest.mark.timeout(240)
def test_index_add_cli_writes_a_new_version_holding_the_new_items(tmp_path, tmp_path_factory):
    (query_tower, item_tower), _, _ = fx.exported(tmp_path_factory)
    export_dir = fx.copy_export(tmp_path, tmp_path_factory)
    new_items = [
        {"item_id": "brand-new", "genre": "g1", "tags": ["t1", "t2"]},
        {"item_id": "another", "genre": "unseen-genre", "tags": []},
    ]
    items_file = tmp_path / "new.jsonl"
    items_file.write_text("".join(json.dumps(i) + "\n" for i in new_items))
    run = fx.run_cli("index", "add", "--export-dir", str(export_dir), "--items", str(items_file))
    assert run.returncode == 0, run.stderr[-3000:]
    assert index_lib.versions(export_dir / "tiny") == [1, 2]
    manifest = fx.read_json(export_dir / "tiny" / "2" / "manifest.json")
    assert manifest["corpus_size"] == fx.NUM_ITEMS + 2 and manifest["base_version"] == 1
    index = index_lib.ItemIndex.load(export_dir / "tiny" / "2" / "index")
    assert manifest["embedding_checksum"] == index_lib.embedding_checksum(index.embeddings)
    # The new rows are the item tower's embeddings, and each new item is its own nearest neighbour.
    from recsys_ssl import export
    from recsys_ssl.tf_setup import tf

    arrays = {k: np.array([i[k] if k != "tags" else i[k] for i in new_items], dtype=object) for k in new_items[0]}
    batch = next(export.corpus_batches(arrays, fx.SPEC.item_features, 10))
    expected = item_tower({k: tf.constant(v, tf.string) for k, v in batch.items()}).numpy()
    np.testing.assert_allclose(index.embeddings[-2:], expected, atol=1e-5)
    got, _ = index.search(expected, 1)
    assert [g[0] for g in got] == ["brand-new", "another"]
    # Version 1 is untouched.
    assert index_lib.ItemIndex.load(export_dir / "tiny" / "1" / "index").size == fx.NUM_ITEMS


def test_index_add_names_the_bad_line(tmp_path, tmp_path_factory):
    export_dir = fx.copy_export(tmp_path, tmp_path_factory)
    items_file = tmp_path / "bad.jsonl"
    items_file.write_text('{"item_id": "x", "genre": "g1", "tags": []}\n{"item_id": "y", "tags": []}\n')
    run = fx.run_cli("index", "add", "--export-dir", str(export_dir), "--items", str(items_file))
    assert run.returncode == 2
    assert f"{items_file}:2: missing input 'genre'" in run.stderr
    assert index_lib.versions(export_dir / "tiny") == [1]
