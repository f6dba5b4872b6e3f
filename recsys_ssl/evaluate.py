"""Exact full-corpus retrieval metrics: Recall@K, MAP@K, and head / tail / popularity slices.

Two layers:

* a pure-numpy core (:func:`retrieval_metrics`, :func:`top_k`, :func:`popularity_order`,
  :func:`head_mask`, :func:`popularity_buckets`) that scores every query against every item
  of the corpus, in chunks of queries (one matmul + one partition per chunk);
* the model side that embeds the corpus and the test queries with a trained two-tower model
  and feeds the core: :func:`evaluate_arrays` (in-memory arrays), :func:`evaluate_model`
  (a dataset handle from ``recsys_ssl.datasets.inputs``), :func:`run` (load
  ``<run_dir>/train/<name>``, write ``eval/<name>/metrics.json``; the command line of
  ``recsys-ssl evaluate`` is :mod:`recsys_ssl.evaluate_cli`).

Definitions (``../shared/bench/PROTOCOL.md`` step 4, generalised):

* Score: cosine similarity (rows L2-normalised in float64 first; with ``normalize=False``
  the plain dot product of the given embeddings).
* Exclusions: items in a query's ``exclude`` set get score ``-inf`` and are never
  retrieved (user -> item: the user's training items; item -> item: the seed item itself).
  When fewer than K items remain, the list R_q is shorter than K.
* Ranking and ties: score descending, then item index ascending. Deterministic, and the same
  rule the brute-force reference in ``tests/test_evaluate.py`` uses.
* Queries: one per distinct query id of the test split, T_q = the *distinct* items of its
  test interactions (user -> item); or one per test pair, T_q = {its item} (``per_pair``,
  the default for item -> item, as in the paper's seed -> next-item evaluation).
* Recall@K = mean over queries of |R_q ∩ T_q| / |T_q|.
* MAP@K = mean over queries of AP@K, where
  ``AP@K = (1 / min(|T_q|, K)) * sum_{i=1..K} P@i * rel_i`` (P@i = hits among the first i
  retrieved, divided by i; rel_i = 1 when the i-th retrieved item is in T_q). The inner sum is
  accumulated left to right (rank 1 first).
* Means over queries use ``math.fsum`` (exactly rounded, independent of summation order).
* Slice recall@K for an item slice S (head, tail, a popularity decile) is the micro average
  ``sum_q |R_q ∩ T_q ∩ S| / sum_q |T_q ∩ S|`` over the test interactions whose item is in S.

Head / tail: items ranked by training count descending, then item id ascending (numeric
order when every id is an integer, else string order); the first ``floor(fraction * N)``
items are the head (``fraction`` 0.1 in the paper, 0.2 in PROTOCOL.md); items never seen in
training are tail. Training counts are computed from the dataset's ``train`` split (the
source of truth, the same definition as the statistics job's ``item_frequencies.tsv``,
which is cross-checked when present).
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import sys
import time
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from recsys_ssl import features as fs

DEFAULT_KS = (10, 50, 100)
PAPER_HEAD_FRACTION = 0.1  # the paper: head = top 10% most frequent items
PROTOCOL_HEAD_FRACTION = 0.2  # ../shared/bench/PROTOCOL.md: top 20% (336 of 1,682 items)
NUM_POPULARITY_BUCKETS = 10  # deciles, for the recall-by-popularity plot
TIE_RULE = "score desc, then item index asc"
# Scores materialised per chunk (queries x items); ~32 MB of float64.
_CHUNK_ELEMENTS = 4_000_000


# -- popularity, head and tail ------------------------------------------------------------


def _id_rank(item_ids: Sequence[Any]) -> np.ndarray:
    """rank[i] = position of item i when the ids are sorted ascending (numeric if all integers)."""
    ids = [x.decode() if isinstance(x, bytes) else str(x) for x in item_ids]
    try:
        keys = np.array([int(x) for x in ids], dtype=np.int64)
    except (ValueError, OverflowError):
        keys = np.array(ids, dtype=str)
    order = np.argsort(keys, kind="stable")
    rank = np.empty(len(ids), dtype=np.int64)
    rank[order] = np.arange(len(ids))
    return rank


def popularity_order(counts: Sequence[int] | np.ndarray, item_ids: Sequence[Any] | None = None) -> np.ndarray:
    """Item indices [N] from most to least popular: count desc, then item id asc.

    counts: [N] training count of each corpus item (0 for items unseen in training).
    item_ids: [N] the items' ids (str or bytes); None orders ties by index.
    """
    counts = np.asarray(counts, dtype=np.int64)
    tiebreak = np.arange(len(counts)) if item_ids is None else _id_rank(item_ids)
    if item_ids is not None and len(item_ids) != len(counts):
        raise ValueError(f"{len(item_ids)} item ids for {len(counts)} counts")
    return np.lexsort((tiebreak, -counts))


def head_item_count(num_items: int, fraction: float) -> int:
    """floor(fraction * num_items): 0.2 of 1,682 items -> 336, as in PROTOCOL.md."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"head fraction must be in [0, 1], got {fraction}")
    return int(math.floor(fraction * num_items + 1e-9))  # 1e-9: 0.29 * 100 is 28.999...


