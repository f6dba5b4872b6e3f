"""Beam job: per-feature vocabularies, item frequencies, missing and malformed counts.

``recsys-ssl stats --dataset synthetic_catalog/10k [--run-dir DIR] [beam options]``
``recsys-ssl stats --items-file 'items/*.parquet' --pairs-file 'pairs/*.csv' --spec my.yaml``

Writes ``<run_dir>/stats/`` (see :mod:`recsys_ssl.artifacts`): ``vocab/<feature>.txt`` (item
features counted over the item corpus, query features over the TRAIN pairs; most frequent
first, ties by value; ``""`` is the missing value / padding and never a vocabulary entry;
``min_count`` / ``top_k`` from the spec, or ``--min-count`` / ``--top-k`` for every feature),
``item_frequencies.tsv`` (TRAIN pairs per corpus item, 0 when unseen: the logQ correction's
p_j and the head/tail split), ``dead_letter/`` and ``manifest.json``.

Graph::

    ReadItems ─ batches ─ CountItemValues ─┐
              └ dead_letter ─ WriteItemsDeadLetter / CountBadItems ─┤
    ReadPairs ─ batches ─ CountPairValues ─┼─ WriteStats (vocabularies, frequencies, manifest)
              └ dead_letter ─ WritePairsDeadLetter / CountBadPairs ─┘
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

from pipelines import options as options_lib
from pipelines import sources
from recsys_ssl import artifacts
from recsys_ssl import features as features_lib

JOB = "stats"
_COMPACT_ROWS = 1 << 20  # merge a feature's value-count parts once they hold this many rows
_NUMBERS = ("values", "missing", "rows_over_max_len", "values_truncated")


@dataclasses.dataclass
class ValueCounts:
    """Accumulator: per feature, value-count tables (value, count) and a few counts."""

    rows: int = 0
    parts: dict = dataclasses.field(default_factory=dict)  # feature -> [pa.Table(value, count)]
    numbers: dict = dataclasses.field(default_factory=dict)  # feature -> {name: int}


def _compact_counts(parts: list[pa.Table]) -> pa.Table:
    if len(parts) == 1:
        return parts[0]
    table = pa.concat_tables(parts).group_by("value").aggregate([("count", "sum")])
    return pa.table({"value": table.column("value"), "count": table.column("count_sum")})


class ValueCountsFn(beam.CombineFn):
    """Batches -> per-feature value counts (over whole batches, with pyarrow kernels).

    A single-valued ``""`` counts as missing, not as a value; a multi-valued feature counts
    every listed value, an empty list as missing, values beyond ``max_len`` as truncated.
    Output: ``ValueCounts`` with one compacted ``(value, count)`` table per feature.
    """

    def __init__(self, features: Sequence[features_lib.Feature]):
        self._features = list(features)

    def create_accumulator(self) -> ValueCounts:
        return ValueCounts(
            parts={f.name: [] for f in self._features},
            numbers={f.name: dict.fromkeys(_NUMBERS, 0) for f in self._features},
        )

    def add_input(self, acc: ValueCounts, batch: pa.Table) -> ValueCounts:
        acc.rows += batch.num_rows
        for feature in self._features:
            column = batch.column(feature.name).combine_chunks()
            numbers = acc.numbers[feature.name]
            if feature.multi_valued:
                lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
                numbers["missing"] += int((lengths == 0).sum())
                over = np.maximum(lengths - feature.max_len, 0)
                numbers["rows_over_max_len"] += int((over > 0).sum())
                numbers["values_truncated"] += int(over.sum())
                values = pc.list_flatten(column)
            else:
                present = pc.not_equal(column, "")
                values = pc.filter(column, present)
                numbers["missing"] += len(column) - len(values)
            numbers["values"] += len(values)
            counts = pc.value_counts(values)
            parts = acc.parts[feature.name]
            parts.append(pa.table({"value": counts.field("values"), "count": counts.field("counts")}))
            if sum(p.num_rows for p in parts) > _COMPACT_ROWS:
                acc.parts[feature.name] = [_compact_counts(parts)]
        return acc

    def merge_accumulators(self, accumulators) -> ValueCounts:
        accumulators = list(accumulators)
        out = accumulators[0]
        for acc in accumulators[1:]:
            out.rows += acc.rows
            for name, parts in acc.parts.items():
                out.parts[name].extend(parts)
                for key, value in acc.numbers[name].items():
                    out.numbers[name][key] += value
        return self.compact(out)

    def compact(self, acc: ValueCounts) -> ValueCounts:
        acc.parts = {name: [_compact_counts(parts)] if parts else [] for name, parts in acc.parts.items()}
        return acc

    def extract_output(self, acc: ValueCounts) -> ValueCounts:
        acc = self.compact(acc)
        empty = pa.table({"value": pa.array([], pa.string()), "count": pa.array([], pa.int64())})
        acc.parts = {name: [sort_counts(parts[0] if parts else empty)] for name, parts in acc.parts.items()}
        return acc


def sort_counts(table: pa.Table) -> pa.Table:
    """Most frequent first, ties by value (byte order = code point order)."""
    return table.take(pc.sort_indices(table, sort_keys=[("count", "descending"), ("value", "ascending")]))


def apply_vocab_options(table: pa.Table, min_count: int, top_k: int | None) -> pa.Table:
    """Keeps values with count >= min_count, then the top_k most frequent (table already sorted)."""
    table = table.filter(pc.greater_equal(table.column("count"), min_count))
    return table.slice(0, top_k) if top_k is not None else table


@dataclasses.dataclass(frozen=True)
class StatsSettings:
    out_dir: str
    dataset: str | None
    spec_dict: dict
    inputs: dict
    min_count: int | None
    top_k: int | None
    options: dict


def write_stats(
    _,
    settings: StatsSettings,
    spec: features_lib.FeatureSpec,
    item_counts: ValueCounts,
    pair_counts: ValueCounts,
    bad_items: int,
    bad_pairs: int,
) -> dict:
    """Writes vocabularies, item frequencies and the manifest; returns the manifest."""
    out = settings.out_dir
    sides = [(f, item_counts, "items") for f in spec.item_features] + [
        (f, pair_counts, "train_pairs") for f in spec.query_features
    ]
    per_feature = {
        feature.name: _write_vocabulary(settings, feature, counts, counted_over)
        for feature, counts, counted_over in sides
    }
    vocab_sizes = {name: entry["vocab_size"] for name, entry in per_feature.items()}
    counts = {
        "items": item_counts.rows,
        "train_pairs": pair_counts.rows,
        "malformed_items": bad_items,
        "malformed_pairs": bad_pairs,
        **_write_item_frequencies(out, spec, item_counts, pair_counts),
        "vocab_sizes": vocab_sizes,
        "features": per_feature,
    }
    manifest = options_lib.write_job_manifest(JOB, settings, counts)
    Metrics.counter(sources.METRICS_NAMESPACE, "stats_vocab_files_written").inc(len(vocab_sizes))
    return manifest


def _write_vocabulary(
    settings: StatsSettings, feature: features_lib.Feature, counts: ValueCounts, counted_over: str
) -> dict:
    """Writes one feature's vocabulary file; returns its manifest entry."""
    table = counts.parts[feature.name][0]
    min_count = settings.min_count if settings.min_count is not None else feature.vocab.min_count
    top_k = settings.top_k if settings.top_k is not None else feature.vocab.top_k
    kept = apply_vocab_options(table, min_count, top_k)
    # A value with a line break cannot be one line of a vocabulary file: count, do not write.
    one_line = pc.invert(pc.match_substring_regex(kept.column("value"), r"[\r\n]"))
    unwritable = len(kept) - pc.sum(one_line).as_py() if len(kept) else 0
    kept = kept.filter(one_line) if unwritable else kept
    values = kept.column("value").to_pylist()
    artifacts.write_text(
        artifacts.join(settings.out_dir, artifacts.VOCAB_DIR, f"{feature.name}.txt"), artifacts.vocab_text(values)
    )
    total = int(pc.sum(table.column("count")).as_py() or 0)
    in_vocab = int(pc.sum(kept.column("count")).as_py() or 0) if len(kept) else 0
    return {
        "counted_over": counted_over,
        **counts.numbers[feature.name],
        "distinct": len(table),
        "vocab_size": len(values),
        "min_count": min_count,
        "top_k": top_k,
        "oov_buckets": feature.vocab.oov_buckets,
        "vocab_source": feature.vocab.source,
        "oov_rate": (1.0 - in_vocab / total) if total else 0.0,
        "values_with_line_breaks_not_written": unwritable,
    }


