"""Mechanism diagnostics of a trained model: *why* a method moves the tail, not only whether.

``recsys-ssl diagnose --run-dir R --config baseline --config ssl_cfm`` loads each trained
model ``R/train/<name>``, embeds the whole item corpus and the test queries exactly as
``recsys-ssl evaluate`` does (same queries, same head / tail / popularity-decile slices:
``evaluate.popularity_slices`` over the ``train`` split's counts), and writes
``R/eval/<name>/diagnostics.json`` and ``diagnostics.png``; with several configs also one
side-by-side plot and table, ``R/eval/diagnostics_<a>_vs_<b>.png`` / ``.txt``.

Every embedding is L2-normalised (float64) before the quantities below (the towers already
normalise; the evaluator scores cosine). Definitions (Wang & Isola 2020 for the first two):

* **alignment** of positive pairs (z1_i, z2_i), i = 1..P: ``mean_i ||z1_i - z2_i||^alpha``,
  alpha = 2 (lower = positives closer). Two kinds of positive pairs are reported:
  ``query_item``: (query embedding, embedding of one of its test items), one pair per test
  interaction the evaluator scores, for every method (the baseline included), sliced by the
  item's slice; ``ssl_views``: the two augmented views of the same corpus item, drawn once
  with a fixed seed through the model's own ``ssl_views`` (methods with an SSL task only;
  SO's views are identical, so 0; ``null`` for baseline and FD).
* **uniformity** of item embeddings z_1..z_N: ``log mean_{i<j} exp(-t ||z_i - z_j||^2)``,
  t = 2 (lower = more spread over the sphere; 0 = all items on one point), over all
  distinct pairs, or over ``max_pairs`` pairs drawn with a fixed seed when there are more.
  Reported within the head items, within the tail items, and over all.
* **nearest-head cosine**: for each tail item, the largest cosine to any head item; mean,
  quartiles and a histogram. High = tail items sit on top of head items (they borrow the
  head's neighbourhood); low = the tail occupies its own region.
* **recall by popularity decile**: the evaluator's own slice recall (``popularity_00`` =
  the 10% most frequent training items ... ``popularity_09``), read from
  ``eval/<name>/metrics.json`` when it was computed for the same model, split and slices,
  otherwise computed here by ``evaluate.retrieval_metrics`` on the same embeddings.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time
from typing import Any, Mapping, Sequence

import numpy as np

from recsys_ssl import evaluate
from recsys_ssl.paths import DEFAULT_RUN_DIR, RunLayout

DEFAULT_MAX_PAIRS = 200_000  # uniformity: exact below ~632 items, a seeded sample of pairs above
HISTOGRAM_BINS = 200  # nearest-head cosine histogram over [-1, 1] (bins 0.01 wide; the plot crops)
DEFINITIONS = {
    "alignment": "mean_i ||z1_i - z2_i||^alpha over positive pairs, rows L2-normalised",
    "alignment.query_item": "pairs (query, test item), one per test interaction; sliced by the item",
    "alignment.ssl_views": "pairs (view 1, view 2) of each corpus item, model.ssl_views with a fixed seed",
    "uniformity": "log mean_{i<j} exp(-t ||z_i - z_j||^2) over item pairs within the slice, rows L2-normalised",
    "nearest_head_cosine": "per tail item: max cosine to any head item; mean, quartiles, histogram",
    "recall_by_popularity": "evaluator slice recall sum_q |R_q ∩ T_q ∩ S| / sum_q |T_q ∩ S|, S = popularity decile",
}


# -- the numpy core -----------------------------------------------------------------------------


def _rows(z: np.ndarray, what: str) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)
    if z.ndim != 2:
        raise ValueError(f"{what} must be [N, D], got shape {z.shape}")
    return z


def normalize_rows(z: np.ndarray) -> np.ndarray:
    """[N, D] -> [N, D] float64 with unit rows; an all-zero row is an error (no direction)."""
    z = _rows(z, "embeddings")
    norms = np.linalg.norm(z, axis=1, keepdims=True)
    if (norms == 0).any():
        raise ValueError(f"embedding row {int(np.flatnonzero(norms[:, 0] == 0)[0])} is all zeros")
    return z / norms


def alignment(z1: np.ndarray, z2: np.ndarray, alpha: float = 2.0) -> float | None:
    """Alignment (Wang & Isola 2020): ``mean_i ||z1_i - z2_i||_2 ** alpha``.

    z1, z2: [P, D], row i of each is one positive pair (used as given: normalise first for
    the paper's definition). Returns None when P = 0. On unit vectors, alpha = 2, the value
    is in [0, 4]: 0 for identical views, 4 for antipodal ones.
    """
    z1, z2 = _rows(z1, "z1"), _rows(z2, "z2")
    if z1.shape != z2.shape:
        raise ValueError(f"alignment needs paired rows, got {z1.shape} and {z2.shape}")
    if len(z1) == 0:
        return None
    return float(np.mean(np.linalg.norm(z1 - z2, axis=1) ** alpha))


def distinct_pairs(n: int, max_pairs: int = DEFAULT_MAX_PAIRS, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (i [M], j [M]) with i != j: every i < j when n(n-1)/2 <= max_pairs, else
    ``max_pairs`` pairs drawn uniformly (with replacement) from the ordered distinct pairs
    with ``np.random.default_rng(seed)``: the same pairs on every run."""
    if n * (n - 1) // 2 <= max_pairs:
        return np.triu_indices(n, k=1)
    rng = np.random.default_rng(seed)
    i = rng.integers(0, n, max_pairs)
    j = (i + rng.integers(1, n, max_pairs)) % n  # uniform over the n - 1 others
    return i, j


def uniformity(z: np.ndarray, t: float = 2.0, max_pairs: int = DEFAULT_MAX_PAIRS, seed: int = 0) -> float | None:
    """Uniformity (Wang & Isola 2020): ``log mean_{i<j} exp(-t ||z_i - z_j||_2 ** 2)``.

    z: [N, D] (used as given: normalise first for the paper's definition). Pairs: all
    distinct pairs, or a seeded sample of ``max_pairs`` (:func:`distinct_pairs`). Returns
    None when N < 2. Two antipodal unit vectors: log exp(-t * 4) = -4t (-8 at t = 2).
    """
    z = _rows(z, "z")
    if len(z) < 2:
        return None
    i, j = distinct_pairs(len(z), max_pairs, seed)
    x = -t * np.sum((z[i] - z[j]) ** 2, axis=1)
    top = x.max()  # log-mean-exp, stable
    return float(top + np.log(np.mean(np.exp(x - top))))


def nearest_head_cosine(item_embeddings: np.ndarray, head_mask: np.ndarray, chunk: int = 4096) -> dict[str, Any]:
    """For each tail item (``~head_mask``), the largest cosine similarity to any head item.

    item_embeddings: [N, D] (rows normalised here); head_mask: [N] bool.
    Returns {"cosines": [T] float64 in tail-item order (T = number of tail items),
    "mean", "q25", "median", "q75": floats (None when there is no head or no tail item)}.
    """
    z = normalize_rows(item_embeddings)
    head_mask = np.asarray(head_mask, dtype=bool)
    if head_mask.shape != (len(z),):
        raise ValueError(f"head_mask has shape {head_mask.shape}, expected ({len(z)},)")
    head, tail = z[head_mask], z[~head_mask]
    if len(head) == 0 or len(tail) == 0:
        return {"cosines": np.zeros(0), "mean": None, "q25": None, "median": None, "q75": None}
    cosines = np.concatenate([(tail[s : s + chunk] @ head.T).max(axis=1) for s in range(0, len(tail), chunk)])
    q25, median, q75 = np.quantile(cosines, [0.25, 0.5, 0.75])
    return {
        "cosines": cosines,
        "mean": float(np.mean(cosines)),
        "q25": float(q25),
        "median": float(median),
        "q75": float(q75),
    }


# -- per slice -------------------------------------------------------------------------------


def sliced_alignment(
    z1: np.ndarray, z2: np.ndarray, pair_items: np.ndarray, slices: Mapping[str, np.ndarray], alpha: float = 2.0
) -> dict[str, Any]:
    """Alignment over all pairs and over the pairs whose item (``pair_items`` [P] corpus
    indices) is in each slice (name -> [N] bool); "pairs": how many pairs each used."""
    out: dict[str, Any] = {"all": alignment(z1, z2, alpha), "pairs": {"all": int(len(z1))}}
    for name, mask in slices.items():
        keep = np.asarray(mask, bool)[pair_items]
        out[name] = alignment(z1[keep], z2[keep], alpha)
        out["pairs"][name] = int(keep.sum())
    return out


def sliced_uniformity(
    z: np.ndarray, slices: Mapping[str, np.ndarray], t: float = 2.0, max_pairs: int = DEFAULT_MAX_PAIRS, seed: int = 0
) -> dict[str, Any]:
    """Uniformity of all items and of the items within each slice (name -> [N] bool)."""
    out: dict[str, Any] = {"all": uniformity(z, t, max_pairs, seed), "items": {"all": int(len(z))}}
    for name, mask in slices.items():
        out[name] = uniformity(z[np.asarray(mask, bool)], t, max_pairs, seed)
        out["items"][name] = int(np.asarray(mask, bool).sum())
    return out


def nearest_head_summary(
    item_embeddings: np.ndarray, head_mask: np.ndarray, bins: int = HISTOGRAM_BINS
) -> dict[str, Any]:
    """:func:`nearest_head_cosine` without the per-item array, plus a histogram over [-1, 1]."""
    result = nearest_head_cosine(item_embeddings, head_mask)
    cosines = result.pop("cosines")
    counts, edges = np.histogram(np.clip(cosines, -1.0, 1.0), bins=bins, range=(-1.0, 1.0))
    result.update(tail_items=int(len(cosines)), histogram={"edges": edges.tolist(), "counts": counts.tolist()})
    return result


def decile_recall(metrics: Mapping[str, Any], num_buckets: int = evaluate.NUM_POPULARITY_BUCKETS) -> dict[str, Any]:
    """The evaluator's recall@K by popularity decile, head, tail and overall, from its metrics dict."""
    ks = metrics["definition"]["ks"]
    slices = metrics["slices"]
    return {
        "ks": ks,
        "deciles": {
            f"recall@{k}": [slices[f"popularity_{b:02d}"][f"recall@{k}"] for b in range(num_buckets)] for k in ks
        },
        "head": {f"recall@{k}": slices["head"][f"recall@{k}"] for k in ks},
        "tail": {f"recall@{k}": slices["tail"][f"recall@{k}"] for k in ks},
        "overall": {f"recall@{k}": metrics[f"recall@{k}"] for k in ks},
        "test_interactions": [slices[f"popularity_{b:02d}"]["test_interactions"] for b in range(num_buckets)],
    }


# -- the model side ------------------------------------------------------------------------------


def read_arrays(dataset, split: str, batch_size: int) -> tuple[dict, tuple, dict]:
    """What the evaluator reads: the corpus (item feature -> [N] / [N, L]), the ``train``
    pairs (query ids, item ids) and the ``split`` pairs (query features + item key)."""
    from recsys_ssl.datasets import inputs

    spec = dataset.spec
    corpus = inputs.collect_columns(
        inputs.batch(dataset.items(), spec, batch_size, features=spec.item_feature_names), spec.item_feature_names
    )
    train = dataset.pair_columns("train", [spec.query_key, spec.item_key])
    test = dataset.pair_columns(split, list(dict.fromkeys(spec.query_feature_names + [spec.item_key])))
    return corpus, (train[spec.query_key], train[spec.item_key]), test


def embed(
    trained,
    spec,
    arrays: tuple[dict, tuple, dict],
    *,
    head_fraction: float,
    mode: str = "auto",
    per_pair: bool | None = None,
    batch_size: int = 1024,
) -> dict[str, Any]:
    """Item and query embeddings (rows normalised, float64) with the evaluator's queries and slices.

    Returns {"items": [N, D], "queries": [Q, D], "prepared": ``evaluate.prepare_queries``'
    dict, "slices": ``evaluate.popularity_slices``, "mode", "per_pair"}.
    """
    corpus, train_pairs, test = arrays
    mode = evaluate.resolve_mode(mode, spec.query_key, spec.item_key)
    per_pair = mode == evaluate.ITEM_ITEM if per_pair is None else per_pair
    item_ids = list(corpus[spec.item_key])
    items = evaluate.embed_item_corpus(trained, spec, corpus, batch_size, quiet=False)
    prepared = evaluate.prepare_queries(
        (test[spec.query_key], test[spec.item_key]), train_pairs, item_ids, mode, per_pair
    )
    queries = evaluate.embed_test_queries(trained, spec, test, prepared["first_pair"], batch_size, quiet=False)
    slices = evaluate.popularity_slices(prepared["train_counts"], item_ids, head_fraction)
    return {
        "items": normalize_rows(items),
        "queries": normalize_rows(queries),
        "prepared": prepared,
        "slices": slices,
        "mode": mode,
        "per_pair": per_pair,
        "item_features": {f: np.asarray(corpus[f]) for f in spec.item_feature_names},
    }


def ssl_view_embeddings(
    trained, item_features: Mapping[str, np.ndarray], run_dir: str | pathlib.Path, batch_size: int = 1024, seed: int = 0
) -> tuple[np.ndarray, np.ndarray] | None:
    """Both SSL views [N, D] of every corpus item through ``model.ssl_views`` (batch b draws
    with the seed (seed, b)); None for a method without an SSL task (baseline, FD)."""
    from recsys_ssl import artifacts, augment
    from recsys_ssl.tf_setup import tf

    config, model = trained.config, trained.model
    if not config.uses_ssl_batch:
        return None
    if config.needs_cfm_groups:  # an inference model has no CFM groups: the MI job's, as training read them
        mi_dir = RunLayout(run_dir).mi
        if not artifacts.exists(artifacts.join(mi_dir, artifacts.CFM_GROUPS)):
            raise FileNotFoundError(
                f"{mi_dir}/{artifacts.CFM_GROUPS} does not exist: the SSL views of "
                f"{config.name!r} (CFM) need the MI job's groups"
            )
        groups = artifacts.read_cfm_groups(mi_dir)
        matrix = augment.cfm_group_matrix(
            [f.name for f in model.spec.item_features],
            artifacts.cfm_ranked_partners(groups, config.ssl.cfm_grouping),
            config.ssl.cfm_group_size or int(groups["group_size"]),
            model._mask_inputs.maskable,
        )
        model._mask_inputs = model._mask_inputs._replace(cfm_groups=matrix)
    call = tf.function(lambda batch, step_seed: model.ssl_views(batch, step_seed), reduce_retracing=True)
    num_items = len(next(iter(item_features.values())))
    views: tuple[list, list] = ([], [])
    for b, start in enumerate(range(0, num_items, batch_size)):
        batch = {name: tf.constant(values[start : start + batch_size]) for name, values in item_features.items()}
        z1, z2 = call(batch, tf.constant([seed, b], tf.int64))
        views[0].append(z1.numpy())
        views[1].append(z2.numpy())
    return normalize_rows(np.concatenate(views[0])), normalize_rows(np.concatenate(views[1]))


def popularity_recall(
    run_dir: str | pathlib.Path,
    name: str,
    trained,
    embedded: Mapping[str, Any],
    split: str,
    head_fraction: float,
    ks: Sequence[int],
) -> dict[str, Any]:
    """Recall by decile from the evaluator: its ``metrics.json`` when it scored this very model
    (same config, split, mode, head fraction, test interactions, cut-offs), else
    ``evaluate.retrieval_metrics`` on ``embedded``."""
    path = RunLayout(run_dir).eval(name) / "metrics.json"
    prepared = embedded["prepared"]
    interactions = int(sum(len(np.unique(t)) for t in prepared["test_items"]))
    if path.exists():
        metrics = json.loads(path.read_text())
        same = (
            metrics.get("config") == trained.config.to_dict()
            and metrics.get("split") == split
            and metrics.get("mode") == embedded["mode"]
            and metrics.get("per_pair") == embedded["per_pair"]
            and metrics.get("head_fraction") == head_fraction
            and metrics.get("counts", {}).get("test_interactions") == interactions
            and set(ks) <= set(metrics.get("definition", {}).get("ks", []))
            and "popularity_00" in metrics.get("slices", {})
        )
        if same:
            return {"source": str(path), **decile_recall(metrics)}
    metrics = evaluate.retrieval_metrics(
        embedded["queries"], embedded["items"], prepared["test_items"], prepared["exclude"], embedded["slices"], ks=ks
    )
    return {"source": "computed (evaluate.retrieval_metrics)", **decile_recall(metrics)}


def diagnose(
    trained,
    arrays: tuple[dict, tuple, dict],
    run_dir: str | pathlib.Path,
    name: str,
    *,
    split: str = "test",
    head_fraction: float = evaluate.PROTOCOL_HEAD_FRACTION,
    mode: str = "auto",
    per_pair: bool | None = None,
    ks: Sequence[int] = evaluate.DEFAULT_KS,
    batch_size: int = 1024,
    seed: int = 0,
    max_pairs: int = DEFAULT_MAX_PAIRS,
) -> dict[str, Any]:
    """Every diagnostic of one trained model (the ``diagnostics.json`` layout; module docstring)."""
    started = time.perf_counter()
    spec = trained.spec
    embedded = embed(
        trained, spec, arrays, head_fraction=head_fraction, mode=mode, per_pair=per_pair, batch_size=batch_size
    )
    slices = {k: embedded["slices"][k] for k in ("head", "tail")}
    prepared = embedded["prepared"]
    rows = np.repeat(np.arange(len(prepared["test_items"])), [len(np.unique(t)) for t in prepared["test_items"]])
    pair_items = np.concatenate([np.unique(t) for t in prepared["test_items"]]) if len(rows) else np.zeros(0, np.int64)
    views = ssl_view_embeddings(trained, embedded["item_features"], run_dir, batch_size, seed)
    items = embedded["items"]
    return {
        "name": name,
        "method": trained.config.method,
        "augmentation": trained.config.augmentation,
        "dataset": trained.config.dataset,
        "split": split,
        "mode": embedded["mode"],
        "per_pair": embedded["per_pair"],
        "head_fraction": head_fraction,
        "counts": {
            "items": len(items),
            "head_items": int(slices["head"].sum()),
            "tail_items": int(slices["tail"].sum()),
            "queries": len(embedded["queries"]),
            "test_interactions": int(len(rows)),
        },
        "alignment": {
            "alpha": 2,
            "query_item": sliced_alignment(embedded["queries"][rows], items[pair_items], pair_items, slices),
            "ssl_views": None if views is None else sliced_alignment(*views, np.arange(len(items)), slices),
        },
        "uniformity": {
            "t": 2,
            "max_pairs": max_pairs,
            "seed": seed,
            **sliced_uniformity(items, slices, 2.0, max_pairs, seed),
        },
        "nearest_head_cosine": nearest_head_summary(items, slices["head"]),
        "recall_by_popularity": popularity_recall(run_dir, name, trained, embedded, split, head_fraction, ks),
        "definitions": DEFINITIONS,
        "seconds": round(time.perf_counter() - started, 3),
    }


def _cell(value: Any) -> str:
    return "-" if value is None else f"{value:.4f}"


def table_rows(by_name: Mapping[str, Mapping[str, Any]], k: int = 50) -> list[tuple[str, list[float | None]]]:
    """(quantity, [its value per model]): recall@k, alignment, uniformity, nearest-head cosine."""
    rows: list[tuple[str, list[Any]]] = []
    values = list(by_name.values())
    for slice_ in ("overall", "head", "tail"):
        rows.append((f"recall@{k} {slice_}", [d["recall_by_popularity"][slice_].get(f"recall@{k}") for d in values]))
    for kind in ("query_item", "ssl_views"):
        for slice_ in ("head", "tail"):
            rows.append((f"align {kind} {slice_}", [(d["alignment"][kind] or {}).get(slice_) for d in values]))
    for slice_ in ("head", "tail", "all"):
        rows.append((f"uniformity {slice_}", [d["uniformity"][slice_] for d in values]))
    for stat in ("mean", "q25", "median", "q75"):
        rows.append((f"tail->head cos {stat}", [d["nearest_head_cosine"][stat] for d in values]))
    return rows


def format_table(by_name: Mapping[str, Mapping[str, Any]], k: int = 50) -> str:
    """Quantities as rows (:func:`table_rows`), one column per model."""
    rows = table_rows(by_name, k)
    width = max(len(label) for label, _ in rows)
    columns = [max(10, len(name)) for name in by_name]
    lines = [f"{'':<{width}} " + " ".join(f"{name:>{w}}" for name, w in zip(by_name, columns))]
    lines += [
        f"{label:<{width}} " + " ".join(f"{_cell(v):>{w}}" for v, w in zip(cells, columns)) for label, cells in rows
    ]
    return "\n".join(lines)


def write(run_dir: str | pathlib.Path, name: str, diagnostics: Mapping[str, Any], k: int = 50) -> pathlib.Path:
    """Writes ``<run_dir>/eval/<name>/diagnostics.json`` and ``diagnostics.png``; returns the folder."""
    from recsys_ssl import artifacts, plots

    folder = RunLayout(run_dir).eval(name)
    artifacts.write_text(folder / "diagnostics.json", evaluate.to_json(diagnostics))
    plots.plot_diagnostics({name: diagnostics}, folder / "diagnostics.png", table_rows({name: diagnostics}, k), k=k)
    return folder


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="recsys-ssl diagnose",
        description="Mechanism diagnostics of trained models: alignment and uniformity of item embeddings "
        "(head / tail), tail items' cosine to their nearest head item, recall by popularity decile; writes "
        "<run-dir>/eval/<name>/diagnostics.json and diagnostics.png (docs/evaluation.md).",
    )
    parser.add_argument("--run-dir", default=DEFAULT_RUN_DIR, help="the pipeline run's folder (default: %(default)s)")
    parser.add_argument(
        "--config",
        action="append",
        default=[],
        help="an experiment config (its name is the trained model's); repeat to compare",
    )
    parser.add_argument("--name", action="append", default=[], help="a trained model's name (<run-dir>/train/<name>)")
    parser.add_argument("--split", default="test", help="the split whose queries pair with items (default: test)")
    parser.add_argument("--k", type=int, default=50, help="the cut-off shown in the table and plot (default: 50)")
    parser.add_argument(
        "--head-fraction",
        type=float,
        default=evaluate.PROTOCOL_HEAD_FRACTION,
        help="head = this fraction of the most frequent training items (as `evaluate`)",
    )
    parser.add_argument("--mode", choices=evaluate.MODES, default="auto", help="as `evaluate --mode`")
    parser.add_argument("--per-pair", action=argparse.BooleanOptionalAction, default=None, help="as `evaluate`")
    parser.add_argument("--dataset", help="diagnose on this dataset instead of the one the model was trained on")
    parser.add_argument("--data-dir", help="raw data root (for MovieLens / CSV datasets not yet prepared)")
    parser.add_argument("--batch-size", type=int, default=1024, help="embedding batch size")
    parser.add_argument("--seed", type=int, default=0, help="seed of the SSL views and of sampled uniformity pairs")
    parser.add_argument(
        "--max-pairs",
        type=int,
        default=DEFAULT_MAX_PAIRS,
        help="uniformity: all pairs up to this many, else this many seeded samples",
    )
    args = parser.parse_args(argv)
    if not args.config and not args.name:
        parser.error("pass --config or --name (repeat either to compare models)")
    return args