def head_mask(counts: Sequence[int] | np.ndarray, fraction: float, item_ids: Sequence[Any] | None = None) -> np.ndarray:
    """[N] bool: True for the head items (the first floor(fraction * N) by popularity)."""
    order = popularity_order(counts, item_ids)
    mask = np.zeros(len(order), dtype=bool)
    mask[order[: head_item_count(len(order), fraction)]] = True
    return mask


def popularity_buckets(
    counts: Sequence[int] | np.ndarray, item_ids: Sequence[Any] | None = None, num_buckets: int = NUM_POPULARITY_BUCKETS
) -> np.ndarray:
    """[N] int: each item's popularity bucket, 0 = most popular; bucket b holds the items at
    positions [b*N/B, (b+1)*N/B) of :func:`popularity_order` (sizes differ by at most one)."""
    order = popularity_order(counts, item_ids)
    buckets = np.empty(len(order), dtype=np.int64)
    buckets[order] = np.arange(len(order)) * num_buckets // max(len(order), 1)
    return buckets


def popularity_slices(
    counts: Sequence[int] | np.ndarray,
    item_ids: Sequence[Any] | None = None,
    head_fraction: float = PROTOCOL_HEAD_FRACTION,
    num_buckets: int = NUM_POPULARITY_BUCKETS,
) -> dict[str, np.ndarray]:
    """The standard slices: ``head`` / ``tail`` (``head_fraction``), both conventions'
    ``head_10pct`` / ``tail_10pct`` (the paper) and ``head_20pct`` / ``tail_20pct``
    (PROTOCOL.md), and ``popularity_00`` .. ``popularity_09`` (00 = most popular)."""
    head = head_mask(counts, head_fraction, item_ids)
    slices = {"head": head, "tail": ~head}
    for fraction in (PAPER_HEAD_FRACTION, PROTOCOL_HEAD_FRACTION):
        other = head_mask(counts, fraction, item_ids)
        slices[f"head_{round(fraction * 100)}pct"], slices[f"tail_{round(fraction * 100)}pct"] = other, ~other
    buckets = popularity_buckets(counts, item_ids, num_buckets)
    for b in range(num_buckets):
        slices[f"popularity_{b:02d}"] = buckets == b
    return slices


# -- top-k with a deterministic tie rule -----------------------------------------------------


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best items of each row, ordered by (score desc, item index asc).

    scores: [Q, N] float; ``-inf`` marks an excluded item. Returns (indices [Q, k] int64,
    valid [Q, k] bool); ``valid`` is False where a row ran out of non-excluded items.
    Cost: one ``np.partition`` per row plus a sort of the (usually k) candidates.
    """
    num_queries, num_items = scores.shape
    k = min(k, num_items)
    if np.isnan(scores).any():
        rows = np.unique(np.nonzero(np.isnan(scores))[0])
        raise ValueError(f"NaN scores for query rows {rows[:10].tolist()} (embeddings with NaN?)")
    indices = np.zeros((num_queries, k), np.int64)
    valid = np.zeros((num_queries, k), bool)
    if k == 0 or num_queries == 0:
        return indices, valid
    # The k-th largest score of each row: every item scoring at least that is a candidate.
    kth = np.partition(scores, num_items - k, axis=1)[:, num_items - k]
    candidates = scores >= kth[:, None]
    exact = candidates.sum(axis=1) == k
    if exact.any():
        # No tie at the threshold (the usual case): exactly k candidates, listed by index
        # ascending, so a stable sort on -score gives (score desc, index asc).
        everywhere = bool(exact.all())  # then skip copying the [Q, N] matrices
        exact_scores = scores if everywhere else scores[exact]
        cols = np.nonzero(candidates if everywhere else candidates[exact])[1].reshape(-1, k)
        values = np.take_along_axis(exact_scores, cols, axis=1)
        order = np.argsort(-values, axis=1, kind="stable")
        indices[exact] = np.take_along_axis(cols, order, axis=1)
        valid[exact] = np.take_along_axis(values, order, axis=1) > -np.inf
    if not exact.all():
        indices[~exact], valid[~exact] = _top_k_with_ties(scores[~exact], candidates[~exact], k)
    return indices, valid


def _top_k_with_ties(scores: np.ndarray, candidates: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows with more than k candidates (ties at the k-th score): order all, keep k."""
    num_queries = len(scores)
    rows, cols = np.nonzero(candidates)
    values = scores[rows, cols]
    order = np.lexsort((cols, -values, rows))
    rows, cols, values = rows[order], cols[order], values[order]
    starts = np.searchsorted(rows, np.arange(num_queries))
    position = np.arange(len(rows)) - starts[rows]
    keep = position < k
    indices = np.zeros((num_queries, k), np.int64)
    valid = np.zeros((num_queries, k), bool)
    indices[rows[keep], position[keep]] = cols[keep]
    valid[rows[keep], position[keep]] = values[keep] > -np.inf
    return indices, valid


