"""Reading items and pairs into Beam as columnar batches, with bad rows sent to a dead letter.

Every source yields **batches**: ``pyarrow.Table`` s with one column per requested feature,
``string`` for a single-valued feature (a missing value is ``""``; ``dictionary<string>`` when
the caller asks for it and the Parquet file has it) and ``list<string>`` for a
multi-valued one (padding ``""`` removed, so an empty list means no value). Downstream
transforms count with numpy over whole batches instead of one Python element per value.

Reading happens inside the workers: the driver only lists *shards* (a Parquet row group, a
CSV or TFRecord file, a slice of a TFDS split); a ``Reshuffle`` spreads them over the workers,
which decode them in batches (pyarrow for Parquet/CSV, ``tf.io.parse_example`` for TFRecord
and the TFRecord files of prepared TFDS datasets).

Bad rows (unparseable CSV lines, TFRecord examples of the wrong type, a single-valued feature
with several values, an empty key feature) go to the ``dead_letter`` output as JSON-ready
dicts ``{"source", "row", "reason", "text"}`` (``row``: 0-based data row; CSV parse errors
give ``"line"``, the 1-based line of the file, instead) and to the ``<label>_malformed_rows`` counter.
"""

from __future__ import annotations

import csv
import dataclasses
import json
from typing import Iterator, NamedTuple, Sequence

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from recsys_ssl import features as features_lib

DEAD_LETTER = "dead_letter"
FORMATS = ("parquet", "csv", "tfrecord")
METRICS_NAMESPACE = "recsys_ssl"
DEFAULT_BATCH_SIZE = 131072


@dataclasses.dataclass(frozen=True)
class Shard:
    """One unit of reading work: a file (``part`` = its row groups for Parquet) or a TFDS slice."""

    format: str  # parquet | csv | tfrecord
    path: str
    part: tuple = ()  # parquet: row-group indices


@dataclasses.dataclass(frozen=True)
class Source:
    """Where a job's items or pairs come from.

    files: a glob (any Beam filesystem: local, gs://, hdfs://, s3://) in ``format``; or
    tfds_dir: a prepared TFDS builder directory and ``split`` (the datasets of this project).
    """

    format: str
    files: str = ""
    tfds_dir: str = ""
    split: str = ""

    def describe(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if v}


def list_shards(source: Source, rows_per_shard: int = 4 * 65536) -> list[Shard]:
    """The shards of a source (runs in the driver; reads only file listings and Parquet footers).

    A prepared TFDS split is read as its TFRecord files (``<name>-<split>.tfrecord-*``, plain
    ``tf.train.Example`` s with one bytes_list per feature): no TFDS machinery in the workers.
    """
    if source.format == "tfds":
        pattern = f"{source.tfds_dir.rstrip('/')}/*-{source.split}.tfrecord*"
        paths = sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list)
        if not paths:
            raise FileNotFoundError(f"no TFRecord files of split {source.split!r} match {pattern}")
        return [Shard("tfrecord", path) for path in paths]
    if source.format not in FORMATS:
        raise ValueError(f"unknown input format {source.format!r}; known: {FORMATS + ('tfds',)}")
    matches = FileSystems.match([source.files])[0].metadata_list
    paths = sorted(m.path for m in matches)
    if not paths:
        raise FileNotFoundError(f"no {source.format} file matches {source.files!r}")
    if source.format != "parquet":
        return [Shard(source.format, path) for path in paths]
    import pyarrow.parquet as pq

    shards = []
    for path in paths:
        with FileSystems.open(path) as handle:
            metadata = pq.ParquetFile(handle).metadata
        # Consecutive row groups up to ~rows_per_shard rows: big enough batches, enough shards.
        group, rows = [], 0
        for index in range(metadata.num_row_groups):
            group.append(index)
            rows += metadata.row_group(index).num_rows
            if rows >= rows_per_shard:
                shards.append(Shard("parquet", path, tuple(group)))
                group, rows = [], 0
        if group or not metadata.num_row_groups:
            shards.append(Shard("parquet", path, tuple(group)))
    return shards


