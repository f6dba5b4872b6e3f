"""Corrupt inputs through the CLIs: a clear one-line error naming the file / line / column, or a
counted skip, never a traceback and never a silently wrong result.

`recsys-ssl data` (interactions_csv) and the Beam jobs (`recsys-ssl mi` / `stats`) read the same
kind of bad files: truncated, wrongly typed, empty, header-only, not UTF-8, not matching the spec.
Most cases call ``cli.main`` in this process (the same code path as the console script; an
escaping exception would fail the test); one case per tool runs the real command in a subprocess
to pin what a user sees on stderr.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest
import raw_fixtures
import yaml

from recsys_ssl import cli

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _csv_files(folder: pathlib.Path, **kwargs) -> dict:
    return raw_fixtures.write_interactions_csv(folder, **kwargs)


def _data_argv(files: dict, run_dir: pathlib.Path, name: str = "bad") -> list[str]:
    argv = [
        "data",
        "--dataset",
        f"interactions_csv/{name}",
        "--interactions",
        str(files["interactions"]),
        "--items",
        str(files["items"]),
        "--spec",
        str(files["spec"]),
        "--run-dir",
        str(run_dir),
    ]
    if "queries" in files:
        argv += ["--queries", str(files["queries"])]
    return argv


def _one_error_line(err: str, stage: str) -> str:
    """The error line of a failed stage; the stderr holds no traceback."""
    assert "Traceback" not in err, err[-3000:]
    lines = [line for line in err.splitlines() if line.startswith(f"recsys-ssl {stage}: error:")]
    assert len(lines) == 1, err[-3000:]
    return lines[0]


def _truncate_mid_line(path: pathlib.Path) -> None:
    """Cuts the file inside its last data row (as an interrupted copy would), no final newline."""
    text = path.read_text()
    last_line_start = text.rstrip("\n").rfind("\n") + 1
    path.write_text(text[: last_line_start + 3])


# -- recsys-ssl data (interactions_csv) ------------------------------------------------------------
def _corrupt(case: str, files: dict) -> None:
    interactions, items, spec = files["interactions"], files["items"], files["spec"]
    if case == "truncated interactions":
        _truncate_mid_line(interactions)
    elif case == "timestamp not an integer":
        interactions.write_text(interactions.read_text().replace("u1,c3,30,", "u1,c3,thirty,"))
    elif case == "empty items file":
        items.write_text("")
    elif case == "items header only":
        items.write_text(items.read_text().splitlines()[0] + "\n")
    elif case == "items not UTF-8":
        items.write_bytes(b"\xff\xfe\x00s\x00k\x00u\x00\n" + bytes(range(128, 256)))
    elif case == "every interaction has an unknown item":
        lines = interactions.read_text().splitlines()
        interactions.write_text("\n".join([lines[0]] + [line.replace(",", ",zz_", 1) for line in lines[1:]]) + "\n")
    elif case == "spec does not match the data":
        spec_dict = yaml.safe_load(spec.read_text())
        spec_dict["item_features"].append({"name": "size", "kind": "categorical"})
        spec.write_text(yaml.safe_dump(spec_dict))
    elif case == "spec not valid YAML":
        spec.write_text(spec.read_text() + "query_features: [\n")
    elif case == "items file missing":
        items.unlink()
    else:
        raise AssertionError(case)


# (case, words the one error line must contain). Line numbers count the header as line 1.
DATA_CASES = [
    ("truncated interactions", r"interactions.csv:10: expected 4 fields"),
    ("timestamp not an integer", r"interactions.csv:4: timestamp 'ts' must be an integer, got 'thirty'"),
    ("empty items file", r"items.csv:1: empty file, expected a header row"),
    ("items header only", r"items.csv: no item id rows after the header"),
    ("items not UTF-8", r"items.csv:1: not UTF-8 text"),
    (
        "every interaction has an unknown item",
        "interactions.csv: no usable interactions (dropped: {'unknown item id (not in items.csv)': 9})",
    ),
    ("spec does not match the data", "items.csv: column 'size'"),
    ("spec not valid YAML", "spec.yaml: not valid YAML"),
    ("items file missing", "items.csv does not exist"),
]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("case,words", DATA_CASES, ids=[c[0] for c in DATA_CASES])
def test_data_stage_names_the_bad_file_and_builds_nothing(tmp_path, capsys, case, words):
    files = _csv_files(tmp_path / "csv")
    _corrupt(case, files)
    code = cli.main(_data_argv(files, tmp_path / "run"))
    out, err = capsys.readouterr()
    assert code != 0
    assert words in _one_error_line(err, "data"), err
    assert "{" not in out  # no JSON summary: nothing was built
    # ... and no half-built dataset is left behind for a later run to pick up.
    assert not list((tmp_path / "run" / "tfds").rglob("dataset_info.json"))


@pytest.mark.timeout(120)
def test_truncated_csv_fails_cleanly_in_a_real_process(tmp_path):
    files = _csv_files(tmp_path / "csv")
    _truncate_mid_line(files["interactions"])
    command = [sys.executable, "-m", "recsys_ssl.cli", *_data_argv(files, tmp_path / "run")]
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=100)
    assert run.returncode != 0
    assert "interactions.csv:10: expected 4 fields" in _one_error_line(run.stderr, "data")


@pytest.mark.timeout(60)
def test_after_a_failed_build_the_repaired_file_builds_everything(tmp_path, capsys):
    files = _csv_files(tmp_path / "csv")
    good = files["interactions"].read_text()
    _truncate_mid_line(files["interactions"])
    argv = _data_argv(files, tmp_path / "run")
    assert cli.main(argv) != 0
    # The same command on the repaired file builds the whole dataset: the failure left nothing stale.
    files["interactions"].write_text(good)
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    summary = json.loads(out[out.index("{\n") :])
    assert summary["interactions"] == len(raw_fixtures.CSV_INTERACTIONS) and summary["dropped"] == {}


@pytest.mark.timeout(60)
def test_unknown_items_among_good_rows_are_a_counted_skip(tmp_path, capsys):
    files = _csv_files(tmp_path / "csv", extra_interaction_lines=("u2,zz1,70,train", "u3,zz2,80,test"))
    assert cli.main(_data_argv(files, tmp_path / "run", name="some_unknown")) == 0
    out = capsys.readouterr().out
    summary = json.loads(out[out.index("{\n") :])  # TFDS prints its progress line first
    assert summary["dropped"] == {"unknown item id (not in items.csv)": 2}
    assert summary["interactions"] == len(raw_fixtures.CSV_INTERACTIONS)


# -- the Beam jobs on the same kind of files -------------------------------------------------------
def _beam_files(folder: pathlib.Path) -> dict:
    """items.csv / pairs.csv (query features + item id per row) and the spec of raw_fixtures."""
    files = _csv_files(folder)
    region = dict(raw_fixtures.CSV_QUERIES)
    pairs = folder / "pairs.csv"
    pairs.write_text(
        "user,region,sku\n" + "".join(f"{u},{region[u]},{s}\n" for u, s, _, _ in raw_fixtures.CSV_INTERACTIONS)
    )
    return dict(files, pairs=pairs)


def _beam_argv(stage: str, files: dict, out: pathlib.Path) -> list[str]:
    argv = [
        stage,
        "--items-file",
        str(files["items"]),
        "--spec",
        str(files["spec"]),
        "--output-dir",
        str(out),
        "--direct_running_mode=in_memory",
    ]
    return argv + (["--pairs-file", str(files["pairs"])] if stage == "stats" else [])


@pytest.mark.timeout(120)
@pytest.mark.parametrize("stage", ["stats", "mi"])
def test_beam_jobs_count_a_truncated_row_in_the_dead_letter_and_succeed(tmp_path, capsys, stage):
    files = _beam_files(tmp_path)
    _truncate_mid_line(files["items"])  # "d4,core,red;green;..." -> "d4," : 2 fields of 4
    assert cli.main(_beam_argv(stage, files, tmp_path / stage)) == 0
    capsys.readouterr()
    dead = [json.loads(line) for line in (tmp_path / stage / "dead_letter" / "items.jsonl").read_text().splitlines()]
    assert len(dead) == 1 and dead[0]["text"] == "d4," and dead[0]["line"] == 5, dead
    assert "expected 4 fields, got 2" in dead[0]["reason"]
    counts = json.loads((tmp_path / stage / "manifest.json").read_text())["counts"]
    assert counts["malformed_items"] == 1 and counts["items"] == len(raw_fixtures.CSV_ITEMS) - 1


BEAM_CASES = [
    ("empty items file", "items.csv:1: empty file, expected a header row"),
    ("items header only", "no data rows after the header"),
    ("items not UTF-8", "items.csv:1: the header is not UTF-8 text"),
    ("spec does not match the data", "items.csv: column 'size'"),
    ("items file missing", "no csv file matches"),
]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("case,words", BEAM_CASES, ids=[c[0] for c in BEAM_CASES])
def test_beam_job_on_an_unreadable_file_fails_before_running_naming_it(tmp_path, capsys, case, words):
    files = _beam_files(tmp_path)
    _corrupt(case, files)
    assert cli.main(_beam_argv("mi", files, tmp_path / "mi")) == 2
    assert words in _one_error_line(capsys.readouterr().err, "mi")
    assert not (tmp_path / "mi" / "manifest.json").exists()


@pytest.mark.timeout(120)
def test_beam_job_spec_mismatch_in_a_real_process_prints_one_line(tmp_path):
    """Checked in the driver: a worker would have logged its traceback before the job failed."""
    files = _beam_files(tmp_path)
    _corrupt("spec does not match the data", files)
    command = [sys.executable, "-m", "recsys_ssl.cli", *_beam_argv("stats", files, tmp_path / "stats")]
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=100)
    assert run.returncode == 2
    assert "items.csv: column 'size'" in _one_error_line(run.stderr, "stats")
