"""The server under hostile input and half-written exports.

- A fuzzed stream of request bodies (hypothesis: any JSON value, raw bytes, instances with wrong
  names / types / nesting, odd ``k``) only ever gets a 2xx or a 4xx, and the server stays up.
- Feature values the model never saw map to the out-of-vocabulary row: the answer is the exact
  top-k of that OOV query, not an error and not something else.
- A partially written export (a numbered folder without its manifest, a ``.tmp-*`` staging
  folder, a folder whose manifest is there but whose files are not) is never served; the next
  real export is, without a restart.
"""

from __future__ import annotations

import json
import shutil
import time

import numpy as np
import pytest
import requests
import test_export_fixtures as fx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recsys_ssl import index as index_lib
from recsys_ssl.tf_setup import tf

POLL_SECONDS = 0.2


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    (query_tower, item_tower), _, _ = fx.exported(tmp_path_factory)
    export_dir = fx.copy_export(tmp_path_factory.mktemp("resilience"), tmp_path_factory)
    model_dir = export_dir / "tiny"
    # Left behind by exports that died before publishing, numbered above the good version 1.
    shutil.copytree(model_dir / "1", model_dir / "7")
    (model_dir / "7" / index_lib.MANIFEST).unlink()
    shutil.copytree(model_dir / "1", model_dir / ".tmp-8-crashed")
    proc, url = fx.start_server(
        export_dir,
        "--poll-seconds",
        str(POLL_SECONDS),
        "--max-batch",
        "8",
        "--max-k",
        "50",
        "--max-body-bytes",
        "200000",
    )
    session = requests.Session()  # keep-alive: the fuzz loop should not spend its time in connects
    yield proc, url, session, export_dir, (query_tower, item_tower)
    session.close()
    fx.stop_server(proc)


def _served_version(session, url) -> str:
    r = session.get(f"{url}/v1/models/tiny", timeout=30)
    assert r.status_code == 200, r.text
    return r.json()["model_version_status"][0]["version"]


# -- fuzzing ---------------------------------------------------------------------------------------
json_scalars = (
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=True) | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
feature_names = st.sampled_from(["user_id", "user_tags", "item_id", "genre", "tags", "exclude"]) | st.text(max_size=8)
feature_values = (
    st.text(max_size=10)
    | st.lists(st.text(max_size=5), max_size=6)
    | st.lists(st.lists(st.text(max_size=3), max_size=3), max_size=3)
    | json_values
)
instances = st.dictionaries(feature_names, feature_values, max_size=4)
k_values = st.integers(-(10**6), 10**6) | st.sampled_from([0, 1, 50, 51, 2**63, -(2**63), 1.5, "3", None, True, [3]])
bodies = st.one_of(
    json_values.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=300),
    st.fixed_dictionaries(
        {"instances": st.lists(instances, max_size=10)},
        optional={
            "k": k_values,
            "signature_name": st.sampled_from(["serving_default", "top_k", "x"]) | st.text(max_size=5),
            "inputs": json_values,
        },
    ).map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries(
        {"inputs": st.dictionaries(feature_names, st.lists(feature_values, max_size=4) | json_values, max_size=3)},
        optional={"k": k_values},
    ).map(lambda v: json.dumps(v).encode()),
    st.sampled_from(
        [
            b"[" * 50000 + b"]" * 50000,
            b'{"instances": ' * 20000,
            b"\x00" * 1000,
            b"",
            b"null",
            b'{"instances": [{"user_id": "u1", "user_tags": []}], "k": 1e999}',
            b'{"instances": [{"user_id": "u1", "user_tags": []}], "k": NaN}',
        ]
    ),
)
paths = st.sampled_from(
    [
        "/v1/models/tiny:predict",
        "/v1/models/retrieval:predict",
        "/v1/models/tiny/versions/1:predict",
        "/v1/models/tiny/versions/7:predict",
        "/v1/models/query_model:predict",
        "/v1/models/item_model:predict",
        "/v1/models/tiny/versions/-1:predict",
        "/v1/models/tiny/metadata",
        "/v1/models/%00:predict",
    ]
)


@pytest.mark.timeout(240)
def test_fuzzed_request_bodies_only_get_2xx_or_4xx(server):
    proc, url, session, _, _ = server
    statuses: dict[int, int] = {}

    @settings(
        max_examples=150,
        deadline=None,
        database=None,
        derandomize=True,
        print_blob=False,
        suppress_health_check=list(HealthCheck),
    )
    @given(path=paths, body=bodies)
    def one_request(path, body):
        r = session.post(url + path, data=body, headers={"Content-Type": "application/json"}, timeout=30)
        statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
        assert 200 <= r.status_code < 300 or 400 <= r.status_code < 500, (path, body[:300], r.status_code, r.text[:500])
        answer = r.json()  # every answer is JSON, errors included ...
        if r.status_code >= 400:
            assert isinstance(answer.get("error"), str) and answer["error"]  # ... naming the problem
        # The same keep-alive connection still works: an unread body must not leak into the next request.
        assert session.get(f"{url}/v1/models/tiny", timeout=30).status_code == 200

    one_request()
    assert proc.poll() is None
    assert _served_version(session, url) == "1"
    assert sum(statuses.values()) >= 150 and any(400 <= s < 500 for s in statuses), statuses


