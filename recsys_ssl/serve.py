"""An HTTP server speaking TF Serving's REST predict API over an export's artifacts.

Routes (``<name>`` is the exported model name; ``retrieval`` is an alias of it)::

    GET  /v1/models/<name>[/versions/<v>]             status (TF Serving's model_version_status)
    GET  /v1/models/<name>[/versions/<v>]/metadata    inputs and outputs of each signature
    POST /v1/models/<name>[/versions/<v>]:predict     top-k item ids and scores (ScaNN index)
    POST /v1/models/query_model[...]:predict          query embeddings; signature_name "top_k":
                                                      the SavedModel's exact top-k
    POST /v1/models/item_model[...]:predict           item embeddings

A predict body is TF Serving's: ``{"instances": [{feature: value, ...}, ...]}`` (row format,
answered with ``{"predictions": [...]}``) or ``{"inputs": {feature: [values...]}}`` (columnar,
answered with ``{"outputs": ...}``), plus optional ``"signature_name"``, and for retrieval
``"k"`` (results per query) and per-query ``"exclude"`` (item ids never to return; a row's
key, or a column of lists). Bad requests get a 4xx with ``{"error": "..."}`` naming the
field; the server never answers a 5xx to bad input.

The server loads the query_model SavedModel and the standalone ScaNN searcher (never the
training code, nor the retrieval_scann SavedModel and its Scann ops), serves the highest
complete version, and polls the model folder for newer ones (``recsys-ssl index add``
writes one), swapping them in whole. Concurrent retrieval requests are batched (:class:`Batcher`).
"""
from __future__ import annotations

import argparse
import json
import queue
import re
import sys
import threading
import time
import traceback
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np

from recsys_ssl import index as index_lib
from recsys_ssl.retrieve import EXCLUDE, RequestError, Retriever, validate_instance

QUERY_MODEL, ITEM_MODEL, RETRIEVAL = "query_model", "item_model", "retrieval"
_ROUTE = re.compile(r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>[^/:]+))?(?P<rest>/metadata|:predict)?$")


class HttpError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class Limits:
    def __init__(self, max_body_bytes: int = 1 << 20, max_batch: int = 256, max_k: int = 100):
        self.max_body_bytes, self.max_batch, self.max_k = max_body_bytes, max_batch, max_k


class ModelState:
    """The version being served, and a poller that swaps in newer complete versions."""

    def __init__(self, model_dir, poll_seconds: float = 5.0, log=print):
        self.model_dir = model_dir
        self.log = log
        self.retriever = Retriever(index_lib.latest_version_dir(model_dir))
        self.model_name = self.retriever.manifest["model_name"]
        self._stop = threading.Event()
        if poll_seconds > 0:
            threading.Thread(target=self._poll, args=(poll_seconds,), daemon=True, name="version-poller").start()

    def _poll(self, seconds: float) -> None:
        while not self._stop.wait(seconds):
            try:
                found = index_lib.versions(self.model_dir)
                if found and found[-1] > self.retriever.version:
                    start = time.perf_counter()
                    retriever = Retriever(self.model_dir / str(found[-1]))
                    self.retriever = retriever  # one reference swap: requests see old or new, whole.
                    self.log(f"serve: now serving version {retriever.version} ({retriever.index.size} items, "
                             f"loaded in {time.perf_counter() - start:.2f}s)")
            except Exception as error:  # a bad new version must not take the server down
                self.log(f"serve: could not load a newer version: {error}")

    def stop(self) -> None:
        self._stop.set()


class Batcher:
    """Adaptive batching of retrieval queries: requests that arrive while a batch is running are
    answered together by the next one (one TensorFlow call and one ScaNN batch search for all),
    so under load the per-call overhead is shared, and when idle nothing waits (no timeout).

    One worker thread runs the batches; handler threads only parse, validate and wait.
    """

    def __init__(self, max_rows: int = 256):
        self.max_rows = max_rows
        self._queue: queue.Queue = queue.Queue()
        threading.Thread(target=self._run, daemon=True, name="batcher").start()

    def retrieve(self, retriever: Retriever, rows: list[dict], k: int):
        pending = {"retriever": retriever, "rows": rows, "k": k, "done": threading.Event()}
        self._queue.put(pending)
        pending["done"].wait()
        if "error" in pending:
            raise pending["error"]
        return pending["result"]

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            size = len(batch[0]["rows"])
            while size < self.max_rows:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
                size += len(batch[-1]["rows"])
            # A version swap can put two retrievers in one batch: each gets its own call.
            for retriever in {id(p["retriever"]): p["retriever"] for p in batch}.values():
                group = [p for p in batch if p["retriever"] is retriever]
                try:
                    # The top-k' of a larger k' starts with the top-k (same candidates, exact re-scoring).
                    ids, scores = retriever.retrieve([r for p in group for r in p["rows"]], max(p["k"] for p in group))
                    start = 0
                    for p in group:
                        stop = start + len(p["rows"])
                        p["result"] = ([i[: p["k"]] for i in ids[start:stop]], [s[: p["k"]] for s in scores[start:stop]])
                        start = stop
                except Exception as error:  # handed to each waiting request (an internal error)
                    for p in group:
                        p["error"] = error
                for p in group:
                    p["done"].set()