def _write_item_frequencies(
    out: str, spec: features_lib.FeatureSpec, item_counts: ValueCounts, pair_counts: ValueCounts
) -> dict:
    """Writes the item frequencies over TRAIN pairs, for every corpus item (0 when unseen);
    returns the manifest's counts of duplicate, unknown and unseen items."""
    corpus = item_counts.parts[spec.item_key][0]
    in_pairs = pair_counts.parts[spec.item_key][0]
    ids = corpus.column("value")
    index = pc.index_in(ids, value_set=in_pairs.column("value"))
    frequency = pc.fill_null(pc.take(in_pairs.column("count"), index), 0)
    frequencies = sort_counts(pa.table({"value": ids, "count": frequency.cast(pa.int64())}))
    artifacts.write_text(
        artifacts.join(out, artifacts.ITEM_FREQUENCIES),
        artifacts.item_frequencies_text(
            zip(frequencies.column("value").to_pylist(), frequencies.column("count").to_pylist())
        ),
    )
    unknown = pc.invert(pc.is_in(in_pairs.column("value"), value_set=ids))
    unknown_table = in_pairs.filter(unknown)
    duplicates = corpus.filter(pc.greater(corpus.column("count"), 1))
    return {
        "duplicate_item_ids": len(duplicates),
        "duplicate_item_ids_sample": duplicates.column("value").to_pylist()[:10],
        "train_pairs_with_unknown_item": int(pc.sum(unknown_table.column("count")).as_py() or 0),
        "unknown_items_sample": unknown_table.column("value").to_pylist()[:10],
        "items_never_in_train_pairs": int(pc.sum(pc.equal(frequencies.column("count"), 0)).as_py() or 0),
    }


