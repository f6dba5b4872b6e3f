"""``recsys-ssl serve``: flags -> the app on uvicorn (see the package docstring for the API)."""

from __future__ import annotations

import argparse
import json
import logging
import logging.config
import os
import pathlib
import sys

from recsys_ssl import index as index_lib
from recsys_ssl.paths import DEFAULT_RUN_DIR, RunLayout
from recsys_ssl.serve import server
from recsys_ssl.serve.app import App
from recsys_ssl.serve.batching import Batcher
from recsys_ssl.serve.metrics import Metrics
from recsys_ssl.serve.predict import Limits
from recsys_ssl.serve.versions import ModelState

_WORKER_ARGS = "RECSYS_SSL_SERVE_ARGS"  # the parsed flags, handed to --workers processes


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} is outside 0-65535")
    return port


def _positive(kind):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value

    return parse


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recsys-ssl serve", description="HTTP server with TF Serving's REST API over an export (uvicorn)."
    )
    add = parser.add_argument
    _add_model_flags(add)
    _add_batching_flags(add)
    _add_connection_flags(add)
    return parser


def _add_model_flags(add) -> None:
    """What is served, request limits, TensorFlow, logs."""
    add("--run-dir", default=DEFAULT_RUN_DIR)
    add("--export-dir", default=None, help="export root (default <run-dir>/export)")
    add("--model-name", default=None, help="model under the export root (default: the only one)")
    add("--host", default="127.0.0.1", help="bind address (default loopback only)")
    add("--port", type=_port, default=8501, help="0 picks a free port (printed)")
    add("--max-body-bytes", type=_positive(int), default=1 << 20, help="larger bodies get a 413")
    add("--max-batch", type=_positive(int), default=256, help="queries per request")
    add("--max-k", type=_positive(int), default=100)
    add("--poll-seconds", type=float, default=5.0, help="how often to look for a newer version (0: never)")
    add(
        "--tf-threads",
        type=int,
        default=1,
        help="TensorFlow intra- and inter-op threads (0: TF's default). A query is a tiny graph: "
        "concurrency comes from batching concurrent requests, more op threads only contend for the cores",
    )
    add("--access-log", action="store_true", help="one log line per request")
    add("--debug", action="store_true", help="log the full traceback of internal errors")


def _add_batching_flags(add) -> None:
    add(
        "--batch-max-queries",
        type=_positive(int),
        default=256,
        help="queries per retrieval batch (one query-tower call and one ScaNN search)",
    )
    add(
        "--batch-max-wait-ms",
        type=float,
        default=0.0,
        help="how long a batch waits to fill (default 0: it takes what queued while the last one ran)",
    )
    add(
        "--batch-concurrency",
        type=_positive(int),
        default=1,
        help="retrieval batches computed at once (each on its own thread; TensorFlow and ScaNN release the GIL)",
    )
    add(
        "--gil-switch-interval-ms",
        type=_positive(float),
        default=0.1,
        help="how long a busy thread keeps Python's GIL before it must hand it over (Python's default: 5 ms). "
        "Short, so that the compute thread, back from TensorFlow or ScaNN, does not wait behind the event loop",
    )
    add(
        "--no-batching",
        dest="batching",
        action="store_false",
        help="answer each retrieval request on its own instead of batching concurrent ones",
    )


def _add_connection_flags(add) -> None:
    """uvicorn's: timeouts, backlog, concurrency, worker processes."""
    add(
        "--timeout-keep-alive",
        type=_positive(float),
        default=5.0,
        help="seconds an idle connection, or an unfinished request head, is kept before it is closed",
    )
    add("--timeout-body", type=_positive(float), default=10.0, help="seconds for a request body to arrive (408)")
    add("--backlog", type=_positive(int), default=2048, help="listen queue of new connections (capped by somaxconn)")
    add(
        "--limit-concurrency",
        type=_positive(int),
        default=None,
        help="connections + requests in flight before new requests get a 503 (default: no limit)",
    )
    add(
        "--workers",
        type=_positive(int),
        default=1,
        help="server processes sharing the port (each loads the model; /metrics is per process)",
    )


