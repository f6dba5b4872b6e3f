"""Running the app on uvicorn: the listening socket, the HTTP protocol, workers and logging.

HTTP/1.1 framing, keep-alive and the request parser (llhttp, through httptools) are uvicorn's.
What this module adds to uvicorn's httptools protocol, and why:

- **A deadline for each request head.** uvicorn closes a connection that stays idle *after*
  a response (``timeout_keep_alive``), but not one that never completes a request: a client
  that connects and sends nothing, or half a header, would hold its socket forever.
  :class:`Protocol` closes such a connection after the same timeout (a 408 when some bytes
  came).
- **JSON errors from the parser.** A request the parser rejects (a ``Content-Length`` that is
  not digits, ``Content-Length`` with ``Transfer-Encoding`` or twice, a bad request line) is
  answered with the server's JSON error body and the connection closed, 405 for an unknown
  method, and counted in ``/metrics``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
from http import HTTPStatus

import httptools
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from recsys_ssl.serve.metrics import Metrics

log = logging.getLogger("recsys_ssl.serve")


class Protocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a request-head deadline and JSON parser errors (module docstring).

    ``metrics``: where parser rejections are counted (set per server: :func:`protocol_class`).
    """

    metrics: Metrics | None = None
    _head_timer: asyncio.TimerHandle | None = None
    _in_request = False
    _bytes_since_response = 0

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._unset_keepalive_if_required()
        self._bytes_since_response += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserInvalidMethodError:
            self._reject(405, "unknown HTTP method; use GET (status) or POST (:predict)")
            return
        except httptools.HttpParserUpgrade:
            pass  # no protocol upgrades here: the request is answered as plain HTTP
        except httptools.HttpParserError as error:
            self._reject(400, f"malformed HTTP request: {error}")
            return
        if not self._in_request:
            self._arm_head_timer()

    def on_headers_complete(self) -> None:
        self._in_request = True
        self._cancel_head_timer()  # the app bounds the body's arrival itself (408)
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        self._in_request = False
        self._bytes_since_response = 0
        super().on_response_complete()  # arms uvicorn's keep-alive timer

    def _arm_head_timer(self) -> None:
        if self._head_timer is None and not self.transport.is_closing():
            self._head_timer = self.loop.call_later(self.timeout_keep_alive, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._in_request or self.transport.is_closing():
            return
        if self._bytes_since_response:
            self._reject(408, f"the request head did not arrive within {self.timeout_keep_alive:g}s")
        else:
            self.transport.close()  # an idle connection: nothing to answer

    def _reject(self, status: int, message: str) -> None:
        self._cancel_head_timer()
        body = json.dumps({"error": message}).encode()
        head = (
            f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
        ).encode()
        self.transport.write(head + body)
        self.transport.close()
        log.info("rejected a request from %s: %s", "%s:%d" % self.client if self.client else "?", message)
        if self.metrics is not None:
            self.metrics.observe_request("other", status, 0.0)


def protocol_class(metrics: Metrics | None) -> type[asyncio.Protocol]:
    """:class:`Protocol` counting its rejections in ``metrics``."""
    return type("Protocol", (Protocol,), {"metrics": metrics})


def listening_socket(host: str, port: int, backlog: int) -> socket.socket:
    """Bound and listening before the app loads, so the port is known (``--port 0``) and
    connections queue in the ``backlog`` meanwhile."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
    sock.listen(backlog)
    sock.set_inheritable(True)  # the --workers processes accept on it too
    return sock


def log_config(access_log: bool) -> dict:
    """One line per event on stdout: uvicorn's, the access log (when on), and ours."""
    handler = {"class": "logging.StreamHandler", "stream": "ext://sys.stdout", "formatter": "line"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"line": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
        "handlers": {"stdout": handler},
        "loggers": {
            "uvicorn": {"handlers": ["stdout"], "level": "INFO", "propagate": False},
            "uvicorn.access": {
                "handlers": ["stdout"],
                "level": "INFO" if access_log else "WARNING",
                "propagate": False,
            },
            "recsys_ssl.serve": {"handlers": ["stdout"], "level": "INFO", "propagate": False},
        },
    }


def uvicorn_config(
    app,
    metrics: Metrics | None,
    *,
    timeout_keep_alive: float,
    backlog: int,
    limit_concurrency: int | None,
    access_log: bool,
    workers: int = 1,
    factory: bool = False,
) -> uvicorn.Config:
    # --workers processes import the protocol by name (a class made here would not reach them).
    http = protocol_class(metrics) if workers == 1 else f"{__name__}:Protocol"
    return uvicorn.Config(
        app,
        factory=factory,
        http=http,
        ws="none",
        lifespan="off",
        loop="auto",
        timeout_keep_alive=timeout_keep_alive,
        backlog=backlog,
        limit_concurrency=limit_concurrency,
        access_log=access_log,
        log_config=log_config(access_log),
        workers=workers,
        server_header=False,
        date_header=False,
        timeout_graceful_shutdown=10,
    )


def run(config: uvicorn.Config, sock: socket.socket) -> None:
    """Serves until SIGINT/SIGTERM (graceful: in-flight requests finish)."""
    if config.workers > 1:
        from uvicorn.supervisors import Multiprocess

        os.environ.setdefault("PYTHONUNBUFFERED", "1")
        Multiprocess(config, sockets=[sock]).run()
    else:
        uvicorn.Server(config).run(sockets=[sock])
