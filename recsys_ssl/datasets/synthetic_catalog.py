"""``synthetic_catalog``: a generated app-store-like catalog with planted feature groups.

The generator is numpy-vectorised (a million items in seconds); the TFDS builder below
writes it. Everything is deterministic given ``seed``.

**Items.** Ten categorical item features besides ``item_id``, two of them multi-valued,
with three planted groups of correlated features (``PLANTED_GROUPS``)::

    catalog:  category -> subcategory -> developer, and tags drawn mostly from the category's pool
    locale:   country -> language
    pricing:  price_bucket -> monetization

``title_tokens`` and ``release_year`` are independent of everything. Each dependency is
strong (e.g. 85% of items take a subcategory of their category) but never a copy, so the
mutual information job has something to find: over the 10k corpus each planted feature's
top-MI partner (``item_id`` excluded) is in its own group.

**Pairs.** Each feature value has a latent vector; an item's latent is the sum of its
values' latents (multi-valued: the mean) plus a little per-item noise; a query's latent is
its segment's plus its country's (the same table as the items' ``country``) plus noise.
For each pair the item is drawn from a Zipf law over popularity ranks, p(rank r) ∝ r^-s,
ranks given to items by a random permutation; then the query from
p(q | item) ∝ exp(<z_q, x_item> / T), T = ``TEMPERATURE``. So the item marginal is exactly Zipf(s), and
p(item | query) ∝ p(item) exp(<z_q, x_item>/T) / Z(x_item) (Z sums over all queries) depends
on the item only through its popularity and its features' latents: tail items are learnable
from features. Timestamps are uniform over one year. The law is closed-form, so the generator
knows p(item | query) exactly: ``recsys_ssl/oracle.py`` scores it like a model (docs/evaluation.md).

**Settings.** ``temperature``, ``item_noise``, ``query_noise`` and ``unit_queries`` (query
latents scaled to norm 1) are config fields; the size configs use the defaults above. The
``oracle_10k`` / ``oracle_100k`` configs use ``ORACLE_SETTING`` (T = 0.03, unit queries, item
noise 0.1): a peaky p(q | item), so the true p(item | query) retrieves tail items (oracle tail
Recall@50 .59 / .34 against .11 / .002), with the same items, Zipf law and ranks.

**Split.** Per query, the latest ceil(20%) pairs by (timestamp, item id) are ``test``,
the rest ``train``; ``train_10pct`` is a uniform 10% sample of ``train`` (same test set).

**Memory.** ``generate_pairs`` returns whole arrays (the oracle, the tests, the TFDS and Beam
writers use them). The fast writer's build (``SyntheticCatalog.read``) takes :func:`spill_pairs`
instead: the same pairs and split, drawn in pieces and kept on disk (datasets/spilled_pairs.py),
so its memory does not grow with the number of pairs.
"""

from __future__ import annotations

import dataclasses
import os
import zlib
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from recsys_ssl import features as features_lib
from recsys_ssl import paths
from recsys_ssl.datasets import _common, spilled_pairs, template

SPEC_NAME = "synthetic_catalog"
PLANTED_GROUPS: list[list[str]] = [
    ["category", "subcategory", "developer", "tags"],
    ["country", "language"],
    ["price_bucket", "monetization"],
]
INDEPENDENT_FEATURES = ["title_tokens", "release_year"]
ITEM_FEATURES = [
    "item_id",
    "category",
    "subcategory",
    "developer",
    "tags",
    "title_tokens",
    "country",
    "language",
    "price_bucket",
    "monetization",
    "release_year",
]
MULTI_VALUED = ("tags", "title_tokens")
QUERY_FEATURES = ["query_id", "query_segment", "query_country"]

NUM_CATEGORIES = 16
SUBCATEGORIES_PER_CATEGORY = 5
NUM_TAGS = 120
TAGS_PER_CATEGORY = 8
NUM_WORDS = 400
COUNTRIES = ["US", "IN", "BR", "DE", "JP", "GB", "FR", "MX", "KR", "ID", "ES", "IT"]
LANGUAGES = ["en", "hi", "pt", "de", "ja", "fr", "es", "ko", "id", "it"]
MAIN_LANGUAGE = {
    "US": "en",
    "IN": "hi",
    "BR": "pt",
    "DE": "de",
    "JP": "ja",
    "GB": "en",
    "FR": "fr",
    "MX": "es",
    "KR": "ko",
    "ID": "id",
    "ES": "es",
    "IT": "it",
}
PRICE_BUCKETS = ["free", "0-1", "1-3", "3-10", "10-30", "30+"]
PRICE_PROBS = [0.45, 0.15, 0.15, 0.12, 0.08, 0.05]
MONETIZATIONS = ["ads", "freemium", "paid", "subscription"]
# p(monetization | price bucket): free items live on ads / in-app purchases, paid ones are sold.
MONETIZATION_GIVEN_PRICE = np.array(
    [
        [0.50, 0.40, 0.04, 0.06],
        [0.06, 0.14, 0.65, 0.15],
        [0.05, 0.10, 0.65, 0.20],
        [0.04, 0.08, 0.58, 0.30],
        [0.03, 0.05, 0.52, 0.40],
        [0.02, 0.04, 0.44, 0.50],
    ]
)
YEARS = [str(y) for y in range(2000, 2025)]
NUM_SEGMENTS = 20

