"""Peer systems of ``../shared/bench/PROTOCOL.md``, scored by the project's own evaluator.

    python bench/peers.py --dataset frappe [--dataset movielens/100k-user-item] \
        [--run-dir runs/peers] [--out bench/results/peers]

Methods (``--methods``; default the four below):

* ``popularity``: every user gets the items by training count (query vector [1], item vector
  [count]; ties by item index, the evaluator's rule). Nothing to tune, deterministic.
* ``als``: ``implicit`` AlternatingLeastSquares on the binary user x item matrix; score =
  user_factors . item_factors.
* ``lightfm``: LightFM WARP, no features (identity user and item features).
* ``lightfm_features``: LightFM WARP with item features: the item's identity plus one
  indicator per (feature, value) of every item feature of the dataset's spec (multi-valued
  features: one per token; empty values skipped), each item row L1-normalised (as
  ``lightfm.data.Dataset`` does by default).
* ``bpr`` (opt-in): ``implicit`` BayesianPersonalizedRanking (the protocol's "implicit BPR" row).

LightFM's score is passed to the evaluator as a plain dot product:
[user_emb, user_bias, 1] . [item_emb, 1, item_bias] == ``LightFM.predict`` (checked on every run).

Protocol: each method's small grid (:data:`GRIDS`) is trained on the validation view's train
split (``<dataset>-val``: train minus a 10% per-user carve-out) with seed 0 and scored on the
carve-out; the setting with the best overall Recall@50 (first in grid order on a tie) is then
trained on the full train split with seeds 0, 1, 2 and scored on test (Recall@10/50/100, MAP,
head / tail = top 20% of items by train count, :mod:`recsys_ssl.evaluate`). Cells are mean ±
sample std over seeds. LightFM's epochs are read off one run (fit 10, fit_partial to 20, to 40),
which with one thread is the same model as a fresh fit for that many epochs.

Outputs: ``<out>/<dataset>.md`` (the table, the chosen settings, the validation grid) and
``<out>/<dataset>.json`` (every grid point and every seed's metrics); the table also goes to stdout,
progress (one line per grid point / seed) to stderr.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # implicit warns (and slows) with threaded BLAS
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse
import itertools
import json
import pathlib
import platform
import sys
import time
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import scipy.sparse as sp

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from recsys_ssl import evaluate  # noqa: E402  (after the environment above)
from recsys_ssl.experiment import format_cell, mean_std  # noqa: E402

KS = (10, 50, 100)
SEEDS = (0, 1, 2)
SELECT_METRIC = "recall@50"
DEFAULT_METHODS = ("popularity", "als", "lightfm", "lightfm_features")
ALL_METHODS = DEFAULT_METHODS + ("bpr",)
TITLES = {
    "popularity": "popularity",
    "als": "implicit ALS",
    "bpr": "implicit BPR",
    "lightfm": "LightFM WARP, no features",
    "lightfm_features": "LightFM WARP, item features",
}
# Small grids (validation, seed 0). LightFM's "epochs" are checkpoints of one run.
GRIDS: dict[str, dict[str, list]] = {
    "popularity": {},
    # ALS regularization goes up to 100: with only {0.01, 0.1} (the first grid tried) the choice sat on
    # the grid's edge and frappe's ALS scored far below popularity (bench/results/peers/README.md).
    "als": {"factors": [32, 64, 128], "regularization": [0.01, 0.1, 1.0, 10.0, 100.0], "iterations": [15, 30]},
    "bpr": {"factors": [32, 64, 128], "learning_rate": [0.01, 0.05], "iterations": [50, 100]},
    "lightfm": {"no_components": [32, 64], "learning_rate": [0.02, 0.05], "epochs": [10, 20, 40]},
    "lightfm_features": {"no_components": [32, 64], "learning_rate": [0.02, 0.05], "epochs": [10, 20, 40]},
}
# The table's columns: (metric key in the flat metrics, title).
COLUMNS = (
    ("recall@10", "R@10"),
    ("recall@50", "R@50"),
    ("head/recall@50", "head R@50"),
    ("tail/recall@50", "tail R@50"),
)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- data ---------------------------------------------------------------------------------


class Split:
    """One (train, test) pair of a dataset, as index arrays over a shared user / item index."""

    def __init__(self, handle, items: Mapping[str, np.ndarray], user_index: dict[bytes, int]):
        spec = handle.spec
        q, i = spec.query_key, spec.item_key
        train = handle.pair_columns("train", [q, i])
        test = handle.pair_columns("test", [q, i])
        self.item_ids = list(items[i])
        self.prepared = evaluate.prepare_queries(
            (test[q], test[i]), (train[q], train[i]), self.item_ids, evaluate.USER_ITEM
        )
        self.slices = evaluate.popularity_slices(
            self.prepared["train_counts"],
            self.item_ids,
            evaluate.PROTOCOL_HEAD_FRACTION,
            evaluate.NUM_POPULARITY_BUCKETS,
        )
        item_index = {key: n for n, key in enumerate(self.item_ids)}
        rows = np.array([user_index[k] for k in train[q]], dtype=np.int64)
        cols = np.array([item_index.get(k, -1) for k in train[i]], dtype=np.int64)
        known = cols >= 0
        matrix = sp.coo_matrix(
            (np.ones(int(known.sum()), np.float32), (rows[known], cols[known])),
            shape=(len(user_index), len(self.item_ids)),
        ).tocsr()
        matrix.data[:] = 1.0  # binary: repeated pairs count once
        self.interactions = matrix
        self.query_rows = np.array([user_index[k] for k in self.prepared["queries"]], dtype=np.int64)
        self.counts = {
            "train_pairs": int(len(train[q])),
            "train_matrix_nnz": int(matrix.nnz),
            "test_pairs": int(len(test[q])),
            "queries": int(len(self.query_rows)),
            "items": len(self.item_ids),
            "dropped": self.prepared["dropped"],
        }

    def score(self, user_vectors: np.ndarray, item_vectors: np.ndarray) -> dict[str, Any]:
        """Flat metrics of dot-product scores: user_vectors [num_users, D], item_vectors [N, D]."""
        metrics = evaluate.retrieval_metrics(
            user_vectors[self.query_rows],
            item_vectors,
            self.prepared["test_items"],
            self.prepared["exclude"],
            self.slices,
            ks=KS,
            normalize=False,
        )
        flat = {k: v for k, v in metrics.items() if k.startswith(("recall@", "map@"))}
        for name in ("head", "tail"):
            for k in KS:
                flat[f"{name}/recall@{k}"] = metrics["slices"][name][f"recall@{k}"]
        return flat


def item_feature_matrix(items: Mapping[str, np.ndarray], spec) -> tuple[sp.csr_matrix, int]:
    """[N, N + F] identity + (feature, value) indicators, rows L1-normalised; F returned too."""
    num_items = len(items[spec.item_key])
    vocabulary: dict[tuple[str, bytes], int] = {}
    rows, cols = [], []
    for name in spec.item_feature_names:
        if name == spec.item_key:
            continue
        for n, value in enumerate(items[name]):
            values = value if isinstance(value, (list, tuple, np.ndarray)) else [value]
            for v in values:
                if v in (b"", ""):
                    continue
                column = vocabulary.setdefault((name, v), len(vocabulary))
                rows.append(n)
                cols.append(num_items + column)
    rows = np.concatenate([np.arange(num_items), np.asarray(rows, np.int64)])
    cols = np.concatenate([np.arange(num_items), np.asarray(cols, np.int64)])
    matrix = sp.coo_matrix(
        (np.ones(len(rows), np.float32), (rows, cols)), shape=(num_items, num_items + len(vocabulary))
    ).tocsr()
    matrix.data[:] = 1.0
    matrix = sp.diags(1.0 / np.asarray(matrix.sum(axis=1)).ravel()).astype(np.float32) @ matrix
    return matrix.tocsr().astype(np.float32), len(vocabulary)


class Data:
    """A dataset's validation split (``<name>-val``) and test split, over one user / item index."""

    def __init__(self, name: str, tfds_dir: str, raw_data_dir: str | None):
        from recsys_ssl.datasets import inputs

        started = time.perf_counter()
        base = self._load(inputs, name, tfds_dir, raw_data_dir)
        val = self._load(inputs, f"{name}-val", tfds_dir, raw_data_dir)
        spec = base.spec
        self.spec = spec
        items = base.item_arrays()
        # Every user of the full train / test splits (the validation view's users are a subset).
        q = spec.query_key
        users = set()
        for split in ("train", "test"):
            users.update(base.pair_columns(split, [q])[q].tolist())
        self.user_index = {u: n for n, u in enumerate(sorted(users))}
        self.test = Split(base, items, self.user_index)
        self.validation = Split(val, items, self.user_index)
        if self.validation.item_ids != self.test.item_ids:
            raise ValueError(f"{name}-val has a different item corpus from {name}")
        self.item_features, self.num_feature_values = item_feature_matrix(items, spec)
        self.seconds = time.perf_counter() - started
        log(
            f"[{name}] {len(self.user_index)} users, {len(self.test.item_ids)} items, "
            f"{self.num_feature_values} item feature values; validation {self.validation.counts}; "
            f"test {self.test.counts} ({self.seconds:.0f}s)"
        )

    @staticmethod
    def _load(inputs, name: str, tfds_dir: str, raw_data_dir: str | None):
        try:
            return inputs.load_dataset(name, data_dir=tfds_dir, raw_data_dir=raw_data_dir)
        except ValueError as error:  # an unknown name: say so plainly
            raise SystemExit(f"cannot load dataset {name!r}: {error}") from error


