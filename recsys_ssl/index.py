"""The item index: a ScaNN searcher over item embeddings, its tuning, and the export layout.

An index maps an item's id to its embedding ([N, D] float32, L2-normalised) and answers
maximum-inner-product top-k queries. Below ``BRUTE_FORCE_BELOW`` items it is ScaNN's brute
force (exact, and fast enough); above, a partition tree with asymmetric hashing and exact
re-scoring ("reordering") of the best candidates, tuned to a target Recall@k against exact
search on held-out queries (:func:`tune`).

This module also owns the on-disk layout of an export (TF Serving's)::

    <export_dir>/<model_name>/<version>/     version = a positive integer, highest = newest
        query_model/     SavedModel: query features -> embedding; top_k (exact, stock ops)
        item_model/      SavedModel: item features -> embedding
        retrieval_scann/ SavedModel: query features -> item_ids, scores (needs the Scann ops)
        index/           the ScaNN searcher (``serialize()``), scann_docids.pkl (row -> item id),
                         item_ids.txt, item_embeddings.npy, index_config.json
        manifest.json    written last: a version without it is incomplete and never served

``recsys-ssl index add`` (:mod:`recsys_ssl.index_cli`) embeds new items with ``item_model`` and
writes a new version whose searcher holds them (ScaNN's ``upsert``: no retraining, no rebuild of
the tree); a running server picks the new version up at its next poll.

A library: imports numpy and scann only; never TensorFlow, its CLI or the training code.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
import time
import uuid
from typing import Callable, Iterable, Sequence

import numpy as np

BRUTE_FORCE_BELOW = 20_000  # items; below this exact search is cheap enough (and perfect).
MANIFEST = "manifest.json"
INDEX_DIR = "index"
CONFIG_FILE = "index_config.json"
EMBEDDINGS_FILE = "item_embeddings.npy"
ITEM_IDS_FILE = "item_ids.txt"


def _scann():
    # Imported on first use: `recsys-ssl index --help` stays light.
    from scann.scann_ops.py import scann_ops_pybind

    return scann_ops_pybind


# -- exact search and recall -------------------------------------------------------------------


def exact_top_k(
    queries: np.ndarray, embeddings: np.ndarray, k: int, chunk: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Exact maximum-inner-product top-k in numpy.

    queries: [B, D]; embeddings: [N, D]. Returns (rows [B, k'] int64, scores [B, k'] float32),
    k' = min(k, N), best first. chunk: queries scored at once; by default a [chunk, N] score
    block of ~64 MB (16 queries at 1M items: larger blocks fall out of cache and make
    argpartition ~6x slower per query, measured).
    """
    queries = np.asarray(queries, np.float32)
    chunk = chunk or max(1, min(1024, (1 << 24) // max(len(embeddings), 1)))
    k = min(k, len(embeddings))
    rows, scores = [], []
    for start in range(0, len(queries), chunk):
        s = queries[start : start + chunk] @ embeddings.T  # [b, N]
        n = s.shape[1]
        # The k largest sit at the end after partitioning at n - k (no negated copy of s).
        part = np.argpartition(s, n - k, axis=1)[:, n - k :] if k < n else np.tile(np.arange(n), (len(s), 1))
        part_scores = np.take_along_axis(s, part, axis=1)
        order = np.argsort(-part_scores, axis=1, kind="stable")
        rows.append(np.take_along_axis(part, order, axis=1))
        scores.append(np.take_along_axis(part_scores, order, axis=1))
    return np.concatenate(rows), np.concatenate(scores).astype(np.float32)


def recall_at_k(approx: Sequence[Sequence], exact: Sequence[Sequence]) -> float:
    """Mean over queries of |approx_i ∩ exact_i| / |exact_i| (ids or rows, any hashable)."""
    hits = [len(set(a) & set(e)) / max(len(e), 1) for a, e in zip(approx, exact)]
    return float(np.mean(hits)) if hits else 0.0


def embedding_checksum(embeddings: np.ndarray) -> str:
    """sha256 of the little-endian float32 bytes of [N, D] embeddings (row order matters)."""
    return "sha256:" + hashlib.sha256(np.ascontiguousarray(embeddings, dtype="<f4").tobytes()).hexdigest()


# -- the searcher ------------------------------------------------------------------------------


@dataclasses.dataclass
class IndexConfig:
    """How the ScaNN searcher is built and searched.

    algorithm: ``brute_force`` (exact) or ``tree_ah`` (partition tree + asymmetric hashing +
      exact reordering of the best ``reorder_num_neighbors`` candidates).
    num_leaves / num_leaves_to_search: the tree's partitions, and how many a query visits.
    spherical: spherical k-means for the tree (centroids on the unit sphere). The exported
      embeddings are L2-normalised and scored by dot product, so this is the matching
      partitioning: at 1M x 64 items and 2,000 leaves it reaches Recall@10 0.95 searching ~41
      leaves instead of ~54 (measured; AVQ, a 1M training sample or a higher anisotropic
      threshold did not help).
    """

    algorithm: str = "brute_force"
    k: int = 10
    num_leaves: int = 0
    num_leaves_to_search: int = 0
    reorder_num_neighbors: int = 0
    dimensions_per_block: int = 2
    anisotropic_quantization_threshold: float = 0.2
    training_sample_size: int = 0
    spherical: bool = True

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict) -> "IndexConfig":
        return cls(**{f.name: raw[f.name] for f in dataclasses.fields(cls) if f.name in raw})


class ItemIndex:
    """A ScaNN searcher plus the item ids of its rows; search returns ids, not rows."""

    def __init__(self, searcher, config: IndexConfig, embeddings: np.ndarray):
        self.searcher = searcher
        self.config = config
        self.embeddings = embeddings  # [N, D]: kept for exact checks, re-tuning and rebuilds.

    @property
    def item_ids(self) -> list[str]:
        return self.searcher.docids

    @property
    def size(self) -> int:
        return len(self.searcher.docids)

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    @classmethod
    def build(cls, embeddings: np.ndarray, item_ids: Sequence[str], config: IndexConfig) -> "ItemIndex":
        """Builds the searcher. embeddings: [N, D] float32; item_ids: N unique strings."""
        embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
        item_ids = [str(i) for i in item_ids]
        _check_ids(item_ids, len(embeddings))
        builder = _scann().builder(embeddings, config.k, "dot_product")
        if config.algorithm == "brute_force":
            builder = builder.score_brute_force()
        elif config.algorithm == "tree_ah":
            builder = builder.tree(
                num_leaves=config.num_leaves,
                num_leaves_to_search=config.num_leaves_to_search,
                training_sample_size=config.training_sample_size or min(len(embeddings), 250_000),
                spherical=config.spherical,
            )
            builder = builder.score_ah(
                config.dimensions_per_block,
                anisotropic_quantization_threshold=config.anisotropic_quantization_threshold,
            )
            builder = builder.reorder(max(config.reorder_num_neighbors, config.k))
        else:
            raise ValueError(f"index algorithm must be 'brute_force' or 'tree_ah', got {config.algorithm!r}")
        return cls(builder.build(docids=item_ids), config, embeddings)

    def search(
        self,
        queries: np.ndarray,
        k: int | None = None,
        exclude: Sequence[Iterable[str]] | None = None,
        *,
        num_leaves_to_search: int | None = None,
        reorder_num_neighbors: int | None = None,
        parallel: bool = False,
    ) -> tuple[list[list[str]], list[np.ndarray]]:
        """Top-k items for each query.

        queries: [B, D] float32. exclude: per query, item ids that must not be returned.
        Returns (ids: B lists of <= k item ids, scores: B float32 arrays), best first.
        """
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise ValueError(f"queries must be [B, {self.dim}], got {list(queries.shape)}")
        k = k or self.config.k
        extra = max((len(set(e)) for e in exclude), default=0) if exclude else 0
        fetch = min(k + extra, self.size)
        leaves = num_leaves_to_search or (self.config.num_leaves_to_search or None)
        reorder = reorder_num_neighbors or self.config.reorder_num_neighbors
        pre = max(reorder, fetch) if self.config.algorithm == "tree_ah" else None
        if self.config.algorithm != "tree_ah":
            leaves = None
        search = (
            self.searcher.search_batched_parallel if parallel and len(queries) > 1 else self.searcher.search_batched
        )
        ids, scores = search(queries, final_num_neighbors=fetch, pre_reorder_num_neighbors=pre, leaves_to_search=leaves)
        out_ids, out_scores = [], []
        for i, (row_ids, row_scores) in enumerate(zip(ids, scores)):
            row_scores = np.asarray(row_scores, np.float32)
            if exclude and exclude[i]:
                banned = set(exclude[i])
                keep = [j for j, item in enumerate(row_ids) if item not in banned]
                row_ids, row_scores = [row_ids[j] for j in keep], row_scores[keep]
            out_ids.append(list(row_ids[:k]))
            out_scores.append(row_scores[:k])
        return out_ids, out_scores

    def add(self, item_ids: Sequence[str], embeddings: np.ndarray) -> tuple[int, int]:
        """Adds items (or replaces the embedding of ids already indexed); returns (added, updated).

        ScaNN ``upsert`` appends to the searcher (brute force and tree-AH alike) without
        retraining: new items join the leaf of their nearest centroid. Many additions skew
        the partitions; re-export (which re-tunes) once the corpus has grown by ~10%.
        """
        embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
        item_ids = [str(i) for i in item_ids]
        _check_ids(item_ids, len(embeddings))
        if embeddings.shape[1] != self.dim:
            raise ValueError(f"new item embeddings are {embeddings.shape[1]}-d, the index is {self.dim}-d")
        known = self.searcher.docid_to_id
        updated_rows = [known[i] for i in item_ids if i in known]
        self.searcher.upsert(list(item_ids), embeddings)
        new_rows = len(item_ids) - len(updated_rows)
        updated = np.array([known[i] for i in item_ids], np.int64)
        grown = np.zeros((self.size, self.dim), np.float32)
        grown[: len(self.embeddings)] = self.embeddings
        grown[updated] = embeddings
        self.embeddings = grown
        return new_rows, len(updated_rows)

    def save(self, directory: str | os.PathLike) -> None:
        directory = pathlib.Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        # Relative asset paths: the folder is renamed (staging -> version) and copied afterwards.
        self.searcher.serialize(str(directory), relative_path=True)  # + scann_docids.pkl (row -> id)
        np.save(directory / EMBEDDINGS_FILE, self.embeddings)
        (directory / ITEM_IDS_FILE).write_text("".join(f"{i}\n" for i in self.item_ids))
        (directory / CONFIG_FILE).write_text(json.dumps(self.config.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "ItemIndex":
        directory = pathlib.Path(directory)
        config = IndexConfig.from_dict(json.loads((directory / CONFIG_FILE).read_text()))
        searcher = _scann().load_searcher(str(directory))
        embeddings = np.load(directory / EMBEDDINGS_FILE)
        if searcher.docids is None or len(searcher.docids) != len(embeddings):
            raise ValueError(f"{directory}: the searcher's item-id map does not match {EMBEDDINGS_FILE}")
        return cls(searcher, config, embeddings)


def _check_ids(item_ids: Sequence[str], n: int) -> None:
    if len(item_ids) != n:
        raise ValueError(f"{len(item_ids)} item ids for {n} embeddings")
    if len(set(item_ids)) != len(item_ids):
        seen, dups = set(), []
        for i in item_ids:
            if i in seen:
                dups.append(i)
            seen.add(i)
        raise ValueError(f"duplicate item ids: {dups[:5]}{' ...' if len(dups) > 5 else ''}")


# -- tuning ------------------------------------------------------------------------------------


def default_num_leaves(n: int) -> int:
    """The tree's partition count for n items: 2 sqrt(n) (~500 items a leaf at 1M), clamped to [16, 4000].

    Measured at 1M x 64 (the bench/serve_bench.py corpus), single-query, Recall@10 0.95:
    sqrt(N) = 1,000 leaves ~150 us a query, 2,000 ~87 us, 4,000 ~108 us (the centroid scan grows).
    """
    return int(min(max(round(2 * np.sqrt(n)), 16), 4000))


def _time_search(index: ItemIndex, queries: np.ndarray, k: int, leaves: int, reorder: int, repeats: int = 2) -> float:
    """Seconds per query, single-query calls (the serving pattern); best of ``repeats``."""
    best = float("inf")
    sample = queries[: min(len(queries), 200)]
    for _ in range(repeats):
        start = time.perf_counter()
        for q in sample:
            index.searcher.search(q, k, reorder, leaves)
        best = min(best, (time.perf_counter() - start) / len(sample))
    return best


def tune(
    embeddings: np.ndarray,
    item_ids: Sequence[str],
    queries: np.ndarray,
    *,
    target_recall: float = 0.95,
    k: int = 10,
    brute_force_below: int = BRUTE_FORCE_BELOW,
    num_leaves: int | None = None,
    reorder_grid: Sequence[int] = (0, 50, 100, 200, 400),
    log=print,
) -> tuple[ItemIndex, dict]:
    """Builds an index meeting ``target_recall`` Recall@k against exact search, as fast as possible.

    queries: [Q, D] held-out query embeddings, split in half: the first half chooses the
    config, the second half measures its recall (so the reported recall is not the one
    the choice was fitted to). Brute force below ``brute_force_below`` items.
    The tree is trained once; leaves-to-search and reordering depth are search-time knobs,
    so the grid costs searches, not rebuilds. For each reordering depth the fewest leaves
    that meet the target is found (recall grows with leaves), then the fastest pair wins.

    Returns (index, report): report has config, recall (held-out half), candidates tried.
    """
    embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    n = len(embeddings)
    if len(queries) < 2:
        raise ValueError("tuning needs at least 2 held-out queries")
    (choose_q, choose_exact), (check_q, check_exact) = _halves_with_exact(queries, embeddings, item_ids, k)

    def report(index: ItemIndex, recall: float, candidates: list[dict]) -> dict:
        return {
            "config": index.config.to_dict(),
            "recall": recall,
            "target_recall": target_recall,
            "k": k,
            "num_queries": len(check_q),
            "candidates": candidates,
        }

    if n < brute_force_below:
        index = ItemIndex.build(embeddings, item_ids, IndexConfig("brute_force", k=k))
        recall = recall_at_k(index.search(check_q, k)[0], check_exact)
        log(f"index: brute force over {n} items (< {brute_force_below}); Recall@{k} = {recall:.4f}")
        return index, report(index, recall, [])

    num_leaves = num_leaves or default_num_leaves(n)
    index = _train_tree(embeddings, item_ids, k, num_leaves, max(reorder_grid), log)
    candidates = _candidates(index, choose_q, choose_exact, k, num_leaves, reorder_grid, target_recall, log)
    # The held-out half must confirm the choice; if it falls short, step up the leaves.
    leaves, reorder, recall = _confirm(index, check_q, check_exact, k, candidates, num_leaves, target_recall)
    index.config.num_leaves_to_search = leaves
    index.config.reorder_num_neighbors = reorder
    log(f"index: chose {leaves}/{num_leaves} leaves, reorder {reorder}: held-out Recall@{k} = {recall:.4f}")
    return index, report(index, recall, candidates)


def _halves_with_exact(
    queries: np.ndarray, embeddings: np.ndarray, item_ids: Sequence[str], k: int
) -> tuple[tuple[np.ndarray, list[list[str]]], tuple[np.ndarray, list[list[str]]]]:
    """The held-out queries [Q, D] split in half, each half with its exact top-k item ids:
    ((choose [Q // 2, D], exact ids), (check [Q - Q // 2, D], exact ids)). The first half
    chooses the config, the second measures it."""
    half = len(queries) // 2
    exact_rows, _ = exact_top_k(queries, embeddings, k)
    ids = np.asarray([str(i) for i in item_ids], dtype=object)
    exact_ids = [list(ids[r]) for r in exact_rows]
    return (queries[:half], exact_ids[:half]), (queries[half:], exact_ids[half:])


def _train_tree(
    embeddings: np.ndarray, item_ids: Sequence[str], k: int, num_leaves: int, max_reorder: int, log
) -> ItemIndex:
    """A ``tree_ah`` index with ``num_leaves`` leaves, trained once. Its search-time knobs
    start at 1/50 of the leaves and reordering ``max_reorder`` neighbours; the tuning grid
    then searches with other values without rebuilding."""
    config = IndexConfig(
        "tree_ah",
        k=k,
        num_leaves=num_leaves,
        num_leaves_to_search=max(1, num_leaves // 50),
        reorder_num_neighbors=max_reorder,
    )
    start = time.perf_counter()
    index = ItemIndex.build(embeddings, item_ids, config)
    log(
        f"index: trained a {num_leaves}-leaf tree with AH over {len(embeddings)} items "
        f"in {time.perf_counter() - start:.1f}s"
    )
    return index


def _recall(index: ItemIndex, queries: np.ndarray, exact: list[list[str]], k: int, leaves: int, reorder: int) -> float:
    """Recall@k against exact search, searching ``leaves`` leaves and reordering ``reorder`` neighbours."""
    got, _ = index.search(queries, k, num_leaves_to_search=leaves, reorder_num_neighbors=max(reorder, k))
    return recall_at_k(got, exact)


def _candidates(
    index: ItemIndex,
    queries: np.ndarray,
    exact: list[list[str]],
    k: int,
    num_leaves: int,
    reorder_grid: Sequence[int],
    target_recall: float,
    log,
) -> list[dict]:
    """Per reordering depth, the fewest leaves that meet the target on ``queries``, and their search time."""
    leaf_grid = sorted(
        {
            max(1, int(round(num_leaves * f)))
            for f in (0.002, 0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0)
        }
    )
    candidates = []
    for reorder in reorder_grid:
        reorder = max(reorder, k)
        found = _fewest_leaves(
            lambda leaves, reorder=reorder: _recall(index, queries, exact, k, leaves, reorder), leaf_grid, target_recall
        )
        if found is None:
            continue
        leaves, r = found
        seconds = _time_search(index, queries, k, leaves, reorder)
        candidates.append(
            {
                "num_leaves_to_search": leaves,
                "reorder_num_neighbors": reorder,
                "recall": r,
                "ms_per_query": seconds * 1e3,
            }
        )
        log(f"index: reorder {reorder:4d}, leaves {leaves:5d}: Recall@{k} {r:.4f}, {seconds * 1e3:.3f} ms/query")
    if not candidates:
        raise RuntimeError(f"no ScaNN config reached Recall@{k} >= {target_recall}; lower the target")
    return candidates


def _confirm(
    index: ItemIndex,
    queries: np.ndarray,
    exact: list[list[str]],
    k: int,
    candidates: list[dict],
    num_leaves: int,
    target_recall: float,
) -> tuple[int, int, float]:
    """(leaves, reorder, held-out recall): the fastest candidate that the held-out half confirms;
    where it falls short, its leaves are stepped up (10% steps: the choice was fine-grained)."""
    for best in sorted(candidates, key=lambda c: c["ms_per_query"]):
        leaves, reorder = best["num_leaves_to_search"], best["reorder_num_neighbors"]
        recall = _recall(index, queries, exact, k, leaves, reorder)
        while recall < target_recall and leaves < num_leaves:
            leaves = min(num_leaves, max(leaves + 1, int(leaves * 1.1)))
            recall = _recall(index, queries, exact, k, leaves, reorder)
        if recall >= target_recall:
            break
    return leaves, reorder, recall


def _fewest_leaves(
    recall_of: Callable[[int], float], leaf_grid: Sequence[int], target_recall: float
) -> tuple[int, float] | None:
    """(the fewest leaves to search that meet ``target_recall``, their recall); None if no grid point does.

    Walks the grid up to its first point that meets the target, then bisects down from it: the
    grid is coarse (75 vs 50 leaves is 1.5x the search cost), and recall grows with the leaves.
    """
    below = 0  # the largest leaf count known to fall short of the target
    for leaves in leaf_grid:
        r = recall_of(leaves)
        if r < target_recall:
            below = leaves
            continue
        while leaves - below > 1:
            middle = (below + leaves) // 2
            r_middle = recall_of(middle)
            if r_middle >= target_recall:
                leaves, r = middle, r_middle
            else:
                below = middle
        return leaves, r  # r >= target_recall: the walk skipped the shortfalls, the bisection kept the target
    return None


# -- the versioned export layout ---------------------------------------------------------------


def versions(model_dir: str | os.PathLike, complete_only: bool = True) -> list[int]:
    """Version numbers under <export_dir>/<model_name>, ascending; complete = has a manifest."""
    model_dir = pathlib.Path(model_dir)
    if not model_dir.is_dir():
        return []
    found = []
    for child in model_dir.iterdir():
        if child.is_dir() and child.name.isdigit() and (not complete_only or (child / MANIFEST).is_file()):
            found.append(int(child.name))
    return sorted(found)


def latest_version_dir(model_dir: str | os.PathLike) -> pathlib.Path:
    """The highest complete version (a partially written export is never chosen)."""
    found = versions(model_dir)
    if not found:
        raise FileNotFoundError(f"{model_dir}: no complete export version (a numbered folder with {MANIFEST})")
    return pathlib.Path(model_dir) / str(found[-1])


def version_dir(model_dir: str | os.PathLike, version: int | None = None) -> pathlib.Path:
    if version is None:
        return latest_version_dir(model_dir)
    path = pathlib.Path(model_dir) / str(version)
    if not (path / MANIFEST).is_file():
        raise FileNotFoundError(f"{path}: no such complete export version; have {versions(model_dir)}")
    return path


def staging_dir(model_dir: str | os.PathLike, version: int) -> pathlib.Path:
    """A hidden temporary folder beside the versions; :func:`publish` renames it into place."""
    path = pathlib.Path(model_dir) / f".tmp-{version}-{uuid.uuid4().hex[:8]}"
    path.mkdir(parents=True)
    return path


def next_version(model_dir: str | os.PathLike) -> int:
    found = versions(model_dir, complete_only=False)
    return (found[-1] + 1) if found else 1


def publish(staging: pathlib.Path, model_dir: str | os.PathLike, version: int, manifest: dict) -> pathlib.Path:
    """Writes the manifest last, then renames the staging folder to <version> (atomic on one filesystem)."""
    tmp = staging / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, staging / MANIFEST)
    final = pathlib.Path(model_dir) / str(version)
    if final.exists():
        raise FileExistsError(f"{final} exists; export versions are immutable (pick another --version)")
    os.rename(staging, final)
    return final


def read_manifest(version_path: str | os.PathLike) -> dict:
    return json.loads((pathlib.Path(version_path) / MANIFEST).read_text())


def resolve_model_dir(export_dir: str | os.PathLike, model_name: str | None) -> pathlib.Path:
    """<export_dir>/<model_name>; without a name, the only model under export_dir."""
    export_dir = pathlib.Path(export_dir)
    if model_name:
        return export_dir / model_name
    names = sorted(p.name for p in export_dir.iterdir() if p.is_dir() and versions(p)) if export_dir.is_dir() else []
    if len(names) != 1:
        raise FileNotFoundError(f"{export_dir}: pass --model-name; exported models here: {names or 'none'}")
    return export_dir / names[0]
