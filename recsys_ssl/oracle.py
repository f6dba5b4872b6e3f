"""The synthetic catalog's oracle: the generator's exact p(item | query), scored like a model.

The pair sampler of ``datasets/synthetic_catalog.py`` draws an item from Zipf(s) over
popularity ranks, then the query from p(q | item) = softmax_q(<z_q, x_item> / T) over all of
the generator's queries. Hence, exactly (same float32 latents as the sampler, float64 here)::

    p(item | q) = p(item) exp(<z_q, x_item> / T) / (Z(item) p(q)),   Z(item) = sum_q' exp(<z_q', x_item> / T)

so log p(item | q) = <[z_q / T, 1], [x_item, log p(item) - log Z(item)]> - log p(q): a dot
product of two vectors per query and per item, plus a per-query constant that does not change
a query's ranking. The oracle's retrieval for a test query is the top K of p(item | query)
after the evaluator's exclusions; :func:`oracle_recall` feeds those vectors to
``evaluate.retrieval_metrics(normalize=False)`` with ``evaluate.prepare_queries`` /
``evaluate.popularity_slices``, so queries, exclusions, ties, head/tail and the metrics are the
evaluator's own. ``features_only=True`` drops the per-item noise from x_item (the latent is then
a function of the item's features; popularity p(item) stays): the feature oracle.

Command (docs/evaluation.md): ``python -m recsys_ssl.oracle --run-dir RUN --dataset
synthetic_catalog/oracle_10k [--name EXP ...]`` prints the oracle's Recall@K and adds
``oracle`` / ``share_of_oracle`` to each named ``eval/<name>/metrics.json``;
``recsys-ssl evaluate --oracle`` does the same for the model it evaluates.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import sys
import time
from typing import Any, Mapping, Sequence

import numpy as np

from recsys_ssl import evaluate
from recsys_ssl.datasets import synthetic_catalog as sc
from recsys_ssl.paths import DEFAULT_RUN_DIR

PREFIX = "synthetic_catalog/"
VALIDATION_SUFFIX = "-val"  # inputs.VALIDATION_SUFFIX: a carve-out of the same generator's pairs
# [items x queries] logits per block of the partition function.
_BLOCK_ELEMENTS = 1 << 22


@dataclasses.dataclass
class Oracle:
    """Per-query and per-item vectors whose dot product is log p(item | query) + const(query).

    item_ids: [N] bytes, query_ids: [Q] bytes (generator order); query_vectors: [Q, D + 1],
    item_vectors: [N, D + 1] float64.
    """

    item_ids: np.ndarray
    query_ids: np.ndarray
    query_vectors: np.ndarray
    item_vectors: np.ndarray

    def log_probs(self, query_rows: Sequence[int]) -> np.ndarray:
        """[len(query_rows), N] normalised log p(item | query) over the whole corpus."""
        logits = self.query_vectors[np.asarray(query_rows)] @ self.item_vectors.T
        top = logits.max(axis=1, keepdims=True)
        return logits - top - np.log(np.exp(logits - top).sum(axis=1, keepdims=True))

    def rows(self, ids: Sequence[Any], of: str) -> np.ndarray:
        """Row of each id (bytes or str) in ``item_ids`` (of="item") or ``query_ids`` (of="query")."""
        table = self.item_ids if of == "item" else self.query_ids
        index = {key: n for n, key in enumerate(table.tolist())}
        missing = [i for i in ids if _as_bytes(i) not in index]
        if missing:
            raise ValueError(f"{len(missing)} {of} ids unknown to the generator, e.g. {missing[:3]}")
        return np.array([index[_as_bytes(i)] for i in ids], dtype=np.int64)


def _as_bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def log_partition(x: np.ndarray, z: np.ndarray) -> np.ndarray:
    """[N] log sum_q exp(<z_q, x_i>) (z already divided by the temperature), in float64 blocks."""
    out = np.empty(len(x))
    block = max(1, _BLOCK_ELEMENTS // max(len(z), 1))
    z = z.astype(np.float64)
    for lo in range(0, len(x), block):
        logits = x[lo : lo + block].astype(np.float64) @ z.T
        top = logits.max(axis=1)
        out[lo : lo + block] = top + np.log(np.exp(logits - top[:, None]).sum(axis=1))
    return out


def from_latents(
    item_ids: np.ndarray, query_ids: np.ndarray, x: np.ndarray, z: np.ndarray, log_prior: np.ndarray
) -> Oracle:
    """The oracle of p(item) ∝ exp(log_prior), p(q | item) = softmax_q(<z_q, x_item>) (z: latents / T)."""
    log_z = log_partition(x, z)
    item_vectors = np.concatenate([x.astype(np.float64), (log_prior - log_z)[:, None]], axis=1)
    query_vectors = np.concatenate([z.astype(np.float64), np.ones((len(z), 1))], axis=1)
    return Oracle(np.asarray(item_ids, dtype=object), np.asarray(query_ids, dtype=object), query_vectors, item_vectors)


def config_of(name: str) -> sc.SyntheticCatalogConfig:
    """The builder config of ``synthetic_catalog/<config>`` (or ``<config>``; a ``-val`` view has its base's)."""
    config = name[len(PREFIX) :] if name.startswith(PREFIX) else name
    config = config[: -len(VALIDATION_SUFFIX)] if config.endswith(VALIDATION_SUFFIX) else config
    if config not in sc.SIZES:
        raise ValueError(f"no oracle for {name!r}: only synthetic_catalog/<config>, configs {list(sc.SIZES)}")
    return sc.SyntheticCatalog.builder_configs[config]


def from_generator(
    items: dict[str, np.ndarray],
    *,
    seed: int = 0,
    num_queries: int = 2_000,
    zipf_exponent: float = 1.0,
    temperature: float = sc.TEMPERATURE,
    item_noise: float = sc.ITEM_NOISE,
    query_noise: float = sc.QUERY_NOISE,
    unit_queries: bool = False,
    features_only: bool = False,
) -> Oracle:
    """The oracle of ``sc.generate_pairs(items, ...)`` called with the same keyword arguments.

    features_only: item latents without the per-item noise (from the item's features alone).
    """
    model = sc.latent_model(items, seed, num_queries, temperature, item_noise, query_noise, unit_queries)
    x = sc.item_latents(items, seed, item_noise=0.0).astype(np.float32) if features_only else model.x
    log_prior = np.log(sc.item_popularity(model.rank_to_item, zipf_exponent))
    return from_latents(items["item_id"], model.queries["query_id"], x, model.z, log_prior)


def from_config(config: sc.SyntheticCatalogConfig | str, features_only: bool = False) -> Oracle:
    """The oracle of a builder config (or its name) of the synthetic catalog."""
    config = config_of(config) if isinstance(config, str) else config
    return from_generator(
        sc.generate_items(config.num_items, config.seed), **config.generator_law(), features_only=features_only
    )


def oracle_recall(
    oracle: Oracle,
    item_ids: Sequence[Any],
    train_pairs: tuple[Sequence[Any], Sequence[Any]],
    test_pairs: tuple[Sequence[Any], Sequence[Any]],
    *,
    ks: Sequence[int] = evaluate.DEFAULT_KS,
    head_fraction: float = evaluate.PROTOCOL_HEAD_FRACTION,
    mode: str = evaluate.USER_ITEM,
    per_pair: bool = False,
    num_buckets: int = evaluate.NUM_POPULARITY_BUCKETS,
) -> dict[str, Any]:
    """The oracle's Recall@K / MAP@K overall and per slice, exactly as the evaluator scores a model.

    item_ids: [N] the evaluated corpus (any order; mapped to the generator's rows by id).
    train_pairs / test_pairs: (query ids, item ids), as ``evaluate.evaluate_arrays`` takes them.
    Returns ``evaluate.retrieval_metrics``' dict plus "mode", "per_pair", "head_fraction", "head_items".
    """
    if mode != evaluate.USER_ITEM:
        raise ValueError(f"the oracle scores queries of the generator: mode {evaluate.USER_ITEM!r} only, got {mode!r}")
    item_ids = list(item_ids)
    prepared = evaluate.prepare_queries(test_pairs, train_pairs, item_ids, mode, per_pair)
    slices = evaluate.popularity_slices(prepared["train_counts"], item_ids, head_fraction, num_buckets)
    query_vectors = oracle.query_vectors[oracle.rows(prepared["queries"], "query")]
    item_vectors = oracle.item_vectors[oracle.rows(item_ids, "item")]
    result = evaluate.retrieval_metrics(
        query_vectors, item_vectors, prepared["test_items"], prepared["exclude"], slices, ks=ks, normalize=False
    )
    result.update(mode=mode, per_pair=per_pair, head_fraction=head_fraction, head_items=int(slices["head"].sum()))
    return result


def share_of_oracle(method: Mapping[str, Any], oracle: Mapping[str, Any]) -> dict[str, dict[str, float | None]]:
    """method R@K / oracle R@K for overall, head and tail (None where the oracle's is 0 or missing)."""
    ks = method["definition"]["ks"]
    rows = {"overall": (method, oracle)}
    rows.update(
        {
            s: (method["slices"][s], oracle["slices"][s])
            for s in ("head", "tail")
            if s in method.get("slices", {}) and s in oracle.get("slices", {})
        }
    )
    out = {}
    for name, (m, o) in rows.items():
        out[name] = {
            f"recall@{k}": (
                m[f"recall@{k}"] / o[f"recall@{k}"]
                if m.get(f"recall@{k}") is not None and o.get(f"recall@{k}")
                else None
            )
            for k in ks
        }
    return out


def summary(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """Recall@K overall / head / tail of a metrics dict (what metrics.json's ``oracle`` keeps)."""
    ks = metrics["definition"]["ks"]
    out = {f"{m}@{k}": metrics[f"{m}@{k}"] for k in ks for m in ("recall", "map")}
    out["slices"] = {s: dict(metrics["slices"][s]) for s in ("head", "tail") if s in metrics.get("slices", {})}
    out["counts"] = dict(metrics["counts"])
    out["definition"] = dict(metrics["definition"])
    return out


def dataset_recall(dataset, split: str = "test", **kwargs) -> dict[str, Any]:
    """The oracle's metrics on a loaded ``synthetic_catalog/<config>`` handle (``inputs.load_dataset``)."""
    spec = dataset.spec
    corpus_ids = dataset.item_arrays()[spec.item_key]
    train = dataset.pair_columns("train", [spec.query_key, spec.item_key])
    test = dataset.pair_columns(split, [spec.query_key, spec.item_key])
    return oracle_recall(
        from_config(dataset.name),
        corpus_ids,
        (train[spec.query_key], train[spec.item_key]),
        (test[spec.query_key], test[spec.item_key]),
        **kwargs,
    )


def attach(metrics: dict[str, Any], dataset, split: str = "test") -> dict[str, Any]:
    """Adds ``oracle`` (its R@K overall / head / tail) and ``share_of_oracle`` to a model's metrics.

    The oracle is scored with the model's own K, head fraction, mode and per_pair.
    """
    oracle = dataset_recall(
        dataset,
        split,
        ks=metrics["definition"]["ks"],
        head_fraction=metrics.get("head_fraction", evaluate.PROTOCOL_HEAD_FRACTION),
        mode=metrics.get("mode", evaluate.USER_ITEM),
        per_pair=bool(metrics.get("per_pair", False)),
    )
    metrics["oracle"] = summary(oracle)
    metrics["share_of_oracle"] = share_of_oracle(metrics, oracle)
    return metrics


def format_report(metrics: Mapping[str, Any], name: str = "model") -> str:
    """The model's and the oracle's rows (``format_table``), then the model's share of the oracle's recall."""
    lines = [evaluate.format_table(by_method={name: metrics, "oracle": metrics["oracle"]})]
    for row_name, row in metrics["share_of_oracle"].items():
        cells = " ".join(f"{k}={v:.3f}" if v is not None else f"{k}=-" for k, v in row.items())
        lines.append(f"share of the oracle's {row_name} recall: {cells}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m recsys_ssl.oracle",
        description="The synthetic catalog's oracle Recall@K (overall / head / tail); with --name, adds it and "
        "each method's share of it to <run-dir>/eval/<name>/metrics.json.",
    )
    parser.add_argument("--run-dir", default=DEFAULT_RUN_DIR, help="the pipeline run's folder (default: %(default)s)")
    parser.add_argument("--dataset", help="synthetic_catalog/<config> (default: each named model's dataset)")
    parser.add_argument("--name", nargs="*", default=[], help="evaluated experiments whose metrics.json to extend")
    parser.add_argument("--split", default="test")
    parser.add_argument("--ks", type=int, nargs="+", default=list(evaluate.DEFAULT_KS))
    parser.add_argument("--head-fraction", type=float, default=evaluate.PROTOCOL_HEAD_FRACTION)
    args = parser.parse_args(argv)
    if not args.name and not args.dataset:
        parser.error("pass --dataset or --name")
    from recsys_ssl.datasets import inputs
    from recsys_ssl.paths import RunLayout, tfds_dir

    if not args.name:
        started = time.perf_counter()
        dataset = inputs.load_dataset(args.dataset, data_dir=str(tfds_dir(args.run_dir)))
        oracle = dataset_recall(dataset, args.split, ks=args.ks, head_fraction=args.head_fraction)
        print(f"oracle on {args.dataset} ({args.split}) in {time.perf_counter() - started:.1f} s")
        print(evaluate.format_table(oracle))
        return 0
    for name in args.name:
        path = RunLayout(args.run_dir).eval(name) / "metrics.json"
        metrics = json.loads(pathlib.Path(path).read_text())
        dataset = inputs.load_dataset(args.dataset or metrics["dataset"], data_dir=str(tfds_dir(args.run_dir)))
        attach(metrics, dataset, metrics.get("split", args.split))
        evaluate.write_metrics(args.run_dir, name, metrics)
        print(f"{name} on {dataset.name}:\n{format_report(metrics, name)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