# -- request handling (pure functions of the parsed body: testable without HTTP) ----------------


def _rows_from_body(body: dict, signature: list[dict], limits: Limits, extra_ok) -> tuple[list[dict], bool]:
    """(instances, columnar) from a predict body; validates every field."""
    if ("instances" in body) == ("inputs" in body):
        raise RequestError("the body needs exactly one of 'instances' (row format) or 'inputs' (columnar)")
    if "instances" in body:
        rows = body["instances"]
        if not isinstance(rows, list) or not rows:
            raise RequestError("'instances' must be a non-empty list of objects")
        _check_batch(len(rows), limits)
        for i, row in enumerate(rows):
            validate_instance(row, signature, where=f"instances[{i}]", extra_ok=extra_ok)
        return rows, False
    columns = body["inputs"]
    if not isinstance(columns, dict) or not columns:
        raise RequestError("'inputs' must be an object mapping each input name to a list of values")
    lengths = {}
    for name, column in columns.items():
        if not isinstance(column, list):
            raise RequestError(f"inputs[{name!r}] must be a list (one value per query)")
        lengths[name] = len(column)
    if len(set(lengths.values())) != 1:
        raise RequestError(f"'inputs' columns must have the same length, got {lengths}")
    size = next(iter(lengths.values()))
    if size == 0:
        raise RequestError("'inputs' columns are empty")
    _check_batch(size, limits)
    rows = [{name: column[i] for name, column in columns.items()} for i in range(size)]
    for i, row in enumerate(rows):
        validate_instance(row, signature, where=f"inputs (row {i})", extra_ok=extra_ok)
    return rows, True


def _check_batch(size: int, limits: Limits) -> None:
    if size > limits.max_batch:
        raise RequestError(f"batch of {size} queries is over the limit of {limits.max_batch}")


def _check_k(body: dict, limits: Limits, default: int) -> int:
    k = body.get("k", default)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= limits.max_k:
        raise RequestError(f"'k' must be an integer in [1, {limits.max_k}], got {k!r}")
    return k


def predict(retriever: Retriever, model: str, body: Any, limits: Limits, batcher: Batcher | None = None) -> dict:
    """One predict request -> the response body. Raises RequestError for bad input."""
    if not isinstance(body, dict):
        raise RequestError(f"the body must be a JSON object, got {type(body).__name__}")
    signature_name = body.get("signature_name", "serving_default")
    allowed = {"instances", "inputs", "signature_name"}
    if model == RETRIEVAL:
        allowed |= {"k"}
        signatures = ("serving_default",)
    elif model == QUERY_MODEL:
        signatures = ("serving_default", "top_k") if retriever.query_top_k is not None else ("serving_default",)
    else:
        signatures = ("serving_default",)
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise RequestError(f"unknown field {unknown[0]!r} in the request body; allowed: {sorted(allowed)}")
    if signature_name not in signatures:
        raise RequestError(f"model {model!r} has no signature {signature_name!r}; signatures: {list(signatures)}")

    if model == ITEM_MODEL:
        rows, columnar = _rows_from_body(body, retriever.item_signature, limits, extra_ok=())
        return _single_output(retriever.embed_items(rows).tolist(), columnar)
    if model == QUERY_MODEL:
        rows, columnar = _rows_from_body(body, retriever.query_signature, limits, extra_ok=())
        if signature_name == "top_k":
            from recsys_ssl.retrieve import instances_to_arrays

            out = retriever.query_top_k(instances_to_arrays(rows, retriever.query_signature))
            ids = [[b.decode() for b in row] for row in out["item_ids"]]
            return _retrieval_output(ids, list(out["scores"]), columnar)
        return _single_output(retriever.embed_queries(rows).tolist(), columnar)
    k = _check_k(body, limits, retriever.k)
    rows, columnar = _rows_from_body(body, retriever.query_signature, limits, extra_ok=(EXCLUDE,))
    ids, scores = batcher.retrieve(retriever, rows, k) if batcher else retriever.retrieve(rows, k)
    return _retrieval_output(ids, scores, columnar)