# -- normalising raw columns to the batch layout -------------------------------------------
def _as_strings(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    """Any scalar column (string, binary, integer, ...) as ``string`` with nulls -> "".

    A dictionary<string> column without nulls stays dictionary-encoded (the MI job reads
    Parquet's dictionary pages as they are: codes for free, no string decoding).
    """
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if pa.types.is_dictionary(column.type):
        if column.null_count == 0 and pa.types.is_string(column.type.value_type):
            return column
        column = column.cast(column.type.value_type)
    if not pa.types.is_string(column.type):
        column = column.cast(pa.string())
    return pc.fill_null(column, "")


def _split_cells(column: pa.Array, separator: str) -> pa.Array:
    """CSV-style multi-valued cells ``"a|b|c"`` -> ``["a", "b", "c"]``; an empty cell -> ``[]``."""
    return pc.split_pattern(_as_strings(column), pattern=separator)


def drop_padding(lists: pa.Array) -> pa.ListArray:
    """Removes null and ``""`` entries from a list<string> array; null lists become ``[]``."""
    if isinstance(lists, pa.ChunkedArray):
        lists = lists.combine_chunks()
    if not pa.types.is_string(lists.type.value_type):
        lists = lists.cast(pa.list_(pa.string()))
    lists = pc.fill_null(lists, pa.scalar([], type=lists.type)) if lists.null_count else lists
    values = pc.list_flatten(lists)
    parents = pc.list_parent_indices(lists).to_numpy()
    keep = pc.and_(pc.is_valid(values), pc.not_equal(pc.fill_null(values, ""), "")).to_numpy(zero_copy_only=False)
    if keep.all():  # the usual case: nothing to drop, no copy
        return lists
    lengths = np.bincount(parents[keep], minlength=len(lists))
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pc.filter(values, pa.array(keep)).cast(pa.string()))


def normalize(
    table: pa.Table,
    features: Sequence[features_lib.Feature],
    required: Sequence[str],
    source: str,
    first_row: int,
) -> tuple[pa.Table, list[dict]]:
    """Raw columns -> the batch layout, and the rows whose ``required`` features are empty.

    Returns (batch with the good rows, dead-letter records of the others).
    """
    columns = []
    for feature in features:
        raw = table.column(feature.name)
        if feature.multi_valued:
            if pa.types.is_list(raw.type) or pa.types.is_large_list(raw.type):
                column = drop_padding(raw.combine_chunks() if isinstance(raw, pa.ChunkedArray) else raw)
            else:
                column = drop_padding(_split_cells(raw, feature.separator))
        else:
            column = _as_strings(raw)
        columns.append(column)
    batch = pa.Table.from_arrays(columns, names=[f.name for f in features])
    if not required:
        return batch, []
    bad = np.zeros(batch.num_rows, dtype=bool)
    for name in required:
        bad |= pc.equal(batch.column(name), "").to_numpy(zero_copy_only=False)
    if not bad.any():
        return batch, []
    dead = []
    for row in np.flatnonzero(bad):
        record = {k: v for k, v in batch.slice(int(row), 1).to_pylist()[0].items()}
        empty = [name for name in required if record[name] == ""]
        dead.append(
            {
                "source": source,
                "row": first_row + int(row),
                "reason": f"empty key feature {empty}",
                "text": json.dumps(record),
            }
        )
    return batch.filter(pa.array(~bad)), dead


# -- readers (run in the workers) -------------------------------------------------------------
def _read_parquet(
    shard: Shard, names: list[str], batch_size: int, dictionary: Sequence[str] = ()
) -> Iterator[tuple[pa.Table, list[dict]]]:
    import pyarrow.parquet as pq

    with FileSystems.open(shard.path) as handle:
        parquet = pq.ParquetFile(handle, read_dictionary=list(dictionary) or None)
        missing = [n for n in names if n not in parquet.schema_arrow.names]
        if missing:
            raise features_lib.SpecError(
                f"{shard.path}: columns {missing} are missing; the file has {parquet.schema_arrow.names}"
            )
        groups = list(shard.part) or None
        for record_batch in parquet.iter_batches(batch_size=batch_size, row_groups=groups, columns=names):
            yield pa.Table.from_batches([record_batch]), []


def check_csv_headers(
    shards: Sequence[Shard], spec: features_lib.FeatureSpec, feature_list: Sequence[features_lib.Feature]
) -> None:
    """In the driver, before the job runs: every CSV file has a UTF-8 header naming the spec's
    columns, and some file has a data row. A bad file fails here with one message naming it
    (a worker would log its traceback); bad rows are still the workers' (dead letter)."""
    any_rows = False
    for shard in shards:
        with FileSystems.open(shard.path) as handle:
            first = handle.readline()
            # Reads only up to the first non-blank line after the header: cheap for any file size.
            any_rows = any_rows or any(line.strip() for line in iter(handle.readline, b""))
        try:
            header = first.decode("utf-8-sig").rstrip("\r\n")
        except UnicodeDecodeError as error:
            raise ValueError(f"{shard.path}:1: the header is not UTF-8 text ({error})") from None
        if not header.strip():
            raise features_lib.SpecError(f"{shard.path}:1: empty file, expected a header row")
        features_lib.check_columns(spec, next(csv.reader([header])), feature_list, shard.path)
    if not any_rows:
        raise ValueError(f"no data rows after the header in {[s.path for s in shards]}")


