"""interactions_csv from shards: glob patterns, comma-separated lists, and Parquet files.

The tiny catalog of raw_fixtures written as one CSV, as CSV shards and as Parquet (single and
sharded, with a list column and nulls) builds the same examples: the single-CSV builds are
the checked-in digests (tests/data/builder_digests.json), the file-order (no timestamp)
builds are compared with the one-CSV build of the same rows.
"""

import csv
import json
import pathlib

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import raw_fixtures
import yaml

from recsys_ssl import features as features_lib
from recsys_ssl.datasets import _shards, build, digest, inputs, interactions_csv

DIGESTS = json.loads((pathlib.Path(__file__).parent / "data" / "builder_digests.json").read_text())
INTERACTIONS_HEADER = ["user", "sku", "ts", "split"]
ITEMS_HEADER = ["sku", "brand", "colors", "tags"]
REGION = dict(raw_fixtures.CSV_QUERIES)
THIRDS = (slice(0, 3), slice(3, 6), slice(6, 9))


def _write_csv(path: pathlib.Path, header, rows) -> pathlib.Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([header, *rows])
    return path


def _write_parquet(path: pathlib.Path, columns: dict, types: dict | None = None) -> pathlib.Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    types = types or {}
    table = pa.table({k: pa.array(v, type=types.get(k)) for k, v in columns.items()})
    pq.write_table(table, path, row_group_size=2)
    return path


