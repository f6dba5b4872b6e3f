"""One input table of ``interactions_csv``, read from its shards: CSV or Parquet files, streamed.

An input is a file, a glob pattern (``data/interactions-*.csv``) or a comma-separated list of
them; the shards are read one at a time in sorted path order, and the rows are those of their
concatenation. A CSV shard is read row by row (each shard with its own header row); a Parquet
shard (by its ``.parquet`` extension) in row batches, its cells turned into the strings a CSV
cell would hold: strings as they are, integers and floats as Python writes them, booleans
``true`` / ``false``, null as an empty cell; a list cell (only in a multi-valued feature's
column) stays a list of such strings. Every shard's header (its column names) must be the
first shard's. Errors name the shard and the line (CSV, the header is line 1) or the row
(Parquet, the first row is row 1).
"""

from __future__ import annotations

import csv
import dataclasses
import decimal
import glob
import pathlib
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

GLOB_CHARS = "*?["
PARQUET_SUFFIX = ".parquet"
BATCH_ROWS = 8192


class CsvRowError(ValueError):
    """A malformed input row; the message names the file and the line (CSV) or row (Parquet)."""


class _BadValue(ValueError):
    """A Parquet cell that has no CSV form; re-raised as CsvRowError naming the row and column."""


def resolve(inputs: str, what: str = "input") -> list[pathlib.Path]:
    """The shards of one input (a file, a glob pattern, or a comma-separated list), sorted by path."""
    paths = []
    for part in (p.strip() for p in str(inputs).split(",")):
        if not part:
            continue
        if any(c in part for c in GLOB_CHARS) and not pathlib.Path(part).is_file():
            found = glob.glob(part)
            if not found:
                raise FileNotFoundError(f"{what}: pattern {part!r} matches no file")
            paths += [pathlib.Path(f) for f in found]
        else:
            paths.append(pathlib.Path(part))
    if not paths:
        raise FileNotFoundError(f"{what}: no file given ({inputs!r})")
    twice = sorted({str(p) for p in paths if paths.count(p) > 1})
    if twice:
        raise ValueError(f"{what}: {twice[0]} is given twice in {inputs!r}")
    return sorted(paths, key=str)


def display_name(inputs: str) -> str:
    """The input's file name(s) without their folders: ``items.csv``, ``items-*.csv``, ``a.csv,b.csv``."""
    return ",".join(pathlib.Path(p.strip()).name for p in str(inputs).split(",") if p.strip())


@dataclasses.dataclass
class Shard:
    """One open file: its header and its rows as (line number, cells); the header is line 1."""

    path: pathlib.Path
    header: list[str]
    rows: Iterator[tuple[int, list]] = iter(())
    parquet: bool = False
    end_line: int = 1  # the last line number, known once the rows are read (Parquet: at once)

    def where(self, line_no: int) -> str:
        return f"{self.path}: row {line_no - 1}" if self.parquet else f"{self.path}:{line_no}"


class Table:
    """One input's shards: their common header, and their rows in order (:meth:`rows`).

    list_columns: the columns whose Parquet cells may be lists (multi-valued features).
    """

    def __init__(self, inputs: str, what: str = "input", list_columns=(), batch_rows: int | None = None):
        self.paths = resolve(inputs, what)
        self.name = str(self.paths[0]) if len(self.paths) == 1 else str(inputs)
        self.list_columns = frozenset(list_columns)
        self.batch_rows = batch_rows or BATCH_ROWS
        self._first = self._open(self.paths[0])
        self.header = self._first.header

    def _open(self, path: pathlib.Path) -> Shard:
        if path.suffix.lower() == PARQUET_SUFFIX:
            return open_parquet(path, self.list_columns, self.batch_rows)
        return open_csv(path)

    def rows(self) -> Iterator[tuple[Shard, int, int, list]]:
        """(shard, line number in it, line number in the shards' concatenation, cells)."""
        offset = 0
        for i, path in enumerate(self.paths):
            shard = self._first if i == 0 else self._open(path)
            if shard.header != self.header:
                raise CsvRowError(_header_difference(shard, self.header, self.paths[0]))
            for line_no, cells in shard.rows:
                yield shard, line_no, offset + line_no, cells
            offset += shard.end_line - 1  # the concatenation has one header row