def model_names(args: argparse.Namespace) -> list[str]:
    """The models to diagnose, in order; each must have been trained (a one-line error names the path)."""
    from recsys_ssl import artifacts
    from recsys_ssl import config as cfg

    names = list(dict.fromkeys([cfg.load_config(c).name for c in args.config] + list(args.name)))
    for name in names:
        manifest = RunLayout(args.run_dir).train(name) / artifacts.MANIFEST
        if not manifest.exists():
            raise FileNotFoundError(
                f"{manifest} does not exist: no trained model {name!r} in {args.run_dir} "
                f"(`recsys-ssl train --run-dir {args.run_dir} --config ...` first)"
            )
    return names


def main(argv: Sequence[str] | None = None) -> int:
    from recsys_ssl.checkpoints import load_trained
    from recsys_ssl.datasets import inputs
    from recsys_ssl.paths import tfds_dir

    args = parse_args(argv)
    names = model_names(args)
    ks = sorted({*evaluate.DEFAULT_KS, args.k})
    datasets: dict[str, tuple] = {}
    results: dict[str, dict[str, Any]] = {}
    for name in names:
        trained = load_trained(args.run_dir, name)
        dataset_name = args.dataset or trained.config.dataset
        if dataset_name not in datasets:
            dataset = inputs.load_dataset(
                dataset_name, data_dir=str(tfds_dir(args.run_dir)), raw_data_dir=args.data_dir
            )
            datasets[dataset_name] = read_arrays(dataset, args.split, args.batch_size)
        results[name] = diagnose(
            trained,
            datasets[dataset_name],
            args.run_dir,
            name,
            split=args.split,
            head_fraction=args.head_fraction,
            mode=args.mode,
            per_pair=args.per_pair,
            ks=ks,
            batch_size=args.batch_size,
            seed=args.seed,
            max_pairs=args.max_pairs,
        )
        print(f"wrote {write(args.run_dir, name, results[name], args.k)}/diagnostics.json and diagnostics.png")
    table = format_table(results, args.k)
    if len(results) > 1:
        from recsys_ssl import artifacts, plots

        stem = RunLayout(args.run_dir).root / "eval" / ("diagnostics_" + "_vs_".join(results))
        plots.plot_diagnostics(results, stem.with_suffix(".png"), table_rows(results, args.k), k=args.k)
        artifacts.write_text(stem.with_suffix(".txt"), table + "\n")
        print(f"wrote {stem}.png and {stem}.txt")
    print(f"head = top {args.head_fraction:.0%} of items by training count; split {args.split}")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
