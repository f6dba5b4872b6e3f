"""The numpy kernel of the mutual-information job: value and value-pair masses of a batch.

Semantics (PAPER.md section 3): an item with value set A for feature i and B for feature j
puts mass ``w / (|A| |B|)`` on every pair (a, b) in A x B (w = 1, or the item's training
frequency); an empty set is the single value ``""`` (its own value); P(a) is the sum of the
joint masses, i.e. ``w / |A|`` per value of A. A value listed twice in one item counts once.

Then ``MI(i, j) = H(i) + H(j) - H(i, j)`` in nats, and an entropy needs only the masses of
the distinct cells: with W = sum m and S = sum m log m over the cells, ``H = log W - S / W``.

Values are integer codes: their index in the feature's sorted vocabulary (a first pass of the
job collects it), so the cell of a value pair is ``code_i * n_j + code_j``. A batch reduces,
per feature and per pair of features, to ``CellMasses(cells, masses)``; batches merge by
concatenating these arrays and summing equal cells with ``np.bincount`` (or one sort when
``n_i * n_j`` is too large for a dense array). No Python loop runs per value or per pair.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# Sum cells with a dense np.bincount up to this many possible cells (n_i * n_j), else sort.
DENSE_CELLS = 1 << 24
EMPTY = ""  # the value of an empty multi-valued set (and the missing single value)


def vocabulary(values: pa.Array) -> pa.Array:
    """Distinct values plus ``""``, sorted: the code of a value is its index here."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    values = pc.unique(pa.concat_arrays([values.cast(pa.string()), pa.array([EMPTY], pa.string())]))
    return pc.take(values, pc.array_sort_indices(values))


