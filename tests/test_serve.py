"""The HTTP server, as a subprocess, driven by a real HTTP client (requests)."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import requests
import test_export_fixtures as fx

from recsys_ssl import index as index_lib
from recsys_ssl.tf_setup import tf


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    (query_tower, item_tower), _, _ = fx.exported(tmp_path_factory)
    export_dir = fx.copy_export(tmp_path_factory.mktemp("serve"), tmp_path_factory)
    proc, url = fx.start_server(
        export_dir, "--poll-seconds", "0.3", "--max-batch", "8", "--max-k", "50", "--max-body-bytes", "20000"
    )
    yield proc, url, export_dir, query_tower
    fx.stop_server(proc)


def _exact(query_tower, export_dir, instances, k, version="1"):
    arrays = fx.to_query_arrays(instances)
    queries = query_tower({n: tf.constant(v, tf.string) for n, v in arrays.items()}).numpy()
    index = index_lib.ItemIndex.load(export_dir / "tiny" / version / "index")
    rows, scores = index_lib.exact_top_k(queries, index.embeddings, k)
    return [[index.item_ids[r] for r in row] for row in rows], scores, queries


@pytest.mark.timeout(240)
def test_top_k_matches_exact_search(server):
    proc, url, export_dir, query_tower = server
    instances = fx.query_instances(5, seed=11)
    expected_ids, expected_scores, _ = _exact(query_tower, export_dir, instances, 7)

    r = requests.post(f"{url}/v1/models/tiny:predict", json={"instances": instances, "k": 7}, timeout=30)
    assert r.status_code == 200, r.text
    predictions = r.json()["predictions"]
    assert [p["item_ids"] for p in predictions] == expected_ids
    np.testing.assert_allclose([p["scores"] for p in predictions], expected_scores, atol=1e-5)

    # Columnar "inputs", the "retrieval" alias and an explicit version give the same answer.
    columns = {name: [i[name] for i in instances] for name in ("user_id", "user_tags")}
    r = requests.post(f"{url}/v1/models/retrieval/versions/1:predict", json={"inputs": columns, "k": 7}, timeout=30)
    assert r.status_code == 200, r.text
    assert r.json()["outputs"]["item_ids"] == expected_ids

    # Exclusion: the best item of query 0 is excluded, the rest shift up.
    excluded = dict(instances[0], exclude=[expected_ids[0][0]])
    r = requests.post(f"{url}/v1/models/tiny:predict", json={"instances": [excluded], "k": 6}, timeout=30)
    assert r.json()["predictions"][0]["item_ids"] == expected_ids[0][1:7]


@pytest.mark.timeout(240)
def test_query_model_embeddings_and_top_k_signature(server):
    proc, url, export_dir, query_tower = server
    instances = fx.query_instances(3, seed=12)
    expected_ids, _, queries = _exact(query_tower, export_dir, instances, 10)
    r = requests.post(f"{url}/v1/models/query_model:predict", json={"instances": instances}, timeout=30)
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(r.json()["predictions"], queries, atol=1e-5)
    r = requests.post(
        f"{url}/v1/models/query_model:predict", json={"signature_name": "top_k", "instances": instances}, timeout=30
    )
    assert [p["item_ids"] for p in r.json()["predictions"]] == expected_ids
    r = requests.get(f"{url}/v1/models/tiny", timeout=30)
    assert r.json() == {
        "model_version_status": [
            {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
        ]
    }
    meta = requests.get(f"{url}/v1/models/query_model/metadata", timeout=30).json()
    assert set(meta["metadata"]["signature_def"]["signature_def"]) == {"serving_default", "top_k"}


BAD_REQUESTS = [
    # (what, method, path, body (bytes or JSON-able), status, words the error must contain)
    ("malformed JSON", "post", "/v1/models/tiny:predict", b'{"instances": [', 400, "malformed JSON"),
    (
        "wrong input name",
        "post",
        "/v1/models/tiny:predict",
        {"instances": [{"user_id": "u1", "user_tagz": []}]},
        400,
        "unknown input 'user_tagz'",
    ),
    (
        "missing input",
        "post",
        "/v1/models/tiny:predict",
        {"instances": [{"user_id": "u1"}]},
        400,
        "missing input 'user_tags'",
    ),
    (
        "k too large",
        "post",
        "/v1/models/tiny:predict",
        {"instances": fx.query_instances(1), "k": 51},
        400,
        "'k' must be",
    ),
    (
        "k not an int",
        "post",
        "/v1/models/tiny:predict",
        {"instances": fx.query_instances(1), "k": "5"},
        400,
        "'k' must be",
    ),
    (
        "unknown model",
        "post",
        "/v1/models/nope:predict",
        {"instances": fx.query_instances(1)},
        404,
        "model 'nope' not found",
    ),
    (
        "unknown version",
        "post",
        "/v1/models/tiny/versions/9:predict",
        {"instances": fx.query_instances(1)},
        404,
        "version '9'",
    ),
    (
        "batch too large",
        "post",
        "/v1/models/tiny:predict",
        {"instances": fx.query_instances(9)},
        400,
        "over the limit of 8",
    ),
    (
        "body too large",
        "post",
        "/v1/models/tiny:predict",
        {"instances": fx.query_instances(1), "pad": "x" * 30000},
        413,
        "over the limit",
    ),
    (
        "wrong type",
        "post",
        "/v1/models/tiny:predict",
        {"instances": [{"user_id": ["u1"], "user_tags": []}]},
        400,
        "'user_id' is single-valued",
    ),
    ("not an object", "post", "/v1/models/tiny:predict", [1, 2], 400, "must be a JSON object"),
    ("both formats", "post", "/v1/models/tiny:predict", {"instances": [], "inputs": {}}, 400, "exactly one of"),
    (
        "ragged columns",
        "post",
        "/v1/models/tiny:predict",
        {"inputs": {"user_id": ["u1", "u2"], "user_tags": [[]]}},
        400,
        "same length",
    ),
    (
        "unknown field",
        "post",
        "/v1/models/tiny:predict",
        {"instances": fx.query_instances(1), "kk": 3},
        400,
        "unknown field 'kk'",
    ),
    (
        "unknown signature",
        "post",
        "/v1/models/query_model:predict",
        {"signature_name": "nope", "instances": fx.query_instances(1)},
        400,
        "no signature 'nope'",
    ),
    (
        "bad exclude",
        "post",
        "/v1/models/tiny:predict",
        {"instances": [dict(fx.query_instances(1)[0], exclude="i1")]},
        400,
        "'exclude' must be a list",
    ),
    ("no route", "get", "/v2/whatever", None, 404, "no route"),
    ("GET predict", "get", "/v1/models/tiny:predict", None, 405, "needs POST"),
]


@pytest.mark.timeout(240)
@pytest.mark.parametrize("what,method,path,body,status,words", BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS])
def test_bad_requests_get_a_4xx_naming_the_problem(server, what, method, path, body, status, words):
    proc, url, _, _ = server
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    r = requests.request(method, url + path, data=data, headers={"Content-Type": "application/json"}, timeout=30)
    assert r.status_code == status, (what, r.status_code, r.text)
    assert words in r.json()["error"], r.json()
    # ... and the server is still up and answering.
    assert proc.poll() is None
    assert requests.get(f"{url}/v1/models/tiny", timeout=30).status_code == 200


@pytest.mark.timeout(300)
def test_items_added_with_index_add_are_served_at_once(server, tmp_path):
    proc, url, export_dir, query_tower = server
    instance = {"user_id": "u7", "user_tags": ["t3"]}
    _, _, query = _exact(query_tower, export_dir, [instance], 1)
    # An item whose features we choose is hard to place on top; instead add items, then ask for
    # the query's exact top-k over the grown corpus and check the server returns the new ones.
    new_items = [{"item_id": f"fresh{i}", "genre": f"g{i % 8}", "tags": [f"t{i % 12}", "t3"]} for i in range(20)]
    items_file = tmp_path / "new.jsonl"
    items_file.write_text("".join(json.dumps(i) + "\n" for i in new_items))
    run = fx.run_cli("index", "add", "--export-dir", str(export_dir), "--items", str(items_file))
    assert run.returncode == 0, run.stderr[-3000:]
    deadline = time.time() + 60
    while requests.get(f"{url}/v1/models/tiny", timeout=30).json()["model_version_status"][0]["version"] != "2":
        assert time.time() < deadline, "the server did not pick up version 2"
        time.sleep(0.2)
    r = requests.post(f"{url}/v1/models/tiny:predict", json={"instances": [instance], "k": 50}, timeout=30)
    got = r.json()["predictions"][0]["item_ids"]
    expected_ids, _, _ = _exact(query_tower, export_dir, [instance], 50, version="2")
    assert got == expected_ids[0]
    # Every new item is retrievable: excluding all old items leaves exactly the new ones.
    old = [f"i{i}" for i in range(fx.NUM_ITEMS)]
    r = requests.post(
        f"{url}/v1/models/tiny:predict", json={"instances": [dict(instance, exclude=old)], "k": 20}, timeout=30
    )
    assert sorted(r.json()["predictions"][0]["item_ids"]) == sorted(i["item_id"] for i in new_items)


@pytest.mark.timeout(240)
def test_concurrent_requests_each_get_their_own_answer(server):
    """Concurrent requests are batched together; each must still get its own k and results."""
    from concurrent.futures import ThreadPoolExecutor

    proc, url, export_dir, query_tower = server
    instances = fx.query_instances(24, seed=31)
    ks = [1 + i % 7 for i in range(len(instances))]
    expected_ids, _, _ = _exact(
        query_tower,
        export_dir,
        instances,
        7,
        version=requests.get(f"{url}/v1/models/tiny", timeout=30).json()["model_version_status"][0]["version"],
    )

    def ask(i):
        with requests.Session() as session:
            return session.post(
                f"{url}/v1/models/tiny:predict", json={"instances": [instances[i]], "k": ks[i]}, timeout=60
            ).json()

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(ask, range(len(instances))))
    for i, answer in enumerate(answers):
        assert answer["predictions"][0]["item_ids"] == expected_ids[i][: ks[i]], i


@pytest.mark.timeout(240)
def test_odd_http_gets_a_4xx_json_answer_too(server):
    import socket
    import urllib.parse

    proc, url, _, _ = server
    parsed = urllib.parse.urlparse(url)

    def raw(request: bytes) -> tuple[int, dict]:
        with socket.create_connection((parsed.hostname, parsed.port), timeout=30) as sock:
            sock.sendall(request)
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        return int(head.split()[1]), json.loads(body)

    assert raw(b"FOO /v1/models/tiny HTTP/1.1\r\nHost: x\r\n\r\n")[0] == 405
    code, body = raw(b"GET /v1/models/tiny HTTP/2.0\r\n\r\n")
    assert code == 400 and "error" in body
    code, body = raw(b"garbage\r\n\r\n")
    assert 400 <= code < 500 and "error" in body
    code, body = raw(b"POST /v1/models/tiny:predict HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert code == 411 and "Content-Length" in body["error"]
    # A lone surrogate is a valid JSON string: an unknown value, answered normally.
    payload = b'{"instances": [{"user_id": "\\ud800", "user_tags": ["\\udfff"]}]}'
    r = requests.post(f"{url}/v1/models/tiny:predict", data=payload, timeout=30)
    assert r.status_code == 200 and len(r.json()["predictions"][0]["item_ids"]) == 10
    assert proc.poll() is None


@pytest.mark.timeout(240)
@pytest.mark.parametrize("concurrency,max_queries", [(1, 5), (3, 4)])
def test_the_batcher_answers_each_request_with_its_own_rows_and_k(tmp_path_factory, concurrency, max_queries):
    """In process: 30 concurrent requests of 1-3 queries, batched into calls of at most
    ``max_queries`` queries, ``concurrency`` batches at a time; each gets the exact top-k of its rows."""
    import asyncio

    from recsys_ssl.retrieve import Retriever
    from recsys_ssl.serve.batching import Batcher

    (query_tower, _), export_dir, version = fx.exported(tmp_path_factory)
    retriever = Retriever(version)
    requests_ = [(fx.query_instances(1 + i % 3, seed=100 + i), 1 + i % 6) for i in range(30)]
    sizes = []
    batcher = Batcher(max_queries, observe=lambda queries, seconds: sizes.append(queries), concurrency=concurrency)

    async def ask_all():
        return await asyncio.gather(*(batcher.retrieve(retriever, rows, k) for rows, k in requests_))

    answers = asyncio.run(ask_all())
    batcher.close()
    for (rows, k), (ids, scores) in zip(requests_, answers):
        expected_ids, expected_scores, _ = _exact(query_tower, export_dir, rows, k)
        assert ids == expected_ids
        np.testing.assert_allclose(np.array(scores), expected_scores, atol=1e-5)
    assert sum(sizes) == sum(len(rows) for rows, _ in requests_) and max(sizes) <= max_queries
    assert len(sizes) < len(requests_)  # requests shared calls


def test_the_server_shortens_the_gil_switch_interval():
    """The compute thread must not wait Python's default 5 ms for the GIL after each TF/ScaNN call."""
    import sys

    from recsys_ssl.serve import cli

    args = cli._parser().parse_args(["--run-dir", "x"])
    assert args.gil_switch_interval_ms == 0.1
    before = sys.getswitchinterval()
    try:
        cli.set_gil_switch_interval(args.gil_switch_interval_ms)
        assert sys.getswitchinterval() == pytest.approx(1e-4)
    finally:
        sys.setswitchinterval(before)
