"""Export: the versioned layout, its manifest, and the SavedModels loaded in a fresh process."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import textwrap

import numpy as np
import pytest
import test_export_fixtures as fx

from recsys_ssl import index as index_lib
from recsys_ssl.tf_setup import tf


def _query_features(instances):
    arrays = fx.to_query_arrays(instances)
    return {k: tf.constant(v, tf.string) for k, v in arrays.items()}


def _item_features(items):
    from recsys_ssl import export

    batch = next(export.corpus_batches(items, fx.SPEC.item_features, 10**6))
    return {k: tf.constant(v, tf.string) for k, v in batch.items()}


def test_layout_and_manifest(tmp_path_factory):
    (query_tower, item_tower), export_dir, version = fx.exported(tmp_path_factory)
    assert version == export_dir / "tiny" / "1"
    assert sorted(p.name for p in version.iterdir()) == [
        "index",
        "item_model",
        "manifest.json",
        "query_model",
        "retrieval_scann",
    ]
    assert not [p for p in (export_dir / "tiny").iterdir() if p.name.startswith(".tmp")]  # staging renamed away
    manifest = fx.read_json(version / "manifest.json")
    assert manifest["version"] == 1 and manifest["corpus_size"] == fx.NUM_ITEMS and manifest["k"] == 10
    assert manifest["index"]["config"]["algorithm"] == "brute_force"  # 200 items < 20k
    assert manifest["index"]["recall"] == 1.0
    assert manifest["retrieval_scann"]["recall"] >= 0.95
    assert manifest["signatures"]["query_features"] == [
        {"name": "user_id", "kind": "categorical", "max_len": 0},
        {"name": "user_tags", "kind": "multi_categorical", "max_len": 3},
    ]
    # The index holds exactly the item tower's embeddings of the corpus, in corpus order.
    expected = item_tower(_item_features(fx.item_arrays())).numpy()
    stored = np.load(version / "index" / "item_embeddings.npy")
    np.testing.assert_allclose(stored, expected, atol=1e-6)
    assert manifest["embedding_checksum"] == index_lib.embedding_checksum(stored)
    assert (version / "index" / "item_ids.txt").read_text().split() == [f"i{i}" for i in range(fx.NUM_ITEMS)]


FRESH_PROCESS = textwrap.dedent("""
    import json, sys
    import numpy as np
    from recsys_ssl.tf_setup import tf
    import scann  # registers the Scann ops that retrieval_scann needs
    version, inputs_path, out_path = sys.argv[1:]
    inputs = np.load(inputs_path, allow_pickle=True)
    query = {k: tf.constant(inputs["q_" + k].astype(object), tf.string) for k in ("user_id", "user_tags")}
    items = {k: tf.constant(inputs["i_" + k].astype(object), tf.string) for k in ("item_id", "genre", "tags")}
    qm = tf.saved_model.load(version + "/query_model")
    im = tf.saved_model.load(version + "/item_model")
    sm = tf.saved_model.load(version + "/retrieval_scann")
    out = {"embedding": qm.signatures["serving_default"](**query)["embedding"].numpy(),
           "item_embedding": im.signatures["serving_default"](**items)["embedding"].numpy()}
    top = qm.signatures["top_k"](**query)
    out["top_ids"], out["top_scores"] = top["item_ids"].numpy(), top["scores"].numpy()
    scann_out = sm.signatures["serving_default"](**query)
    out["scann_ids"], out["scann_scores"] = scann_out["item_ids"].numpy(), scann_out["scores"].numpy()
    out["signature_outputs"] = np.array(json.dumps({
        "query_model": {n: sorted(f.structured_outputs) for n, f in qm.signatures.items()},
        "retrieval_scann": sorted(sm.signatures["serving_default"].structured_outputs)}))
    np.savez(out_path, **out)