def set_gil_switch_interval(milliseconds: float) -> None:
    """Python hands the GIL to a waiting thread only every switch interval (default 5 ms).

    The compute thread drops the GIL inside every TensorFlow and ScaNN call and needs it back
    several times per batch; under load the event loop holds it, so with 5 ms each of those
    returns can wait up to 5 ms, several times the work of the whole batch (measured in
    ``docs/serving.md``). A short interval costs the event loop a few more switches.
    """
    sys.setswitchinterval(milliseconds / 1000.0)


def set_tf_threads(threads: int) -> None:
    """Before TensorFlow runs anything (it cannot change them afterwards)."""
    if threads:
        from recsys_ssl.tf_setup import tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)


def build_app(model_dir, args: argparse.Namespace) -> App:
    """Loads the served version (integrity-checked) and wires the app, its batcher and metrics."""
    metrics = Metrics()
    log = logging.getLogger("recsys_ssl.serve")

    def on_reload(ok: bool, version: int) -> None:
        metrics.reloads.labels("success" if ok else "failure").inc()
        if ok and state is not None:
            metrics.served_version.labels(state.model_name).set(version)
        metrics.failed_versions.set(len(state.failed) if state is not None else 0)

    state = None
    state = ModelState(model_dir, args.poll_seconds, log=log.info, on_reload=on_reload)
    metrics.served_version.labels(state.model_name).set(state.version)
    metrics.failed_versions.set(len(state.failed))
    limits = Limits(args.max_body_bytes, args.max_batch, args.max_k)
    batcher = (
        Batcher(
            args.batch_max_queries,
            args.batch_max_wait_ms / 1000,
            metrics.observe_batch,
            concurrency=args.batch_concurrency,
        )
        if args.batching
        else None
    )
    return App(state, limits, metrics, batcher, body_timeout_s=args.timeout_body, debug=args.debug)


def app_from_environment() -> App:
    """The app of one ``--workers`` process (uvicorn's factory): the flags come from the parent."""
    settings = json.loads(os.environ[_WORKER_ARGS])
    args = argparse.Namespace(**settings["args"])
    set_tf_threads(args.tf_threads)
    set_gil_switch_interval(args.gil_switch_interval_ms)
    app = build_app(pathlib.Path(settings["model_dir"]), args)
    server.Protocol.metrics = app.metrics
    return app


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    logging.config.dictConfig(server.log_config(args.access_log))
    model_dir = index_lib.resolve_model_dir(args.export_dir or RunLayout(args.run_dir).export, args.model_name)
    sock = server.listening_socket(args.host, args.port, args.backlog)
    host, port = sock.getsockname()[:2]
    common = dict(
        timeout_keep_alive=args.timeout_keep_alive,
        backlog=args.backlog,
        limit_concurrency=args.limit_concurrency,
        access_log=args.access_log,
    )
    if args.workers > 1:
        if not index_lib.versions(model_dir):
            raise FileNotFoundError(f"{model_dir}: no complete export version")
        os.environ[_WORKER_ARGS] = json.dumps({"model_dir": str(model_dir), "args": vars(args)})
        config = server.uvicorn_config(
            "recsys_ssl.serve.cli:app_from_environment", None, workers=args.workers, factory=True, **common
        )
        print(f"serving on http://{host}:{port} model dir {model_dir} ({args.workers} worker processes)", flush=True)
    else:
        set_tf_threads(args.tf_threads)
        set_gil_switch_interval(args.gil_switch_interval_ms)
        try:
            app = build_app(model_dir, args)
        except Exception:
            sock.close()
            raise
        r = app.state.retriever
        config = server.uvicorn_config(app, app.metrics, **common)
        print(
            f"serving on http://{host}:{port} model {app.state.model_name!r} version {r.version} "
            f"({r.index.size} items, index {r.index.config.algorithm})",
            flush=True,
        )
    try:
        server.run(config, sock)
    finally:
        sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
