"""An HTTP server speaking TF Serving's REST predict API over an export's artifacts.

Routes (``<name>`` is the exported model name; ``retrieval`` is an alias of it)::

    GET  /v1/models/<name>[/versions/<v>]             status (TF Serving's model_version_status)
    GET  /v1/models/<name>[/versions/<v>]/metadata    inputs and outputs of each signature
    POST /v1/models/<name>[/versions/<v>]:predict     top-k item ids and scores (ScaNN index)
    POST /v1/models/query_model[...]:predict          query embeddings; signature_name "top_k":
                                                      the SavedModel's exact top-k
    POST /v1/models/item_model[...]:predict           item embeddings
    GET  /metrics                                     Prometheus metrics (:mod:`.metrics`)

A predict body is TF Serving's: ``{"instances": [{feature: value, ...}, ...]}`` (row format,
answered with ``{"predictions": [...]}``) or ``{"inputs": {feature: [values...]}}`` (columnar,
answered with ``{"outputs": ...}``), plus optional ``"signature_name"``, and for retrieval
``"k"`` (results per query) and per-query ``"exclude"`` (item ids never to return; a row's
key, or a column of lists). Bad requests get a 4xx with ``{"error": "..."}`` naming the
field; the server never answers a 5xx to bad input.

The modules, in the order a request meets them:

- :mod:`.server`   uvicorn (HTTP/1.1 framing, keep-alive, timeouts, backlog, workers) and the
                   protocol's two additions (a deadline per request head, JSON parser errors)
- :mod:`.app`      the ASGI app: routes, body limits, errors, metrics
- :mod:`.predict`  a request body -> validated rows -> the response body (no HTTP)
- :mod:`.batching` concurrent retrieval requests -> one query-tower call and one ScaNN search
- :mod:`.versions` the served version: integrity-checked loads, failure records, hot reload
- :mod:`.metrics`  the Prometheus metrics
- :mod:`.cli`      ``recsys-ssl serve`` flags

The server loads the query_model SavedModel and the standalone ScaNN searcher (never the
training code, nor the retrieval_scann SavedModel and its Scann ops).
"""