def _read_csv(
    shard: Shard, spec: features_lib.FeatureSpec, feature_list: Sequence[features_lib.Feature], batch_size: int
) -> Iterator[tuple[pa.Table, list[dict]]]:
    import pyarrow.csv as pacsv

    bad_lines: list[dict] = []

    def on_invalid(row) -> str:  # called by pyarrow for a line with the wrong number of fields
        bad_lines.append(
            {
                "source": shard.path,
                "row": None,
                "line": row.number,  # 1-based line in the file, header included
                "reason": f"expected {row.expected_columns} fields, got {row.actual_columns}",
                "text": row.text,
            }
        )
        return "skip"

    with FileSystems.open(shard.path) as handle:
        header = handle.readline().decode("utf-8-sig").rstrip("\r\n")
    columns = next(csv.reader([header]))
    features_lib.check_columns(spec, columns, feature_list, shard.path)
    wanted = {f.csv_column for f in feature_list}
    with FileSystems.open(shard.path) as handle:
        reader = pacsv.open_csv(
            handle,
            read_options=pacsv.ReadOptions(block_size=1 << 24, use_threads=False),  # serial: line numbers known
            parse_options=pacsv.ParseOptions(invalid_row_handler=on_invalid),
            convert_options=pacsv.ConvertOptions(
                include_columns=sorted(wanted),
                column_types={c: pa.string() for c in wanted},
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
        for record_batch in reader:
            table = pa.Table.from_batches([record_batch])
            table = pa.Table.from_arrays(
                [table.column(f.csv_column) for f in feature_list], names=[f.name for f in feature_list]
            )
            for start in range(0, max(table.num_rows, 1), batch_size):
                # Lines rejected while parsing this block travel with its first slice.
                yield table.slice(start, batch_size), list(bad_lines)
                bad_lines.clear()
    if bad_lines:
        yield pa.table({f.name: pa.array([], pa.string()) for f in feature_list}), list(bad_lines)


def _read_tfrecord(
    shard: Shard, feature_list: Sequence[features_lib.Feature], batch_size: int
) -> Iterator[tuple[pa.Table, list[dict]]]:
    """Per ``batch_size`` serialized examples of the file: (the batch's good rows, the bad rows'
    dead-letter records)."""
    from recsys_ssl.tf_setup import tf

    schema = {f.name: tf.io.VarLenFeature(tf.string) for f in feature_list}
    dataset = tf.data.TFRecordDataset(shard.path).batch(batch_size)
    first = 0
    for serialized in dataset:
        dead: list[dict] = []
        try:
            table = _sparse_to_table(tf.io.parse_example(serialized, schema), feature_list)
            rows_in_file = np.arange(first, first + table.num_rows)
        except tf.errors.InvalidArgumentError:
            # One bad example fails the whole batch: parse one by one to find it.
            table, rows_in_file, dead = _parse_one_by_one(serialized, schema, feature_list, shard.path, first)
        # A single-valued feature must have at most one value (none = missing).
        bad, several = _several_values(table, feature_list, shard.path, rows_in_file)
        dead.extend(several)
        if bad.any():
            table = table.filter(pa.array(~bad))
        columns = [
            table.column(f.name) if f.multi_valued else _first_or_empty(table.column(f.name)) for f in feature_list
        ]
        first += int(serialized.shape[0])
        yield pa.Table.from_arrays(columns, names=[f.name for f in feature_list]), dead


def _sparse_to_table(parsed, feature_list: Sequence[features_lib.Feature]) -> pa.Table:
    """``tf.io.parse_example``'s {feature: SparseTensor [B, None] of bytes} -> a table of B rows,
    one list<string> column per feature (an example without the feature: an empty list)."""
    arrays = []
    for f in feature_list:
        sparse = parsed[f.name]
        rows = sparse.indices.numpy()[:, 0]
        values = pa.array(sparse.values.numpy(), pa.binary()).cast(pa.string())
        lengths = np.bincount(rows, minlength=int(sparse.dense_shape[0]))
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
        arrays.append(pa.ListArray.from_arrays(pa.array(offsets), values))
    return pa.Table.from_arrays(arrays, names=[f.name for f in feature_list])


def _parse_one_by_one(
    serialized, schema: dict, feature_list: Sequence[features_lib.Feature], path: str, first: int
) -> tuple[pa.Table, np.ndarray, list[dict]]:
    """A batch of serialized examples [B] that failed to parse, example by example: (the table of
    the good ones, their 0-based rows in the file (``first`` = the batch's first), the bad
    ones' dead-letter records)."""
    from recsys_ssl.tf_setup import tf

    tables, parsed_rows, dead = [], [], []
    for i, one in enumerate(serialized.numpy()):
        try:
            tables.append(_sparse_to_table(tf.io.parse_example(tf.constant([one]), schema), feature_list))
            parsed_rows.append(first + i)
        except tf.errors.InvalidArgumentError as error:
            detail = error.message.split("{{")[0].strip()[:300]
            reason = f"not a tf.train.Example of string features {[f.name for f in feature_list]}: {detail}"
            dead.append({"source": path, "row": first + i, "reason": reason, "text": one.hex()[:2000]})
    table = (
        pa.concat_tables(tables)
        if tables
        else pa.table({f.name: pa.array([], pa.list_(pa.string())) for f in feature_list})
    )
    return table, np.asarray(parsed_rows, dtype=np.int64), dead


def _several_values(
    table: pa.Table, feature_list: Sequence[features_lib.Feature], path: str, rows_in_file: np.ndarray
) -> tuple[np.ndarray, list[dict]]:
    """Rows where a single-valued feature has more than one value: ([n] bool mask over the
    table's rows, their dead-letter records). ``rows_in_file``: [n] each row's row in the file."""
    bad = np.zeros(table.num_rows, dtype=bool)
    for f in feature_list:
        if not f.multi_valued:
            bad |= pc.list_value_length(table.column(f.name)).to_numpy(zero_copy_only=False) > 1
    dead = []
    for row in np.flatnonzero(bad):
        record = table.slice(int(row), 1).to_pylist()[0]
        several = [f.name for f in feature_list if not f.multi_valued and len(record[f.name]) > 1]
        dead.append(
            {
                "source": path,
                "row": int(rows_in_file[row]),
                "reason": f"several values for single-valued {several}",
                "text": json.dumps(record),
            }
        )
    return bad, dead


def _first_or_empty(lists: pa.ChunkedArray | pa.Array) -> pa.Array:
    """list<string> with 0 or 1 values per row -> string ("" where the list is empty)."""
    if isinstance(lists, pa.ChunkedArray):
        lists = lists.combine_chunks()
    lengths = pc.list_value_length(lists).to_numpy(zero_copy_only=False)
    values = pc.list_flatten(lists).to_numpy(zero_copy_only=False).astype(object)
    out = np.full(len(lists), "", dtype=object)
    out[lengths == 1] = values
    return pa.array(out, pa.string())


class ReadShardFn(beam.DoFn):
    """Shard -> batches (main output) and bad rows (``dead_letter`` output), with counters."""

    def __init__(
        self,
        spec: features_lib.FeatureSpec,
        feature_names: Sequence[str],
        required: Sequence[str],
        batch_size: int,
        label: str,
        dictionary: Sequence[str] = (),
    ):
        self._spec = spec
        self._dictionary = list(dictionary)
        self._names = list(feature_names)
        self._required = list(required)
        self._batch_size = batch_size
        self._rows = Metrics.counter(METRICS_NAMESPACE, f"{label}_rows_read")
        self._batches = Metrics.counter(METRICS_NAMESPACE, f"{label}_batches")
        self._malformed = Metrics.counter(METRICS_NAMESPACE, f"{label}_malformed_rows")

    def process(self, shard: Shard):
        feature_list = [self._spec.feature(n) for n in self._names]
        if shard.format == "parquet":
            reader = _read_parquet(shard, self._names, self._batch_size, self._dictionary)
        elif shard.format == "csv":
            reader = _read_csv(shard, self._spec, feature_list, self._batch_size)
        elif shard.format == "tfrecord":
            reader = _read_tfrecord(shard, feature_list, self._batch_size)
        else:
            raise ValueError(f"unknown shard format {shard.format!r}")
        first_row = 0
        for raw, dead in reader:
            batch, empty_keys = normalize(raw, feature_list, self._required, shard.path, first_row)
            first_row += raw.num_rows
            for record in dead + empty_keys:
                self._malformed.inc()
                yield beam.pvalue.TaggedOutput(DEAD_LETTER, record)
            if batch.num_rows:
                self._rows.inc(batch.num_rows)
                self._batches.inc()
                yield batch


class _OutputsAsPairs(beam.DoFn):
    """A multi-output DoFn run as a single-output one: ``(tag, value)``, tag ``None`` for the main output.

    Beam 2.77's DaskRunner gives every consumer of a multi-output ParDo *all* its outputs (it
    does not split them by tag), so :class:`ReadBatches` splits the pairs itself.
    """

    def __init__(self, fn: beam.DoFn):
        self._fn = fn

    def setup(self):
        self._fn.setup()

    def teardown(self):
        self._fn.teardown()

    def process(self, element):
        for output in self._fn.process(element):
            if isinstance(output, beam.pvalue.TaggedOutput):
                yield output.tag, output.value
            else:
                yield None, output


def _with_tag(pair, tag):
    if pair[0] == tag:
        yield pair[1]


class ReadOutputs(NamedTuple):
    batches: beam.PCollection
    dead_letter: beam.PCollection


class ReadBatches(beam.PTransform):
    """Source -> PCollection of batches (``pyarrow.Table``), plus ``dead_letter`` records.

    Returns a ``ReadOutputs``: ``result.batches`` and ``result.dead_letter``.
    """

    def __init__(
        self,
        source: Source,
        spec: features_lib.FeatureSpec,
        feature_names: Sequence[str],
        required: Sequence[str] = (),
        batch_size: int = DEFAULT_BATCH_SIZE,
        label: str = "items",
        dictionary: Sequence[str] = (),
    ):
        """dictionary: single-valued columns that may stay dictionary-encoded (Parquet only)."""
        super().__init__()
        self._dictionary = list(dictionary)
        self._source = source
        self._spec = spec
        self._names = list(feature_names)
        self._required = list(required)
        self._batch_size = batch_size
        self._label = label

    def expand(self, pbegin):
        shards = list_shards(self._source)
        if self._source.format == "csv":
            check_csv_headers(shards, self._spec, [self._spec.feature(n) for n in self._names])
        decoded = (
            pbegin
            | "ListShards" >> beam.Create(shards)
            | "SpreadShards" >> beam.Reshuffle()
            | "DecodeBatches"
            >> beam.ParDo(
                _OutputsAsPairs(
                    ReadShardFn(
                        self._spec, self._names, self._required, self._batch_size, self._label, self._dictionary
                    )
                )
            )
        )
        return ReadOutputs(
            batches=decoded | "Batches" >> beam.FlatMap(_with_tag, None),
            dead_letter=decoded | "DeadLetter" >> beam.FlatMap(_with_tag, DEAD_LETTER),
        )


class WriteDeadLetter(beam.PTransform):
    """Dead-letter records -> ``<directory>/<name>.jsonl`` (always written, possibly empty); returns its path.

    One writer reads the records as an iterable side input and writes the file directly (no file
    sink): Beam's file sink on the DaskRunner, which evaluates a side input once per consumer,
    writes a second temp copy that it never finalizes or deletes.
    """

    def __init__(self, directory: str, name: str):
        super().__init__()
        self._path = directory.rstrip("/") + "/" + name + ".jsonl"

    def expand(self, records):
        lines = records | "ToJson" >> beam.Map(lambda r: json.dumps(r, sort_keys=True))
        return (
            records.pipeline
            | "Once" >> beam.Create([None])
            | "Write" >> beam.Map(_write_lines, self._path, beam.pvalue.AsIter(lines))
        )


def _write_lines(_, path: str, lines) -> str:
    with FileSystems.create(path) as out:
        for line in lines:
            out.write(line.encode("utf-8") + b"\n")
    return path


def _first(element, *_):
    return element


class WaitFor(beam.PTransform):
    """pcoll -> the same elements, once every PCollection in ``written`` is complete (side inputs).

    Makes a write that nothing reads (the dead letters) a dependency of the job's last step:
    Beam 2.77's DaskRunner computes only what the pipeline's last transform needs.
    """

    def __init__(self, *written: beam.PCollection):
        super().__init__()
        self._written = written

    def expand(self, pcoll):
        return pcoll | "Wait" >> beam.Map(_first, *[beam.pvalue.AsList(w) for w in self._written])
