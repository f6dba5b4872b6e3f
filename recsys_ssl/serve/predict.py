"""A predict, status or metadata request as pure functions of the parsed body (no HTTP here).

:func:`parse_retrieval` validates a retrieval body into (rows, columnar, k); the server answers
it through its :class:`~recsys_ssl.serve.batching.Batcher`, and :func:`retrieval_output` shapes
the answer. :func:`predict` answers any request synchronously (the query and item models, and
retrieval without batching). Every bad field raises :class:`~recsys_ssl.retrieve.RequestError`
naming it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from recsys_ssl.retrieve import EXCLUDE, RequestError, Retriever, instances_to_arrays, validate_instance

QUERY_MODEL, ITEM_MODEL, RETRIEVAL = "query_model", "item_model", "retrieval"


class Limits:
    """Per-request limits: body bytes, queries per request, results per query."""

    def __init__(self, max_body_bytes: int = 1 << 20, max_batch: int = 256, max_k: int = 100):
        self.max_body_bytes, self.max_batch, self.max_k = max_body_bytes, max_batch, max_k


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


def _check_fields(retriever: Retriever, model: str, body: Any) -> str:
    """The body's top-level fields and signature name; returns the signature name."""
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
    return signature_name


def parse_retrieval(retriever: Retriever, body: Any, limits: Limits) -> tuple[list[dict], bool, int]:
    """A retrieval body -> (validated rows, columnar?, k). Raises RequestError naming the field."""
    _check_fields(retriever, RETRIEVAL, body)
    k = _check_k(body, limits, retriever.k)
    rows, columnar = _rows_from_body(body, retriever.query_signature, limits, extra_ok=(EXCLUDE,))
    return rows, columnar, k


def predict(retriever: Retriever, model: str, body: Any, limits: Limits) -> dict:
    """One predict request -> the response body, computed here. Raises RequestError for bad input."""
    if model == RETRIEVAL:
        rows, columnar, k = parse_retrieval(retriever, body, limits)
        return retrieval_output(*retriever.retrieve(rows, k), columnar)
    signature_name = _check_fields(retriever, model, body)
    if model == ITEM_MODEL:
        rows, columnar = _rows_from_body(body, retriever.item_signature, limits, extra_ok=())
        return _single_output(retriever.embed_items(rows).tolist(), columnar)
    rows, columnar = _rows_from_body(body, retriever.query_signature, limits, extra_ok=())
    if signature_name == "top_k":
        out = retriever.query_top_k(instances_to_arrays(rows, retriever.query_signature))
        ids = [[b.decode() for b in row] for row in out["item_ids"]]
        return retrieval_output(ids, list(out["scores"]), columnar)
    return _single_output(retriever.embed_queries(rows).tolist(), columnar)


def _single_output(values: list, columnar: bool) -> dict:
    # TF Serving drops the output's name when a signature has a single output.
    return {"outputs": values} if columnar else {"predictions": values}


def retrieval_output(ids: list[list[str]], scores: list[np.ndarray], columnar: bool) -> dict:
    scores = [np.asarray(row, np.float64).tolist() for row in scores]  # float32 -> the shortest repr of its value
    if columnar:
        return {"outputs": {"item_ids": ids, "scores": scores}}
    return {"predictions": [{"item_ids": i, "scores": s} for i, s in zip(ids, scores)]}


def metadata(retriever: Retriever, model: str, name: str) -> dict:
    def inputs(signature):
        return {
            f["name"]: {"dtype": "DT_STRING", "shape": [-1, -1] if f["kind"] == "multi_categorical" else [-1]}
            for f in signature
        }

    dim = retriever.index.dim
    retrieval_out = {
        "item_ids": {"dtype": "DT_STRING", "shape": [-1, -1]},
        "scores": {"dtype": "DT_FLOAT", "shape": [-1, -1]},
    }
    embedding_out = {"embedding": {"dtype": "DT_FLOAT", "shape": [-1, dim]}}
    if model == ITEM_MODEL:
        defs = {"serving_default": {"inputs": inputs(retriever.item_signature), "outputs": embedding_out}}
    elif model == QUERY_MODEL:
        defs = {"serving_default": {"inputs": inputs(retriever.query_signature), "outputs": embedding_out}}
        if retriever.query_top_k is not None:
            defs["top_k"] = {"inputs": inputs(retriever.query_signature), "outputs": retrieval_out}
    else:
        defs = {
            "serving_default": {
                "inputs": inputs(retriever.query_signature)
                | {EXCLUDE: {"dtype": "DT_STRING", "shape": [-1, -1], "optional": True}},
                "outputs": retrieval_out,
            }
        }
    return {
        "model_spec": {"name": name, "signature_name": "", "version": str(retriever.version)},
        "metadata": {"signature_def": {"signature_def": defs}},
        "corpus_size": retriever.index.size,
        "k": retriever.k,
    }