def _single_output(values: list, columnar: bool) -> dict:
    # TF Serving drops the output's name when a signature has a single output.
    return {"outputs": values} if columnar else {"predictions": values}


def _retrieval_output(ids: list[list[str]], scores: list[np.ndarray], columnar: bool) -> dict:
    scores = [[float(s) for s in row] for row in scores]
    if columnar:
        return {"outputs": {"item_ids": ids, "scores": scores}}
    return {"predictions": [{"item_ids": i, "scores": s} for i, s in zip(ids, scores)]}


def status(retriever: Retriever) -> dict:
    return {"model_version_status": [{"version": str(retriever.version), "state": "AVAILABLE",
                                      "status": {"error_code": "OK", "error_message": ""}}]}


def metadata(retriever: Retriever, model: str, name: str) -> dict:
    def inputs(signature):
        return {f["name"]: {"dtype": "DT_STRING", "shape": [-1, -1] if f["kind"] == "multi_categorical" else [-1]}
                for f in signature}

    dim = retriever.index.dim
    retrieval_out = {"item_ids": {"dtype": "DT_STRING", "shape": [-1, -1]}, "scores": {"dtype": "DT_FLOAT", "shape": [-1, -1]}}
    embedding_out = {"embedding": {"dtype": "DT_FLOAT", "shape": [-1, dim]}}
    if model == ITEM_MODEL:
        defs = {"serving_default": {"inputs": inputs(retriever.item_signature), "outputs": embedding_out}}
    elif model == QUERY_MODEL:
        defs = {"serving_default": {"inputs": inputs(retriever.query_signature), "outputs": embedding_out}}
        if retriever.query_top_k is not None:
            defs["top_k"] = {"inputs": inputs(retriever.query_signature), "outputs": retrieval_out}
    else:
        defs = {"serving_default": {"inputs": inputs(retriever.query_signature) | {EXCLUDE: {"dtype": "DT_STRING", "shape": [-1, -1], "optional": True}},
                                    "outputs": retrieval_out}}
    return {"model_spec": {"name": name, "signature_name": "", "version": str(retriever.version)},
            "metadata": {"signature_def": {"signature_def": defs}},
            "corpus_size": retriever.index.size, "k": retriever.k}