""")


@pytest.mark.timeout(240)
def test_savedmodels_in_a_fresh_process_match_the_in_memory_towers(tmp_path, tmp_path_factory):
    (query_tower, item_tower), _, version = fx.exported(tmp_path_factory)
    queries = fx.query_instances(6, seed=3) + [{"user_id": "never-seen", "user_tags": []}]
    q_arrays = fx.to_query_arrays(queries)
    items = fx.item_arrays(5, seed=9, prefix="new")
    i_batch = {k: tf.constant(v, tf.string) for k, v in _item_features(items).items()}
    np.savez(
        tmp_path / "in.npz",
        **{"q_" + k: v for k, v in q_arrays.items()},
        **{"i_" + k: v.numpy() for k, v in i_batch.items()},
    )
    subprocess.run(
        [fx.PYTHON, "-c", FRESH_PROCESS, str(version), str(tmp_path / "in.npz"), str(tmp_path / "out.npz")],
        check=True,
        cwd=fx.ROOT,
        timeout=200,
    )
    out = np.load(tmp_path / "out.npz", allow_pickle=True)

    expected_query = query_tower(_query_features(queries)).numpy()
    np.testing.assert_allclose(out["embedding"], expected_query, atol=1e-5)
    np.testing.assert_allclose(out["item_embedding"], item_tower(i_batch).numpy(), atol=1e-5)
    # Named outputs, never output_1 / output_2.
    assert json.loads(str(out["signature_outputs"])) == {
        "query_model": {"serving_default": ["embedding"], "top_k": ["item_ids", "scores"]},
        "retrieval_scann": ["item_ids", "scores"],
    }
    # top_k (BruteForce) and retrieval_scann both agree with numpy exact search.
    corpus = np.load(version / "index" / "item_embeddings.npy")
    rows, scores = index_lib.exact_top_k(expected_query, corpus, 10)
    expected_ids = [[f"i{r}" for r in row] for row in rows]
    for key in ("top", "scann"):
        got_ids = [[b.decode() for b in row] for row in out[f"{key}_ids"]]
        np.testing.assert_allclose(out[f"{key}_scores"], scores, atol=1e-4)
        assert index_lib.recall_at_k(got_ids, expected_ids) == 1.0, key


@pytest.mark.timeout(240)
def test_saved_model_cli_runs_the_query_model_signatures(tmp_path_factory):
    (query_tower, _), _, version = fx.exported(tmp_path_factory)
    exprs = "user_id=[b'u3'];user_tags=[[b't1', b't2']]"  # python literals (saved_model_cli evals them safely)
    run = _saved_model_cli_run(version / "query_model", "top_k", exprs)
    assert run.returncode == 0, run.stderr[-2000:]
    query = query_tower(_query_features([{"user_id": "u3", "user_tags": ["t1", "t2"]}])).numpy()
    rows, _ = index_lib.exact_top_k(query, np.load(version / "index" / "item_embeddings.npy"), 10)
    assert "Result for output key item_ids" in run.stdout and "Result for output key scores" in run.stdout
    assert f"b'i{rows[0][0]}'" in run.stdout.split("Result for output key item_ids")[1]
    run = _saved_model_cli_run(version / "query_model", "serving_default", exprs)
    assert run.returncode == 0 and "Result for output key embedding" in run.stdout, run.stderr[-2000:]


def _saved_model_cli_run(model_dir: pathlib.Path, signature: str, exprs: str) -> subprocess.CompletedProcess:
    """TensorFlow's own ``saved_model_cli run`` on one signature of ``model_dir``."""
    cli = pathlib.Path(fx.PYTHON).parent / "saved_model_cli"
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2")
    command = [str(cli), "run", "--dir", str(model_dir), "--tag_set", "serve", "--signature_def", signature]
    return subprocess.run([*command, "--input_exprs", exprs], capture_output=True, text=True, timeout=200, env=env)


def test_a_failed_export_leaves_no_version(tmp_path, monkeypatch):
    from recsys_ssl import export

    query_tower, item_tower = fx.build_towers()

    def crash(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(index_lib, "publish", crash)
    with pytest.raises(RuntimeError, match="disk full"):
        export.export_models(
            query_tower,
            item_tower,
            fx.SPEC,
            fx.item_arrays(50),
            tmp_path,
            "m",
            with_retrieval_savedmodels=False,
            log=lambda *a: None,
        )
    assert list((tmp_path / "m").iterdir()) == []


def test_readers_only_see_complete_versions(tmp_path):
    model_dir = tmp_path / "m"
    for version, complete in ((1, True), (2, True), (3, False)):
        (model_dir / str(version)).mkdir(parents=True)
        if complete:
            (model_dir / str(version) / "manifest.json").write_text(json.dumps({"version": version}))
    (model_dir / ".tmp-4-abc").mkdir()
    assert index_lib.versions(model_dir) == [1, 2]
    assert index_lib.latest_version_dir(model_dir) == model_dir / "2"
    assert index_lib.next_version(model_dir) == 4  # never reuses the half-written 3
    with pytest.raises(FileNotFoundError, match="no such complete export version"):
        index_lib.version_dir(model_dir, 3)


def test_bench_options_export_precomputed_embeddings_and_a_prebuilt_index(tmp_path):
    """The benchmark's path (bench/serve_bench.py): embeddings and index given, no retrieval SavedModels;
    the options come as one BenchOptions or, as the benchmark passes them, as keywords."""
    from recsys_ssl import export

    query_tower, item_tower = fx.build_towers()
    items = fx.item_arrays(50)
    ids = [i.decode() if isinstance(i, bytes) else str(i) for i in items[fx.SPEC.item_key]]
    embeddings = np.random.default_rng(0).normal(size=(50, 8)).astype(np.float32)
    prebuilt = index_lib.tune(embeddings, ids, embeddings[:10], k=5, log=lambda *a: None)
    options = export.BenchOptions(with_retrieval_savedmodels=False, item_embeddings=embeddings, prebuilt_index=prebuilt)
    first = export.export_models(
        query_tower, item_tower, fx.SPEC, items, tmp_path, "m", bench=options, log=lambda *a: None
    )
    second = export.export_models(
        query_tower,
        item_tower,
        fx.SPEC,
        items,
        tmp_path,
        "m",
        log=lambda *a: None,
        item_embeddings=embeddings,
        prebuilt_index=prebuilt,
        with_retrieval_savedmodels=False,
    )
    for version in (first, second):
        manifest = json.loads((version / "manifest.json").read_text())
        assert manifest["embedding_checksum"] == index_lib.embedding_checksum(embeddings)
        assert not manifest["has_top_k"] and manifest["retrieval_scann"] is None
        assert set(manifest["savedmodels"]) == {"query_model", "item_model"}
    shuffled = (index_lib.ItemIndex.build(embeddings[::-1], ids[::-1], prebuilt[0].config), prebuilt[1])
    with pytest.raises(ValueError, match="corpus order"):
        export.export_models(
            query_tower,
            item_tower,
            fx.SPEC,
            items,
            tmp_path,
            "m",
            log=lambda *a: None,
            bench=export.BenchOptions(False, embeddings, shuffled),
        )
    with pytest.raises(TypeError):
        export.export_models(query_tower, item_tower, fx.SPEC, items, tmp_path, "m", with_retrieval_models=False)