# How strongly each planted dependency holds (the rest is drawn uniformly).
P_SUBCATEGORY_IN_CATEGORY = 0.85
P_DEVELOPER_IN_SUBCATEGORY = 0.8
P_TAG_FROM_CATEGORY = 0.8
P_MAIN_LANGUAGE = 0.8

LATENT_DIM = 16
# Weight of each feature's value latents in the item latent: category-level features dominate.
LATENT_WEIGHTS = {
    "category": 1.0,
    "subcategory": 0.8,
    "developer": 0.6,
    "tags": 0.8,
    "title_tokens": 0.3,
    "country": 0.8,
    "language": 0.4,
    "price_bucket": 0.5,
    "monetization": 0.3,
    "release_year": 0.3,
}
ITEM_NOISE = 0.3
QUERY_NOISE = 0.5
TEMPERATURE = 0.3
TIME_START = 1_600_000_000
TIME_SPAN = 365 * 24 * 3600
LATENT_SLICE = 1 << 16  # item rows per step of item_latents (bounds its memory)


def _zipf_probs(n: int, exponent: float) -> np.ndarray:
    weights = np.arange(1, n + 1, dtype=np.float64) ** -float(exponent)
    return weights / weights.sum()


def _names(prefix: str, n: int, width: int) -> np.ndarray:
    return np.array([f"{prefix}{i:0{width}d}".encode() for i in range(n)], dtype=object)


def _mixture(rng: np.random.Generator, planted: np.ndarray, uniform_size: int, p_planted: float) -> np.ndarray:
    """planted codes with probability p_planted, else a uniform code in [0, uniform_size)."""
    keep = rng.random(len(planted)) < p_planted
    return np.where(keep, planted, rng.integers(0, uniform_size, len(planted)))


def _bags(rng: np.random.Generator, lengths: np.ndarray, codes: np.ndarray, vocab: np.ndarray) -> np.ndarray:
    """Object array of lists of bytes: item i gets codes[offsets[i]:offsets[i]+lengths[i]], deduplicated."""
    rows = np.repeat(np.arange(len(lengths)), lengths)
    # Drop repeated codes within an item (keeping first occurrences, in order), vectorised.
    order = np.lexsort((np.arange(len(codes)), codes, rows))
    repeated = np.zeros(len(codes), dtype=bool)
    repeated[order[1:]] = (rows[order][1:] == rows[order][:-1]) & (codes[order][1:] == codes[order][:-1])
    keep = ~repeated
    flat = vocab[codes[keep]].tolist()
    ends = np.cumsum(np.bincount(rows[keep], minlength=len(lengths))).tolist()
    out = np.empty(len(lengths), dtype=object)
    out[:] = [flat[s:e] for s, e in zip([0] + ends[:-1], ends)]
    return out