class FeatureStatistics(beam.PTransform):
    """pbegin -> the statistics artifacts under ``settings.out_dir`` (a one-element manifest PCollection)."""

    def __init__(self, spec, items: sources.Source, pairs: sources.Source, settings: StatsSettings, batch_size: int):
        super().__init__()
        self._spec, self._items, self._pairs, self._settings, self._batch_size = (
            spec,
            items,
            pairs,
            settings,
            batch_size,
        )

    def expand(self, pbegin):
        spec = self._spec
        item_features = list(spec.item_features)
        pair_features = list(spec.query_features) + [spec.feature(spec.item_key)]
        items = pbegin | "ReadItems" >> sources.ReadBatches(
            self._items,
            spec,
            [f.name for f in item_features],
            required=[spec.item_key],
            batch_size=self._batch_size,
            label="items",
        )
        pairs = pbegin | "ReadPairs" >> sources.ReadBatches(
            self._pairs,
            spec,
            [f.name for f in pair_features],
            required=[spec.query_key, spec.item_key],
            batch_size=self._batch_size,
            label="pairs",
        )
        dead_dir = artifacts.join(self._settings.out_dir, artifacts.DEAD_LETTER_DIR)
        items_written = items.dead_letter | "WriteItemsDeadLetter" >> sources.WriteDeadLetter(dead_dir, "items")
        pairs_written = pairs.dead_letter | "WritePairsDeadLetter" >> sources.WriteDeadLetter(dead_dir, "pairs")
        bad_items = items.dead_letter | "CountBadItems" >> beam.combiners.Count.Globally()
        bad_pairs = pairs.dead_letter | "CountBadPairs" >> beam.combiners.Count.Globally()
        item_counts = items.batches | "CountItemValues" >> beam.CombineGlobally(ValueCountsFn(item_features))
        pair_counts = pairs.batches | "CountPairValues" >> beam.CombineGlobally(ValueCountsFn(pair_features))
        return (
            pbegin
            | "Once" >> beam.Create([None])
            | "AfterDeadLetters" >> sources.WaitFor(items_written, pairs_written)
            | "WriteStats"
            >> beam.Map(
                write_stats,
                self._settings,
                spec,
                beam.pvalue.AsSingleton(item_counts),
                beam.pvalue.AsSingleton(pair_counts),
                beam.pvalue.AsSingleton(bad_items),
                beam.pvalue.AsSingleton(bad_pairs),
            )
        )


def build_parser() -> argparse.ArgumentParser:
    parser = options_lib.job_parser("recsys-ssl stats", __doc__.split("\n\n")[0], "DataflowRunner")
    parser.add_argument("--min-count", type=int, default=None, help="override every feature's vocab.min_count")
    parser.add_argument("--top-k", type=int, default=None, help="override every feature's vocab.top_k")
    return parser


def main(argv: list[str] | None = None) -> int:
    args, beam_args = build_parser().parse_known_args(argv)
    inputs = options_lib.resolve_inputs(args, need_pairs=True)
    out_dir = options_lib.output_dir(args, JOB)
    settings = StatsSettings(
        out_dir=out_dir,
        dataset=inputs.dataset,
        spec_dict={"name": inputs.spec.name, "source": inputs.spec.source},
        inputs={"items": inputs.items.describe(), "train_pairs": inputs.pairs.describe()},
        min_count=args.min_count,
        top_k=args.top_k,
        options={"beam_args": beam_args, "batch_size": args.batch_size},
    )
    pipeline = options_lib.make_pipeline(options_lib.pipeline_options(beam_args))
    _ = pipeline | "FeatureStatistics" >> FeatureStatistics(
        inputs.spec, inputs.items, inputs.pairs, settings, args.batch_size
    )
    options_lib.run_and_report(pipeline, JOB)
    if "://" not in out_dir:
        manifest = artifacts.read_manifest(out_dir)
        counts = manifest["counts"]
        print(
            f"[stats] {counts['items']} items, {counts['train_pairs']} train pairs, "
            f"{counts['malformed_items'] + counts['malformed_pairs']} malformed rows "
            f"(see {artifacts.join(out_dir, artifacts.DEAD_LETTER_DIR)}); wrote {out_dir}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
