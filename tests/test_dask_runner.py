"""The data stage and the stats and MI Beam jobs on a real distributed engine: Dask, through Beam's DaskRunner.

A 2-worker ``distributed.LocalCluster`` (worker *processes*, the same scheduler protocol a
user's cluster speaks) runs each stage with ``--runner DaskRunner --dask_client_address
<scheduler>``: ``synthetic_catalog/tiny`` is generated on Dask (datasets/beam_generate.py) and
in-process, and every file of the two builds must be the same (the Beam build leaves the head
share out of the metadata); then the stats and MI jobs run on Dask over the Dask-built dataset
and on the in-process FnApiRunner over the in-process one, and every file either writes must be
the same. How to run each stage on a cluster: docs/cluster.md.
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


def assert_same_artifacts(expected: pathlib.Path, actual: pathlib.Path, rel_tol: float = 0.0, paths=None) -> int:
    """Every file under ``expected`` equals the one under ``actual`` (and no file more); returns how many.

    Bytes, except: ``manifest.json`` modulo its run fields (and with each ``paths`` key, a folder
    ``actual``'s job read, replaced by its value), dead letters as multisets of lines (a
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
            for folder, expected_folder in (paths or {}).items():
                got = got.replace(folder.encode(), expected_folder.encode())
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


@pytest.fixture(scope="module")
def tiny_builds(tmp_path_factory, cluster) -> dict:
    """``synthetic_catalog/tiny`` built in-process and on Dask; where, and the Dask tasks it took."""
    root = tmp_path_factory.mktemp("tiny")
    local = inputs.load_dataset(DATASET, data_dir=str(root / "local"))
    before = sum(tasks_run_by_workers(cluster).values())
    on_workers = inputs.load_dataset(DATASET, data_dir=str(root / "dask"), beam_args=on_dask(cluster))
    tasks = sum(tasks_run_by_workers(cluster).values()) - before
    return {"root": root, "local": local, "dask": on_workers, "dask_tasks": tasks}


def assert_same_build(expected: pathlib.Path, actual: pathlib.Path) -> int:
    """Every file of a TFDS data_dir equals the other build's (and no file more); returns how many.

    Bytes, except each ``metadata.json``: equal but for ``counts.head_share``, which only an
    in-process build computes (a Beam build writes null).
    """
    files = sorted(p.relative_to(expected) for p in expected.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(actual) for p in actual.rglob("*") if p.is_file())
    for name in files:
        want, got = (expected / name).read_bytes(), (actual / name).read_bytes()
        if name.name == "metadata.json" and "head_share" in json.loads(want).get("counts", {}):
            want, got = json.loads(want), json.loads(got)
            assert isinstance(want["counts"].pop("head_share"), float) and got["counts"].pop("head_share") is None
        assert got == want, name
    return len(files)


@pytest.mark.timeout(300)
def test_tiny_dataset_built_on_dask_is_the_in_process_build(tiny_builds):
    assert tiny_builds["dask_tasks"] > 0  # generated in the Dask worker processes
    root = tiny_builds["root"]
    # the builders' config folder, and per config: dataset_info, features, metadata, the shards
    assert assert_same_build(root / "local", root / "dask") == 1 + 4 + 6
    expected = json.loads(BUILDER_DIGESTS.read_text())  # the digests of the pre-template in-process code
    dataset = tiny_builds["dask"]
    assert digest.split_digests(dataset.pairs_builder.data_dir) == expected[DATASET]
    assert digest.split_digests(dataset.items_builder.data_dir) == expected[f"{DATASET} items"]
    assert dataset.metadata["counts"]["train"] == expected[DATASET]["train"]["examples"]


@pytest.mark.timeout(300)
def test_tiny_dataset_stats_and_mi_on_dask_equal_the_in_process_run(tmp_path, cluster, tiny_builds):
    root = tiny_builds["root"]
    before = sum(tasks_run_by_workers(cluster).values())
    run_jobs(["--dataset", DATASET, "--tfds-dir", str(root / "local")], tmp_path / "local", LOCAL)
    run_jobs(["--dataset", DATASET, "--tfds-dir", str(root / "dask")], tmp_path / "dask", on_dask(cluster))
    assert sum(tasks_run_by_workers(cluster).values()) > before  # the work ran in the Dask worker processes

    # Floats to 1e-12: the FnApiRunner lifts the combines (partial sums, then merged), Dask does not.
    # The manifests name the dataset folder each job read.
    compared = assert_same_artifacts(
        tmp_path / "local", tmp_path / "dask", rel_tol=1e-12, paths={str(root / "dask"): str(root / "local")}
    )
    assert compared == 18 + 7 + 8  # stats (14 vocabularies), MI, weighted MI: each with manifest and dead letters
    local_stats = json.loads((tmp_path / "local" / "stats" / "manifest.json").read_text())
    assert local_stats["counts"]["malformed_items"] == local_stats["counts"]["malformed_pairs"] == 0
    dask_stats = json.loads((tmp_path / "dask" / "stats" / "manifest.json").read_text())
    assert dask_stats["options"]["beam_args"][:2] == ["--runner", "DaskRunner"]
    assert str(root / "dask") in json.dumps(dask_stats["inputs"])  # it read the Dask-built dataset


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