def _spec(folder: pathlib.Path, timestamp=True) -> pathlib.Path:
    spec = dict(raw_fixtures.CSV_SPEC)
    if not timestamp:
        del spec["timestamp"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "spec.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return folder / "spec.yaml"


def _interaction_rows(per_row_region=False):
    return [list(map(str, r)) + ([REGION[r[0]]] if per_row_region else []) for r in raw_fixtures.CSV_INTERACTIONS]


def _items_parquet(path: pathlib.Path) -> pathlib.Path:
    """The items with colors as a list column (b2: null, a null element in a1) and tags as '|' text (c3: null)."""
    return _write_parquet(
        path,
        {
            "sku": ["a1", "b2", "c3", "d4"],
            "brand": ["acme", "bolt", "acme", "core"],
            "colors": [["red", None, "blue"], None, ["green"], ["red", "green", "blue", "black"]],
            "tags": ["new|sale", "sale", None, "new"],
            "stock": [3, 0, 7, 1],  # not in the spec: read, never used
        },
    )


def _interactions_parquet(path: pathlib.Path, rows, per_row_region=False) -> pathlib.Path:
    columns = {
        "user": [r[0] for r in rows],
        "sku": [r[1] for r in rows],
        "ts": [int(r[2]) for r in rows],  # an int64 column
        "split": [r[3] for r in rows],
    }
    if per_row_region:
        columns["region"] = [r[4] for r in rows]
    return _write_parquet(path, columns)


def _write_catalog(folder: pathlib.Path, layout: str) -> dict:
    """The catalog in one ``layout``; returns make_configs' file arguments (strings)."""
    rows, items = _interaction_rows(), [list(r) for r in raw_fixtures.CSV_ITEMS]
    queries = [list(q) for q in raw_fixtures.CSV_QUERIES]
    if layout == "csv glob":
        for i, part in reversed(list(enumerate(THIRDS))):  # written out of order: read sorted
            _write_csv(folder / f"interactions-{i}.csv", INTERACTIONS_HEADER, rows[part])
        _write_csv(folder / "items-0.csv", ITEMS_HEADER, items[:2])
        _write_csv(folder / "items-1.csv", ITEMS_HEADER, items[2:])
        _write_csv(folder / "queries-0.csv", ["user", "region"], queries)
        return dict(
            interactions=str(folder / "interactions-*.csv"),
            items=str(folder / "items-*.csv"),
            queries=str(folder / "queries-?.csv"),
        )
    if layout == "csv list":
        names = [_write_csv(folder / f"i{i}.csv", INTERACTIONS_HEADER, rows[part]) for i, part in enumerate(THIRDS)]
        _write_csv(folder / "items.csv", ITEMS_HEADER, items)
        _write_csv(folder / "queries.csv", ["user", "region"], queries)
        return dict(
            interactions=",".join(str(p) for p in reversed(names)),
            items=str(folder / "items.csv"),
            queries=str(folder / "queries.csv"),
        )
    if layout == "parquet":
        return dict(
            interactions=str(_interactions_parquet(folder / "interactions.parquet", rows)),
            items=str(_items_parquet(folder / "items.parquet")),
            queries=str(
                _write_parquet(folder / "queries.parquet", {"user": list(REGION), "region": list(REGION.values())})
            ),
        )
    assert layout == "parquet shards", layout
    for i, part in enumerate(THIRDS):
        _interactions_parquet(folder / f"interactions-{i}.parquet", rows[part])
    _items_parquet(folder / "items.parquet")
    _write_csv(folder / "queries.csv", ["user", "region"], queries)  # CSV and Parquet inputs mix
    return dict(
        interactions=str(folder / "interactions-*.parquet"),
        items=str(folder / "items.parquet"),
        queries=str(folder / "queries.csv"),
    )


def _build(tmp_path, name, files, spec, split_column=None):
    configs = interactions_csv.make_configs(name, spec=spec, split_column=split_column, **files)
    ds = inputs.load_dataset(f"interactions_csv/{name}", data_dir=tmp_path / "tfds", csv_configs=configs)
    return {
        "pairs": digest.split_digests(ds.pairs_builder.data_dir),
        "items": digest.split_digests(ds.items_builder.data_dir),
        "metadata": ds.metadata,
    }


@pytest.fixture(autouse=True)
def _small_batches(monkeypatch):
    monkeypatch.setattr(_shards, "BATCH_ROWS", 2)  # several Parquet batches per shard


@pytest.mark.parametrize("layout", ["csv glob", "csv list", "parquet", "parquet shards"])
def test_sharded_and_parquet_inputs_build_the_one_csv_examples(tmp_path, layout):
    folder = tmp_path / "in"
    files = _write_catalog(folder, layout)
    built = _build(tmp_path, "shop", files, _spec(folder))
    assert built["pairs"] == DIGESTS["interactions_csv/shop"]
    assert built["items"] == DIGESTS["interactions_csv/shop items"]
    assert built["metadata"]["dropped"] == {}


def test_parquet_with_per_row_query_features_and_split_column(tmp_path):
    folder = tmp_path / "in"
    rows = _interaction_rows(per_row_region=True)
    for i, part in enumerate(THIRDS):
        _interactions_parquet(folder / f"interactions-{i}.parquet", rows[part], per_row_region=True)
    files = dict(
        interactions=str(folder / "interactions-*.parquet"), items=str(_items_parquet(folder / "items.parquet"))
    )
    built = _build(tmp_path, "shop_rows", files, _spec(folder), split_column="split")
    assert built["pairs"] == DIGESTS["interactions_csv/shop_rows"]
    assert built["items"] == DIGESTS["interactions_csv/shop_rows items"]


def test_file_order_continues_across_shards(tmp_path):
    """Without a timestamp, time is the line in the shards' concatenation (u2's last row is b2, not a1)."""
    one = tmp_path / "one"
    _write_csv(one / "interactions.csv", INTERACTIONS_HEADER, _interaction_rows())
    _write_csv(one / "items.csv", ITEMS_HEADER, raw_fixtures.CSV_ITEMS)
    _write_csv(one / "queries.csv", ["user", "region"], raw_fixtures.CSV_QUERIES)
    reference = _build(
        tmp_path, "one", {k: str(one / f"{k}.csv") for k in ("interactions", "items", "queries")}, _spec(one, False)
    )
    config = interactions_csv.make_configs(
        "x", str(one / "interactions.csv"), str(one / "items.csv"), "", str(one / "queries.csv")
    )[0]
    data = interactions_csv.read_csvs(config, features_lib.load_spec(_spec(one, False)))
    assert list(data.pairs.timestamps) == list(range(2, 11))  # line numbers, the header is line 1
    for layout in ("csv glob", "parquet shards"):
        folder = tmp_path / layout.replace(" ", "_")
        built = _build(tmp_path, layout.replace(" ", "_"), _write_catalog(folder, layout), _spec(folder, False))
        assert (built["pairs"], built["items"]) == (reference["pairs"], reference["items"]), layout
    assert reference["pairs"] != DIGESTS["interactions_csv/shop"]  # the order did matter


def _read(folder: pathlib.Path, **files):
    """read_csvs on ``files`` (names in ``folder``; lists and patterns as given), the tiny spec."""
    files = {k: ",".join(str(folder / p) for p in v.split(",")) for k, v in files.items()}
    config = interactions_csv.make_configs("x", spec="", **files)[0]
    return interactions_csv.read_csvs(config, features_lib.load_spec(_spec(folder)))


@pytest.fixture
def parts(tmp_path):
    """The catalog as 3 interactions shards, items and queries CSVs in ``tmp_path``."""
    rows = _interaction_rows()
    for i, part in enumerate(THIRDS):
        _write_csv(tmp_path / f"interactions-{i}.csv", INTERACTIONS_HEADER, rows[part])
    _write_csv(tmp_path / "items.csv", ITEMS_HEADER, raw_fixtures.CSV_ITEMS)
    _write_csv(tmp_path / "queries.csv", ["user", "region"], raw_fixtures.CSV_QUERIES)
    return tmp_path


def test_header_mismatch_names_the_shard_and_the_column(parts):
    _write_csv(parts / "interactions-1.csv", ["user", "sku", "time", "split"], _interaction_rows()[3:6])
    with pytest.raises(
        ValueError,
        match=r"interactions-1\.csv:1: header differs from .*interactions-0\.csv's: column 3 is 'time', not 'ts'",
    ):
        _read(parts, interactions="interactions-*.csv", items="items.csv", queries="queries.csv")


def test_empty_glob_names_the_pattern(parts):
    with pytest.raises(FileNotFoundError, match=r"items: pattern '.*items-\*\.csv' matches no file"):
        _read(parts, interactions="interactions-*.csv", items="items-*.csv", queries="queries.csv")


def test_bad_row_in_a_later_shard_names_that_shard_and_its_line(parts):
    with open(parts / "interactions-2.csv", "a") as f:
        f.write("u1,a1\n")
    with pytest.raises(ValueError, match=r"interactions-2\.csv:5: expected 4 fields"):
        _read(parts, interactions="interactions-*.csv", items="items.csv", queries="queries.csv")


def test_duplicate_id_across_shards_names_both(parts):
    # Read in sorted path order: items-2.csv ('-' sorts before '.') comes first.
    _write_csv(parts / "items-2.csv", ITEMS_HEADER, [raw_fixtures.CSV_ITEMS[0]])
    with pytest.raises(ValueError, match=r"items\.csv:2: duplicate item id 'a1' \(first at .*items-2\.csv:2\)"):
        _read(parts, interactions="interactions-*.csv", items="items.csv,items-2.csv", queries="queries.csv")


def test_unknown_ids_in_shards_are_counted(parts):
    _write_csv(
        parts / "interactions-3.csv", INTERACTIONS_HEADER, [["u1", "zz9", "60", "train"], ["u9", "a1", "1", "test"]]
    )
    data = _read(parts, interactions="interactions-*.csv", items="items.csv", queries="queries.csv")
    assert data.dropped == {"unknown item id (not in items.csv)": 1, "unknown query id (not in queries.csv)": 1}
    assert len(data.pairs.timestamps) == len(raw_fixtures.CSV_INTERACTIONS)


@pytest.mark.parametrize(
    "column, values, message",
    [
        ("ts", ["10", "20", "later"], r"interactions\.parquet: row 3: timestamp 'ts' must be an integer, got 'later'"),
        ("ts", [10.0, 20.5, 30.0], r"interactions\.parquet: row 1: timestamp 'ts' must be an integer, got '10\.0'"),
        ("sku", [["a1"], ["b2"], ["c3"]], r"interactions\.parquet: row 1: column 'sku' holds a list"),
        ("split", [b"train", b"\xff", b"train"], r"interactions\.parquet: row 2: column 'split' is not UTF-8"),
    ],
)
def test_bad_parquet_value_names_file_row_and_field(parts, column, values, message):
    rows = _interaction_rows()[:3]
    columns = {name: [r[i] for r in rows] for i, name in enumerate(INTERACTIONS_HEADER)}
    columns[column] = values
    _write_parquet(parts / "interactions.parquet", columns)
    with pytest.raises(ValueError, match=message):
        _read(parts, interactions="interactions.parquet", items="items.csv", queries="queries.csv")


def test_cli_passes_patterns_lists_and_parquet_through(tmp_path, capsys):
    folder = tmp_path / "in"
    files = _write_catalog(folder, "parquet shards")
    argv = ["--dataset", "interactions_csv/shop", "--tfds-dir", str(tmp_path / "tfds"), "--spec", str(_spec(folder))]
    argv += ["--interactions", files["interactions"], "--items", files["items"], "--queries", files["queries"]]
    assert build.main(argv) == 0
    out = capsys.readouterr().out
    summary = json.loads(out[out.index("{\n") :])  # TFDS prints its progress line first
    assert summary["splits"]["test"] == DIGESTS["interactions_csv/shop"]["test"]["examples"]
    ds = inputs.load_dataset("interactions_csv/shop", data_dir=tmp_path / "tfds")
    assert digest.split_digests(ds.pairs_builder.data_dir) == DIGESTS["interactions_csv/shop"]
    assert ds.metadata["files"]["interactions"] == files["interactions"]  # the pattern, as given