# -- HTTP ---------------------------------------------------------------------------------------


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: clients reuse connections.
    # Headers and body go out in separate writes; with Nagle on, the body waits for the
    # client's delayed ACK (~40 ms per response on Linux).
    disable_nagle_algorithm = True
    # A request line http.server cannot parse leaves it at HTTP/0.9, which answers without a
    # status line; answer those with a proper HTTP/1.0 status and JSON error instead.
    default_request_version = "HTTP/1.0"
    server_version = "recsys-ssl-serve"
    state: ModelState
    limits: Limits
    batcher: Batcher | None = None
    access_log = False
    _body_read = False  # set once a request's body has been read off the connection

    def log_message(self, format, *args):  # noqa: A002
        if self.access_log:
            super().log_message(format, *args)

    def _send(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        headers = getattr(self, "headers", None)
        has_body = headers is not None and (headers.get("Content-Length", "0") not in ("", "0") or "Transfer-Encoding" in headers)
        unread = has_body and not self._body_read
        if unread:  # an answer before the body was read (404, 405, 413, ...): the unread body would be
            self.send_header("Connection", "close")  # parsed as the next request on this keep-alive connection
        self._body_read = False  # the next request on this connection starts unread
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _route(self) -> tuple[str, str, Retriever, str]:
        match = _ROUTE.match(self.path.split("?", 1)[0])
        if not match:
            raise HttpError(404, f"no route {self.path!r}; try /v1/models/{self.state.model_name}:predict")
        name, version, rest = match["name"], match["version"], match["rest"] or ""
        retriever = self.state.retriever  # one read: the whole request uses one version.
        if name in (self.state.model_name, RETRIEVAL):
            model = RETRIEVAL
        elif name in (QUERY_MODEL, ITEM_MODEL):
            model = name
        else:
            raise HttpError(404, f"model {name!r} not found; serving {[self.state.model_name, RETRIEVAL, QUERY_MODEL, ITEM_MODEL]}")
        if version is not None and version != str(retriever.version):
            raise HttpError(404, f"version {version!r} of model {name!r} is not available; serving version {retriever.version}")
        return model, name, retriever, rest

    def _handle(self, method: str) -> None:
        try:
            model, name, retriever, rest = self._route()
            if method == "GET":
                if rest == ":predict":
                    raise HttpError(405, "predict needs POST")
                self._send(200, metadata(retriever, model, name) if rest == "/metadata" else status(retriever))
                return
            if rest != ":predict":
                raise HttpError(405, f"POST goes to /v1/models/{name}:predict")
            length = self.headers.get("Content-Length")
            if length is None or not length.isdigit():
                raise HttpError(411, "a Content-Length header is required")
            if int(length) > self.limits.max_body_bytes:
                raise HttpError(413, f"body of {length} bytes is over the limit of {self.limits.max_body_bytes}")
            raw = self.rfile.read(int(length))
            self._body_read = True
            try:
                body = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as error:
                raise HttpError(400, f"malformed JSON in the request body: {error}") from None
            except RecursionError:  # e.g. "[[[[...": the parser recurses once per level
                raise HttpError(400, "malformed JSON in the request body: nested too deeply") from None
            self._send(200, predict(retriever, model, body, self.limits, self.batcher))
        except HttpError as error:
            self._send(error.status, {"error": str(error)})
        except RequestError as error:
            self._send(400, {"error": str(error)})
        except Exception as error:  # a bug of ours, not of the request: say so, and keep serving.
            traceback.print_exc()
            self._send(500, {"error": f"internal error: {type(error).__name__}: {error}"})

    def do_GET(self):  # noqa: N802
        self._handle("GET")

    def do_POST(self):  # noqa: N802
        self._handle("POST")

    def _not_allowed(self):
        self._send(405, {"error": f"method {self.command} not allowed; use GET (status) or POST (:predict)"})

    do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _not_allowed

    def send_error(self, code, message=None, explain=None):
        """http.server's own rejections (bad request line, unknown method, HTTP/2.0 ...) as JSON
        4xx too: 501 (unsupported method) becomes 405 and 505 (version) becomes 400."""
        code = {501: 405, 505: 400}.get(code, code if code < 500 else 400)
        self.close_connection = True
        try:
            self._send(code, {"error": message or HTTPStatus(code).phrase})
        except OSError:
            pass


def make_server(model_dir, host: str = "127.0.0.1", port: int = 8501, limits: Limits | None = None,
                poll_seconds: float = 5.0, access_log: bool = False, batching: bool = True) -> ThreadingHTTPServer:
    state = ModelState(model_dir, poll_seconds)
    limits = limits or Limits()
    batcher = Batcher(max(limits.max_batch, 1)) if batching else None
    handler = type("BoundHandler", (Handler,), {"state": state, "limits": limits, "access_log": access_log,
                                                "batcher": batcher})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    server.state = state
    return server


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="recsys-ssl serve", description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", default="runs/demo")
    parser.add_argument("--export-dir", default=None, help="export root (default <run-dir>/export)")
    parser.add_argument("--model-name", default=None, help="model under the export root (default: the only one)")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default loopback only)")
    parser.add_argument("--port", type=int, default=8501, help="0 picks a free port (printed)")
    parser.add_argument("--max-body-bytes", type=int, default=1 << 20)
    parser.add_argument("--max-batch", type=int, default=256, help="queries per request")
    parser.add_argument("--max-k", type=int, default=100)
    parser.add_argument("--poll-seconds", type=float, default=5.0, help="how often to look for a newer version (0: never)")
    parser.add_argument("--tf-threads", type=int, default=1,
                        help="TensorFlow intra- and inter-op threads (0: TF's default). One query is a tiny "
                             "graph: concurrency comes from concurrent requests, and more op threads only "
                             "contend for the cores (measured: p99 81 -> 17 ms at 8 clients on 2 cores)")
    parser.add_argument("--no-batching", dest="batching", action="store_false",
                        help="answer each retrieval request on its own thread instead of batching concurrent ones")
    parser.add_argument("--access-log", action="store_true")
    return parser


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    from recsys_ssl.paths import RunLayout

    if args.tf_threads:
        from recsys_ssl.tf_setup import tf

        tf.config.threading.set_intra_op_parallelism_threads(args.tf_threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.tf_threads)
    try:
        model_dir = index_lib.resolve_model_dir(args.export_dir or RunLayout(args.run_dir).export, args.model_name)
        server = make_server(model_dir, args.host, args.port, Limits(args.max_body_bytes, args.max_batch, args.max_k),
                             args.poll_seconds, args.access_log, args.batching)
    except (FileNotFoundError, ValueError) as error:
        print(f"recsys-ssl serve: {error}", file=sys.stderr)
        return 2
    host, port = server.server_address[:2]
    r = server.state.retriever
    print(f"serving on http://{host}:{port} model {server.state.model_name!r} version {r.version} "
          f"({r.index.size} items, index {r.index.config.algorithm})", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