# -- the methods: each returns (user vectors [num_users, D], item vectors [N, D]) -------------


def fit_popularity(split: Split, params: Mapping[str, Any], seed: int, threads: int, data: Data):
    counts = split.prepared["train_counts"].astype(np.float64)
    return np.ones((split.interactions.shape[0], 1)), counts[:, None]


def _implicit_vectors(model) -> tuple[np.ndarray, np.ndarray]:
    """The CPU models' factor matrices (implicit.cpu.*: numpy arrays), as float64."""
    return np.asarray(model.user_factors, np.float64), np.asarray(model.item_factors, np.float64)


def fit_als(split: Split, params: Mapping[str, Any], seed: int, threads: int, data: Data):
    from implicit.cpu.als import AlternatingLeastSquares

    model = AlternatingLeastSquares(
        factors=params["factors"],
        regularization=params["regularization"],
        iterations=params["iterations"],
        random_state=seed,
        num_threads=threads,
    )
    model.fit(split.interactions, show_progress=False)
    return _implicit_vectors(model)


def fit_bpr(split: Split, params: Mapping[str, Any], seed: int, threads: int, data: Data):
    from implicit.cpu.bpr import BayesianPersonalizedRanking

    model = BayesianPersonalizedRanking(
        factors=params["factors"],
        learning_rate=params["learning_rate"],
        iterations=params["iterations"],
        random_state=seed,
        num_threads=threads,
    )
    model.fit(split.interactions, show_progress=False)
    # implicit's BPR keeps the item bias in the last item factor and a constant 1 in the user's.
    return _implicit_vectors(model)