# -- the metrics ---------------------------------------------------------------------------


def _flatten_sets(sets: Sequence[Iterable[int]], num_items: int, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-query item lists -> (query index, item index) arrays of distinct pairs, sorted."""
    arrays = [np.asarray(v if isinstance(v, np.ndarray) else list(v), dtype=np.int64).ravel() for v in sets]
    if not arrays:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    lengths = np.array([len(a) for a in arrays], dtype=np.int64)
    items = np.concatenate(arrays)
    rows = np.repeat(np.arange(len(arrays), dtype=np.int64), lengths)
    bad = (items < 0) | (items >= num_items)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{what}[{rows[first]}] has item index {items[first]}, outside the corpus of {num_items} items"
        )
    # One key per (query, item), sorted (by query, then item); repeats dropped. A plain sort
    # plus a neighbour comparison: faster here than np.unique's hashing.
    keys = np.sort(rows * num_items + items)
    keys = keys[np.concatenate(([True], keys[1:] != keys[:-1]))] if len(keys) else keys
    return keys // num_items, keys % num_items


def _normalized(x: np.ndarray, what: str) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if (norms == 0).any():
        raise ValueError(f"{what} row {int(np.nonzero(norms[:, 0] == 0)[0][0])} is all zeros: cosine is undefined")
    return x / norms


def retrieval_metrics(
    query_embeddings: np.ndarray,
    item_embeddings: np.ndarray,
    test_items: Sequence[Iterable[int]],
    exclude: Sequence[Iterable[int]] | None = None,
    slices: Mapping[str, np.ndarray] | None = None,
    ks: Sequence[int] = DEFAULT_KS,
    normalize: bool = True,
    chunk_size: int | None = None,
    return_per_query: bool = False,
) -> dict[str, Any]:
    """Exact full-corpus Recall@K and MAP@K (definitions in the module docstring).

    query_embeddings: [Q, D]; item_embeddings: [N, D] (any float dtype; scored in float64).
    test_items: Q sequences of item indices in [0, N) (duplicates count once; none empty).
    exclude: Q sequences of item indices never retrieved for that query (or None).
    slices: name -> [N] bool item mask; each gets a micro-averaged ``recall@K``.
    ks: cut-offs; chunk_size: queries scored per matmul (default: ~4M scores per chunk).
    Returns {"recall@K": float, "map@K": float, ..., "slices": {name: {"recall@K": float|None,
    "test_interactions": int, "items": int}}, "counts": {...}} plus, with
    ``return_per_query``, "per_query": {"hits@K": [Q] int, "ap@K": [Q] float}.
    """
    queries = np.asarray(query_embeddings, dtype=np.float64)
    items = np.asarray(item_embeddings, dtype=np.float64)
    ks, slices = _check_metric_inputs(queries, items, test_items, exclude, ks, slices)
    if normalize:
        queries, items = _normalized(queries, "query_embeddings"), _normalized(items, "item_embeddings")
    num_queries, num_items = len(queries), len(items)
    (test_rows, test_cols), test_sizes, (excl_rows, excl_cols) = _query_pairs(
        test_items, exclude, num_queries, num_items
    )
    # Column of the k-th rank for each cut-off (a cut-off beyond the corpus size is the corpus).
    kcols = {k: min(k, num_items) - 1 for k in ks}
    ranked = _rank(
        queries,
        items,
        (test_rows, test_cols),
        (excl_rows, excl_cols),
        kcols,
        chunk_size or max(1, _CHUNK_ELEMENTS // max(num_items, 1)),
    )
    result = _means_over_queries(ranked, test_sizes, ks, return_per_query)
    result["slices"] = {
        name: _slice_recall(np.asarray(mask, bool), kcols, test_cols, ranked) for name, mask in slices.items()
    }
    result["counts"] = {
        "queries": num_queries,
        "items": num_items,
        "test_interactions": int(len(test_rows)),
        "excluded_pairs": int(len(excl_rows)),
        # Test items that are also excluded can never be retrieved (they count as misses).
        "test_items_also_excluded": int(ranked.excluded_targets),
    }
    result["definition"] = {"ks": ks, "score": "cosine" if normalize else "dot", **METRIC_DEFINITIONS}
    return result


METRIC_DEFINITIONS = {
    "ties": TIE_RULE,
    "recall": "mean_q |R_q ∩ T_q| / |T_q|",
    "map": "mean_q (1/min(|T_q|,K)) sum_i P@i rel_i",
    "slice_recall": "sum_q |R_q ∩ T_q ∩ S| / sum_q |T_q ∩ S|",
}


def _query_pairs(
    test_items: Sequence[Iterable[int]], exclude: Sequence[Iterable[int]] | None, num_queries: int, num_items: int
) -> tuple[tuple[np.ndarray, np.ndarray], np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """(test pairs, test set sizes [Q], excluded pairs): the pairs as (query rows, item columns)
    of distinct pairs, sorted by row; ``exclude`` None gives no excluded pairs.

    Raises ValueError for an item index outside [0, num_items) or a query whose test set is
    empty (its recall would be 0 / 0).
    """
    test_rows, test_cols = _flatten_sets(test_items, num_items, "test_items")
    test_sizes = np.bincount(test_rows, minlength=num_queries)
    if num_queries and test_sizes.min() == 0:
        raise ValueError(f"query {int(np.argmin(test_sizes))} has an empty test set")
    no_exclusions = np.zeros(0, np.int64), np.zeros(0, np.int64)
    excluded = no_exclusions if exclude is None else _flatten_sets(exclude, num_items, "exclude")
    return (test_rows, test_cols), test_sizes, excluded


def _check_metric_inputs(
    queries: np.ndarray,
    items: np.ndarray,
    test_items: Sequence,
    exclude: Sequence | None,
    ks: Sequence[int],
    slices: Mapping[str, np.ndarray] | None,
) -> tuple[list[int], dict]:
    """``retrieval_metrics``' argument checks; returns the sorted distinct cut-offs and the slices."""
    if queries.ndim != 2 or items.ndim != 2 or queries.shape[1] != items.shape[1]:
        raise ValueError(f"need [Q, D] queries and [N, D] items, got {queries.shape} and {items.shape}")
    num_queries, num_items = len(queries), len(items)
    if len(test_items) != num_queries:
        raise ValueError(f"{len(test_items)} test sets for {num_queries} queries")
    if exclude is not None and len(exclude) != num_queries:
        raise ValueError(f"{len(exclude)} exclusion sets for {num_queries} queries")
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1:
        raise ValueError(f"cut-offs must be positive integers, got {ks}")
    slices = dict(slices or {})
    for name, mask in slices.items():
        if np.shape(mask) != (num_items,):
            raise ValueError(f"slice {name!r} mask has shape {np.shape(mask)}, expected ({num_items},)")
    return ks, slices


@dataclasses.dataclass
class _Ranked:
    """What ``_rank`` counts: per cut-off, hits and AP sums per query; every hit's item and rank."""

    hits: dict[int, np.ndarray]
    ap_sums: dict[int, np.ndarray]
    hit_items: np.ndarray
    hit_ranks: np.ndarray
    excluded_targets: int  # test items also excluded: never retrievable, so misses


def _rank(
    queries: np.ndarray,
    items: np.ndarray,
    test: tuple[np.ndarray, np.ndarray],
    excluded: tuple[np.ndarray, np.ndarray],
    kcols: Mapping[int, int],
    chunk: int,
) -> _Ranked:
    """Scores ``chunk`` queries at a time against every item and counts the hits in the top ranks.

    test / excluded: (query rows, item columns), sorted by row; ``kcols``: cut-off -> its rank column.
    """
    (test_rows, test_cols), (excl_rows, excl_cols) = test, excluded
    num_queries = len(queries)
    kmax = max(kcols.values()) + 1 if kcols else 0
    hits = {k: np.zeros(num_queries, np.int64) for k in kcols}
    ap_sums = {k: np.zeros(num_queries, np.float64) for k in kcols}
    hit_items, hit_ranks = [], []
    excluded_targets = 0
    test_starts = np.searchsorted(test_rows, np.arange(0, num_queries + chunk, chunk).clip(max=num_queries))
    excl_starts = np.searchsorted(excl_rows, np.arange(0, num_queries + chunk, chunk).clip(max=num_queries))
    for c, start in enumerate(range(0, num_queries, chunk)):
        stop = min(start + chunk, num_queries)
        scores = queries[start:stop] @ items.T
        e0, e1 = excl_starts[c], excl_starts[c + 1]
        scores[excl_rows[e0:e1] - start, excl_cols[e0:e1]] = -np.inf
        top, valid = top_k(scores, kmax)
        relevant = np.zeros(scores.shape, bool)
        t0, t1 = test_starts[c], test_starts[c + 1]
        relevant[test_rows[t0:t1] - start, test_cols[t0:t1]] = True
        excluded_targets += int(np.isneginf(scores[test_rows[t0:t1] - start, test_cols[t0:t1]]).sum())
        rel = relevant[np.arange(stop - start)[:, None], top] & valid  # [q, kmax]
        cum_hits = np.cumsum(rel, axis=1)
        precision = cum_hits / np.arange(1, kmax + 1)
        # cumsum accumulates left to right, so AP's sum is the same float as a rank-by-rank loop.
        cum_ap = np.cumsum(np.where(rel, precision, 0.0), axis=1)
        for k, col in kcols.items():
            hits[k][start:stop] = cum_hits[:, col]
            ap_sums[k][start:stop] = cum_ap[:, col]
        r, rank = np.nonzero(rel)
        hit_items.append(top[r, rank])
        hit_ranks.append(rank)
    return _Ranked(
        hits,
        ap_sums,
        np.concatenate(hit_items) if hit_items else np.zeros(0, np.int64),
        np.concatenate(hit_ranks) if hit_ranks else np.zeros(0, np.int64),
        excluded_targets,
    )


def _slice_recall(mask: np.ndarray, kcols: Mapping[int, int], test_cols: np.ndarray, ranked: _Ranked) -> dict[str, Any]:
    """A slice's micro-averaged recall@K (hits of slice items over test pairs of slice items)."""
    total = int(mask[test_cols].sum())
    entry: dict[str, Any] = {}
    for k, col in kcols.items():
        in_slice = int(mask[ranked.hit_items[ranked.hit_ranks <= col]].sum())
        entry[f"recall@{k}"] = in_slice / total if total else None
    entry["test_interactions"] = total
    entry["items"] = int(mask.sum())
    return entry


def _means_over_queries(
    ranked: _Ranked, test_sizes: np.ndarray, ks: Sequence[int], return_per_query: bool
) -> dict[str, Any]:
    """{"recall@K", "map@K"} for every cut-off: means over the Q queries (``math.fsum``; None
    when Q is 0), plus with ``return_per_query`` "per_query": {"hits@K": [Q], "ap@K": [Q]}.

    test_sizes: [Q] |T_q| (none zero); AP@K divides by min(|T_q|, K).
    """
    num_queries = len(test_sizes)
    result: dict[str, Any] = {}
    for k in ks:
        recall = ranked.hits[k] / test_sizes
        ap = ranked.ap_sums[k] / np.minimum(test_sizes, k)
        result[f"recall@{k}"] = math.fsum(recall) / num_queries if num_queries else None
        result[f"map@{k}"] = math.fsum(ap) / num_queries if num_queries else None
        if return_per_query:
            result.setdefault("per_query", {})[f"hits@{k}"] = ranked.hits[k]
            result["per_query"][f"ap@{k}"] = ap
    return result


# -- from interactions to queries (numpy; the model side below feeds it) ----------------------

USER_ITEM, ITEM_ITEM = "user-item", "item-item"
MODES = ("auto", USER_ITEM, ITEM_ITEM)


def resolve_mode(mode: str, query_key: str, item_key: str) -> str:
    """``auto``: item -> item when the query key names an item (``seed_<item_key>`` or the item key)."""
    if mode not in MODES:
        raise ValueError(f"mode {mode!r} is not one of {MODES}")
    if mode != "auto":
        return mode
    return ITEM_ITEM if query_key in (item_key, f"seed_{item_key}") else USER_ITEM


def group_by_query(
    query_keys: Sequence[Any], item_keys: Sequence[Any], item_index: Mapping[bytes, int]
) -> dict[str, Any]:
    """Groups interactions by query.

    query_keys, item_keys: [P] the pairs' query and item ids (bytes or str).
    item_index: item id (bytes) -> corpus index.
    Returns {"queries": [Q] distinct query ids (sorted), "first_pair": [Q] index of each
    query's first pair, "items": Q arrays of corpus indices (unknown items dropped),
    "unknown_items": number of pairs whose item is not in the corpus}.
    """
    query_keys = np.array([fs.as_bytes(k) for k in query_keys], dtype=object)
    items = np.array([item_index.get(fs.as_bytes(k), -1) for k in item_keys], dtype=np.int64)
    if len(query_keys) == 0:
        return {"queries": query_keys, "first_pair": np.zeros(0, np.int64), "items": [], "unknown_items": 0}
    queries, first, inverse = np.unique(query_keys, return_index=True, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    bounds = np.cumsum(np.bincount(inverse, minlength=len(queries)))[:-1]
    groups = [g[g >= 0] for g in np.split(items[order], bounds)]
    return {"queries": queries, "first_pair": first, "items": groups, "unknown_items": int((items < 0).sum())}


def prepare_queries(
    test_pairs: tuple[Sequence[Any], Sequence[Any]],
    train_pairs: tuple[Sequence[Any], Sequence[Any]],
    item_ids: Sequence[Any],
    mode: str,
    per_pair: bool = False,
) -> dict[str, Any]:
    """Test sets, exclusion sets and training counts for full-corpus evaluation.

    test_pairs / train_pairs: (query ids [P], item ids [P]); item_ids: [N] the corpus ids.
    mode: ``user-item`` excludes each query's training items; ``item-item`` excludes the
    seed item itself (the query id is an item id).
    per_pair: every test pair is its own query with one target (the paper's item -> item
      protocol) instead of one query per distinct query id with all its test items.
    Returns {"queries", "first_pair" (into test_pairs), "test_items", "exclude",
    "train_counts" [N], "dropped": {...}}; queries left without a known test item are dropped
    and counted, never silently.
    """
    item_keys = [fs.as_bytes(i) for i in item_ids]
    item_index = {key: n for n, key in enumerate(item_keys)}
    if len(item_index) != len(item_keys):
        raise ValueError(f"the item corpus has {len(item_keys) - len(item_index)} duplicate item ids")
    if per_pair:
        pair_items = np.array([item_index.get(fs.as_bytes(k), -1) for k in test_pairs[1]], dtype=np.int64)
        test = {
            "queries": np.array([fs.as_bytes(k) for k in test_pairs[0]], dtype=object),
            "first_pair": np.arange(len(pair_items)),
            "items": [pair_items[p : p + 1][pair_items[p : p + 1] >= 0] for p in range(len(pair_items))],
            "unknown_items": int((pair_items < 0).sum()),
        }
    else:
        test = group_by_query(*test_pairs, item_index)
    train = group_by_query(*train_pairs, item_index)
    # Every training pair counts (repeats included): the stats job's item_frequencies definition.
    train_items = np.concatenate(train["items"]) if train["items"] else np.zeros(0, np.int64)
    train_counts = np.bincount(train_items, minlength=len(item_keys))
    keep = np.array([len(items) > 0 for items in test["items"]], dtype=bool)
    queries = test["queries"][keep]
    test_items = [items for items, k in zip(test["items"], keep) if k]
    if mode == USER_ITEM:
        train_of = dict(zip(train["queries"].tolist(), train["items"]))
        exclude = [train_of.get(q, np.zeros(0, np.int64)) for q in queries.tolist()]
    elif mode == ITEM_ITEM:
        exclude = [
            np.array([item_index[q]], np.int64) if q in item_index else np.zeros(0, np.int64) for q in queries.tolist()
        ]
    else:
        raise ValueError(f"mode must be {USER_ITEM!r} or {ITEM_ITEM!r}, got {mode!r}")
    return {
        "queries": queries,
        "first_pair": test["first_pair"][keep],
        "test_items": test_items,
        "exclude": exclude,
        "train_counts": train_counts,
        "dropped": {
            "test_pairs_item_not_in_corpus": test["unknown_items"],
            "train_pairs_item_not_in_corpus": train["unknown_items"],
            "queries_without_known_test_item": int((~keep).sum()),
        },
    }


# -- the model side -----------------------------------------------------------------------------


def _embed(
    tower, features: Mapping[str, np.ndarray], rows: np.ndarray, batch_size: int, desc: str, quiet: bool = False
) -> np.ndarray:
    """tower(...) over the selected rows, batch by batch: [len(rows), D] float32."""
    from tqdm import tqdm

    from recsys_ssl.tf_setup import tf

    # One traced graph for every batch: an eager Keras __call__ re-walks the model's layers per
    # call (~0.3 s each for a 100k-item catalog's towers, measured: 32 of 37 s of embedding).
    # Kept on the tower, so evaluating the same model again (every epoch of early stopping)
    # reuses the trace instead of building a new function per call.
    call = getattr(tower, "_recsys_ssl_embed", None)
    if call is None:
        call = tf.function(lambda batch: tower(batch, training=False), reduce_retracing=True)
        tower._recsys_ssl_embed = call
    out = []
    for start in tqdm(
        range(0, len(rows), batch_size), desc=desc, unit="batch", leave=False, disable=quiet or len(rows) <= batch_size
    ):
        take = rows[start : start + batch_size]
        out.append(call({name: tf.constant(values[take]) for name, values in features.items()}).numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def embed_item_corpus(trained, spec, corpus: Mapping[str, np.ndarray], batch_size: int, quiet: bool) -> np.ndarray:
    """[N, D] item-tower embeddings of every corpus item, in corpus order (``corpus``: item
    feature -> [N] / [N, L] arrays, as :func:`evaluate_arrays` takes it)."""
    features = {f: np.asarray(corpus[f]) for f in spec.item_feature_names}
    rows = np.arange(len(corpus[spec.item_key]))
    return _embed(trained.model.item_tower, features, rows, batch_size, "embed items", quiet)


def embed_test_queries(
    trained, spec, test_pairs: Mapping[str, np.ndarray], first_pair: np.ndarray, batch_size: int, quiet: bool
) -> np.ndarray:
    """[Q, D] query-tower embeddings: query q is embedded from the features of test pair
    ``first_pair[q]`` (``test_pairs``: query feature -> [T] / [T, L] arrays)."""
    features = {f: np.asarray(test_pairs[f]) for f in spec.query_feature_names}
    return _embed(trained.model.query_tower, features, first_pair, batch_size, "embed queries", quiet)


def _stats_agreement(stats_dir: str | pathlib.Path | None, item_ids: Sequence[bytes], counts: np.ndarray) -> str:
    """Cross-checks the train counts against the statistics job's item_frequencies.tsv."""
    from recsys_ssl import artifacts

    if stats_dir is None or not artifacts.exists(artifacts.join(stats_dir, artifacts.ITEM_FREQUENCIES)):
        return "no stats artifact"
    frequencies = artifacts.read_item_frequencies(stats_dir)
    mismatched = [i.decode() for i, c in zip(item_ids, counts) if frequencies.get(i.decode()) != int(c)]
    if mismatched:
        print(
            f"warning: {len(mismatched)} items' training counts differ from {stats_dir}/item_frequencies.tsv "
            f"(e.g. {mismatched[:3]}); the evaluation uses the counts of the dataset's train split",
            file=sys.stderr,
        )
        return f"differs for {len(mismatched)} items"
    return "agrees"


def evaluate_model(
    trained,
    dataset,
    split: str = "test",
    *,
    ks: Sequence[int] = DEFAULT_KS,
    head_fraction: float = PROTOCOL_HEAD_FRACTION,
    mode: str = "auto",
    batch_size: int = 1024,
    stats_dir: str | pathlib.Path | None = None,
    num_buckets: int = NUM_POPULARITY_BUCKETS,
    per_pair: bool | None = None,
) -> dict[str, Any]:
    """Embeds the whole corpus and every test query with a trained model, then scores exactly.

    trained: ``checkpoints.load_trained(...)`` (``.model.query_tower`` / ``.model.item_tower``).
    dataset: ``inputs.load_dataset(...)`` handle (``.spec``, ``.items()``, ``.pairs(split)``).
    Reads the corpus, the ``train`` split (popularity, exclusions) and ``split`` once each,
    then calls :func:`evaluate_arrays`.
    """
    from recsys_ssl.datasets import inputs

    spec = dataset.spec
    started = time.perf_counter()
    corpus = inputs.collect_columns(
        inputs.batch(dataset.items(), spec, batch_size, features=spec.item_feature_names), spec.item_feature_names
    )
    train = dataset.pair_columns("train", [spec.query_key, spec.item_key])
    test = dataset.pair_columns(split, list(dict.fromkeys(spec.query_feature_names + [spec.item_key])))
    result = evaluate_arrays(
        trained,
        spec,
        corpus,
        (train[spec.query_key], train[spec.item_key]),
        test,
        ks=ks,
        head_fraction=head_fraction,
        mode=mode,
        batch_size=batch_size,
        stats_dir=stats_dir,
        num_buckets=num_buckets,
        per_pair=per_pair,
    )
    result.update(dataset=getattr(dataset, "name", None), split=split, seconds=round(time.perf_counter() - started, 3))
    return result


def evaluate_arrays(
    trained,
    spec,
    corpus: Mapping[str, np.ndarray],
    train_pairs: tuple[Sequence[Any], Sequence[Any]],
    test_pairs: Mapping[str, np.ndarray],
    *,
    ks: Sequence[int] = DEFAULT_KS,
    head_fraction: float = PROTOCOL_HEAD_FRACTION,
    mode: str = "auto",
    batch_size: int = 1024,
    stats_dir: str | pathlib.Path | None = None,
    num_buckets: int = NUM_POPULARITY_BUCKETS,
    per_pair: bool | None = None,
    quiet: bool = False,
) -> dict[str, Any]:
    """The model side on in-memory arrays (the layout ``inputs.batch`` gives, concatenated).

    corpus: item feature -> [N] bytes or [N, L] bytes padded with b"" (each item once).
    train_pairs: (query ids [P], item ids [P]) of the ``train`` split: popularity (head /
      tail / deciles) and user -> item exclusions; also for a model trained on
      ``train_10pct`` (same test set, same slices).
    test_pairs: every query feature and the item key -> [T] / [T, L] arrays.
    Queries are the distinct values of ``spec.query_key`` among the test pairs; a query's
    features are those of its first pair. ``per_pair`` (None: True for item -> item, the
    paper's protocol) makes every test pair its own query instead. Returns :func:`retrieval_metrics`' dict plus
    "mode", "head_fraction", "head_items", "dropped", "popularity_source",
    "stats_item_frequencies", "seconds".
    """
    query_key, item_key = spec.query_key, spec.item_key
    mode = resolve_mode(mode, query_key, item_key)
    started = time.perf_counter()
    item_ids = list(corpus[item_key])
    item_embeddings = embed_item_corpus(trained, spec, corpus, batch_size, quiet)
    per_pair = mode == ITEM_ITEM if per_pair is None else per_pair
    prepared = prepare_queries((test_pairs[query_key], test_pairs[item_key]), train_pairs, item_ids, mode, per_pair)
    query_embeddings = embed_test_queries(trained, spec, test_pairs, prepared["first_pair"], batch_size, quiet)
    slices = popularity_slices(prepared["train_counts"], item_ids, head_fraction, num_buckets)
    result = retrieval_metrics(
        query_embeddings, item_embeddings, prepared["test_items"], prepared["exclude"], slices, ks=ks
    )
    for name, count in prepared["dropped"].items():
        if count and not quiet:
            print(f"warning: {count} {name.replace('_', ' ')} (not evaluated)", file=sys.stderr)
    result.update(
        mode=mode,
        per_pair=per_pair,
        head_fraction=head_fraction,
        head_items=int(slices["head"].sum()),
        dropped=prepared["dropped"],
        popularity_source="train split",
        stats_item_frequencies=_stats_agreement(
            stats_dir, [fs.as_bytes(i) for i in item_ids], prepared["train_counts"]
        ),
        seconds=round(time.perf_counter() - started, 3),
    )
    return result


# -- reporting and the CLI ------------------------------------------------------------------


def format_table(
    metrics: Mapping[str, Any] | None = None, *, by_method: Mapping[str, Mapping[str, Any]] | None = None
) -> str:
    """A plain-text table: rows overall / head / tail, columns Recall@K (and MAP@K overall).

    ``by_method`` (name -> metrics; ``metrics`` is then ignored): the rows of every method,
    under a leading method column, at the K of the first one.
    """
    named = dict(by_method) if by_method else {"": metrics}
    ks = next(iter(named.values()))["definition"]["ks"]
    columns = [f"recall@{k}" for k in ks] + [f"map@{k}" for k in ks]
    width = max(len("method"), *map(len, named))

    def method_cell(name: str) -> str:
        return f"{name:<{width}} " if by_method else ""

    lines = [method_cell("method") + f"{'slice':<8} {'pairs':>8} " + " ".join(f"{c:>10}" for c in columns)]
    for method, values in named.items():
        rows = [("overall", values, values["counts"]["test_interactions"])]
        for name in ("head", "tail"):
            if name in values.get("slices", {}):
                rows.append((name, values["slices"][name], values["slices"][name]["test_interactions"]))
        for name, row, pairs in rows:
            cells = [f"{row[c]:>10.4f}" if row.get(c) is not None else f"{'-':>10}" for c in columns]
            lines.append(method_cell(method) + f"{name:<8} {pairs:>8} " + " ".join(cells))
    return "\n".join(lines)


def to_json(metrics: Mapping[str, Any]) -> str:
    def default(value):
        if isinstance(value, np.ndarray):
            return value.tolist()
        if isinstance(value, np.generic):
            return value.item()
        return str(value)

    return json.dumps(metrics, indent=1, default=default) + "\n"


def write_metrics(run_dir: str | pathlib.Path, name: str, metrics: Mapping[str, Any]) -> pathlib.Path:
    """Writes <run_dir>/eval/<name>/metrics.json atomically (a resumable grid trusts its presence)."""
    from recsys_ssl import artifacts
    from recsys_ssl.paths import RunLayout

    path = RunLayout(run_dir).eval(name) / "metrics.json"
    artifacts.write_text(path, to_json(metrics))
    return path


def run(
    run_dir: str | pathlib.Path,
    name: str,
    *,
    split: str = "test",
    ks: Sequence[int] = DEFAULT_KS,
    head_fraction: float = PROTOCOL_HEAD_FRACTION,
    mode: str = "auto",
    dataset_name: str | None = None,
    raw_data_dir: str | None = None,
    batch_size: int = 1024,
    per_pair: bool | None = None,
    extend: Callable[[dict[str, Any], Any, str], Any] | None = None,
) -> dict[str, Any]:
    """Loads <run_dir>/train/<name>, evaluates it on its dataset, writes eval/<name>/metrics.json.

    extend(metrics, dataset, split): adds to the metrics before they are written, e.g.
    ``oracle.attach`` (the synthetic catalog's oracle: keys ``oracle``, ``share_of_oracle``).
    """
    from recsys_ssl.checkpoints import load_trained
    from recsys_ssl.datasets import inputs
    from recsys_ssl.paths import RunLayout, tfds_dir

    trained = load_trained(run_dir, name)
    dataset_name = dataset_name or trained.config.dataset
    dataset = inputs.load_dataset(dataset_name, data_dir=str(tfds_dir(run_dir)), raw_data_dir=raw_data_dir)
    metrics = evaluate_model(
        trained,
        dataset,
        split,
        ks=ks,
        head_fraction=head_fraction,
        mode=mode,
        batch_size=batch_size,
        stats_dir=RunLayout(run_dir).stats,
        per_pair=per_pair,
    )
    metrics["name"] = name
    metrics["config"] = trained.config.to_dict()
    if extend is not None:
        extend(metrics, dataset, split)
    write_metrics(run_dir, name, metrics)
    return metrics
