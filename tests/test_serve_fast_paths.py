"""The serving fast paths give what the general paths give: TensorFlow's executor called
directly, on the single-threaded executor where it can run the graph
(:class:`recsys_ssl.retrieve.Signature`), and a request body read without arming a
timer when it has arrived (:func:`recsys_ssl.serve.app._receive_started`)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import test_export_fixtures as fx

from recsys_ssl import retrieve
from recsys_ssl.serve import app as app_lib


@pytest.mark.timeout(240)
@pytest.mark.parametrize(
    "model,name", [("query_model", "serving_default"), ("query_model", "top_k"), ("item_model", "serving_default")]
)
def test_the_direct_signature_call_equals_the_public_one(tmp_path_factory, model, name):
    _, _, version = fx.exported(tmp_path_factory)
    manifest = retrieve.index_lib.read_manifest(version)
    signature = retrieve.Signature(version / model, name)
    assert signature._direct is not None  # this TensorFlow's executor is reachable
    kind = "query_features" if model == "query_model" else "item_features"
    if name == "top_k" and not manifest.get("has_top_k"):
        pytest.skip("this export has no top_k signature")
    features = manifest["signatures"][kind]
    rows = [
        {f["name"]: ([f"x{i}", "y"] if f["kind"] == "multi_categorical" else f"x{i}") for f in features}
        for i in range(7)
    ]
    arrays = retrieve.instances_to_arrays(rows, features)
    direct, public = signature(arrays), signature.call_public(arrays)
    assert sorted(direct) == sorted(public)
    for key in public:
        assert direct[key].dtype == public[key].dtype and direct[key].shape == public[key].shape
        np.testing.assert_array_equal(direct[key], public[key])
    if name == "serving_default":  # the towers run on the single-threaded executor (no fallback)
        assert signature._direct is not signature._direct_default


def test_a_graph_the_single_threaded_executor_cannot_run_falls_back_to_the_default(tmp_path):
    """Control flow (asynchronous If / While kernels) is refused by the single-threaded
    executor: the first call retries on the default executor, keeps it, and gives the public
    call's outputs."""
    from recsys_ssl.tf_setup import tf

    class WithControlFlow(tf.Module):
        def __init__(self):
            self.w = tf.Variable([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])

        @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32)])
        def embed(self, x):
            y = tf.cond(tf.reduce_sum(x) > 0, lambda: x * 2.0, lambda: x - 1.0)
            y = tf.while_loop(lambda i, y: i < 3, lambda i, y: (i + 1, y + 1.0), (tf.constant(0), y))[1]
            return {"embedding": tf.matmul(y, self.w)}

    module = WithControlFlow()
    tf.saved_model.save(module, str(tmp_path), signatures={"serving_default": module.embed})
    signature = retrieve.Signature(tmp_path, "serving_default")
    x = np.array([[1.0, 0.0, 2.0], [-1.0, 1.0, 0.0]], np.float32)  # sum > 0: the x * 2 branch
    expected = ((x * 2.0 + 3.0) @ np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], np.float32)).astype(np.float32)
    out = signature({"x": x})
    np.testing.assert_allclose(out["embedding"], expected, rtol=1e-6)
    assert signature._direct is signature._direct_default  # fell back, and stays there
    np.testing.assert_array_equal(signature({"x": -x})["embedding"], signature.call_public({"x": -x})["embedding"])


def _receive_after(delay_s: float, messages: list[dict]):
    """An ASGI receive that waits ``delay_s`` before each message."""
    queue = list(messages)

    async def receive():
        if delay_s:
            await asyncio.sleep(delay_s)
        return queue.pop(0)

    return receive


def test_a_body_that_is_there_is_read_at_once():
    async def go():
        async def receive():
            return {"type": "http.request", "body": b"{}", "more_body": False}

        message, rest = app_lib._receive_started(receive)
        assert rest is None and message["body"] == b"{}"

    asyncio.run(go())


def test_a_body_that_is_waited_for_is_finished_by_the_same_call():
    calls = []

    async def go():
        receive = _receive_after(0.01, [{"type": "http.request", "body": b"late", "more_body": False}])

        async def counted():
            calls.append(1)
            return await receive()

        message, rest = app_lib._receive_started(counted)
        assert message is None and rest is not None
        assert (await rest)["body"] == b"late"

    asyncio.run(go())
    assert calls == [1]  # receive() was called once


def test_the_deadline_cancels_a_body_that_is_waited_for():
    cleaned = []

    async def go():
        async def receive():
            try:
                await asyncio.sleep(10)
            finally:
                cleaned.append("receive saw the cancellation")

        _, rest = app_lib._receive_started(receive)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.01):
                await rest

    asyncio.run(go())
    assert cleaned == ["receive saw the cancellation"]


def test_a_chunked_body_is_read_whole_with_and_without_waiting():
    app = app_lib.App.__new__(app_lib.App)
    app.limits, app.body_timeout_s = type("L", (), {"max_body_bytes": 100})(), 1.0
    scope = {"headers": [(b"transfer-encoding", b"chunked")]}
    chunks = [
        {"type": "http.request", "body": b"ab", "more_body": True},
        {"type": "http.request", "body": b"cd", "more_body": False},
    ]
    for delay in (0.0, 0.005):
        assert asyncio.run(app._read_body(scope, _receive_after(delay, list(chunks)))) == b"abcd"
    with pytest.raises(app_lib.HttpError, match="408|did not arrive"):
        app.body_timeout_s = 0.01
        asyncio.run(app._read_body(scope, _receive_after(0.05, list(chunks))))