def generate_items(num_items: int, seed: int = 0) -> dict[str, np.ndarray]:
    """The item corpus, feature -> [num_items] object array.

    Single-valued features hold bytes, multi-valued ones (``tags``, ``title_tokens``) lists of
    bytes: the layout of ``inputs.Dataset.item_arrays()``. Items are in ``item_id`` order.
    """
    rng = np.random.default_rng([seed, 0])
    n = int(num_items)
    num_subcategories = NUM_CATEGORIES * SUBCATEGORIES_PER_CATEGORY
    # Larger catalogs have more developers (about 1 per 3k items and subcategory), at least 3.
    developers_per_sub = max(3, n // 3000)
    num_developers = num_subcategories * developers_per_sub

    category = rng.choice(NUM_CATEGORIES, size=n, p=_zipf_probs(NUM_CATEGORIES, 0.7))
    own_sub = category * SUBCATEGORIES_PER_CATEGORY + rng.choice(
        SUBCATEGORIES_PER_CATEGORY, size=n, p=_zipf_probs(SUBCATEGORIES_PER_CATEGORY, 0.8)
    )
    subcategory = _mixture(rng, own_sub, num_subcategories, P_SUBCATEGORY_IN_CATEGORY)
    own_dev = subcategory * developers_per_sub + rng.choice(
        developers_per_sub, size=n, p=_zipf_probs(developers_per_sub, 1.0)
    )
    developer = _mixture(rng, own_dev, num_developers, P_DEVELOPER_IN_SUBCATEGORY)

    # Each category owns a pool of tags (pools of different categories may overlap).
    tag_pools = np.stack([rng.choice(NUM_TAGS, size=TAGS_PER_CATEGORY, replace=False) for _ in range(NUM_CATEGORIES)])
    tag_lengths = 1 + rng.binomial(4, 0.4, size=n)
    tag_owner = np.repeat(category, tag_lengths)
    pool_codes = tag_pools[
        tag_owner, rng.choice(TAGS_PER_CATEGORY, size=len(tag_owner), p=_zipf_probs(TAGS_PER_CATEGORY, 0.5))
    ]
    tag_codes = _mixture(rng, pool_codes, NUM_TAGS, P_TAG_FROM_CATEGORY)

    word_lengths = 1 + rng.binomial(3, 0.5, size=n)
    word_codes = rng.choice(NUM_WORDS, size=int(word_lengths.sum()), p=_zipf_probs(NUM_WORDS, 1.1))

    country = rng.choice(len(COUNTRIES), size=n, p=_zipf_probs(len(COUNTRIES), 0.9))
    main_language = np.array([LANGUAGES.index(MAIN_LANGUAGE[c]) for c in COUNTRIES])[country]
    language = _mixture(rng, main_language, len(LANGUAGES), P_MAIN_LANGUAGE)

    price = rng.choice(len(PRICE_BUCKETS), size=n, p=PRICE_PROBS)
    cdf = np.cumsum(MONETIZATION_GIVEN_PRICE, axis=1)[price]
    monetization = np.minimum((rng.random(n)[:, None] > cdf).sum(axis=1), len(MONETIZATIONS) - 1)
    year = rng.integers(0, len(YEARS), size=n)

    bytes_of = lambda values: np.array([v.encode() for v in values], dtype=object)  # noqa: E731
    return {
        "item_id": _names("item_", n, 7),
        "category": _names("cat_", NUM_CATEGORIES, 2)[category],
        "subcategory": _names("sub_", num_subcategories, 3)[subcategory],
        "developer": _names("dev_", num_developers, 5)[developer],
        "tags": _bags(rng, tag_lengths, tag_codes, _names("tag_", NUM_TAGS, 3)),
        "title_tokens": _bags(rng, word_lengths, word_codes, _names("w", NUM_WORDS, 3)),
        "country": bytes_of(COUNTRIES)[country],
        "language": bytes_of(LANGUAGES)[language],
        "price_bucket": bytes_of(PRICE_BUCKETS)[price],
        "monetization": bytes_of(MONETIZATIONS)[monetization],
        "release_year": bytes_of(YEARS)[year],
    }


def generate_queries(num_queries: int, seed: int = 0) -> dict[str, np.ndarray]:
    """The queries (users), feature -> [num_queries] object array of bytes."""
    rng = np.random.default_rng([seed, 1])
    segment = rng.choice(NUM_SEGMENTS, size=num_queries, p=_zipf_probs(NUM_SEGMENTS, 0.5))
    country = rng.choice(len(COUNTRIES), size=num_queries, p=_zipf_probs(len(COUNTRIES), 0.9))
    return {
        "query_id": _names("q_", num_queries, 6),
        "query_segment": _names("seg_", NUM_SEGMENTS, 2)[segment],
        "query_country": np.array([c.encode() for c in COUNTRIES], dtype=object)[country],
    }


def _value_latents(seed: int, table: str, values: np.ndarray, weight: float) -> np.ndarray:
    """[len(values), LATENT_DIM]: each value's latent, a function of (seed, table, value) only."""
    out = np.empty((len(values), LATENT_DIM))
    for i, value in enumerate(values):
        rng = np.random.default_rng([seed, 2, zlib.crc32(table.encode()), zlib.crc32(value)])
        out[i] = rng.normal(0.0, weight / np.sqrt(LATENT_DIM), LATENT_DIM)
    return out


def _single_latents(seed: int, table: str, column: np.ndarray, weight: float) -> np.ndarray:
    values, codes = np.unique(column.astype(bytes), return_inverse=True)
    return _value_latents(seed, table, values, weight)[codes.ravel()]


def _add_single_latents(x: np.ndarray, seed: int, table: str, column: np.ndarray, weight: float) -> None:
    """x += _single_latents(...), in row slices (the [rows, 16] float64 addend is never whole)."""
    values, codes = np.unique(column.astype(bytes), return_inverse=True)
    latents, codes = _value_latents(seed, table, values, weight), codes.ravel()
    for lo in range(0, len(codes), LATENT_SLICE):
        x[lo : lo + LATENT_SLICE] += latents[codes[lo : lo + LATENT_SLICE]]


def _add_bag_latents(x: np.ndarray, seed: int, table: str, column: np.ndarray, weight: float) -> None:
    """x += the mean latent of each row's values (0 for an empty bag), in row slices."""
    lengths = np.fromiter((len(v) for v in column), dtype=np.int64, count=len(column))
    flat = np.array([v for values in column for v in values], dtype=bytes)
    if not len(flat):
        x += 0.0
        return
    values, codes = np.unique(flat, return_inverse=True)
    latents, codes = _value_latents(seed, table, values, weight), codes.ravel()
    starts = np.r_[0, np.cumsum(lengths)]
    for lo in range(0, len(column), LATENT_SLICE):
        hi = min(len(column), lo + LATENT_SLICE)
        out = np.zeros((hi - lo, LATENT_DIM))  # each row's sum, in its values' order (np.add.at)
        np.add.at(out, np.repeat(np.arange(hi - lo), lengths[lo:hi]), latents[codes[starts[lo] : starts[hi]]])
        out /= np.maximum(lengths[lo:hi], 1)[:, None]
        x[lo:hi] += out


def item_latents(items: dict[str, np.ndarray], seed: int = 0, item_noise: float = ITEM_NOISE) -> np.ndarray:
    """[num_items, LATENT_DIM]: sum of the item's feature-value latents plus per-item noise.

    item_noise: the noise's scale (0: the latent is a function of the item's features alone).
    Multi-valued features add the mean of their values' latents.
    """
    n = len(items["item_id"])
    x = np.random.default_rng([seed, 3]).normal(0.0, item_noise / np.sqrt(LATENT_DIM), (n, LATENT_DIM))
    for name, weight in LATENT_WEIGHTS.items():
        add = _add_bag_latents if name in MULTI_VALUED else _add_single_latents
        add(x, seed, name, items[name], weight)
    return x


def query_latents(queries: dict[str, np.ndarray], seed: int = 0, query_noise: float = QUERY_NOISE) -> np.ndarray:
    """[num_queries, LATENT_DIM]: segment + country (the items' country table) + noise of scale query_noise."""
    n = len(queries["query_id"])
    z = np.random.default_rng([seed, 4]).normal(0.0, query_noise / np.sqrt(LATENT_DIM), (n, LATENT_DIM))
    z += _single_latents(seed, "query_segment", queries["query_segment"], 1.5)
    z += _single_latents(seed, "country", queries["query_country"], LATENT_WEIGHTS["country"])
    return z


@dataclasses.dataclass
class Interactions:
    """Generated query -> item pairs.

    queries: feature -> [num_queries] object array of bytes.
    query_rows, item_rows: [num_pairs] int64 rows of ``queries`` / the items.
    timestamps: [num_pairs] int64 seconds.
    item_ranks: [num_items] int64, each item's popularity rank (0 = most popular).
    """

    queries: dict[str, np.ndarray]
    query_rows: np.ndarray
    item_rows: np.ndarray
    timestamps: np.ndarray
    item_ranks: np.ndarray


def generate_pairs(
    items: dict[str, np.ndarray],
    num_pairs: int,
    seed: int = 0,
    zipf_exponent: float = 1.0,
    num_queries: int = 2_000,
    temperature: float = TEMPERATURE,
    chunk_size: int | None = None,
    item_noise: float = ITEM_NOISE,
    query_noise: float = QUERY_NOISE,
    unit_queries: bool = False,
) -> Interactions:
    """Query -> item pairs from the latent model (module docstring); items in generate_items order.

    chunk_size: distinct items per softmax block (default: about 4M [items x queries] entries).
    """
    chunk_size = chunk_size or max(1, (1 << 22) // num_queries)
    num_items = len(items["item_id"])
    model = latent_model(items, seed, num_queries, temperature, item_noise, query_noise, unit_queries)
    rank_to_item = model.rank_to_item
    # The three draws in one piece (pair_chunks: numpy's whole-array choice / random / integers).
    no_pairs = (0, np.empty(0, np.int64), np.empty(0), np.empty(0, np.int64))
    _, item_rows, uniforms, timestamps = next(pair_chunks(model, num_pairs, zipf_exponent, max(num_pairs, 1)), no_pairs)
    query_rows = _sample_queries(model.x, model.z, item_rows, uniforms, chunk_size)
    item_ranks = np.empty(num_items, dtype=np.int64)
    item_ranks[rank_to_item] = np.arange(num_items)
    return Interactions(model.queries, query_rows, item_rows, timestamps, item_ranks)


PAIR_CHUNK = spilled_pairs.WINDOW  # pairs per step of the streamed generation (spill_pairs)


def _positioned(rng: np.random.Generator, draws: int) -> np.random.Generator:
    """A generator ``draws`` 64-bit outputs further along ``rng``'s stream (``PCG64.advance``),
    holding rng's buffered 32-bit half (its next 32-bit draw takes it, as rng's would)."""
    state = rng.bit_generator.state
    bit_generator = np.random.PCG64()
    bit_generator.state = state
    bit_generator.advance(draws)  # resets the buffered half
    advanced = bit_generator.state
    advanced["has_uint32"], advanced["uinteger"] = state["has_uint32"], state["uinteger"]
    bit_generator.state = advanced
    return np.random.Generator(bit_generator)


def pair_chunks(model: LatentModel, num_pairs: int, zipf_exponent: float = 1.0, size: int = PAIR_CHUNK):
    """generate_pairs' three draws, ``size`` pairs at a time: (first pair, item rows, the query
    sampler's uniforms, timestamps), the same numbers as its three whole-array calls.

    Each draw is numpy's one call cut in pieces: a double takes one 64-bit output
    (``choice(p=...)`` is the CDF searched with ``random``), so generators advanced to the
    second and third draws' starts stream them side by side; bounded 32-bit integers
    (timestamps) also take the bit generator's buffered half, which the third one inherits.
    generate_pairs takes its draws from here in one piece; tests/test_spilled_pairs.py checks the
    pieces against numpy's whole-array calls.
    """
    num_items = len(model.rank_to_item)
    cdf = _zipf_probs(num_items, zipf_exponent).cumsum()
    cdf /= cdf[-1]
    ranks, uniforms, times = (_positioned(model.rng, k * num_pairs) for k in range(3))
    for lo in range(0, num_pairs, size):
        n = min(size, num_pairs - lo)
        item_rows = model.rank_to_item[cdf.searchsorted(ranks.random(n), side="right")].astype(np.int64)
        yield lo, item_rows, uniforms.random(n), TIME_START + times.integers(0, TIME_SPAN, size=n, dtype=np.int64)


def spill_pairs(
    items: dict[str, np.ndarray],
    num_pairs: int,
    seed: int = 0,
    zipf_exponent: float = 1.0,
    num_queries: int = 2_000,
    chunk_size: int | None = None,
    parent: str | None = None,
    window: int = spilled_pairs.WINDOW,
    **law,
) -> tuple[dict[str, np.ndarray], spilled_pairs.SpilledPairs]:
    """generate_pairs' pairs, split as build_pairs splits them, on disk (datasets/spilled_pairs.py):
    the queries and the table, in memory that does not grow with ``num_pairs``.

    Three passes: the draws (pair_chunks: item rows, timestamps and uniforms to disk, pairs per
    item counted), the queries (the pairs bucketed by groups of generate_pairs' softmax chunks,
    :func:`_spill_queries`), the split (``SpilledPairs.finish``). law: generate_pairs' other
    keywords (temperature, item_noise, query_noise, unit_queries); parent: the spill's folder.
    """
    chunk_size = chunk_size or max(1, (1 << 22) // num_queries)
    model = latent_model(items, seed, num_queries, **law)
    table = spilled_pairs.SpilledPairs(num_pairs, num_queries, seed, parent, window)
    counts = np.zeros(len(items["item_id"]), np.int64)
    for _, item_rows, uniforms, timestamps in pair_chunks(model, num_pairs, zipf_exponent, window):
        table.add_pairs(item_rows, timestamps)
        table.spill.append("uniform", uniforms)
        counts += np.bincount(item_rows, minlength=len(counts))
    _spill_queries(model, table, counts, chunk_size)
    table.items_with_pairs = int(np.count_nonzero(counts))
    queries = model.queries
    del model  # the latents go before the split
    table.finish()
    return queries, table


def _chunk_groups(chunk_pairs: np.ndarray, limit: int) -> list[tuple[int, int]]:
    """Consecutive chunks [start, end) holding at most ``limit`` pairs together (a heavier chunk alone)."""
    groups, start, total = [], 0, 0
    for chunk, n in enumerate(chunk_pairs.tolist()):
        if chunk > start and total + n > limit:
            groups.append((start, chunk))
            start, total = chunk, 0
        total += n
    return groups + [(start, len(chunk_pairs))] if len(chunk_pairs) else groups


def _spill_queries(model: LatentModel, table, counts: np.ndarray, chunk_size: int) -> None:
    """The pairs' queries, as _sample_queries draws them, a group of its softmax chunks at a time.

    generate_pairs cuts the distinct items (sorted) into chunks of ``chunk_size``; a pair's query
    depends on its chunk and its uniform only (:class:`_ChunkSoftmax`). The pairs are bucketed on
    disk by groups of consecutive chunks of at most ``table.window`` pairs, then each group's
    bucket is read (a chunk heavier than that alone, in slices) and sampled chunk by chunk.
    """
    spill, window = table.spill, table.window
    distinct = np.flatnonzero(counts)
    starts = np.arange(0, len(distinct), chunk_size)
    groups = _chunk_groups(np.add.reduceat(counts[distinct], starts) if len(distinct) else starts, window)
    first_items = distinct[starts[[start for start, _ in groups]]] if groups else distinct[:0]
    for lo in range(0, table.num_pairs, window):
        item_rows = spill.read("item", lo, lo + window)
        columns = dict(
            pair=np.arange(lo, lo + len(item_rows)), item=item_rows, time=spill.read("time", lo, lo + window)
        )
        columns["uniform"] = spill.read("uniform", lo, lo + window)
        spill.partition("group", np.searchsorted(first_items, item_rows, side="right") - 1, columns)
    z, num_queries = _padded(model.z), len(model.z)
    chunks = [distinct[start : start + chunk_size] for start in starts]
    for group, (start, end) in enumerate(groups):
        single = _ChunkSoftmax(model.x, z, chunks[start], num_queries) if end - start == 1 else None
        for lo in range(0, spill.bucket_length("group", group, "pair"), window):  # one slice unless single
            rows = spill.bucket("group", group, ("pair", "item", "time", "uniform"), lo, lo + window)
            order = np.argsort(rows["item"], kind="stable")
            rows = {name: column[order] for name, column in rows.items()}
            query_rows = np.empty(len(order), np.int64)
            for chunk in chunks[start:end]:
                a, b = np.searchsorted(rows["item"], [chunk[0], chunk[-1] + 1])
                softmax = single or _ChunkSoftmax(model.x, z, chunk, num_queries)
                query_rows[a:b] = softmax.sample(np.searchsorted(chunk, rows["item"][a:b]), rows["uniform"][a:b])
            table.add_queries(rows["pair"], query_rows, rows["item"], rows["time"])


@dataclasses.dataclass
class LatentModel:
    """What the pair sampler draws from; pairs are (item ~ Zipf over ranks, query ~ softmax(x[item] @ z.T)).

    queries: generate_queries(...); x: [num_items, LATENT_DIM] float32 item latents;
    z: [num_queries, LATENT_DIM] float32 query latents divided by the temperature;
    rank_to_item: [num_items] the item at each popularity rank; rng: the sampler's generator,
    positioned after the rank permutation (``generate_pairs`` goes on drawing from it).
    """

    queries: dict[str, np.ndarray]
    x: np.ndarray
    z: np.ndarray
    rank_to_item: np.ndarray
    rng: np.random.Generator


def latent_model(
    items: dict[str, np.ndarray],
    seed: int,
    num_queries: int,
    temperature: float = TEMPERATURE,
    item_noise: float = ITEM_NOISE,
    query_noise: float = QUERY_NOISE,
    unit_queries: bool = False,
) -> LatentModel:
    """The latents and the popularity ranks of ``generate_pairs`` (same draws, same dtypes).

    unit_queries: query latents scaled to norm 1 before the temperature (every query can then
    be an item's most likely one; with free norms the larger ones take most items at low T).
    """
    rng = np.random.default_rng([seed, 5])
    queries = generate_queries(num_queries, seed)
    # float32 for the [items x queries] logits (the cost of big catalogs); float64 CDFs.
    x = item_latents(items, seed, item_noise).astype(np.float32)
    z = query_latents(queries, seed, query_noise)
    if unit_queries:
        z /= np.linalg.norm(z, axis=1, keepdims=True)
    z = z.astype(np.float32) / np.float32(temperature)
    rank_to_item = rng.permutation(len(items["item_id"]))
    return LatentModel(queries, x, z, rank_to_item, rng)


def item_popularity(rank_to_item: np.ndarray, zipf_exponent: float) -> np.ndarray:
    """[num_items] p(item) of the sampler: Zipf(zipf_exponent) over ranks, item rank_to_item[r] at rank r."""
    probs = np.empty(len(rank_to_item))
    probs[rank_to_item] = _zipf_probs(len(rank_to_item), zipf_exponent)
    return probs


def _sample_queries(
    x: np.ndarray, z: np.ndarray, item_rows: np.ndarray, uniforms: np.ndarray, chunk_size: int
) -> np.ndarray:
    """Each pair's query row, drawn from p(q | item) = softmax over ``x[item] @ z.T``.

    One softmax row per distinct item, for ``chunk_size`` distinct items at a time
    (:class:`_ChunkSoftmax`); a pair's query depends on its item's chunk (the items that share
    its softmax block) and its uniform only, so the pairs of a chunk may come in any pieces.
    """
    order = np.argsort(item_rows, kind="stable")
    distinct, starts, counts = np.unique(item_rows[order], return_index=True, return_counts=True)
    query_rows = np.empty(len(item_rows), dtype=np.int64)
    num_queries, z = len(z), _padded(z)
    for lo in range(0, len(distinct), chunk_size):
        softmax = _ChunkSoftmax(x, z, distinct[lo : lo + chunk_size], num_queries)
        pair_ids = order[starts[lo] : starts[lo] + counts[lo : lo + chunk_size].sum()]
        local_row = np.repeat(np.arange(len(softmax.chunk)), counts[lo : lo + chunk_size])
        query_rows[pair_ids] = softmax.sample(local_row, uniforms[pair_ids])
    return query_rows


QUERY_BLOCK = 64  # queries per block of the two-level inverse CDF
SAMPLE_BATCH = 1 << 15  # pairs per step of _ChunkSoftmax.sample (its [pairs, QUERY_BLOCK] CDFs)


def _padded(z: np.ndarray) -> np.ndarray:
    """z with zero rows up to a whole number of QUERY_BLOCK blocks (the padding queries)."""
    num_blocks = -(-len(z) // QUERY_BLOCK)
    return np.concatenate([z, np.zeros((num_blocks * QUERY_BLOCK - len(z), z.shape[1]), z.dtype)])


class _ChunkSoftmax:
    """p(q | item) = softmax over ``x[item] @ z.T`` for a chunk of distinct items, sampled by
    inverse CDF in two levels (a full-width cumsum is the cost of big catalogs): the pair's
    uniform picks a block of QUERY_BLOCK queries from the block sums (one flat searchsorted:
    row r's normalised CDF is shifted by r), then a query inside the block from that block's CDF.

    z: the padded query latents (:func:`_padded`); the pairs' results depend on the chunk's
    items (the matrix product and the shift by the local row), never on which pairs come along.
    """

    def __init__(self, x: np.ndarray, z: np.ndarray, chunk: np.ndarray, num_queries: int):
        self.chunk, self.num_queries = chunk, num_queries
        self.num_blocks = len(z) // QUERY_BLOCK
        weights = x[chunk] @ z.T  # [C, num_blocks * block] logits, then unnormalised probabilities
        weights -= weights[:, :num_queries].max(axis=1, keepdims=True)
        np.exp(weights, out=weights)
        weights[:, num_queries:] = 0.0  # padding queries
        self.weights = weights.reshape(len(chunk), self.num_blocks, QUERY_BLOCK)
        self.block_sums = self.weights.sum(axis=2, dtype=np.float64)  # [C, num_blocks]
        self.block_cdf = np.cumsum(self.block_sums, axis=1)
        self.totals = self.block_cdf[:, -1:]
        self.shifted = (self.block_cdf / self.totals + np.arange(len(chunk))[:, None]).ravel()

    def sample(self, local_row: np.ndarray, u: np.ndarray) -> np.ndarray:
        """The query rows of pairs of the chunk's items ``chunk[local_row]`` with uniforms ``u``."""
        out = np.empty(len(local_row), dtype=np.int64)
        for lo in range(0, len(local_row), SAMPLE_BATCH):
            rows, uniforms = local_row[lo : lo + SAMPLE_BATCH], u[lo : lo + SAMPLE_BATCH]
            b = np.searchsorted(self.shifted, rows + uniforms, side="right") - rows * self.num_blocks
            b = np.clip(b, 0, self.num_blocks - 1)
            residual = uniforms * self.totals[rows, 0] - (self.block_cdf[rows, b] - self.block_sums[rows, b])
            inner_cdf = np.cumsum(self.weights[rows, b], axis=1, dtype=np.float64)  # [P, block]
            j = np.minimum((inner_cdf <= residual[:, None]).sum(axis=1), QUERY_BLOCK - 1)
            out[lo : lo + SAMPLE_BATCH] = np.minimum(b * QUERY_BLOCK + j, self.num_queries - 1)
        return out


# --- the TFDS builder ----------------------------------------------------------------------


@dataclasses.dataclass
class SyntheticCatalogConfig(tfds.core.BuilderConfig):
    """One catalog size. ``kind``: ``pairs`` (query -> item) or ``items`` (the corpus)."""

    kind: str = _common.PAIRS
    num_items: int = 10_000
    num_queries: int = 2_000
    num_pairs: int = 60_000
    zipf_exponent: float = 1.0
    seed: int = 0
    temperature: float = TEMPERATURE
    item_noise: float = ITEM_NOISE
    query_noise: float = QUERY_NOISE
    unit_queries: bool = False

    def generator_law(self) -> dict:
        """The keywords of the pair law (``generate_pairs``; ``oracle.from_generator`` reads the same)."""
        return dict(
            seed=self.seed,
            num_queries=self.num_queries,
            zipf_exponent=self.zipf_exponent,
            temperature=self.temperature,
            item_noise=self.item_noise,
            query_noise=self.query_noise,
            unit_queries=self.unit_queries,
        )


# name -> (num_items, num_queries, num_pairs). ``tiny`` is for tests and smoke runs.
SIZES = {
    "tiny": (500, 100, 3_000),
    "10k": (10_000, 2_000, 60_000),
    "100k": (100_000, 10_000, 1_000_000),
    "1m": (1_000_000, 10_000, 2_000_000),
    "oracle_10k": (10_000, 2_000, 60_000),
    "oracle_100k": (100_000, 10_000, 1_000_000),
}
# The oracle setting (docs/datasets.md): a peaky p(q | item) over unit-norm query latents, so the
# true p(item | query) puts tail items in a top 50 (oracle tail R@50 .59 at 10k, .34 at 100k,
# against .11 / .002 with the default setting); less per-item noise keeps relevance a function
# of the item's features at the lower temperature.
ORACLE_SETTING = {"temperature": 0.03, "item_noise": 0.1, "unit_queries": True}
# name -> generator setting; configs not listed use the defaults (TEMPERATURE, ITEM_NOISE, ...).
SETTINGS = {"oracle_10k": ORACLE_SETTING, "oracle_100k": ORACLE_SETTING}


def _configs() -> list[SyntheticCatalogConfig]:
    configs = []
    for name, (num_items, num_queries, num_pairs) in SIZES.items():
        setting = SETTINGS.get(name, {})
        detail = "".join(f", {key}={value}" for key, value in setting.items())
        for kind in (_common.PAIRS, _common.ITEMS):
            configs.append(
                SyntheticCatalogConfig(
                    name=name if kind == _common.PAIRS else _common.items_config_name(name),
                    description=f"{num_items:,} items, {num_queries:,} queries, {num_pairs:,} pairs{detail} ({kind})",
                    kind=kind,
                    num_items=num_items,
                    num_queries=num_queries,
                    num_pairs=num_pairs,
                    **setting,
                )
            )
    return configs


def spec() -> features_lib.FeatureSpec:
    return features_lib.load_spec(paths.SPECS_DIR / f"{SPEC_NAME}.yaml")


def build_pairs(config: SyntheticCatalogConfig) -> tuple[dict, Interactions, _common.PairsTable]:
    """Generates the corpus and the pairs of ``config`` and splits them (what the builder writes)."""
    items = generate_items(config.num_items, config.seed)
    interactions = generate_pairs(items, config.num_pairs, **config.generator_law())
    rule = _common.SplitRule(config.seed, groups=interactions.query_rows, ties=interactions.item_rows)
    table = _common.PairsTable(interactions.query_rows, interactions.item_rows, interactions.timestamps, rule=rule)
    return items, interactions, table


class SyntheticCatalog(template.PairedBuilder, skip_registration=True):
    """The synthetic catalog: ``<size>`` (query -> item pairs) and ``<size>-items`` (corpus)."""

    BUILDER_CONFIGS = _configs()
    DEFAULT_CONFIG_NAME = "10k"

    def spec(self) -> features_lib.FeatureSpec:
        return spec()

    def static_metadata(self) -> dict:
        config = self.builder_config
        return dict(
            planted_groups=PLANTED_GROUPS,
            independent_features=INDEPENDENT_FEATURES,
            zipf_exponent=config.zipf_exponent,
            seed=config.seed,
            num_items=config.num_items,
            num_queries=config.num_queries,
            num_pairs=config.num_pairs,
            spec=SPEC_NAME,
            dropped={},
            generator=dict(
                temperature=config.temperature,
                item_noise=config.item_noise,
                query_noise=config.query_noise,
                unit_queries=config.unit_queries,
            ),
        )

    def read(self, dl_manager: Any) -> _common.Tables:
        config = self.builder_config
        if self.is_items():
            items = self.text_columns(generate_items(config.num_items, config.seed))
            return _common.Tables(items, {"counts": {"items": config.num_items}})
        if getattr(self, "_fast", False):
            return self._read_spilled()
        items, interactions, table = build_pairs(config)
        counts = dict(
            items=config.num_items,
            queries=config.num_queries,
            queries_with_pairs=int(len(np.unique(table.query_rows))),
            items_with_pairs=int(len(np.unique(table.item_rows))),
        )
        queries = self.text_columns(interactions.queries)
        return _common.Tables(self.text_columns(items), {"counts": counts}, queries, table)

    def _read_spilled(self) -> _common.Tables:
        """The fast writer's tables: the same pairs and split on disk (:func:`spill_pairs`), so the
        build's memory does not grow with the number of pairs."""
        config = self.builder_config
        items = generate_items(config.num_items, config.seed)
        queries, table = spill_pairs(
            items, config.num_pairs, parent=os.fspath(self.data_path), **config.generator_law()
        )
        counts = dict(
            items=config.num_items,
            queries=config.num_queries,
            queries_with_pairs=table.counts["queries_with_pairs"],
            items_with_pairs=table.items_with_pairs,
        )
        return _common.Tables(items, {"counts": counts}, queries, table)
