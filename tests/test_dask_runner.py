"""The stats and MI Beam jobs on a real distributed engine: Dask, through Beam's DaskRunner.

A 2-worker ``distributed.LocalCluster`` (worker *processes*, the same scheduler protocol a
user's cluster speaks) runs each job through its CLI with ``--runner DaskRunner
--dask_client_address <scheduler>``; the in-process FnApiRunner runs the same job; every file
either writes must be the same. The dataset (``synthetic_catalog/tiny``) is built once,
in-process: the data stage is a TFDS builder, not a Beam pipeline yet (issue 18, item 1).
How to run each stage on a cluster: docs/cluster.md.
"""
import json
import pathlib

import pytest
import yaml

distributed = pytest.importorskip("distributed", reason="needs the [dask] extra: pip install -e '.[dask]'")

import test_pipelines_stats  # noqa: E402  (its hand-made CSVs: malformed rows, an unknown item)

from pipelines import feature_stats, mutual_info  # noqa: E402
from recsys_ssl.datasets import inputs  # noqa: E402

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


def tasks_run_by_workers(cluster) -> int:
    with distributed.Client(cluster.scheduler_address) as client:
        return sum(client.run(lambda dask_worker: dask_worker.state.executed_count).values())


def without_run_fields(manifest: dict) -> dict:
    manifest = {k: v for k, v in manifest.items() if k not in RUN_FIELDS}
    manifest["options"] = {k: v for k, v in manifest["options"].items() if k not in RUN_OPTIONS}
    return manifest


def assert_same_artifacts(expected: pathlib.Path, actual: pathlib.Path) -> int:
    """Every file under ``expected`` equals the one under ``actual`` (and no file more); returns how many.

    Bytes, except: ``manifest.json`` modulo its run fields, and dead letters as multisets of
    lines (a bad row's line is fixed, the order of lines is not part of the job's contract).
    """
    files = sorted(p.relative_to(expected) for p in expected.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(actual) for p in actual.rglob("*") if p.is_file())
    assert not [p for p in actual.rglob("beam-temp-*")], "a temp folder of the file sink was left behind"
    for name in files:
        want, got = (expected / name).read_bytes(), (actual / name).read_bytes()
        if name.name == "manifest.json":
            assert without_run_fields(json.loads(got)) == without_run_fields(json.loads(want)), name
        elif name.parts[0] == "dead_letter":
            assert sorted(got.splitlines()) == sorted(want.splitlines()), name
        else:
            assert got == want, name
    return len(files)


def run_jobs(common: list[str], out: pathlib.Path, beam_args: list[str]) -> None:
    """stats, MI, and MI weighted by TRAIN-pair frequency (it reads the pairs too)."""
    assert feature_stats.main([*common, "--output-dir", str(out / "stats"), *beam_args]) == 0
    assert mutual_info.main([*common, "--output-dir", str(out / "mi"), *beam_args]) == 0
    assert mutual_info.main([*common, "--output-dir", str(out / "mi_weighted"), "--weight-by-frequency", *beam_args]) == 0


@pytest.mark.timeout(240)
def test_tiny_dataset_stats_and_mi_on_dask_equal_the_in_process_run(tmp_path, cluster):
    tfds_dir = str(tmp_path / "tfds")
    inputs.load_dataset(DATASET, data_dir=tfds_dir)  # the data stage, in-process (not a Beam pipeline yet)
    common = ["--dataset", DATASET, "--tfds-dir", tfds_dir]
    before = tasks_run_by_workers(cluster)
    run_jobs(common, tmp_path / "local", LOCAL)
    run_jobs(common, tmp_path / "dask", on_dask(cluster))
    assert tasks_run_by_workers(cluster) > before  # the work ran in the Dask worker processes

    compared = assert_same_artifacts(tmp_path / "local", tmp_path / "dask")
    assert compared >= 14 + 3 + 2 * 6  # vocabularies + frequencies + manifests; MI matrices, groups, dead letters
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
    common = ["--items-file", str(tmp_path / "items.csv"), "--pairs-file", str(tmp_path / "pairs.csv"),
              "--spec", str(tmp_path / "spec.yaml")]
    for where, beam_args in (("local", LOCAL), ("dask", on_dask(cluster))):
        assert feature_stats.main([*common, "--output-dir", str(tmp_path / where / "stats"), *beam_args]) == 0
    assert_same_artifacts(tmp_path / "local", tmp_path / "dask")
    counts = json.loads((tmp_path / "dask" / "stats" / "manifest.json").read_text())["counts"]
    assert (counts["malformed_items"], counts["malformed_pairs"], counts["train_pairs_with_unknown_item"]) == (2, 0, 1)
    dead_items = (tmp_path / "dask" / "stats" / "dead_letter" / "items.jsonl").read_text().splitlines()
    assert len(dead_items) == 2
