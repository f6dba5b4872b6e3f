"""The ASGI application: routes, request bodies, errors and metrics (HTTP framing is uvicorn's).

Every answer is JSON (``/metrics`` excepted). Bad input gets a 4xx whose ``error`` names the
problem; a bug of ours gets a 500 that says ``internal error`` and one line in the log (the
traceback only with ``debug``). Nothing here blocks the event loop on TensorFlow or ScaNN:
retrieval goes through the :class:`~recsys_ssl.serve.batching.Batcher`, the query and item
models through a small thread pool.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import traceback
from concurrent.futures import ThreadPoolExecutor

from recsys_ssl.retrieve import RequestError
from recsys_ssl.serve.batching import Batcher
from recsys_ssl.serve.metrics import Metrics
from recsys_ssl.serve.predict import (
    ITEM_MODEL,
    QUERY_MODEL,
    RETRIEVAL,
    Limits,
    metadata,
    parse_retrieval,
    predict,
    retrieval_output,
)
from recsys_ssl.serve.versions import ModelState

log = logging.getLogger("recsys_ssl.serve")
_ROUTE = re.compile(r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>[^/:]+))?(?P<rest>/metadata|:predict)?$")
_JSON = (b"content-type", b"application/json")


class HttpError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class ClientGone(Exception):
    """The client disconnected before its request was read: nobody to answer."""


def _header(scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return value
    return None


class App:
    """``App(state, limits, ...)`` is an ASGI 3 application (``await app(scope, receive, send)``).

    body_timeout_s: a request whose body does not arrive within it gets a 408 and is closed.
    """

    def __init__(
        self,
        state: ModelState,
        limits: Limits,
        metrics: Metrics,
        batcher: Batcher | None = None,
        body_timeout_s: float = 10.0,
        debug: bool = False,
    ):
        self.state, self.limits, self.metrics, self.batcher = state, limits, metrics, batcher
        self.body_timeout_s = body_timeout_s
        self.debug = debug
        self._models_pool = ThreadPoolExecutor(2, thread_name_prefix="embed")  # query_model / item_model

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":  # lifespan is off; nothing else is spoken here
            return
        start = time.perf_counter()
        route, status = "other", 500
        try:
            route, status, body, close = await self._answer(scope, receive)
        except ClientGone:
            return
        except HttpError as error:
            status, body, close = error.status, {"error": str(error)}, error.status in (408, 411, 413)
        except RequestError as error:
            status, body, close = 400, {"error": str(error)}, False
        except Exception as error:  # a bug of ours, not of the request: say so in one line, keep serving
            log.error("internal error on %s %s: %s: %s", scope["method"], scope["path"], type(error).__name__, error)
            if self.debug:
                log.error("%s", traceback.format_exc())
            status, body, close = 500, {"error": f"internal error: {type(error).__name__}"}, False
        if route == "metrics" and status == 200:
            await _send(send, 200, body, [(b"content-type", Metrics.content_type.encode())])
        else:
            data = json.dumps(body).encode()
            await _send(send, status, data, [_JSON, (b"connection", b"close")] if close else [_JSON])
        self.metrics.observe_request(route, status, time.perf_counter() - start)

    async def _answer(self, scope, receive) -> tuple[str, int, object, bool]:
        """(route, status, body, close the connection?) of one request; raises for errors."""
        if scope["http_version"] not in ("1.0", "1.1"):
            raise HttpError(400, f"HTTP/{scope['http_version']} is not supported here; use HTTP/1.1")
        method, path = scope["method"], scope["path"]
        if method not in ("GET", "POST"):
            raise HttpError(405, f"method {method} not allowed; use GET (status) or POST (:predict)")
        if path == "/metrics":
            if method != "GET":
                raise HttpError(405, "/metrics needs GET")
            return "metrics", 200, self.metrics.render(), False
        model, name, version, rest = self._route(path)
        retriever = self.state.retriever  # one read: the whole request uses one version.
        if version is not None and version != str(retriever.version):
            failed = self.state.statuses(version)
            if method == "GET" and not rest and failed:
                return "status", 200, {"model_version_status": failed}, False
            reason = f" ({failed[0]['status']['error_message']})" if failed else ""
            raise HttpError(
                404,
                f"version {version!r} of model {name!r} is not available{reason}; serving version {retriever.version}",
            )
        if method == "GET":
            if rest == ":predict":
                raise HttpError(405, "predict needs POST")
            if rest == "/metadata":
                return "metadata", 200, metadata(retriever, model, name), False
            return "status", 200, {"model_version_status": self.state.statuses(version)}, False
        if rest != ":predict":
            raise HttpError(405, f"POST goes to /v1/models/{name}:predict")
        route = {RETRIEVAL: "predict"}.get(model, model)
        body = _parse_json(await self._read_body(scope, receive))
        if model == RETRIEVAL and self.batcher is not None:
            rows, columnar, k = parse_retrieval(retriever, body, self.limits)
            return route, 200, retrieval_output(*await self.batcher.retrieve(retriever, rows, k), columnar), False
        loop = asyncio.get_running_loop()
        return (
            route,
            200,
            await loop.run_in_executor(self._models_pool, predict, retriever, model, body, self.limits),
            False,
        )

    def _route(self, path: str) -> tuple[str, str, str | None, str]:
        match = _ROUTE.match(path)
        if not match:
            raise HttpError(404, f"no route {path!r}; try /v1/models/{self.state.model_name}:predict")
        name = match["name"]
        if name in (self.state.model_name, RETRIEVAL):
            model = RETRIEVAL
        elif name in (QUERY_MODEL, ITEM_MODEL):
            model = name
        else:
            raise HttpError(
                404, f"model {name!r} not found; serving {[self.state.model_name, RETRIEVAL, QUERY_MODEL, ITEM_MODEL]}"
            )
        return model, name, match["version"], match["rest"] or ""

    async def _read_body(self, scope, receive) -> bytes:
        length = _header(scope, b"content-length")
        if length is None and _header(scope, b"transfer-encoding") is None:
            raise HttpError(411, "a Content-Length header is required")
        limit = self.limits.max_body_bytes
        if length is not None and int(length) > limit:  # the parser has checked that it is all digits
            raise HttpError(413, f"body of {int(length)} bytes is over the limit of {limit}")
        message, rest = _receive_started(receive)  # the common case: the body came with the head
        if message is not None and message["type"] == "http.request" and not message.get("more_body", False):
            body = message.get("body", b"")
            if len(body) > limit:
                raise HttpError(413, f"body of more than {limit} bytes is over the limit")
            return body
        chunks, size = [], 0
        try:
            async with asyncio.timeout(self.body_timeout_s):
                while True:
                    if rest is not None:
                        message, rest = await rest, None
                    elif message is None:
                        message = await receive()
                    if message["type"] == "http.disconnect":
                        raise ClientGone()
                    chunks.append(message.get("body", b""))
                    size += len(chunks[-1])
                    if size > limit:  # chunked bodies announce no length
                        raise HttpError(413, f"body of more than {limit} bytes is over the limit")
                    if not message.get("more_body", False):
                        return b"".join(chunks)
                    message = None
        except TimeoutError:
            raise HttpError(408, f"the request body did not arrive within {self.body_timeout_s:g}s") from None

    def close(self) -> None:
        self._models_pool.shutdown(wait=False, cancel_futures=True)
        if self.batcher is not None:
            self.batcher.close()
        self.state.stop()


def _receive_started(receive):
    """(the next ASGI message, None) if ``receive()`` finishes without waiting, else (None, an
    awaitable that finishes that same call).

    The body deadline is an ``asyncio.timeout``, whose timer costs ~15 us a request; a small
    body arrives with its head, so the deadline is armed only when the body has to be waited
    for. The call is started by hand (one step of the coroutine) and, when it waits, resumed
    as it is under the deadline: nothing is called twice.
    """
    coro = receive()
    try:
        waiting = coro.send(None)
    except StopIteration as done:
        return done.value, None
    return None, _Resume(coro, waiting)


class _Resume:
    """``await _Resume(coro, waiting)`` finishes a coroutine suspended on ``waiting`` (its first
    step was run by hand), as the awaiting task would have: what the task sends or throws in
    (a cancellation, the deadline's) is passed on."""

    def __init__(self, coro, waiting):
        self.coro, self.waiting = coro, waiting

    def __await__(self):
        coro, waiting = self.coro, self.waiting
        while True:
            try:
                yield waiting
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as error:  # noqa: BLE001 - handed to the coroutine, as a task would
                try:
                    waiting = coro.throw(error)
                except StopIteration as done:
                    return done.value
            else:
                try:
                    waiting = coro.send(None)
                except StopIteration as done:
                    return done.value


def _parse_json(raw: bytes):
    try:
        return json.loads(raw)
    except RecursionError:  # e.g. "[[[[...": the parser recurses once per level
        raise HttpError(400, "malformed JSON in the request body: nested too deeply") from None
    except ValueError as error:  # JSONDecodeError, UnicodeDecodeError, and integers over 4,300 digits
        detail = str(error)
        if "integer string conversion" in detail:
            detail = "a number has more digits than the 4300 this server parses"
        raise HttpError(400, f"malformed JSON in the request body: {detail}") from None


async def _send(send, status: int, data: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    headers = headers + [(b"content-length", str(len(data)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})
