"""The stats and MI Beam jobs on a real distributed engine: Dask, through Beam's DaskRunner.

A 2-worker ``distributed.LocalCluster`` (worker *processes*, the same scheduler protocol a
user's cluster speaks) runs each job through its CLI with ``--runner DaskRunner
--dask_client_address <scheduler>``; the in-process FnApiRunner runs the same job; every file
either writes must be the same. The dataset (``synthetic_catalog/tiny``) is built in-process
for those jobs: TFDS's Beam generation does not run on Beam 2.77's DaskRunner (a known
limitation, pinned by the strict xfail below and stated in docs/cluster.md).
How to run each stage on a cluster: docs/cluster.md.
"""

import json
import math
import pathlib

import distributed  # the [dask] extra, also in [test]: never skipped
import pytest
import test_pipelines_mi  # random items with multi-valued and missing features
import test_pipelines_stats  # its hand-made CSVs: malformed rows, an unknown item
import yaml

from pipelines import feature_stats, mutual_info
from recsys_ssl.datasets import digest, inputs

BUILDER_DIGESTS = pathlib.Path(__file__).parent / "data" / "builder_digests.json"

DATASET = "synthetic_catalog/tiny"
LOCAL = ["--direct_running_mode=in_memory"]
# A manifest records when it was written and the Beam arguments it ran with; all else must match.
RUN_FIELDS = ("created",)
RUN_OPTIONS = ("beam_args",)


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(
        n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None, silence_logs=40
    ) as local_cluster:
        yield local_cluster


def on_dask(cluster):
    return ["--runner", "DaskRunner", "--dask_client_address", cluster.scheduler_address]


def tasks_run_by_workers(cluster) -> dict[str, int]:
    """Worker address -> tasks it has executed so far."""
    with distributed.Client(cluster.scheduler_address) as client:
        return client.run(lambda dask_worker: dask_worker.state.executed_count)


def without_run_fields(manifest: dict) -> dict:
    manifest = {k: v for k, v in manifest.items() if k not in RUN_FIELDS}
    manifest["options"] = {k: v for k, v in manifest["options"].items() if k not in RUN_OPTIONS}
    return manifest


def same_numbers(got, want, rel_tol: float) -> bool:
    """JSON values equal, floats to ``rel_tol``."""
    if isinstance(want, float) or isinstance(got, float):
        return math.isclose(got, want, rel_tol=rel_tol, abs_tol=rel_tol)
    if isinstance(want, dict):
        return (
            isinstance(got, dict)
            and got.keys() == want.keys()
            and all(same_numbers(got[k], want[k], rel_tol) for k in want)
        )
    if isinstance(want, list):
        return (
            isinstance(got, list)
            and len(got) == len(want)
            and all(same_numbers(g, w, rel_tol) for g, w in zip(got, want))
        )
    return got == want


def csv_cells(text: bytes) -> list:
    return [
        [float(cell) if cell[:1].isdigit() or cell[:1] == "-" else cell for cell in row.split(",")]
        for row in text.decode().splitlines()
    ]


def assert_same_artifacts(expected: pathlib.Path, actual: pathlib.Path, rel_tol: float = 0.0) -> int:
    """Every file under ``expected`` equals the one under ``actual`` (and no file more); returns how many.

    Bytes, except: ``manifest.json`` modulo its run fields, dead letters as multisets of lines (a
    bad row's line is fixed, the order of lines is not part of the job's contract), and with
    ``rel_tol`` the floats of JSON / CSV files to that relative tolerance (a sum of fractional
    masses depends on the order it is added in: partitions, combiner lifting).
    """
    files = sorted(p.relative_to(expected) for p in expected.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(actual) for p in actual.rglob("*") if p.is_file())
    assert not [p for p in actual.rglob("beam-temp-*")], "a temp folder of the file sink was left behind"
    for name in files:
        want, got = (expected / name).read_bytes(), (actual / name).read_bytes()
        if name.name == "manifest.json":
            want, got = without_run_fields(json.loads(want)), without_run_fields(json.loads(got))
            assert got == want if not rel_tol else same_numbers(got, want, rel_tol), name
        elif name.parts[-2] == "dead_letter":
            assert sorted(got.splitlines()) == sorted(want.splitlines()), name
        elif rel_tol and name.suffix == ".json":
            assert same_numbers(json.loads(got), json.loads(want), rel_tol), name
        elif rel_tol and name.suffix == ".csv":
            assert same_numbers(csv_cells(got), csv_cells(want), rel_tol), name
        else:
            assert got == want, name
    return len(files)


def run_jobs(common: list[str], out: pathlib.Path, beam_args: list[str]) -> None:
    """stats, MI, and MI weighted by TRAIN-pair frequency (it reads the pairs too)."""
    assert feature_stats.main([*common, "--output-dir", str(out / "stats"), *beam_args]) == 0
    assert mutual_info.main([*common, "--output-dir", str(out / "mi"), *beam_args]) == 0
    assert (
        mutual_info.main([*common, "--output-dir", str(out / "mi_weighted"), "--weight-by-frequency", *beam_args]) == 0
    )


