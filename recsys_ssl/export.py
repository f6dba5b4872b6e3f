"""Export: SavedModels for serving and a tuned ScaNN index, in TF Serving's versioned layout.

``export_models(query_tower, item_tower, spec, item_features, export_dir, model_name)``
writes ``<export_dir>/<model_name>/<version>/`` (layout in :mod:`recsys_ssl.index`):

* ``query_model``: signatures ``serving_default`` (query features -> ``embedding`` [B, D])
  and ``top_k`` (query features -> ``item_ids`` [B, k] string, ``scores`` [B, k] float32),
  exact retrieval (TFRS BruteForce: a matmul and ``tf.math.top_k``) over the exported
  corpus. Stock ops only, so stock TF Serving serves it.
* ``item_model``: ``serving_default`` (item features -> ``embedding``), to embed new items
  without the training code (``recsys-ssl index add`` uses it).
* ``retrieval_scann``: ``serving_default`` (query features -> ``item_ids``, ``scores``)
  through TFRS's ScaNN layer. It holds ScaNN's custom ``Scann>`` ops: whatever loads it
  must ``import scann`` first (stock TF Serving cannot serve it).
* ``index/``: the standalone ScaNN searcher (``serialize()``) and its item-id map, tuned to
  ``target_recall`` (see :func:`recsys_ssl.index.tune`).
* ``manifest.json`` (version, corpus size, embedding checksum, ScaNN config, measured recall,
  the input signatures), written last.

Every signature names its inputs after the features (``TensorSpec(name=feature)``) and its
outputs explicitly, so clients never see ``output_1``. Single-valued features are [B]
tf.string; multi-valued ones [B, L] tf.string, padded with "" and cut to the feature's
``max_len`` inside the signature (clients may send any L >= 1).

The export is written to a hidden staging folder and renamed into place, so a reader never
sees a half-written version. Nothing here imports the training code except ``main``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pathlib
import shutil
import sys
import time
from typing import Any, Mapping, Sequence

import numpy as np
import tensorflow_recommenders as tfrs  # noqa: E402  (after tf_setup: TFRS needs Keras 2)

from recsys_ssl import features as fs
from recsys_ssl import index as index_lib
from recsys_ssl.paths import DEFAULT_RUN_DIR
from recsys_ssl.tf_setup import tf


def feature_signature(features: Sequence[fs.Feature]) -> list[dict]:
    """The manifest's description of a tower's inputs: [{"name", "kind", "max_len"}]."""
    return [{"name": f.name, "kind": f.kind, "max_len": int(f.max_len)} for f in features]


def input_specs(features: Sequence[fs.Feature]) -> dict[str, tf.TensorSpec]:
    """Named TensorSpecs: [None] tf.string (single-valued), [None, None] (multi-valued)."""
    return {f.name: tf.TensorSpec([None, None] if f.multi_valued else [None], tf.string, name=f.name) for f in features}


def _fit_lengths(inputs: Mapping[str, tf.Tensor], features: Sequence[fs.Feature]) -> dict[str, tf.Tensor]:
    """Pads multi-valued inputs with "" / truncates them to max_len: [B, L] -> [B, max_len]."""
    out = {}
    for f in features:
        x = inputs[f.name]
        if f.multi_valued:
            x = x[:, : f.max_len]
            x = tf.pad(x, [[0, 0], [0, f.max_len - tf.shape(x)[1]]], constant_values=fs.PADDING)
            x = tf.ensure_shape(x, [None, f.max_len])
        out[f.name] = x
    return out


def embedding_function(tower: tf.keras.Model, features: Sequence[fs.Feature]):
    """tf.function: named feature tensors -> {"embedding": [B, D] float32}."""
    features = tuple(features)

    @tf.function(input_signature=[input_specs(features)])
    def embed(inputs):
        return {"embedding": tower(_fit_lengths(inputs, features), training=False)}

    return embed


def retrieval_function(tower: tf.keras.Model, features: Sequence[fs.Feature], top_k_layer, k: int):
    """tf.function: named query feature tensors -> {"item_ids": [B, k] string, "scores": [B, k]}."""
    features = tuple(features)

    @tf.function(input_signature=[input_specs(features)])
    def retrieve(inputs):
        query = tower(_fit_lengths(inputs, features), training=False)
        scores, ids = top_k_layer(query, k=k)
        return {"item_ids": ids, "scores": scores}

    return retrieve


# -- corpus -> embeddings ---------------------------------------------------------------------


def corpus_batches(item_features: Mapping[str, np.ndarray], features: Sequence[fs.Feature], batch_size: int):
    """Yields {feature: [b] bytes or [b, max_len] bytes} batches of the in-memory corpus.

    item_features: as ``Dataset.item_arrays()``: single-valued [N] (bytes/str), multi-valued
    [N] of lists, or an already padded [N, L] array.
    """
    n = len(item_features[features[0].name])
    for f in features:
        if len(item_features[f.name]) != n:
            raise ValueError(f"item feature {f.name!r} has {len(item_features[f.name])} rows, expected {n}")
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        yield {f.name: fs.dense_column(item_features[f.name][start:stop], f) for f in features}


def embed_corpus(embed_fn, item_features, features, batch_size: int = 4096, log=print) -> np.ndarray:
    """[N, D] float32 embeddings of the corpus, through the exported item signature itself."""
    chunks, n = [], len(item_features[features[0].name])
    for batch in corpus_batches(item_features, features, batch_size):
        chunks.append(embed_fn({k: tf.constant(v, tf.string) for k, v in batch.items()})["embedding"].numpy())
        if len(chunks) % 50 == 0:
            log(f"export: embedded {sum(map(len, chunks))}/{n} items")
    return np.concatenate(chunks).astype(np.float32)


# -- the export ---------------------------------------------------------------------------------


def _scann_layer_config(index_report: dict, n: int) -> dict:
    """TFRS ScaNN layer settings: the tuned tree, or for brute-force-sized corpora a small tree
    searched completely with exact reordering of enough candidates to be (near) exact."""
    config = index_report["config"]
    if config["algorithm"] == "tree_ah":
        return {
            "num_leaves": config["num_leaves"],
            "num_leaves_to_search": config["num_leaves_to_search"],
            "num_reordering_candidates": max(config["reorder_num_neighbors"], config["k"]),
            "dimensions_per_block": config["dimensions_per_block"],
        }
    leaves = max(1, min(100, n // 10))
    return {
        "num_leaves": leaves,
        "num_leaves_to_search": leaves,
        "num_reordering_candidates": min(n, 1000),
        "dimensions_per_block": 2,
    }


@dataclasses.dataclass
class BenchOptions:
    """Export options only the benchmarks set (``bench/serve_bench.py``).

    with_retrieval_savedmodels: False skips ``top_k`` and ``retrieval_scann`` (they copy the
      corpus into the SavedModels: the serving benchmark at 1M items leaves them out).
    item_embeddings: precomputed [N, D] corpus embeddings; default: the item tower's.
    prebuilt_index: (index, tuning report) already built over ``item_embeddings``.
    """

    with_retrieval_savedmodels: bool = True
    item_embeddings: np.ndarray | None = None
    prebuilt_index: tuple[index_lib.ItemIndex, dict] | None = None


@dataclasses.dataclass
class _Corpus:
    """The corpus one export version serves, and the index over it.

    item_ids: [N] str, in corpus order; embeddings: [N, D] float32 (C-contiguous), same order;
    index: an ``index_lib.ItemIndex`` over them (same items, same order) and report: its
    tuning report; queries: [Q, D] float32 tuning query embeddings (they also measure the
    ``retrieval_scann`` SavedModel's recall).
    """

    item_ids: list[str]
    embeddings: np.ndarray
    index: index_lib.ItemIndex
    report: dict
    queries: np.ndarray


def _write_version(
    model_dir: pathlib.Path,
    model_name: str,
    version: int,
    spec: fs.FeatureSpec,
    towers: tuple,
    corpus: _Corpus,
    k: int,
    source: dict | None,
    bench: BenchOptions,
    log,
) -> pathlib.Path:
    """Stages the index, the SavedModels and the manifest, then publishes the version (atomic rename)."""
    query_tower, item_tower, embed_query, embed_item = towers
    staging = index_lib.staging_dir(model_dir, version)
    try:
        corpus.index.save(staging / index_lib.INDEX_DIR)
        tensors = (tf.constant(corpus.item_ids, tf.string), tf.constant(corpus.embeddings))
        manifest_models = _save_towers(
            staging,
            query_tower,
            item_tower,
            spec,
            embed_query,
            embed_item,
            k,
            tensors if bench.with_retrieval_savedmodels else None,
        )
        scann_report = None
        if bench.with_retrieval_savedmodels:
            scann_report, manifest_models["retrieval_scann"] = _save_retrieval_scann(
                staging, query_tower, spec, tensors, corpus.queries, corpus.report, k, log
            )
        manifest = _manifest(
            model_name,
            version,
            k,
            spec,
            corpus.embeddings,
            corpus.report,
            scann_report,
            manifest_models,
            source,
            bench.with_retrieval_savedmodels,
        )
        final = index_lib.publish(staging, model_dir, version, manifest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return final


def export_models(
    query_tower: tf.keras.Model,
    item_tower: tf.keras.Model,
    spec: fs.FeatureSpec,
    item_features: Mapping[str, np.ndarray],
    export_dir: str | os.PathLike,
    model_name: str,
    version: int | None = None,
    *,
    k: int = 10,
    target_recall: float = 0.95,
    brute_force_below: int = index_lib.BRUTE_FORCE_BELOW,
    tuning_queries: Mapping[str, np.ndarray] | None = None,
    num_tuning_queries: int = 1000,
    source: dict | None = None,
    batch_size: int = 4096,
    seed: int = 0,
    log=print,
    bench: BenchOptions | None = None,
    **bench_options,
) -> pathlib.Path:
    """Writes one export version and returns its folder.

    query_tower / item_tower: Keras models, dict of raw string tensors -> [B, D] float32
      (L2-normalised). spec: the FeatureSpec they read.
    item_features: the corpus, {item feature: [N] array} as ``Dataset.item_arrays()``.
    tuning_queries: held-out query features ({query feature: [Q] array}) for ScaNN tuning;
      without them, a sample of item embeddings stands in for queries.
    bench: :class:`BenchOptions`; its fields are also taken as keywords (``bench_options``).
    """
    start = time.perf_counter()
    bench = bench or BenchOptions(**bench_options)
    model_dir, version = _new_version(pathlib.Path(export_dir) / model_name, version)
    item_ids = [fs.as_bytes(v).decode() for v in item_features[spec.item_key]]
    embed_query = embedding_function(query_tower, spec.query_features)
    embed_item = embedding_function(item_tower, spec.item_features)
    item_embeddings = _corpus_embeddings(bench.item_embeddings, embed_item, item_features, spec, batch_size, log)
    corpus = _index_corpus(
        item_ids,
        item_embeddings,
        embed_query,
        spec,
        tuning_queries,
        bench.prebuilt_index,
        num_tuning_queries=num_tuning_queries,
        batch_size=batch_size,
        seed=seed,
        k=k,
        target_recall=target_recall,
        brute_force_below=brute_force_below,
        log=log,
    )
    towers = (query_tower, item_tower, embed_query, embed_item)
    final = _write_version(model_dir, model_name, version, spec, towers, corpus, k, source, bench, log)
    log(
        f"export: wrote {final} in {time.perf_counter() - start:.1f}s "
        f"(index: {corpus.report['config']['algorithm']}, Recall@{k} {corpus.report['recall']:.4f})"
    )
    return final


def _corpus_embeddings(
    precomputed: np.ndarray | None,
    embed_item,
    item_features: Mapping[str, np.ndarray],
    spec: fs.FeatureSpec,
    batch_size: int,
    log,
) -> np.ndarray:
    """[N, D] float32 (C-contiguous) corpus embeddings: ``precomputed``
    (``BenchOptions.item_embeddings``) when given, else the exported item signature's
    (``embed_item``) over ``item_features``."""
    embeddings = precomputed
    if embeddings is None:
        embeddings = embed_corpus(embed_item, item_features, spec.item_features, batch_size, log)
    embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
    log(f"export: {embeddings.shape[0]} items, {embeddings.shape[1]}-d embeddings")
    return embeddings


def _index_corpus(
    item_ids: list[str],
    item_embeddings: np.ndarray,
    embed_query,
    spec: fs.FeatureSpec,
    tuning_queries: Mapping[str, np.ndarray] | None,
    prebuilt_index: tuple[index_lib.ItemIndex, dict] | None,
    *,
    num_tuning_queries: int,
    batch_size: int,
    seed: int,
    **tune_options,
) -> _Corpus:
    """The corpus with its index: ``prebuilt_index`` (index, report) when given, else one
    ``index_lib.tune`` builds (``tune_options``: k, target_recall, brute_force_below, log), its
    report saying where the tuning queries came from. The tuning queries are embedded from
    ``tuning_queries``; with none, or with a prebuilt index, a sample of the item embeddings.

    Raises ValueError when the index does not hold ``item_ids`` in corpus order.
    """
    queries, query_source = _tuning_queries(
        embed_query,
        spec,
        item_embeddings,
        None if prebuilt_index else tuning_queries,
        num_tuning_queries,
        batch_size,
        seed,
    )
    if prebuilt_index:
        index, report = prebuilt_index
    else:
        index, report = index_lib.tune(item_embeddings, item_ids, queries, **tune_options)
        report = report | {"query_source": query_source}
    if index.size != len(item_ids) or index.item_ids != item_ids:
        raise ValueError("prebuilt_index does not hold the corpus's items in corpus order")
    return _Corpus(item_ids, item_embeddings, index, report, queries)


def _new_version(model_dir: pathlib.Path, version: int | None) -> tuple[pathlib.Path, int]:
    """(the model's folder, created if new; the version to write: ``version``, else the latest + 1)."""
    model_dir.mkdir(parents=True, exist_ok=True)
    version = int(version) if version is not None else index_lib.next_version(model_dir)
    if (model_dir / str(version)).exists():
        raise FileExistsError(f"{model_dir / str(version)} exists; export versions are immutable")
    return model_dir, version


def _tuning_queries(
    embed_query,
    spec: fs.FeatureSpec,
    item_embeddings: np.ndarray,
    tuning_queries: Mapping[str, np.ndarray] | None,
    num_tuning_queries: int,
    batch_size: int,
    seed: int,
) -> tuple[np.ndarray, str]:
    """(held-out query embeddings for tuning, where they come from): real query features if
    given, else a sample of item embeddings."""
    if tuning_queries is not None:
        q_batches = corpus_batches(tuning_queries, spec.query_features, batch_size)
        queries = np.concatenate(
            [
                embed_query({k_: tf.constant(v, tf.string) for k_, v in b.items()})["embedding"].numpy()
                for b in q_batches
            ]
        )[:num_tuning_queries]
        return queries, "held-out queries"
    n = len(item_embeddings)
    rng = np.random.default_rng(seed)
    queries = item_embeddings[rng.choice(n, size=min(n, num_tuning_queries), replace=False)]
    return queries, "sampled item embeddings (no held-out queries given)"


def _save_towers(
    staging: pathlib.Path,
    query_tower,
    item_tower,
    spec: fs.FeatureSpec,
    embed_query,
    embed_item,
    k: int,
    corpus: tuple[tf.Tensor, tf.Tensor] | None,
) -> dict[str, Any]:
    """Writes ``query_model`` (with ``top_k`` over ``corpus`` = (ids, embeddings) unless None)
    and ``item_model``; returns their manifest entries."""
    query_module = tf.Module()
    query_module.tower = query_tower
    query_module.embed = embed_query
    signatures = {"serving_default": embed_query.get_concrete_function()}
    if corpus is not None:
        ids_tensor, candidates = corpus
        brute_force = tfrs.layers.factorized_top_k.BruteForce(k=k)
        brute_force.index(candidates=candidates, identifiers=ids_tensor)
        query_module.brute_force = brute_force
        query_module.top_k = retrieval_function(query_tower, spec.query_features, brute_force, k)
        signatures["top_k"] = query_module.top_k.get_concrete_function()
    tf.saved_model.save(query_module, str(staging / "query_model"), signatures=signatures)

    item_module = tf.Module()
    item_module.tower = item_tower
    item_module.embed = embed_item
    tf.saved_model.save(
        item_module, str(staging / "item_model"), signatures={"serving_default": embed_item.get_concrete_function()}
    )
    return {
        "query_model": {
            "signatures": {"serving_default": ["embedding"]}
            | ({"top_k": ["item_ids", "scores"]} if corpus is not None else {}),
            "needs_scann_ops": False,
        },
        "item_model": {"signatures": {"serving_default": ["embedding"]}, "needs_scann_ops": False},
    }


def _save_retrieval_scann(
    staging: pathlib.Path,
    query_tower,
    spec: fs.FeatureSpec,
    corpus: tuple[tf.Tensor, tf.Tensor],
    queries: np.ndarray,
    index_report: dict,
    k: int,
    log,
) -> tuple[dict, dict]:
    """Writes ``retrieval_scann`` (TFRS's ScaNN layer over ``corpus``); returns (its config and
    the recall of its own searcher against exact search on the tuning queries, its manifest entry)."""
    ids_tensor, candidates = corpus
    item_embeddings = candidates.numpy()
    layer_config = _scann_layer_config(index_report, len(item_embeddings))
    scann_layer = tfrs.layers.factorized_top_k.ScaNN(k=k, **layer_config)
    scann_layer.index(candidates=candidates, identifiers=ids_tensor)
    _, got = scann_layer(tf.constant(queries), k=k)
    exact_rows, _ = index_lib.exact_top_k(queries, item_embeddings, k)
    id_array = np.asarray([i.decode() for i in ids_tensor.numpy()], dtype=object)
    scann_recall = index_lib.recall_at_k(
        [[b.decode() for b in row] for row in got.numpy()], [list(id_array[r]) for r in exact_rows]
    )
    log(f"export: retrieval_scann Recall@{k} = {scann_recall:.4f} ({layer_config})")
    scann_module = tf.Module()
    scann_module.tower = query_tower
    scann_module.scann = scann_layer
    scann_module.retrieve = retrieval_function(query_tower, spec.query_features, scann_layer, k)
    tf.saved_model.save(
        scann_module,
        str(staging / "retrieval_scann"),
        signatures={"serving_default": scann_module.retrieve.get_concrete_function()},
        options=tf.saved_model.SaveOptions(namespace_whitelist=["Scann"]),
    )
    return layer_config | {"recall": scann_recall, "k": k}, {
        "signatures": {"serving_default": ["item_ids", "scores"]},
        "needs_scann_ops": True,
    }


def _manifest(
    model_name: str,
    version: int,
    k: int,
    spec: fs.FeatureSpec,
    item_embeddings: np.ndarray,
    index_report: dict,
    scann_report: dict | None,
    manifest_models: dict,
    source: dict | None,
    has_top_k: bool,
) -> dict[str, Any]:
    """The export's ``manifest.json``."""
    import scann  # noqa: F401  (for its version)

    n, dim = item_embeddings.shape
    return {
        "format": 1,
        "model_name": model_name,
        "version": version,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "k": k,
        "query_key": spec.query_key,
        "item_key": spec.item_key,
        "spec": spec.to_dict(),
        "signatures": {
            "query_features": feature_signature(spec.query_features),
            "item_features": feature_signature(spec.item_features),
        },
        "corpus_size": n,
        "savedmodel_corpus_size": n if has_top_k else 0,
        "embedding_dim": dim,
        "embedding_checksum": index_lib.embedding_checksum(item_embeddings),
        "index": index_report,
        "retrieval_scann": scann_report,
        "has_top_k": has_top_k,
        "savedmodels": manifest_models,
        "source": source or {},
        "versions": {
            "tensorflow": tf.__version__,
            "tensorflow_recommenders": tfrs.__version__,
            "scann": getattr(scann, "__version__", "unknown"),
        },
    }


# -- `recsys-ssl export` ------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="recsys-ssl export", description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", default=DEFAULT_RUN_DIR, help="pipeline run folder (default: %(default)s)")
    parser.add_argument(
        "--name", default=None, help="the trained experiment under <run-dir>/train/ (default: the config's name)"
    )
    parser.add_argument(
        "--config", default=None, help="experiment config; its name names the experiment (as in `recsys-ssl train`)"
    )
    parser.add_argument("--model-name", default=None, help="served model name (default: --name)")
    parser.add_argument("--export-dir", default=None, help="export root (default <run-dir>/export)")
    parser.add_argument("--version", type=int, default=None, help="version number (default: latest + 1)")
    parser.add_argument("--k", type=int, default=10, help="results per query of the SavedModel signatures")
    parser.add_argument("--target-recall", type=float, default=0.95, help="ScaNN Recall@k target vs exact search")
    parser.add_argument("--num-tuning-queries", type=int, default=1000)
    parser.add_argument("--dataset", default=None, help="dataset of the corpus (default: the training run's)")
    parser.add_argument("--data-dir", default=None, help="raw data folder (MovieLens)")
    return parser


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    from recsys_ssl import paths
    from recsys_ssl.checkpoints import load_trained
    from recsys_ssl.datasets import inputs

    name = args.name
    if not name and args.config:
        from recsys_ssl import config as cfg

        name = cfg.load_config(args.config).name  # `recsys-ssl train` names runs the same way
    if not name:
        print("recsys-ssl export: pass --name (or --config)", file=sys.stderr)
        return 2
    layout = paths.RunLayout(args.run_dir)
    trained = load_trained(args.run_dir, name)
    dataset_name = args.dataset or getattr(trained.config, "dataset", None)
    if not dataset_name:
        print("recsys-ssl export: pass --dataset (the training run does not say)", file=sys.stderr)
        return 2
    ds = inputs.load_dataset(dataset_name, data_dir=str(layout.tfds), raw_data_dir=args.data_dir)
    spec = trained.spec
    items = ds.item_arrays()
    queries: dict[str, list] = {f.name: [] for f in spec.query_features}
    for example in ds.pairs("test").take(args.num_tuning_queries * 2):
        for f in spec.query_features:
            value = example[f.name].numpy()
            queries[f.name].append(list(value) if f.multi_valued else value)
    tuning = {k: np.array(v, dtype=object) for k, v in queries.items()} if queries[spec.query_key] else None
    export_models(
        trained.model.query_tower,
        trained.model.item_tower,
        spec,
        items,
        args.export_dir or layout.export,
        args.model_name or name,
        args.version,
        k=args.k,
        target_recall=args.target_recall,
        tuning_queries=tuning,
        num_tuning_queries=args.num_tuning_queries,
        source={
            "run_dir": str(args.run_dir),
            "experiment": name,
            "dataset": dataset_name,
            "train_dir": str(layout.train(name)),
        },
    )
    return 0
