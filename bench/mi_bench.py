"""Benchmark: the Beam MI job (local, 2 worker processes) against a single-process numpy reference.

    python bench/mi_bench.py                  # 1M synthetic-catalog items, 10 MI features
    python bench/mi_bench.py --items 100000   # quicker

Both read the same Parquet files (written first, untimed); the reference reads them whole
with pyarrow and counts with global codes + np.bincount in memory; the Beam job reads them
in its workers in record batches. Prints both wall times, their ratio (Beam / numpy) and
whether the two MI matrices agree to 1e-9. Goal: ratio <= 3 on 1M items with 2 workers.
The machine matters: run it on an idle machine and note its cores.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from recsys_ssl import artifacts  # noqa: E402
from recsys_ssl import features as features_lib  # noqa: E402


# -- input -------------------------------------------------------------------------------------
def write_catalog(
    directory: str, num_items: int, num_files: int, seed: int
) -> tuple[list[str], features_lib.FeatureSpec]:
    """Generates the synthetic catalog and writes it as ``num_files`` Parquet files."""
    from recsys_ssl.datasets import synthetic_catalog

    spec = features_lib.load_spec("synthetic_catalog")
    items = synthetic_catalog.generate_items(num_items, seed=seed)
    columns = {}
    for feature in spec.item_features:
        values = items[feature.name]
        if feature.multi_valued:
            lengths = np.fromiter((len(v) for v in values), dtype=np.int64, count=len(values))
            flat = pa.array([x for v in values for x in v], pa.binary()).cast(pa.string())
            offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
            columns[feature.name] = pa.ListArray.from_arrays(pa.array(offsets), flat)
        else:
            columns[feature.name] = pa.array(values, pa.binary()).cast(pa.string())
    table = pa.table(columns)
    paths = []
    per_file = -(-num_items // num_files)
    for index in range(num_files):
        path = os.path.join(directory, f"items-{index:05d}-of-{num_files:05d}.parquet")
        pq.write_table(table.slice(index * per_file, per_file), path, row_group_size=65536)
        paths.append(path)
    return paths, spec


# -- the numpy reference (single process, written independently of pipelines/mi_counts.py) ----
def _global_codes(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray, int]:
    """(row of each entry, code of each entry, number of codes); an empty list is value ""."""
    column = column.combine_chunks()
    if not pa.types.is_list(column.type):
        encoded = pc.dictionary_encode(column)
        return np.arange(len(column)), encoded.indices.to_numpy().astype(np.int64), len(encoded.dictionary)
    lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
    empty = np.flatnonzero(lengths == 0)
    rows = np.concatenate([pc.list_parent_indices(column).to_numpy(), empty])
    values = pa.concat_arrays([pc.list_flatten(column), pa.array([""] * len(empty), pa.string())])
    encoded = pc.dictionary_encode(values)
    codes = encoded.indices.to_numpy().astype(np.int64)
    n = len(encoded.dictionary)
    keys = np.sort(rows * n + codes)  # one (row, value) entry per distinct value of a row
    keys = keys[np.concatenate([[True], keys[1:] != keys[:-1]])]
    return keys // n, keys % n, n


def numpy_reference(paths: list[str], features: list[str]) -> np.ndarray:
    """MI matrix [k, k] (nats; diagonal = entropy) by the textbook sum over joint cells."""
    table = pa.concat_tables([pq.read_table(p, columns=features) for p in paths])
    num_items = table.num_rows
    k = len(features)
    coded = []
    for name in features:
        rows, codes, n = _global_codes(table.column(name))
        lengths = np.bincount(rows, minlength=num_items)
        share = 1.0 / lengths[rows]  # each entry's share of its item's unit mass
        marginal = np.bincount(codes, weights=share, minlength=n) / num_items
        starts = np.concatenate([[0], np.cumsum(lengths)])
        coded.append((rows, codes, n, lengths, starts, share, marginal, len(rows) == num_items))
    mi = np.zeros((k, k))
    for i in range(k):
        rows_i, codes_i, n_i, len_i, _, share_i, p_a, single_i = coded[i]
        nz = p_a[p_a > 0]
        mi[i, i] = -(nz * np.log(nz)).sum()
        for j in range(i + 1, k):
            _, codes_j, n_j, len_j, start_j, _, p_b, single_j = coded[j]
            if single_i and single_j:
                cell = codes_i * n_j + codes_j
                mass = None
            else:  # all (entry of i, entry of j) pairs of the same item
                reps = len_j[rows_i]
                a = np.repeat(np.arange(len(rows_i)), reps)
                offset_in_row = np.arange(len(a)) - np.repeat(np.cumsum(reps) - reps, reps)
                b = start_j[rows_i[a]] + offset_in_row
                mass = share_i[a] / reps[a]
                cell = codes_i[a] * n_j + codes_j[b]
            if n_i * n_j <= 1 << 25:
                joint = np.bincount(cell, weights=mass, minlength=n_i * n_j)
                cells = np.flatnonzero(joint)
                joint = joint[cells]
            else:
                order = np.argsort(cell)
                cell = cell[order]
                starts = np.flatnonzero(np.concatenate([[True], cell[1:] != cell[:-1]]))
                cells = cell[starts]
                joint = np.add.reduceat(np.ones(len(cell)) if mass is None else mass[order], starts)
            p = joint / num_items
            mi[i, j] = mi[j, i] = float((p * np.log(p / (p_a[cells // n_j] * p_b[cells % n_j]))).sum())
    return mi


# -- the Beam job -------------------------------------------------------------------------------
def run_beam(paths: list[str], spec: features_lib.FeatureSpec, out_dir: str, workers: int, batch_size: int) -> float:
    from pipelines import mutual_info, sources
    from pipelines import options as options_lib

    settings = mutual_info.MISettings(
        out_dir=out_dir,
        dataset=None,
        spec_dict={"name": spec.name},
        inputs={"items": paths[0]},
        features=tuple(spec.mi_features),
        group_size=None,
        weighted=False,
        options={},
    )
    pattern = os.path.join(os.path.dirname(paths[0]), "items-*.parquet")
    options = options_lib.pipeline_options(
        [f"--direct_num_workers={workers}", "--direct_running_mode=multi_processing"]
    )
    pipeline = options_lib.make_pipeline(options)
    _ = pipeline | "MutualInformation" >> mutual_info.MutualInformation(
        spec, sources.Source("parquet", files=pattern), settings, batch_size
    )
    start = time.perf_counter()
    options_lib.run_and_report(pipeline, "mi-bench")
    return time.perf_counter() - start


def trivial_beam(workers: int) -> float:
    import apache_beam as beam

    from pipelines import options as options_lib

    options = options_lib.pipeline_options(
        [f"--direct_num_workers={workers}", "--direct_running_mode=multi_processing"]
    )
    pipeline = options_lib.make_pipeline(options)
    _ = pipeline | beam.Create([1, 2, 3]) | beam.Reshuffle() | beam.combiners.Count.Globally()
    start = time.perf_counter()
    pipeline.run().wait_until_finish()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--files", type=int, default=8, help="Parquet files to write (the Beam job's read parallelism)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=131072)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="mi_bench_") as tmp:
        start = time.perf_counter()
        paths, spec = write_catalog(tmp, args.items, args.files, args.seed)
        print(
            f"wrote {args.items} items x {len(spec.mi_features)} MI features to {len(paths)} Parquet files "
            f"in {time.perf_counter() - start:.1f}s (untimed)"
        )
        trivial = trivial_beam(args.workers)
        start = time.perf_counter()
        reference = numpy_reference(paths, spec.mi_features)
        numpy_s = time.perf_counter() - start
        beam_s = run_beam(paths, spec, os.path.join(tmp, "mi"), args.workers, args.batch_size)
        features, beam_mi = artifacts.read_mi(os.path.join(tmp, "mi"))
        assert features == spec.mi_features, (features, spec.mi_features)
        diff = float(np.abs(beam_mi - reference).max())
        print(f"machine: {os.cpu_count()} cores; Beam workers: {args.workers}")
        print(f"trivial Beam pipeline (startup cost):  {trivial:7.2f} s")
        print(f"numpy reference (1 process):           {numpy_s:7.2f} s")
        print(f"Beam MI job ({args.workers} workers):                {beam_s:7.2f} s")
        print(f"ratio Beam / numpy:                    {beam_s / numpy_s:7.2f}x   (goal <= 3x)")
        print(f"max |MI_beam - MI_numpy|:              {diff:.2e}   equal to 1e-9: {diff <= 1e-9}")
        return 0 if diff <= 1e-9 else 1


if __name__ == "__main__":
    sys.exit(main())