# -- unknown feature values ------------------------------------------------------------------------
@pytest.mark.timeout(120)
def test_unknown_feature_values_are_answered_as_out_of_vocabulary(server):
    proc, url, session, export_dir, (query_tower, _) = server
    unknown = [
        {"user_id": "nobody-ever", "user_tags": ["no-such-tag", "t3"]},  # partly unknown
        {"user_id": "", "user_tags": []},  # all missing
        {"user_id": "u1\u2603", "user_tags": ["\U0001f600"] * 9},
    ]  # too many values, cut to max_len
    r = session.post(f"{url}/v1/models/tiny:predict", json={"instances": unknown, "k": 5}, timeout=30)
    assert r.status_code == 200, r.text
    got = [p["item_ids"] for p in r.json()["predictions"]]

    # Independent expectation: the in-memory query tower (unknown -> its OOV row) and exact search.
    arrays = fx.to_query_arrays(unknown)
    queries = query_tower({n: tf.constant(v, tf.string) for n, v in arrays.items()}).numpy()
    index = index_lib.ItemIndex.load(export_dir / "tiny" / "1" / "index")
    rows, _ = index_lib.exact_top_k(queries, index.embeddings, 5)
    assert got == [[index.item_ids[i] for i in row] for row in rows]
    # The fully unknown query is the OOV embedding itself: the same answer as another unknown id.
    r = session.post(
        f"{url}/v1/models/tiny:predict",
        json={"instances": [{"user_id": "someone-else", "user_tags": []}], "k": 5},
        timeout=30,
    )
    assert r.json()["predictions"][0]["item_ids"] == got[1]


# -- partially written exports ---------------------------------------------------------------------
@pytest.mark.timeout(240)
def test_a_partially_written_export_is_never_served_and_the_next_real_one_is(server):
    from recsys_ssl import export

    proc, url, session, export_dir, _ = server
    model_dir = export_dir / "tiny"
    # At start-up the server chose version 1 over the manifest-less 7 and the staging folder.
    assert _served_version(session, url) == "1"
    assert (
        session.post(
            f"{url}/v1/models/tiny/versions/7:predict", json={"instances": fx.query_instances(1)}, timeout=30
        ).status_code
        == 404
    )

    # A copy that got its manifest but not its files (e.g. a non-atomic copy): the poller must
    # fail to load it and keep serving version 1.
    broken = model_dir / "9"
    shutil.copytree(model_dir / "1", broken)
    (broken / "query_model" / "saved_model.pb").unlink()
    (broken / "index" / "item_embeddings.npy").write_bytes(b"\x93NUMPY truncated")
    time.sleep(10 * POLL_SECONDS)
    assert proc.poll() is None and _served_version(session, url) == "1"
    r = session.post(f"{url}/v1/models/tiny:predict", json={"instances": fx.query_instances(2), "k": 4}, timeout=30)
    assert r.status_code == 200 and [len(p["item_ids"]) for p in r.json()["predictions"]] == [4, 4]

    # A real export of new towers: published atomically above every folder there, picked up live.
    query_tower, item_tower = fx.build_towers(seed=3)
    version = export.export_models(
        query_tower,
        item_tower,
        fx.SPEC,
        fx.item_arrays(),
        export_dir,
        "tiny",
        k=10,
        with_retrieval_savedmodels=False,
        log=lambda *a: None,
    )
    assert int(version.name) == 10, version  # never reuses 7, 8 (staging) or 9
    deadline = time.time() + 60
    while _served_version(session, url) != "10":
        assert time.time() < deadline, "the server did not pick up the new export"
        time.sleep(POLL_SECONDS)
    instances = fx.query_instances(3, seed=5)
    r = session.post(f"{url}/v1/models/tiny:predict", json={"instances": instances, "k": 6}, timeout=30)
    assert r.status_code == 200, r.text
    arrays = fx.to_query_arrays(instances)
    queries = query_tower({n: tf.constant(v, tf.string) for n, v in arrays.items()}).numpy()
    index = index_lib.ItemIndex.load(version / "index")
    rows, scores = index_lib.exact_top_k(queries, index.embeddings, 6)
    assert [p["item_ids"] for p in r.json()["predictions"]] == [[index.item_ids[i] for i in row] for row in rows]
    np.testing.assert_allclose([p["scores"] for p in r.json()["predictions"]], scores, atol=1e-5)
