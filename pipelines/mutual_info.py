"""Beam job: mutual information between every pair of item features, and the CFM groups.

``recsys-ssl mi --dataset synthetic_catalog/10k [--run-dir DIR] [beam options]``
``recsys-ssl mi --items-file 'items/*.parquet' --spec my.yaml [--weight-by-frequency --pairs-file ...]``

MI in nats over the item corpus (each item once, or weighted by its TRAIN-pair frequency with
``--weight-by-frequency``), over ``spec.mi_features`` (item features that are not ids); the
semantics of multi-valued and empty features are in :mod:`pipelines.mi_counts`. Writes
``<run_dir>/mi/``: ``mi_matrix.json`` / ``.csv`` (diagonal: entropies), ``nmi_matrix.csv``
(MI / sqrt(H_i H_j)), ``ami_matrix.csv`` (adjusted MI: chance-corrected, see
:func:`pipelines.mi_counts.adjusted_mi_matrices`; ``mi_matrix.json`` also holds the expected
MI), ``cfm_groups.json`` (per seed: partners by MI desc, ties by name, and the masking group
of ``--group-size`` features, default round(k/2); under ``by_grouping`` the same ranked by
each measure: ``plugin`` MI, ``adjusted`` MI, ``normalized`` MI), ``dead_letter/``,
``manifest.json``.

Graph (two passes over the items; each reads its shards in parallel in the workers)::

    ReadItems ─ batches ─ Vocabularies (CombineGlobally: sorted distinct values per feature)
                                   │ side input
    ReadItemsAgain ─ batches ─ CellMasses (ParDo: per feature and pair, numpy over the batch)
        ─ SumMarginals / SumCells (CombinePerKey over (i, i) / (i, j): array accumulators,
          merged in parallel per key; the marginals keep their value masses for E[MI])
        ─ Gather ─ WriteMI (matrices, adjusted MI, groups, manifest)
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Sequence

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.metrics import Metrics

from pipelines import feature_stats, mi_counts, sources
from pipelines import options as options_lib
from recsys_ssl import artifacts
from recsys_ssl import features as features_lib

JOB = "mi"
_COMPACT_ENTRIES = 1 << 22  # merge a pair's pending cell arrays once they hold this many entries


class DistinctValuesFn(beam.CombineFn):
    """Batches -> per feature, the sorted vocabulary of distinct values (with ``""``)."""

    def __init__(self, features: Sequence[str]):
        self._features = list(features)

    def create_accumulator(self) -> list[list[pa.Array]]:
        return [[] for _ in self._features]

    def add_input(self, acc, batch: pa.Table):
        for parts, name in zip(acc, self._features):
            parts.append(mi_counts.distinct_values(batch.column(name)))
            if len(parts) > 16:
                parts[:] = [pc.unique(pa.concat_arrays(parts))]
        return acc

    def merge_accumulators(self, accumulators):
        accumulators = list(accumulators)
        out = [[] for _ in self._features]
        for acc in accumulators:
            for target, parts in zip(out, acc):
                target.extend(parts)
        return self.compact(out)

    def compact(self, acc):
        return [[pc.unique(pa.concat_arrays(parts))] if len(parts) > 1 else parts for parts in acc]

    def extract_output(self, acc) -> list[pa.Array]:
        return [mi_counts.vocabulary(pa.concat_arrays(parts) if parts else pa.array([], pa.string())) for parts in acc]


class CellMassesFn(beam.DoFn):
    """Batch -> ((i, j), CellMasses) for every feature (i == j) and pair i < j."""

    def __init__(self, features: Sequence[str], item_key: str):
        self._features = list(features)
        self._item_key = item_key
        self._items = Metrics.counter(sources.METRICS_NAMESPACE, "mi_items_counted")
        self._zero_weight = Metrics.counter(sources.METRICS_NAMESPACE, "mi_items_with_zero_weight")

    def process(self, batch: pa.Table, vocabularies, frequencies=None):
        weights = None
        if frequencies is not None:
            index = pc.index_in(batch.column(self._item_key), value_set=frequencies.column("value"))
            weights = (
                pc.fill_null(pc.take(frequencies.column("count"), index), 0)
                .to_numpy(zero_copy_only=False)
                .astype(np.float64)
            )
            self._zero_weight.inc(int((weights == 0).sum()))
        self._items.inc(batch.num_rows)
        yield from mi_counts.batch_cell_masses(batch, self._features, vocabularies, weights)


class SumCellsFn(beam.CombineFn):
    """CellMasses of one (i, j) -> (W, S) = (total mass, sum m log m over distinct cells).

    With ``keep_masses`` (the marginals, i == j) -> (W, S, the value masses [n_i]): the
    expected MI under independence needs each feature's value counts.
    The accumulator is a list of numpy-array CellMasses, compacted (equal cells summed) when
    it grows and before it is shuffled, so merges move arrays, never Python dicts.
    """

    def __init__(self, keep_masses: bool = False):
        self._keep_masses = keep_masses

    def create_accumulator(self) -> list:
        return []

    def add_input(self, acc: list, cells: mi_counts.CellMasses) -> list:
        acc.append(cells)
        if sum(len(c) for c in acc) > _COMPACT_ENTRIES:
            acc[:] = [mi_counts.compact(acc)]
        return acc

    def merge_accumulators(self, accumulators) -> list:
        merged = [c for acc in accumulators for c in acc]
        return [mi_counts.compact(merged)] if sum(len(c) for c in merged) > _COMPACT_ENTRIES else merged

    def compact(self, acc: list) -> list:
        return [mi_counts.compact(acc)] if acc else acc

    def extract_output(self, acc: list) -> tuple:
        cells = mi_counts.compact(acc)
        terms = mi_counts.mass_and_entropy_terms(cells)
        return (*terms, cells.masses) if self._keep_masses else terms


@dataclasses.dataclass(frozen=True)
class MISettings:
    out_dir: str
    dataset: str | None
    spec_dict: dict
    inputs: dict
    features: tuple[str, ...]
    group_size: int | None
    weighted: bool
    options: dict


def write_mi(terms: dict, settings: MISettings, items: int, bad_items: int) -> dict:
    """Writes the MI artifacts and the manifest; returns the manifest."""
    features = list(settings.features)
    if items == 0 or not terms or terms[(0, 0)][0] <= 0:
        raise ValueError(
            f"no item mass to compute MI from: {items} items read ({bad_items} malformed) from {settings.inputs}"
            + (" and none of them appears in the TRAIN pairs" if settings.weighted and items else "")
        )
    mi, nmi, entropy = mi_counts.mi_matrices(len(features), terms)
    emi, ami = mi_counts.adjusted_mi_matrices(mi, entropy, [terms[(i, i)][2] for i in range(len(features))])
    artifacts.write_files(
        settings.out_dir, artifacts.mi_files(features, mi, nmi, entropy, settings.group_size, emi=emi, ami=ami)
    )
    counts = {
        "items": items,
        "malformed_items": bad_items,
        "features": len(features),
        "total_mass": terms[(0, 0)][0] if features else 0.0,
        "entropy": dict(zip(features, entropy.tolist())),
    }
    extra = {"weight_by_frequency": settings.weighted, "group_size": settings.group_size}
    return options_lib.write_job_manifest(JOB, settings, counts, extra)


class MutualInformation(beam.PTransform):
    """pbegin -> the MI artifacts under ``settings.out_dir`` (a one-element manifest PCollection)."""

    def __init__(
        self,
        spec: features_lib.FeatureSpec,
        items: sources.Source,
        settings: MISettings,
        batch_size: int,
        pairs: sources.Source | None = None,
    ):
        super().__init__()
        self._spec, self._items, self._settings, self._batch_size, self._pairs = (
            spec,
            items,
            settings,
            batch_size,
            pairs,
        )

    def expand(self, pbegin):
        spec, features = self._spec, list(self._settings.features)
        columns = features + ([spec.item_key] if self._settings.weighted else [])
        read = dict(
            spec=spec,
            feature_names=columns,
            required=[spec.item_key] if self._settings.weighted else [],
            batch_size=self._batch_size,
            dictionary=[f for f in features if not spec.feature(f).multi_valued],
        )
        first = pbegin | "ReadItems" >> sources.ReadBatches(self._items, label="items", **read)
        # The second pass reads the shards again rather than shuffling every batch back.
        second = pbegin | "ReadItemsAgain" >> sources.ReadBatches(self._items, label="items_second_pass", **read)
        written = [
            first.dead_letter
            | "WriteDeadLetter"
            >> sources.WriteDeadLetter(artifacts.join(self._settings.out_dir, artifacts.DEAD_LETTER_DIR), "items")
        ]
        bad_items = first.dead_letter | "CountBadItems" >> beam.combiners.Count.Globally()
        items = (
            first.batches | "RowsPerBatch" >> beam.Map(lambda b: b.num_rows) | "CountItems" >> beam.CombineGlobally(sum)
        )
        vocabularies = first.batches | "Vocabularies" >> beam.CombineGlobally(DistinctValuesFn(features))
        side = {}
        if self._settings.weighted:
            item_key = spec.feature(spec.item_key)
            pairs = pbegin | "ReadPairs" >> sources.ReadBatches(
                self._pairs, spec, [spec.item_key], required=[spec.item_key], batch_size=self._batch_size, label="pairs"
            )
            written.append(
                pairs.dead_letter
                | "WritePairsDeadLetter"
                >> sources.WriteDeadLetter(artifacts.join(self._settings.out_dir, artifacts.DEAD_LETTER_DIR), "pairs")
            )
            frequencies = (
                pairs.batches
                | "ItemFrequencies" >> beam.CombineGlobally(feature_stats.ValueCountsFn([item_key]))
                | "FrequencyTable" >> beam.Map(lambda counts: counts.parts[spec.item_key][0])
            )
            side["frequencies"] = beam.pvalue.AsSingleton(frequencies)
        cells = second.batches | "CellMasses" >> beam.ParDo(
            CellMassesFn(features, spec.item_key), beam.pvalue.AsSingleton(vocabularies), **side
        )
        marginals = (
            cells
            | "MarginalCells" >> beam.Filter(lambda kv: kv[0][0] == kv[0][1])
            | "SumMarginals" >> beam.CombinePerKey(SumCellsFn(keep_masses=True))
        )
        joints = (
            cells
            | "JointCells" >> beam.Filter(lambda kv: kv[0][0] != kv[0][1])
            | "SumCells" >> beam.CombinePerKey(SumCellsFn())
        )
        terms = (marginals, joints) | "AllTerms" >> beam.Flatten() | "Gather" >> beam.combiners.ToDict()
        return (
            terms
            | "AfterDeadLetters" >> sources.WaitFor(*written)
            | "WriteMI"
            >> beam.Map(write_mi, self._settings, beam.pvalue.AsSingleton(items), beam.pvalue.AsSingleton(bad_items))
        )


def build_parser() -> argparse.ArgumentParser:
    parser = options_lib.job_parser("recsys-ssl mi", __doc__.split("\n\n")[0], "FlinkRunner")
    parser.add_argument(
        "--group-size", type=int, default=None, help="|F_m|, the CFM masking group size (default round(k/2))"
    )
    parser.add_argument(
        "--weight-by-frequency", action="store_true", help="weight each item by its number of TRAIN pairs (needs pairs)"
    )
    parser.add_argument("--features", default=None, help="comma-separated features (default: the spec's mi_features)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args, beam_args = build_parser().parse_known_args(argv)
    inputs = options_lib.resolve_inputs(args, need_pairs=args.weight_by_frequency)
    features = args.features.split(",") if args.features else inputs.spec.mi_features
    for name in features:
        if name not in inputs.spec.item_feature_names:
            raise SystemExit(f"--features: {name!r} is not an item feature of {inputs.spec.source}")
    if len(features) < 2:
        raise SystemExit(f"MI needs at least two features, got {features}")
    out_dir = options_lib.output_dir(args, JOB)
    settings = MISettings(
        out_dir=out_dir,
        dataset=inputs.dataset,
        spec_dict={"name": inputs.spec.name, "source": inputs.spec.source},
        inputs={
            "items": inputs.items.describe(),
            **({"train_pairs": inputs.pairs.describe()} if args.weight_by_frequency else {}),
        },
        features=tuple(features),
        group_size=args.group_size,
        weighted=args.weight_by_frequency,
        options={"beam_args": beam_args, "batch_size": args.batch_size},
    )
    pipeline = options_lib.make_pipeline(options_lib.pipeline_options(beam_args))
    _ = pipeline | "MutualInformation" >> MutualInformation(
        inputs.spec, inputs.items, settings, args.batch_size, inputs.pairs
    )
    options_lib.run_and_report(pipeline, JOB)
    if "://" not in out_dir:
        groups = artifacts.read_cfm_groups(out_dir)
        print(f"[mi] wrote {out_dir}; CFM groups (size {groups['group_size']}):")
        for seed, group in groups["groups"].items():
            print(f"  {seed:<20} {group}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