@pytest.mark.xfail(
    strict=True,
    reason="Beam 2.77's DaskRunner hands TFDS's Beam writer an empty side input: the global "
    "Top.Largest(1) of the example keys (tensorflow_datasets/core/writer.py, _assign_shard: "
    "largest_key[0] -> IndexError). When this passes, drop the mark and build the jobs' data on Dask too.",
)
@pytest.mark.timeout(300)
def test_tiny_dataset_built_on_dask_has_the_in_process_examples(tmp_path, cluster):
    before = sum(tasks_run_by_workers(cluster).values())
    dataset = inputs.load_dataset(DATASET, data_dir=str(tmp_path / "tfds"), beam_args=on_dask(cluster))
    assert sum(tasks_run_by_workers(cluster).values()) > before  # generated in the Dask worker processes
    expected = json.loads(BUILDER_DIGESTS.read_text())
    assert digest.split_digests(dataset.pairs_builder.data_dir) == expected[DATASET]
    assert digest.split_digests(dataset.items_builder.data_dir) == expected[f"{DATASET} items"]


@pytest.mark.timeout(300)
def test_tiny_dataset_stats_and_mi_on_dask_equal_the_in_process_run(tmp_path, cluster):
    tfds_dir = str(tmp_path / "tfds")
    inputs.load_dataset(DATASET, data_dir=tfds_dir)  # in-process (TFDS's Beam writer fails on Dask: see above)
    common = ["--dataset", DATASET, "--tfds-dir", tfds_dir]
    before = sum(tasks_run_by_workers(cluster).values())
    run_jobs(common, tmp_path / "local", LOCAL)
    run_jobs(common, tmp_path / "dask", on_dask(cluster))
    assert sum(tasks_run_by_workers(cluster).values()) > before  # the work ran in the Dask worker processes

    # Floats to 1e-12: the FnApiRunner lifts the combines (partial sums, then merged), Dask does not.
    compared = assert_same_artifacts(tmp_path / "local", tmp_path / "dask", rel_tol=1e-12)
    assert compared == 18 + 7 + 8  # stats (14 vocabularies), MI, weighted MI: each with manifest and dead letters
    local_stats = json.loads((tmp_path / "local" / "stats" / "manifest.json").read_text())
    assert local_stats["counts"]["malformed_items"] == local_stats["counts"]["malformed_pairs"] == 0
    dask_options = json.loads((tmp_path / "dask" / "stats" / "manifest.json").read_text())["options"]
    assert dask_options["beam_args"][:2] == ["--runner", "DaskRunner"]


@pytest.mark.timeout(180)
def test_malformed_rows_and_unknown_items_on_dask_equal_the_in_process_run(tmp_path, cluster):
    """The dead-letter branch, which the tiny dataset never takes (it has no bad rows)."""
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(test_pipelines_stats.SPEC))
    (tmp_path / "items.csv").write_text(test_pipelines_stats.ITEMS_CSV)
    (tmp_path / "pairs.csv").write_text(test_pipelines_stats.PAIRS_CSV)
    common = [
        "--items-file",
        str(tmp_path / "items.csv"),
        "--pairs-file",
        str(tmp_path / "pairs.csv"),
        "--spec",
        str(tmp_path / "spec.yaml"),
    ]
    for where, beam_args in (("local", LOCAL), ("dask", on_dask(cluster))):
        assert feature_stats.main([*common, "--output-dir", str(tmp_path / where / "stats"), *beam_args]) == 0
    assert_same_artifacts(tmp_path / "local", tmp_path / "dask")
    counts = json.loads((tmp_path / "dask" / "stats" / "manifest.json").read_text())["counts"]
    assert (counts["malformed_items"], counts["malformed_pairs"], counts["train_pairs_with_unknown_item"]) == (2, 0, 1)
    dead_items = (tmp_path / "dask" / "stats" / "dead_letter" / "items.jsonl").read_text().splitlines()
    assert len(dead_items) == 2


@pytest.mark.timeout(180)
def test_many_shards_spread_over_both_workers_equal_the_in_process_run(tmp_path, cluster):
    """4 Parquet files = 4 shards; ``--dask_partition_size 1`` makes each its own Dask partition,
    so reading runs on both workers and the combines shuffle across partitions."""
    spec = test_pipelines_mi.SPEC
    (tmp_path / "spec.json").write_text(json.dumps(spec.to_dict()))
    items = test_pipelines_mi.random_items(2000, seed=3)
    (tmp_path / "items").mkdir()
    for part in range(4):
        rows = slice(part * 500, (part + 1) * 500)
        test_pipelines_mi.write_parquet({k: v[rows] for k, v in items.items()}, tmp_path / "items" / f"{part}.parquet")
    pairs = items["item_id"][::3] + ["i_unknown"]
    (tmp_path / "pairs.csv").write_text("query_id,item_id\n" + "".join(f"q{i % 7},{x}\n" for i, x in enumerate(pairs)))
    common = [
        "--items-file",
        str(tmp_path / "items" / "*.parquet"),
        "--pairs-file",
        str(tmp_path / "pairs.csv"),
        "--spec",
        str(tmp_path / "spec.json"),
        "--batch-size",
        "128",
    ]
    before = tasks_run_by_workers(cluster)
    for where, beam_args in (("local", LOCAL), ("dask", [*on_dask(cluster), "--dask_partition_size", "1"])):
        run_jobs(common, tmp_path / where, beam_args)
    after = tasks_run_by_workers(cluster)
    assert all(after[worker] > before.get(worker, 0) for worker in after) and len(after) == 2
    assert (
        assert_same_artifacts(tmp_path / "local", tmp_path / "dask", rel_tol=1e-12) == 10 + 7 + 8
    )  # stats, MI, weighted MI
    counts = json.loads((tmp_path / "dask" / "mi" / "manifest.json").read_text())["counts"]
    assert counts["items"] == 2000 and counts["malformed_items"] == 0