def distinct_values(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    """The distinct values of a batch column (flattened when multi-valued)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if pa.types.is_dictionary(column.type):
        return pc.unique(column.dictionary)  # may hold unused values: they get no mass
    if pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
        column = pc.list_flatten(column)
    return pc.unique(column)


@dataclasses.dataclass
class FeatureCodes:
    """One feature of a batch as (row, value code) entries; every row has >= 1 entry.

    parents: [E] int64 row of each entry, non-decreasing.  codes: [E] int64 in [0, num_codes).
    lengths: [B] entries per row.  offsets: [B+1] first entry of each row.
    """

    parents: np.ndarray
    codes: np.ndarray
    num_codes: int
    lengths: np.ndarray
    offsets: np.ndarray

    @property
    def single(self) -> bool:
        return len(self.parents) == len(self.lengths)


def _codes(values: pa.Array, vocab: pa.Array) -> np.ndarray:
    codes = pc.index_in(values, value_set=vocab)
    if codes.null_count:
        missing = pc.filter(values, pc.is_null(codes))[:5].to_pylist()
        raise ValueError(f"values {missing} are not in the vocabulary of the first pass")
    return codes.to_numpy(zero_copy_only=False).astype(np.int64)


def encode_feature(column: pa.Array | pa.ChunkedArray, vocab: pa.Array) -> FeatureCodes:
    """A batch column (string, or list<string> without padding) -> FeatureCodes.

    ``vocab`` is the feature's sorted vocabulary (:func:`vocabulary`), which holds ``""``.
    An empty list becomes the single value ""; a value repeated within a row counts once.
    """
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    num_rows = len(column)
    size = len(vocab)
    if not (pa.types.is_list(column.type) or pa.types.is_large_list(column.type)):
        ones = np.ones(num_rows, dtype=np.int64)
        rows = np.arange(num_rows + 1, dtype=np.int64)
        if pa.types.is_dictionary(column.type):  # code the (small) dictionary, then gather
            codes = _codes(column.dictionary, vocab)[column.indices.to_numpy(zero_copy_only=False)]
        else:
            codes = _codes(column, vocab)
        return FeatureCodes(rows[:-1], codes, size, ones, rows)
    parents = pc.list_parent_indices(column).to_numpy(zero_copy_only=False).astype(np.int64)
    codes = _codes(pc.list_flatten(column), vocab)
    # One sort both dedupes (row, value) and orders entries by row.
    rows_and_codes = np.sort(parents * size + codes)
    if len(rows_and_codes) > 1:
        rows_and_codes = rows_and_codes[np.concatenate([[True], rows_and_codes[1:] != rows_and_codes[:-1]])]
    parents, codes = rows_and_codes // size, rows_and_codes % size
    lengths = np.bincount(parents, minlength=num_rows).astype(np.int64)
    empty_rows = np.flatnonzero(lengths == 0)
    if len(empty_rows):
        lengths[empty_rows] = 1
        empty_code = int(pc.index_in(pa.array([EMPTY]), value_set=vocab)[0].as_py())
        order = np.argsort(np.concatenate([parents, empty_rows]), kind="stable")
        parents = np.concatenate([parents, empty_rows])[order]
        codes = np.concatenate([codes, np.full(len(empty_rows), empty_code, dtype=np.int64)])[order]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return FeatureCodes(parents, codes, size, lengths, offsets)


@dataclasses.dataclass
class CellMasses:
    """Cells (int64 index in [0, num_cells)) and their masses; merged by :func:`compact`."""

    cells: np.ndarray  # [C] int64
    masses: np.ndarray  # [C] float64
    num_cells: int
    compacted: bool = True  # every cell at most once

    def __len__(self) -> int:
        return len(self.cells)


def _sum_by_cell(cells: np.ndarray, masses: np.ndarray, num_cells: int) -> tuple[np.ndarray, np.ndarray]:
    """(distinct cells with mass > 0, their summed masses)."""
    if num_cells <= DENSE_CELLS and num_cells <= 16 * len(cells) + 65536:
        summed = np.bincount(cells, weights=masses, minlength=num_cells)
        distinct = np.flatnonzero(summed > 0)
        return distinct, summed[distinct]
    order = np.argsort(cells)
    cells = cells[order]
    starts = np.flatnonzero(np.concatenate([[True], cells[1:] != cells[:-1]]))
    summed = np.add.reduceat(masses[order], starts)
    keep = summed > 0
    return cells[starts][keep], summed[keep]


def _cells(cells: np.ndarray, masses: np.ndarray, num_cells: int) -> CellMasses:
    # Sum within the batch when that shrinks it cheaply (few possible cells); otherwise leave
    # the entries raw and let compact() sum them once, over many batches.
    if num_cells <= 4 * len(cells) + 4096:
        distinct, summed = _sum_by_cell(cells, masses, num_cells)
        return CellMasses(distinct, summed, num_cells, True)
    return CellMasses(cells, masses.astype(np.float64, copy=False), num_cells, False)


def marginal_masses(feature: FeatureCodes, weights: np.ndarray) -> CellMasses:
    """Each row's weight spread evenly over its values."""
    return _cells(feature.codes, (weights / feature.lengths)[feature.parents], feature.num_codes)


def joint_masses(first: FeatureCodes, second: FeatureCodes, weights: np.ndarray) -> CellMasses:
    """Each row's weight spread evenly over the pairs of its value sets A x B."""
    n_second = np.int64(second.num_codes)
    if first.single and second.single:
        cells = first.codes * n_second + second.codes
        pair_mass = weights
    else:
        # Entry e of `first` pairs with every entry of `second` in the same row.
        repeats = second.lengths[first.parents]
        first_entry = np.repeat(np.arange(len(first.parents), dtype=np.int64), repeats)
        rows = first.parents[first_entry]
        group_start = np.repeat(np.cumsum(repeats) - repeats, repeats)
        second_entry = second.offsets[rows] + (np.arange(len(first_entry), dtype=np.int64) - group_start)
        cells = first.codes[first_entry] * n_second + second.codes[second_entry]
        pair_mass = (weights / (first.lengths * second.lengths))[rows]
    return _cells(cells, pair_mass, first.num_codes * second.num_codes)


def batch_cell_masses(
    batch: pa.Table, features: Sequence[str], vocabularies: Sequence[pa.Array], weights: np.ndarray | None = None
) -> Iterator[tuple[tuple[int, int], CellMasses]]:
    """((i, j), CellMasses) for every feature (i == j: its values) and pair i < j of a batch."""
    weights = np.ones(batch.num_rows) if weights is None else np.asarray(weights, dtype=np.float64)
    codes = [encode_feature(batch.column(name), vocab) for name, vocab in zip(features, vocabularies)]
    for i, feature in enumerate(codes):
        yield (i, i), marginal_masses(feature, weights)
        for j in range(i + 1, len(codes)):
            yield (i, j), joint_masses(feature, codes[j], weights)


def compact(parts: Sequence[CellMasses]) -> CellMasses:
    """Merges cell masses: equal cells summed (cells sorted)."""
    parts = [p for p in parts if len(p)]
    if not parts:
        return CellMasses(np.zeros(0, np.int64), np.zeros(0), 0)
    if len(parts) == 1 and parts[0].compacted:
        return parts[0]
    num_cells = parts[0].num_cells
    cells, masses = _sum_by_cell(
        np.concatenate([p.cells for p in parts]), np.concatenate([p.masses for p in parts]), num_cells
    )
    return CellMasses(cells, masses, num_cells, True)


def mass_and_entropy_terms(cells: CellMasses) -> tuple[float, float]:
    """(W, S) = (sum m, sum m log m) over the distinct cells; H = log W - S / W."""
    masses = cells.masses[cells.masses > 0]
    return float(masses.sum()), float(np.dot(masses, np.log(masses)))


def entropy(total: float, sum_m_log_m: float) -> float:
    return float(np.log(total) - sum_m_log_m / total) if total > 0 else 0.0


def mi_matrices(
    num_features: int, terms: dict[tuple[int, int], tuple[float, float]]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(MI [k, k], normalised MI [k, k], entropies [k]) from every key's (W, S).

    MI(i, j) = H(i) + H(j) - H(i, j), clipped at 0 (it is >= 0 up to rounding); the diagonal
    holds H(i). NMI = MI / sqrt(H_i H_j) (0 where an entropy is 0), diagonal 1 (0 if H_i = 0).
    """
    k = num_features
    h = np.array([entropy(*terms[(i, i)][:2]) for i in range(k)])
    mi = np.diag(h).astype(np.float64)
    for i in range(k):
        for j in range(i + 1, k):
            mi[i, j] = mi[j, i] = max(0.0, h[i] + h[j] - entropy(*terms[(i, j)][:2]))
    scale = np.sqrt(np.outer(h, h))
    nmi = np.divide(mi, scale, out=np.zeros_like(mi), where=scale > 0)
    np.fill_diagonal(nmi, (h > 0).astype(np.float64))
    return mi, np.minimum(nmi, 1.0), h


# -- chance-corrected dependence (Vinh, Epps & Bailey 2010) ----------------------------------------
# Plug-in MI grows with the number of values of a feature even between independent features:
# a nearly unique feature (a title) has MI ~ H(other) with anything. The expected MI of two
# independent features with the same value counts (the hypergeometric "permutation model")
# measures that bias exactly; adjusted MI = (MI - E[MI]) / (mean(H_i, H_j) - E[MI]) is ~0 for
# independent features whatever their cardinality, and 1 when one determines the other.

_SMALL = 16
_SMALL_LOG_FACTORIALS = np.array([float(np.sum(np.log(np.arange(1, k + 1)))) for k in range(_SMALL)])


def log_factorial(x: np.ndarray) -> np.ndarray:
    """log(x!) for integer-valued x >= 0: a table below 16, Stirling's series above
    (5 terms: absolute error < 1e-10 there)."""
    x = np.asarray(x, dtype=np.float64)
    out = np.empty_like(x)
    small = x < _SMALL
    out[small] = _SMALL_LOG_FACTORIALS[x[small].astype(np.int64)]
    y = x[~small]
    out[~small] = y * np.log(y) - y + 0.5 * np.log(2 * np.pi * y) + 1 / (12 * y) - 1 / (360 * y**3) + 1 / (1260 * y**5)
    return out


def counts_of(masses: np.ndarray) -> np.ndarray:
    """Value masses -> integer counts for the permutation model: rounded, at least 1 when > 0.

    Exact for single-valued features of unweighted items; for multi-valued features (mass
    w/|A| per value) and frequency weights it is the nearest counting model. A mass within
    1e-9 (relative) of a half is a half: a sum of fractions added in another order (another
    runner, other partitions) lands on either side of 2.5 and must round the same way.
    """
    masses = np.asarray(masses, dtype=np.float64)
    masses = masses[masses > 0]
    half = np.floor(masses) + 0.5
    masses = np.where(np.abs(masses - half) <= 1e-9 * np.maximum(masses, 1.0), half, masses)
    return np.maximum(np.rint(masses), 1.0)


def expected_mutual_information(a: np.ndarray, b: np.ndarray, width: float = 8.0) -> float:
    """E[MI] in nats of two features drawn independently with value counts ``a`` [R] and ``b`` [C].

    Under the permutation model the count of a cell (r, c) is hypergeometric(n, a_r, b_c),
    n = sum(a), and E[MI] = sum over cells and over their possible counts k of
    P(k) * k/n * log(n k / (a_r b_c)). Equal counts share their terms (distinct count values
    x distinct count values, weighted by multiplicities), and k is summed over
    ``mean +- width * sqrt(min(a_r, b_c))``, beyond which the hypergeometric tail is below
    exp(-2 width^2) (Hoeffding): the cost is bounded by the counts' distinct values, not by n.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    n = float(max(a.sum(), b.sum()))
    if n <= 1 or len(a) < 2 or len(b) < 2:
        return 0.0
    ua, ma = np.unique(a, return_counts=True)
    ub, mb = np.unique(b, return_counts=True)
    big_a, big_b = np.repeat(ua, len(ub)), np.tile(ub, len(ua))
    multiplicity = np.repeat(ma, len(ub)) * np.tile(mb, len(ua)).astype(np.float64)
    smaller = np.minimum(big_a, big_b)
    mean, reach = big_a * big_b / n, width * np.sqrt(smaller)
    low = np.maximum(np.maximum(1.0, big_a + big_b - n), np.floor(mean - reach))
    high = np.minimum(smaller, np.ceil(mean + reach))
    lengths = np.maximum(high - low + 1, 0).astype(np.int64)
    cell = np.repeat(np.arange(len(lengths)), lengths)
    k = low[cell] + (np.arange(len(cell)) - np.repeat(np.cumsum(lengths) - lengths, lengths))
    ca, cb = big_a[cell], big_b[cell]
    log_p = (
        log_factorial(ca)
        + log_factorial(cb)
        + log_factorial(n - ca)
        + log_factorial(n - cb)
        - log_factorial(np.full_like(k, n))
        - log_factorial(k)
        - log_factorial(ca - k)
        - log_factorial(cb - k)
        - log_factorial(n - ca - cb + k)
    )
    terms = np.exp(log_p) * (k / n) * np.log(n * k / (ca * cb))
    return float(np.dot(multiplicity[cell], terms))


def adjusted_mi_matrices(
    mi: np.ndarray, entropies: np.ndarray, marginals: Sequence[np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """(E[MI] [k, k], adjusted MI [k, k]) from the plug-in MI, the entropies and each feature's
    value masses. AMI = (MI - E[MI]) / (mean(H_i, H_j) - E[MI]): ~0 for independent features,
    1 for a feature and a function of it of equal entropy, negative when below chance;
    diagonals E[MI] = 0, AMI = 1 (0 for a constant feature)."""
    k = len(entropies)
    counts = [counts_of(m) for m in marginals]
    emi, ami = np.zeros((k, k)), np.zeros((k, k))
    for i in range(k):
        ami[i, i] = 1.0 if entropies[i] > 0 else 0.0
        for j in range(i + 1, k):
            emi[i, j] = emi[j, i] = expected_mutual_information(counts[i], counts[j])
            denominator = 0.5 * (entropies[i] + entropies[j]) - emi[i, j]
            value = (mi[i, j] - emi[i, j]) / denominator if denominator > 1e-12 else 0.0
            ami[i, j] = ami[j, i] = value
    return emi, ami
