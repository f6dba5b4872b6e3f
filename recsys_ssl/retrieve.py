"""Retrieval from an exported version: raw query features -> top-k item ids and scores.

:class:`Retriever` loads only export artifacts (``query_model``/``item_model`` SavedModels,
the ScaNN index, the manifest), never the training code; the HTTP server
(:mod:`recsys_ssl.serve`) and ``recsys-ssl retrieve`` (JSON lines in, JSON lines out, for
offline use) both use it.

An *instance* is a dict of raw feature values, as in TF Serving's row format:
single-valued feature -> a string (an integer is taken as its decimal string);
multi-valued feature -> a list of strings (padded with "" / truncated to the feature's
max_len here, so clients need not pad). Retrieval instances may also carry ``exclude``:
item ids that must not be returned (e.g. items the user already has).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time
from typing import Any, Callable, Sequence

import numpy as np

from recsys_ssl import index as index_lib

EXCLUDE = "exclude"


class RequestError(ValueError):
    """A bad query or item: the message names the field (and the line, for files)."""


# -- instances -> tensors ---------------------------------------------------------------------


def validate_instance(
    row: Any, signature: list[dict], where: str = "instance", extra_ok: Sequence[str] = (EXCLUDE,)
) -> None:
    """Raises RequestError naming the first bad field of one instance.

    signature: [{"name", "kind", "max_len"}] as in the export manifest.
    """
    if not isinstance(row, dict):
        raise RequestError(f"{where}: must be a JSON object of features, got {type(row).__name__}")
    names = [f["name"] for f in signature]
    for key in row:
        if key not in names and key not in extra_ok:
            raise RequestError(f"{where}: unknown input {key!r}; expected inputs: {names}")
    for feature in signature:
        name = feature["name"]
        if name not in row:
            raise RequestError(f"{where}: missing input {name!r}; expected inputs: {names}")
        value = row[name]
        if feature["kind"] == "multi_categorical":
            if not isinstance(value, list) or not all(_is_scalar(v) for v in value):
                raise RequestError(f"{where}: input {name!r} is multi-valued: a list of strings, got {value!r:.80}")
        elif not _is_scalar(value):
            raise RequestError(f"{where}: input {name!r} is single-valued: a string, got {value!r:.80}")
    if EXCLUDE in extra_ok and EXCLUDE in row:
        value = row[EXCLUDE]
        if not isinstance(value, list) or not all(_is_scalar(v) for v in value):
            raise RequestError(f"{where}: {EXCLUDE!r} must be a list of item ids, got {value!r:.80}")


def _is_scalar(value: Any) -> bool:
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def instances_to_arrays(instances: Sequence[dict], signature: list[dict]) -> dict[str, np.ndarray]:
    """Validated instances -> {feature: [B] bytes, or [B, max_len] bytes padded with b""}."""
    arrays = {}
    for feature in signature:
        name = feature["name"]
        if feature["kind"] == "multi_categorical":
            max_len = int(feature["max_len"])
            out = np.full((len(instances), max_len), b"", dtype=object)
            for i, row in enumerate(instances):
                values = [_utf8(v) for v in row[name][:max_len]]
                out[i, : len(values)] = values
        else:
            out = np.array([_utf8(row[name]) for row in instances], dtype=object)
        arrays[name] = out
    return arrays


def _utf8(value) -> bytes:
    # JSON may carry lone surrogates ("\\ud800"): keep them as bytes (an out-of-vocabulary value)
    # rather than fail the request.
    return str(value).encode("utf-8", "surrogatepass")


SINGLE_THREADED_EXECUTOR = "SINGLE_THREADED_EXECUTOR"


class Signature:
    """A SavedModel signature, kept together with the loaded object it needs alive.

    Called through a positional concrete function that wraps the signature: a signature called
    with keyword tensors re-checks its structured inputs on every call (~0.45 ms of Python per
    call against ~0.27 ms positional, measured on the demo's query model), and the server calls
    it once per batch. Where TensorFlow's eager executor can be reached (:func:`_direct_call`),
    the positional function is run by it directly, skipping the Python of a concrete-function
    call (binding, flattening, the call options' serialised config: ~100-150 us of the
    ~170 us a 4-query call of the bench's query model took, the graph itself ~30 us); the
    outputs are the same tensors.
    """

    def __init__(self, path: str | pathlib.Path, name: str):
        from recsys_ssl.tf_setup import tf

        self._tf = tf
        self.loaded = tf.saved_model.load(str(path))
        if name not in self.loaded.signatures:
            raise KeyError(f"{path}: no signature {name!r}; has {sorted(self.loaded.signatures)}")
        self.function = self.loaded.signatures[name]
        inputs = self.function.structured_input_signature[1]  # {name: TensorSpec}
        self._names = sorted(inputs)
        self._dtypes = [inputs[n].dtype for n in self._names]
        names, function = self._names, self.function
        self._positional = tf.function(
            lambda *tensors: function(**dict(zip(names, tensors))), input_signature=[inputs[n] for n in names]
        ).get_concrete_function()
        self._direct = _direct_call(self._positional, SINGLE_THREADED_EXECUTOR)
        self._direct_default = _direct_call(self._positional)

    def __call__(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        tf = self._tf
        tensors = [tf.constant(arrays[n], d) for n, d in zip(self._names, self._dtypes)]
        if self._direct is not None:
            output_names, call = self._direct
            try:
                outputs = call(tensors)
            except tf.errors.OpError:
                if self._direct is self._direct_default:
                    raise
                # The single-threaded executor cannot run every graph (asynchronous kernels):
                # where the default executor can, it is used from now on; where it also fails
                # (the input), its error is raised and nothing changes.
                outputs = self._direct_default[1](tensors)
                self._direct = self._direct_default
            return {k: v.numpy() for k, v in zip(output_names, outputs)}
        outputs = self._positional(*tensors)
        return {k: v.numpy() for k, v in outputs.items()}

    def call_public(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The same call through the concrete function's public ``__call__`` (tests compare the two)."""
        tf = self._tf
        outputs = self._positional(*[tf.constant(arrays[n], d) for n, d in zip(self._names, self._dtypes)])
        return {k: v.numpy() for k, v in outputs.items()}


def _direct_call(concrete, executor_type: str = "") -> tuple[list[str], Callable[[list], list]] | None:
    """(output names, ``call(input tensors) -> output tensors``) running ``concrete`` through
    TensorFlow's eager executor, as ``AtomicFunction.call_flat`` does when nothing is recorded
    (no gradient tape, no cancellation manager: neither exists on this path); None where this
    TensorFlow's internals differ (the public call is then used).

    executor_type: the function runtime's executor ("": TensorFlow's default, which hands the
    graph's kernels to its inter-op thread pool; ``SINGLE_THREADED_EXECUTOR`` runs them in the
    calling thread, in order: for a query tower of a few dozen small kernels that saves the
    thread hand-offs, ~165 -> ~110 us a call measured on the serving bench's tower)."""
    try:
        import itertools

        from tensorflow.python.eager import context, execute

        atomic = concrete._inference_function
        outputs = concrete.structured_outputs
        if not isinstance(outputs, dict) or not all(hasattr(v, "dtype") for v in outputs.values()):
            return None
        num_outputs = len(atomic.function_type.flat_outputs)
        if num_outputs != len(outputs) or any(o.dtype._handle_data for o in atomic.function_type.flat_outputs):
            return None
        ctx = context.context()
        name = atomic.name.decode() if isinstance(atomic.name, bytes) else str(atomic.name)
        options = ctx.function_call_options.as_attrs()
        if executor_type:
            options["executor_type"] = executor_type
        attrs = tuple(itertools.chain(*options.items()))
        captured = list(concrete.captured_inputs)
    except Exception:  # another TensorFlow version: keep the public path
        return None

    def call(tensors: list) -> list:
        return execute.execute(name, num_outputs=num_outputs, inputs=tensors + captured, attrs=attrs, ctx=ctx)

    return sorted(outputs), call  # flat outputs follow the sorted keys of a dict (tf.nest)


def load_signature(path, name: str) -> Signature:
    return Signature(path, name)


def call_signature(signature: Signature, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return signature(arrays)


# -- the retriever -----------------------------------------------------------------------------


class Retriever:
    """Everything needed to answer queries from one export version."""

    def __init__(self, version_path: str | pathlib.Path):
        self.path = pathlib.Path(version_path)
        self.manifest = index_lib.read_manifest(self.path)
        self.version = int(self.manifest["version"])
        self.query_signature = self.manifest["signatures"]["query_features"]
        self.item_signature = self.manifest["signatures"]["item_features"]
        self.index = index_lib.ItemIndex.load(self.path / index_lib.INDEX_DIR)
        self.query_model = Signature(self.path / "query_model", "serving_default")
        self.query_top_k = Signature(self.path / "query_model", "top_k") if self.manifest.get("has_top_k") else None
        self.item_model = Signature(self.path / "item_model", "serving_default")
        self.k = int(self.manifest["k"])

    @classmethod
    def from_export(cls, export_dir, model_name: str | None = None, version: int | None = None) -> "Retriever":
        model_dir = index_lib.resolve_model_dir(export_dir, model_name)
        return cls(index_lib.version_dir(model_dir, version))

    def embed_queries(self, instances: Sequence[dict]) -> np.ndarray:
        """Validated query instances -> [B, D] float32 embeddings (the query_model SavedModel)."""
        return self.query_model(instances_to_arrays(instances, self.query_signature))["embedding"]

    def embed_items(self, instances: Sequence[dict]) -> np.ndarray:
        return self.item_model(instances_to_arrays(instances, self.item_signature))["embedding"]

    def retrieve(
        self, instances: Sequence[dict], k: int | None = None, exact: bool = False, parallel: bool = False
    ) -> tuple[list[list[str]], list[np.ndarray]]:
        """Top-k (ids, scores) per validated instance, honouring each instance's ``exclude``."""
        queries = self.embed_queries(instances)
        exclude = [[str(i) for i in row.get(EXCLUDE, ())] for row in instances]
        if exact:
            return self._exact(queries, k or self.k, exclude)
        return self.index.search(queries, k or self.k, exclude if any(exclude) else None, parallel=parallel)

    def _exact(self, queries, k, exclude):
        fetch = min(k + max((len(e) for e in exclude), default=0), self.index.size)
        rows, scores = index_lib.exact_top_k(queries, self.index.embeddings, fetch)
        ids = self.index.item_ids
        out_ids, out_scores = [], []
        for r, s, banned in zip(rows, scores, exclude):
            keep = [j for j, row in enumerate(r) if ids[row] not in set(banned)][:k]
            out_ids.append([ids[r[j]] for j in keep])
            out_scores.append(s[keep])
        return out_ids, out_scores


# -- `recsys-ssl retrieve` ---------------------------------------------------------------------


def read_jsonl(path: str | pathlib.Path) -> list[tuple[int, Any]]:
    """(line number, parsed JSON) per non-blank line; a bad line raises naming file:line."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append((line_no, json.loads(line)))
            except json.JSONDecodeError as error:
                raise RequestError(f"{path}:{line_no}: not valid JSON: {error}") from error
    return rows


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recsys-ssl retrieve",
        description="Batch retrieval: JSON lines of query features in, JSON lines of top-k item ids and scores out.",
    )
    parser.add_argument(
        "--input", required=True, help="JSON lines: one query per line (query features, optional 'exclude')"
    )
    parser.add_argument(
        "--output", required=True, help="JSON lines: {'line', <query key>, 'item_ids', 'scores'} per query"
    )
    parser.add_argument("--run-dir", default="runs/demo")
    parser.add_argument("--export-dir", default=None, help="export root (default <run-dir>/export)")
    parser.add_argument("--model-name", default=None, help="model under the export root (default: the only one)")
    parser.add_argument("--version", type=int, default=None, help="export version (default: latest complete)")
    parser.add_argument("--k", type=int, default=None, help="results per query (default: the export's k)")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--exact", action="store_true", help="exact search instead of ScaNN (for checking recall)")
    return parser


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    from recsys_ssl.paths import RunLayout

    try:
        rows = read_jsonl(args.input)
        retriever = Retriever.from_export(
            args.export_dir or RunLayout(args.run_dir).export, args.model_name, args.version
        )
        for line, row in rows:
            validate_instance(row, retriever.query_signature, where=f"{args.input}:{line}")
    except (RequestError, FileNotFoundError) as error:
        print(f"recsys-ssl retrieve: {error}", file=sys.stderr)
        return 2
    key = retriever.manifest.get("query_key")
    start = time.perf_counter()
    output = pathlib.Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as out:
        for begin in range(0, len(rows), args.batch_size):
            batch = rows[begin : begin + args.batch_size]
            ids, scores = retriever.retrieve([r for _, r in batch], args.k, exact=args.exact, parallel=True)
            for (line, row), i, s in zip(batch, ids, scores):
                record = {"line": line}
                if key in row:
                    record[key] = row[key]
                record.update(item_ids=i, scores=[round(float(x), 6) for x in s])
                out.write(json.dumps(record) + "\n")
            print(f"retrieve: {min(begin + args.batch_size, len(rows))}/{len(rows)} queries", file=sys.stderr)
    tmp.replace(output)
    print(
        f"retrieve: {len(rows)} queries -> {output} (version {retriever.version}, "
        f"{'exact' if args.exact else 'ScaNN'}, {time.perf_counter() - start:.2f}s)"
    )
    return 0
