"""The server's Prometheus metrics (``GET /metrics``, the official ``prometheus_client``).

======================================== ===========================================================
``recsys_ssl_requests_total``            counter, labels ``route`` and ``code`` (HTTP status)
``recsys_ssl_request_seconds``           histogram of request latency (body read to response), ``route``
``recsys_ssl_batch_queries``             histogram of queries per retrieval batch (one query-tower call
                                         and one ScaNN search each)
``recsys_ssl_batch_seconds``             histogram of a retrieval batch's compute time
``recsys_ssl_served_version``            gauge, label ``model``: the version being served
``recsys_ssl_reloads_total``             counter, label ``result`` (``success`` / ``failure``): version
                                         loads, the integrity checks included
``recsys_ssl_failed_versions``           gauge: versions that failed and wait for their files to change
======================================== ===========================================================

Routes are a closed set (``ROUTES``), so a scan of random paths cannot grow the label space.
Each registry is private to its server (tests start several); with ``--workers N`` every
worker process has its own, and a scrape reaches one of them.
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

disable_created_metrics()  # no *_created series: one timestamp per counter and label set is noise here

ROUTES = ("predict", "query_model", "item_model", "status", "metadata", "metrics", "other")
_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.004, 0.006, 0.008, 0.012, 0.016, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self):
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("recsys_ssl_requests", "HTTP requests answered", ["route", "code"], registry=r)
        self.latency = Histogram(
            "recsys_ssl_request_seconds",
            "Request latency, body read to response",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_queries = Histogram(
            "recsys_ssl_batch_queries", "Queries per retrieval batch", buckets=_BATCH_BUCKETS, registry=r
        )
        self.batch_seconds = Histogram(
            "recsys_ssl_batch_seconds", "Compute time of one retrieval batch", buckets=_LATENCY_BUCKETS, registry=r
        )
        self.served_version = Gauge(
            "recsys_ssl_served_version", "The export version being served", ["model"], registry=r
        )
        self.reloads = Counter(
            "recsys_ssl_reloads", "Version loads (integrity checks included)", ["result"], registry=r
        )
        self.failed_versions = Gauge(
            "recsys_ssl_failed_versions", "Versions that failed to load and wait for their files to change", registry=r
        )
        for result in ("success", "failure"):
            self.reloads.labels(result)  # both series exist from the start (a 0 is a reading too)
        # Children resolved once: a label lookup per request costs more than the observation.
        self._latency = {route: self.latency.labels(route) for route in ROUTES}
        self._requests: dict[tuple[str, int], Counter] = {}

    def observe_request(self, route: str, code: int, seconds: float) -> None:
        counter = self._requests.get((route, code))
        if counter is None:
            counter = self._requests[(route, code)] = self.requests.labels(route, str(code))
        counter.inc()
        self._latency[route].observe(seconds)

    def observe_batch(self, queries: int, seconds: float) -> None:
        self.batch_queries.observe(queries)
        self.batch_seconds.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
