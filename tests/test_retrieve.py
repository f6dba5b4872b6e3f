"""`recsys-ssl retrieve`: batch queries from a JSON lines file to a JSON lines file."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
import test_export_fixtures as fx

from recsys_ssl import index as index_lib
from recsys_ssl import retrieve
from recsys_ssl.tf_setup import tf


@pytest.mark.timeout(240)
def test_batch_retrieval_matches_exact_search(tmp_path, tmp_path_factory):
    (query_tower, _), export_dir, version = fx.exported(tmp_path_factory)
    instances = fx.query_instances(25, seed=21)
    instances[3]["exclude"] = ["i0", "i1"]
    queries_file, out_file = tmp_path / "q.jsonl", tmp_path / "out" / "r.jsonl"
    queries_file.write_text("".join(json.dumps(i) + "\n" for i in instances) + "\n")  # a blank line is skipped
    run = fx.run_cli(
        "retrieve",
        "--export-dir",
        str(export_dir),
        "--input",
        str(queries_file),
        "--output",
        str(out_file),
        "--k",
        "5",
        "--batch-size",
        "10",
    )
    assert run.returncode == 0, run.stderr[-3000:]
    results = [json.loads(line) for line in out_file.read_text().splitlines()]
    assert [r["line"] for r in results] == list(range(1, 26))
    assert [r["user_id"] for r in results] == [i["user_id"] for i in instances]

    arrays = fx.to_query_arrays(instances)
    embeddings = query_tower({k: tf.constant(v, tf.string) for k, v in arrays.items()}).numpy()
    corpus = np.load(version / "index" / "item_embeddings.npy")
    rows, scores = index_lib.exact_top_k(embeddings, corpus, 7)
    for i, (result, row, score) in enumerate(zip(results, rows, scores)):
        expected = [f"i{r}" for r in row]
        if i == 3:
            keep = [j for j, item in enumerate(expected) if item not in ("i0", "i1")]
            expected, score = [expected[j] for j in keep], score[keep]
        assert result["item_ids"] == expected[:5], i
        np.testing.assert_allclose(result["scores"], score[:5], atol=1e-5)


def test_a_bad_query_line_is_named(tmp_path, tmp_path_factory):
    _, export_dir, _ = fx.exported(tmp_path_factory)
    queries_file = tmp_path / "q.jsonl"
    queries_file.write_text('{"user_id": "u1", "user_tags": []}\n{"user_id": "u1", "user_tags": "t1"}\n')
    run = fx.run_cli(
        "retrieve", "--export-dir", str(export_dir), "--input", str(queries_file), "--output", str(tmp_path / "r.jsonl")
    )
    assert run.returncode == 2
    assert f"{queries_file}:2: input 'user_tags' is multi-valued" in run.stderr
    assert not (tmp_path / "r.jsonl").exists()


def test_instances_are_padded_and_truncated_to_max_len():
    signature = [
        {"name": "a", "kind": "categorical", "max_len": 0},
        {"name": "b", "kind": "multi_categorical", "max_len": 2},
    ]
    arrays = retrieve.instances_to_arrays([{"a": 7, "b": ["x", "y", "z"]}, {"a": "q", "b": []}], signature)
    assert arrays["a"].tolist() == [b"7", b"q"]
    assert arrays["b"].tolist() == [[b"x", b"y"], [b"", b""]]
    with pytest.raises(retrieve.RequestError, match="instance: input 'a' is single-valued"):
        retrieve.validate_instance({"a": True, "b": []}, signature)


def test_serving_path_never_imports_the_training_code(tmp_path_factory):
    _, export_dir, _ = fx.exported(tmp_path_factory)
    script = (
        "import sys\n"
        "from recsys_ssl import index\n"
        "from recsys_ssl.serve import cli\n"
        f"model_dir = index.resolve_model_dir({str(export_dir)!r}, None)\n"
        "app = cli.build_app(model_dir, cli._parser().parse_args(['--poll-seconds', '0']))\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('recsys_ssl.') and m.split('.')[1] in "
        "('train', 'model', 'towers', 'augment', 'losses', 'export'))\n"
        "assert not loaded, loaded\n"
    )
    run = subprocess.run([fx.PYTHON, "-c", script], cwd=fx.ROOT, capture_output=True, text=True, timeout=200)
    assert run.returncode == 0, run.stderr[-2000:]
