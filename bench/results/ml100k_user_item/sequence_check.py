"""A non-learned check of the sequence signal on MovieLens-100K (PROTOCOL.md split, test set).

Why it exists: it is the measurement behind the ``user_recent_movie_ids`` query feature. Each of
a user's last ``--last`` train movies votes (weight ``decay**age``) for the movies rated within
``--window`` positions of it in every user's train sequence; votes are divided by
(train count + 1)**beta (a popularity discount). Round 1's models could not see recency and
stayed below this.

    .venv/bin/python bench/results/ml100k_user_item/sequence_check.py [--data-dir ../shared/data] [--validation]

Prints Recall@50 overall / head / tail (head = top 20% by train count) for a few settings, and
for the most-popular ranker (no personalisation: every user gets the most frequent unseen
movies) with counts from ``train`` and from ``train_10pct``, the reference a 10%-data model
has to beat; and for an item -> item ranker learned from the pairs of one split alone (each
pair's history votes for its target), which shows how much a 10%-data model could learn.
"""

from __future__ import annotations

import argparse

import numpy as np

from recsys_ssl import evaluate, paths
from recsys_ssl.datasets import _common, movielens


def train_sequences(raw: movielens.RawMovieLens) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per user (row order): train movie rows in protocol order, and test movie rows."""
    order, is_test, _ = _common.temporal_split(raw.user_rows, raw.timestamps, raw.item_ids[raw.item_rows])
    num_users = len(raw.users["user_id"])
    train = [[] for _ in range(num_users)]
    test = [[] for _ in range(num_users)]
    for index in order:
        (test if is_test[index] else train)[raw.user_rows[index]].append(raw.item_rows[index])
    return [np.asarray(s, np.int64) for s in train], [np.asarray(s, np.int64) for s in test]


def co_occurrence(train: list[np.ndarray], num_items: int, window: int) -> np.ndarray:
    """[N, N] counts of (a, b) rated within ``window`` positions of each other in one train sequence."""
    counts = np.zeros((num_items, num_items), np.float32)
    for seq in train:
        for offset in range(1, window + 1):
            a, b = seq[:-offset], seq[offset:]
            np.add.at(counts, (a, b), 1.0)
            np.add.at(counts, (b, a), 1.0)
    return counts


def pair_co_occurrence(table, rows: np.ndarray, item_ids: np.ndarray, last: int = 5) -> np.ndarray:
    """[N, N]: each pair (in ``rows``) adds 0.9**age to (history movie, target) for its last movies."""
    row_of = {str(item): row for row, item in enumerate(item_ids)}
    counts = np.zeros((len(item_ids), len(item_ids)), np.float64)
    for pair in rows:
        history = table.pair_columns[movielens.RECENT_FEATURE][pair][:last]  # movie-id strings, newest first
        for age, movie in enumerate(history):
            counts[row_of[movie], table.item_rows[pair]] += 0.9**age
    return counts


def recency_votes(train: list[np.ndarray], users: list[int], votes_of: np.ndarray, last: int) -> np.ndarray:
    """[Q, N]: each user's last ``last`` train movies vote with their rows of ``votes_of``, weight 0.9**age."""
    return np.stack(
        [(0.9 ** np.arange(len(recent))) @ votes_of[recent] for recent in (train[u][::-1][:last] for u in users)]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None, help="raw data root (default: $RECSYS_SSL_DATA or ../shared/data)")
    parser.add_argument(
        "--validation",
        action="store_true",
        help="score the validation carve-out (the protocol's train part split again) instead of test",
    )
    args = parser.parse_args()
    raw = movielens.read_raw("100k", paths.raw_data_root(args.data_dir) / movielens.RAW_DIRS["100k"])
    if args.validation:
        raw = movielens.train_part(raw)
    train, test = train_sequences(raw)
    num_items = len(raw.item_ids)
    counts = np.bincount(np.concatenate(train), minlength=num_items)
    head = evaluate.head_mask(counts, 0.2, raw.item_ids)
    users = [u for u in range(len(train)) if len(test[u])]

    def report(label: str, scores: np.ndarray) -> None:
        # Scores as [Q, N] "embeddings" against the identity: the evaluator's top-K, exclusions and slices.
        metrics = evaluate.retrieval_metrics(
            scores,
            np.eye(num_items),
            [test[u] for u in users],
            [train[u] for u in users],
            {"head": head, "tail": ~head},
            ks=(50,),
            normalize=False,
        )
        print(
            f"{label}: Recall@50 {metrics['recall@50']:.4f} "
            f"head {metrics['slices']['head']['recall@50']:.4f} tail {metrics['slices']['tail']['recall@50']:.4f}"
        )

    # Most popular: scores = training counts (of train, or of the 10% sample models see at 10% data).
    table = movielens.user_item_pairs(raw)
    for split in ("train", "train_10pct"):
        rows = table.item_rows[table.splits[split]]
        split_counts = np.bincount(rows, minlength=num_items).astype(np.float64)
        report(f"most popular ({split:11s} counts, {len(rows)} pairs)", np.tile(split_counts, (len(users), 1)))
        # The split's pairs alone: their histories vote for their targets (no popularity discount).
        learned = pair_co_occurrence(table, table.splits[split], raw.item_ids)
        report(
            f"pair history -> target ({split:11s})",
            recency_votes(train, users, learned, 5) + 1e-6 * split_counts[None, :],
        )
    cooc = {w: co_occurrence(train, num_items, w) for w in (10, 30)}
    for window, last, beta in ((10, 5, 0.0), (10, 5, 0.5), (10, 10, 0.5), (30, 5, 0.5)):
        votes = recency_votes(train, users, cooc[window], last)
        report(f"window {window:2d} last {last:2d} beta {beta:.1f}", votes / np.power(counts + 1.0, beta)[None, :])


if __name__ == "__main__":
    main()