def _header_difference(shard: Shard, header: list[str], first: pathlib.Path) -> str:
    got = shard.header
    i = next(i for i in range(max(len(got), len(header))) if got[i : i + 1] != header[i : i + 1])
    if i >= len(got):
        what = f"has no column {i + 1} ({header[i]!r})"
    elif i >= len(header):
        what = f"has an extra column {i + 1} ({got[i]!r})"
    else:
        what = f"column {i + 1} is {got[i]!r}, not {header[i]!r}"
    return f"{shard.path if shard.parquet else shard.where(1)}: header differs from {first}'s: {what}"


def open_csv(path: pathlib.Path) -> Shard:
    """A CSV shard; a row with the wrong field count raises CsvRowError; blank lines are skipped."""
    if not path.is_file():
        raise FileNotFoundError(f"CSV file {path} does not exist")
    f = open(path, newline="", encoding="utf-8")
    reader = csv.reader(f)
    try:
        header = next(reader)
    except StopIteration:
        f.close()
        raise CsvRowError(f"{path}:1: empty file, expected a header row") from None
    except UnicodeDecodeError as error:
        f.close()
        raise CsvRowError(f"{path}:1: not UTF-8 text ({error})") from None
    shard = Shard(path, header)

    def rows():
        with f:
            try:
                for fields in reader:
                    if not fields:  # a blank line
                        continue
                    if len(fields) != len(header):
                        raise CsvRowError(
                            f"{path}:{reader.line_num}: expected {len(header)} fields ({header}), "
                            f"got {len(fields)}: {fields}"
                        )
                    yield reader.line_num, fields
            except UnicodeDecodeError as error:  # decoded in blocks: the line is where the bad block starts
                raise CsvRowError(f"{path}:{reader.line_num + 1}: not UTF-8 text ({error})") from None
        shard.end_line = reader.line_num

    shard.rows = rows()
    return shard


def open_parquet(path: pathlib.Path, list_columns=frozenset(), batch_rows: int | None = None) -> Shard:
    """A Parquet shard, read ``batch_rows`` rows at a time; its line numbers count a header line 1."""
    if not path.is_file():
        raise FileNotFoundError(f"Parquet file {path} does not exist")
    try:
        file = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as error:
        raise CsvRowError(f"{path}: not a readable Parquet file ({error})") from None
    header = list(file.schema_arrow.names)
    shard = Shard(path, header, parquet=True, end_line=file.metadata.num_rows + 1)

    def rows():
        row = 0  # rows read so far
        with file:
            for batch in file.iter_batches(batch_size=batch_rows or BATCH_ROWS):
                columns = [
                    _column_cells(batch.column(i), name, name in list_columns, path, row)
                    for i, name in enumerate(header)
                ]
                for cells in zip(*columns):
                    row += 1
                    yield row + 1, list(cells)

    shard.rows = rows()
    return shard


def _column_cells(array: pa.Array, name: str, list_ok: bool, path: pathlib.Path, rows_before: int) -> list:
    """One column of a batch as CSV cells (strings; lists of strings in a multi-valued column)."""
    values = array.to_pylist()
    if pa.types.is_string(array.type) or pa.types.is_large_string(array.type):
        return ["" if v is None else v for v in values]
    out = []
    for i, value in enumerate(values):
        try:
            if isinstance(value, list):
                if not list_ok:
                    raise _BadValue("holds a list; only a multi-valued feature's column may")
                out.append([_text(v) for v in value if v is not None])
            else:
                out.append(_text(value))
        except _BadValue as error:
            raise CsvRowError(f"{path}: row {rows_before + i + 1}: column {name!r} {error}") from None
    return out


def _text(value) -> str:
    """A Parquet value as the text of a CSV cell."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, decimal.Decimal)):
        return str(value)
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError as error:
            raise _BadValue(f"is not UTF-8 text ({error})") from None
    raise _BadValue(f"holds a {type(value).__name__} ({value!r}); store strings or numbers")