def _lightfm_model(params: Mapping[str, Any], seed: int):
    from lightfm import LightFM

    return LightFM(
        no_components=params["no_components"], learning_rate=params["learning_rate"], loss="warp", random_state=seed
    )


def lightfm_vectors(model, item_features: sp.csr_matrix | None, check: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """[user_emb, user_bias, 1] and [item_emb, 1, item_bias]: their dot product is ``model.predict``."""
    user_bias, user_emb = model.get_user_representations()
    item_bias, item_emb = model.get_item_representations(item_features)
    users = np.hstack([user_emb, user_bias[:, None], np.ones((len(user_bias), 1), np.float32)]).astype(np.float64)
    items = np.hstack([item_emb, np.ones((len(item_bias), 1), np.float32), item_bias[:, None]]).astype(np.float64)
    # Check against LightFM's own scores on a few (user, item) pairs.
    rng = np.random.default_rng(0)
    u = rng.integers(0, check.shape[0], 64).astype(np.int32)
    i = rng.integers(0, check.shape[1], 64).astype(np.int32)
    predicted = model.predict(u, i, item_features=item_features, num_threads=1)
    ours = np.einsum("nd,nd->n", users[u], items[i])
    if not np.allclose(predicted, ours, rtol=1e-4, atol=1e-4):
        raise AssertionError(
            f"LightFM dot-product vectors disagree with predict(): max |diff| {np.abs(predicted - ours).max():.3g}"
        )
    return users, items


def lightfm_checkpoints(
    split: Split, params: Mapping[str, Any], seed: int, threads: int, data: Data, features: bool, epochs: Sequence[int]
):
    """Yields (epochs, vectors) at each checkpoint of one fit (fit, then fit_partial)."""
    item_features = data.item_features if features else None
    model = _lightfm_model(params, seed)
    done = 0
    for target in sorted(epochs):
        kwargs = dict(item_features=item_features, epochs=target - done, num_threads=threads)
        if done == 0:
            model.fit(split.interactions.tocoo(), **kwargs)
        else:
            model.fit_partial(split.interactions.tocoo(), **kwargs)
        done = target
        yield target, lightfm_vectors(model, item_features, split.interactions)


def fit_lightfm(split, params, seed, threads, data, features=False):
    ((_, vectors),) = lightfm_checkpoints(split, params, seed, threads, data, features, [params["epochs"]])
    return vectors


FITS: dict[str, Callable] = {
    "popularity": fit_popularity,
    "als": fit_als,
    "bpr": fit_bpr,
    "lightfm": fit_lightfm,
    "lightfm_features": lambda *a: fit_lightfm(*a, features=True),
}


# -- tuning and the seeds -----------------------------------------------------------------


def grid_points(method: str) -> list[dict[str, Any]]:
    grid = GRIDS[method]
    return [dict(zip(grid, values)) for values in itertools.product(*grid.values())]


def tune(method: str, data: Data, threads: int, tag: str) -> list[dict[str, Any]]:
    """Every grid point on the validation split (seed 0): [{"params", "metrics", "seconds"}]."""
    points = grid_points(method)
    if not points:
        return []
    results = []
    if method.startswith("lightfm"):
        # One run per (no_components, learning_rate), read at every epochs checkpoint.
        epochs = GRIDS[method]["epochs"]
        bases = list(dict.fromkeys(tuple((k, v) for k, v in p.items() if k != "epochs") for p in points))
        for base in bases:
            started = time.perf_counter()
            for target, vectors in lightfm_checkpoints(
                data.validation, dict(base), 0, threads, data, method == "lightfm_features", epochs
            ):
                metrics = data.validation.score(*vectors)
                params = {**dict(base), "epochs": target}
                seconds = time.perf_counter() - started
                results.append({"params": params, "metrics": metrics, "seconds": round(seconds, 2)})
                log(
                    f"{tag} val {len(results)}/{len(points)} {params}: R@50 {metrics[SELECT_METRIC]:.4f} "
                    f"R@10 {metrics['recall@10']:.4f} ({seconds:.1f}s cumulative)"
                )
        order = {json.dumps(p, sort_keys=True): n for n, p in enumerate(points)}
        results.sort(key=lambda r: order[json.dumps(r["params"], sort_keys=True)])
        return results
    for n, params in enumerate(points, 1):
        started = time.perf_counter()
        metrics = data.validation.score(*FITS[method](data.validation, params, 0, threads, data))
        seconds = time.perf_counter() - started
        results.append({"params": params, "metrics": metrics, "seconds": round(seconds, 2)})
        log(
            f"{tag} val {n}/{len(points)} {params}: R@50 {metrics[SELECT_METRIC]:.4f} "
            f"R@10 {metrics['recall@10']:.4f} ({seconds:.1f}s)"
        )
    return results


def choose(results: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    if not results:
        return {}
    best = max(range(len(results)), key=lambda n: (results[n]["metrics"][SELECT_METRIC], -n))
    return dict(results[best]["params"])


def run_method(method: str, data: Data, seeds: Sequence[int], threads: int, tag: str) -> dict[str, Any]:
    started = time.perf_counter()
    grid = tune(method, data, threads, tag)
    chosen = choose(grid)
    if grid:
        log(f"{tag} chosen {chosen} (validation R@50 {max(r['metrics'][SELECT_METRIC] for r in grid):.4f})")
    runs = []
    for seed in seeds if method != "popularity" else seeds[:1]:  # popularity is deterministic
        t0 = time.perf_counter()
        metrics = data.test.score(*FITS[method](data.test, chosen, seed, threads, data))
        runs.append({"seed": seed, "metrics": metrics, "seconds": round(time.perf_counter() - t0, 2)})
        log(
            f"{tag} test seed {seed}: R@10 {metrics['recall@10']:.4f} R@50 {metrics['recall@50']:.4f} "
            f"head {metrics['head/recall@50']:.4f} tail {metrics['tail/recall@50']:.4f} "
            f"({time.perf_counter() - t0:.1f}s)"
        )
    keys = list(runs[0]["metrics"])
    summary = {}
    for key in keys:
        mean, std = mean_std([r["metrics"][key] for r in runs])
        summary[key] = {"mean": mean, "std": std, "n": len(runs)}
    return {
        "method": method,
        "title": TITLES[method],
        "grid_space": GRIDS[method],
        "validation": grid,
        "chosen": chosen,
        "test": runs,
        "summary": summary,
        "seconds": round(time.perf_counter() - started, 1),
    }


# -- reporting ------------------------------------------------------------------------------


def cell(entry: Mapping[str, Any] | None, digits: int = 4) -> str:
    """``mean ± std`` as the experiment tables write it (no relative change here)."""
    return format_cell(None if entry is None else {**entry, "relative": None}, digits)


def grid_edges(space: Mapping[str, Sequence], chosen: Mapping[str, Any]) -> str:
    """Chosen values that are the smallest or largest of their grid dimension (a wider grid could move them)."""
    notes = []
    for name, values in space.items():
        if len(values) > 1 and name in chosen:
            if chosen[name] == min(values):
                notes.append(f"{name}={chosen[name]} (smallest)")
            elif chosen[name] == max(values):
                notes.append(f"{name}={chosen[name]} (largest)")
    return ", ".join(notes)


def format_params(params: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items()) or "-"


def markdown(dataset: str, results: Sequence[Mapping[str, Any]], data: Data, seeds: Sequence[int]) -> str:
    lines = [
        f"## {dataset}",
        "",
        f"Test split; head = top {evaluate.PROTOCOL_HEAD_FRACTION:.0%} of {len(data.test.item_ids)} items by "
        f"train count ({int(data.test.slices['head'].sum())} items); mean ± sample std over seeds "
        f"{list(seeds)} (popularity: deterministic, one run). Chosen on `{dataset}-val` by Recall@50.",
        "",
        "| method | " + " | ".join(title for _, title in COLUMNS) + " | chosen |",
        "|---|" + "---|" * len(COLUMNS) + "---|",
    ]
    for r in results:
        lines.append(
            f"| {r['title']} | "
            + " | ".join(cell(r["summary"].get(k)) for k, _ in COLUMNS)
            + f" | {format_params(r['chosen'])} |"
        )
    edges = [f"{r['title']}: {note}" for r in results if (note := grid_edges(r["grid_space"], r["chosen"]))]
    if edges:
        lines += ["", "Chosen at the edge of the grid (a wider grid might move it): " + "; ".join(edges) + "."]
    lines += ["", "### Validation grid (seed 0, scored on the carve-out)", ""]
    for r in results:
        if not r["validation"]:
            continue
        lines += [f"{r['title']}:", "", "| setting | R@10 | R@50 | head R@50 | tail R@50 |", "|---|---|---|---|---|"]
        for point in r["validation"]:
            mark = " **(chosen)**" if point["params"] == r["chosen"] else ""
            lines.append(
                f"| {format_params(point['params'])}{mark} | "
                + " | ".join(
                    f"{point['metrics'][k]:.4f}" if point["metrics"][k] is not None else "-" for k, _ in COLUMNS
                )
                + " |"
            )
        lines.append("")
    return "\n".join(lines)


def versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for package in ("implicit", "rectools-lightfm", "numpy", "scipy"):
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            out[package] = "not installed"
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--dataset",
        action="append",
        required=True,
        help="repeatable: frappe, movielens/100k-user-item, ... (its '-val' view must exist)",
    )
    parser.add_argument(
        "--run-dir", default="runs/peers", help="TFDS data lands in <run-dir>/tfds (default runs/peers)"
    )
    parser.add_argument("--out", default="bench/results/peers", help="where <dataset>.md / .json go")
    parser.add_argument(
        "--data-dir", default=None, help="raw data root (default: ../shared/data, see recsys_ssl.paths)"
    )
    parser.add_argument("--methods", nargs="+", choices=ALL_METHODS, default=list(DEFAULT_METHODS))
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="threads per fit (default 1: LightFM / BPR are then deterministic per seed)",
    )
    args = parser.parse_args(argv)

    out_dir = pathlib.Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    tables = []
    for dataset in args.dataset:
        started = time.perf_counter()
        data = Data(dataset, str(pathlib.Path(args.run_dir) / "tfds"), args.data_dir)
        results = []
        for method in args.methods:
            results.append(run_method(method, data, args.seeds, args.threads, f"[{dataset}] {method}"))
            log(f"[{dataset}] {method} done in {results[-1]['seconds']:.0f}s")
        seconds = time.perf_counter() - started
        table = markdown(dataset, results, data, args.seeds)
        table += f"\nTotal {seconds:.0f}s (data {data.seconds:.0f}s), --threads {args.threads}; {versions()}.\n"
        slug = dataset.replace("/", "_")
        (out_dir / f"{slug}.md").write_text(table)
        record = {
            "dataset": dataset,
            "seeds": list(args.seeds),
            "threads": args.threads,
            "ks": list(KS),
            "select_metric": SELECT_METRIC,
            "head_fraction": evaluate.PROTOCOL_HEAD_FRACTION,
            "head_items": int(data.test.slices["head"].sum()),
            "users": len(data.user_index),
            "num_item_feature_values": data.num_feature_values,
            "counts": {"validation": data.validation.counts, "test": data.test.counts},
            "versions": versions(),
            "seconds": round(seconds, 1),
            "results": results,
        }
        (out_dir / f"{slug}.json").write_text(json.dumps(record, indent=1, default=lambda v: v.item()) + "\n")
        log(f"[{dataset}] wrote {out_dir / slug}.md/.json ({seconds:.0f}s)")
        tables.append(table)
        print(table, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
