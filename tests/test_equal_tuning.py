"""``bench/equal_tuning.py``: the grid resumes from its committed pieces.

Checked against the project's own naming (``tune.study_dir`` / ``tuned_path``,
``experiment.Cell``), a real Optuna SQLite study, and file round trips; the grid's steps are
driven with a ``cli`` that records instead of training, so the skip logic is what is tested.
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
import sys
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _module():
    spec = importlib.util.spec_from_file_location("equal_tuning", ROOT / "bench" / "equal_tuning.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses resolve their annotations through it
    spec.loader.exec_module(module)
    return module


def _study(path: pathlib.Path, name: str, states: list[str]) -> None:
    """A real study database with trials in the given states."""
    import optuna
    from optuna.trial import TrialState

    path.parent.mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(study_name=name, storage=f"sqlite:///{path}", direction="maximize")
    for state in states:
        trial = study.ask()
        if state == "complete":
            study.tell(trial, 0.5)
        else:
            study.tell(trial, state={"pruned": TrialState.PRUNED, "fail": TrialState.FAIL}[state])


def test_piece_paths_follow_tune_and_experiment_naming(tmp_path):
    from recsys_ssl import experiment, tune

    grid = _module()
    pieces = grid.Pieces(tmp_path)
    for regime in ("full", "10pct"):
        assert pieces.study("ssl_cfm", regime) == tune.study_dir(tmp_path, "ssl_cfm", regime)
        assert pieces.tuned("ssl_cfm", regime) == tune.tuned_path(tmp_path, "ssl_cfm", regime)
        # The cell experiment runs for the tuned config file, as the grid passes it.
        (cell,) = experiment.build_grid([str(pieces.tuned("ssl_cfm", regime))], seeds=[3], regimes=[regime])
        assert pieces.metrics("ssl_cfm", regime, 3) == experiment.metrics_path(tmp_path, cell)


def test_finished_trials_counts_complete_and_pruned_not_failed(tmp_path):
    grid = _module()
    db = tmp_path / "study.sqlite3"
    assert grid.finished_trials(db) == 0
    _study(db, "frappe:baseline:full", ["complete", "pruned", "fail", "complete"])
    assert grid.finished_trials(db) == 3


def test_copy_pieces_round_trip_and_newer_wins(tmp_path):
    grid = _module()
    results, run = grid.Pieces(tmp_path / "results"), grid.Pieces(tmp_path / "run")
    db = results.study("baseline", "10pct") / "study.sqlite3"
    db.parent.mkdir(parents=True)
    db.write_bytes(b"stored study")
    results.metrics("baseline", "10pct", 0).parent.mkdir(parents=True)
    results.metrics("baseline", "10pct", 0).write_text('{"recall@50": 0.4}')
    (results.root / "eval" / "other-full-seed0").mkdir(parents=True)  # not this grid's piece

    copied = grid.copy_pieces(results, run, "baseline", "10pct", seeds=(0, 1))
    assert sorted(copied) == ["eval/baseline-10pct-10pct-seed0/metrics.json", "tune/baseline-10pct/study.sqlite3"]
    assert (run.study("baseline", "10pct") / "study.sqlite3").read_bytes() == b"stored study"
    assert not (run.root / "eval" / "other-full-seed0").exists()

    # The run dir's study grew since: restoring again must not roll it back; saving copies it.
    grown = run.study("baseline", "10pct") / "study.sqlite3"
    grown.write_bytes(b"grown study")
    later = time.time() + 5
    os.utime(grown, (later, later))
    assert grid.copy_pieces(results, run, "baseline", "10pct", seeds=(0, 1)) == []
    assert grown.read_bytes() == b"grown study"
    assert grid.copy_pieces(run, results, "baseline", "10pct", seeds=(0, 1)) == ["tune/baseline-10pct/study.sqlite3"]
    assert db.read_bytes() == b"grown study"


class _Recorder:
    def __init__(self):
        self.calls = []

    def __call__(self, *args, timeout=None):
        self.calls.append(args[0])
        return 0


def _grid(module, tmp_path, minutes=60.0):
    grid = module.Grid(
        "frappe",
        module.Pieces(tmp_path / "run"),
        module.Pieces(tmp_path / "results"),
        methods=("baseline",),
        regimes=("10pct",),
        seeds=(0, 1),
        trials=3,
        max_epochs=5,
        deadline=time.monotonic() + minutes * 60,
    )
    grid.cli = _Recorder()
    return grid


def test_a_finished_study_and_its_cells_are_not_rerun(tmp_path):
    module = _module()
    grid = _grid(module, tmp_path)
    _study(grid.run.study("baseline", "10pct") / "study.sqlite3", "frappe:baseline:10pct", ["complete"] * 3)
    grid.run.tuned("baseline", "10pct").parent.mkdir(parents=True)
    grid.run.tuned("baseline", "10pct").write_text("name: baseline\n")
    assert grid.tune("baseline", "10pct") is True
    for seed in (0, 1):
        grid.run.metrics("baseline", "10pct", seed).parent.mkdir(parents=True)
        grid.run.metrics("baseline", "10pct", seed).write_text("{}")
    assert grid.test("baseline", "10pct") is True
    assert grid.cli.calls == []  # nothing trained


def test_an_unfinished_study_runs_and_missing_cells_train(tmp_path):
    module = _module()
    grid = _grid(module, tmp_path)
    _study(grid.run.study("baseline", "10pct") / "study.sqlite3", "frappe:baseline:10pct", ["complete", "fail"])
    assert grid.tune("baseline", "10pct") is False  # the recorder trains nothing: still 1 of 3
    assert grid.cli.calls == ["tune"]
    grid.run.metrics("baseline", "10pct", 0).parent.mkdir(parents=True)
    grid.run.metrics("baseline", "10pct", 0).write_text("{}")
    assert grid.test("baseline", "10pct") is False  # seed 1 still missing
    assert grid.cli.calls == ["tune", "experiment"]


def test_past_the_deadline_nothing_new_starts(tmp_path):
    module = _module()
    grid = _grid(module, tmp_path, minutes=0.0)
    assert grid.tune("baseline", "10pct") is False
    assert grid.test("baseline", "10pct") is False
    assert grid.cli.calls == []


def test_trials_below_one_is_refused():
    module = _module()
    with pytest.raises(SystemExit):
        module.parse_args(["--dataset", "frappe", "--results", "r", "--run-dir", "d", "--trials", "0"])
