"""bench/results/validation_pick.py: ranks with ties, the mean-rank pick and its tie-break, and
reading best values back from real Optuna SQLite studies (incomplete grids are skipped)."""

import pathlib
import sys

import optuna
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "bench" / "results"))

import validation_pick  # noqa: E402


def test_ranks_share_the_mean_rank_on_ties():
    assert validation_pick.ranks({"a": 0.3, "b": 0.5, "c": 0.3, "d": 0.1}) == {"b": 1, "a": 2.5, "c": 2.5, "d": 4}


def test_pick_is_the_lowest_mean_rank_not_the_largest_mean_gain():
    grids = {
        # "big" wins one grid by a wide margin (+100%) and is last in the two others;
        # "steady" is second everywhere
        "g1": {"baseline": 0.10, "big": 0.20, "steady": 0.11, "ssl_x": 0.105},
        "g2": {"baseline": 0.40, "big": 0.30, "steady": 0.42, "ssl_x": 0.43},
        "g3": {"baseline": 0.30, "big": 0.25, "steady": 0.32, "ssl_x": 0.33},
    }
    winner, stats = validation_pick.pick(grids)
    assert stats["big"]["mean_change"] > stats["steady"]["mean_change"]
    # ranks: big 1,4,4 -> 3; steady 2,2,2 -> 2; ssl_x 3,1,1 -> 5/3; baseline 4,3,3 -> 10/3
    assert stats["ssl_x"]["mean_rank"] == pytest.approx(5 / 3)
    assert stats["steady"]["mean_rank"] == pytest.approx(2.0)
    assert winner == "ssl_x"
    assert validation_pick.pick(grids, ["big", "steady"])[0] == "steady"


def test_equal_mean_ranks_go_to_the_larger_mean_change():
    grids = {
        "g1": {"baseline": 0.10, "a": 0.30, "b": 0.20},
        "g2": {"baseline": 0.10, "a": 0.11, "b": 0.12},
    }
    _, stats = validation_pick.pick(grids)
    assert stats["a"]["mean_rank"] == stats["b"]["mean_rank"] == 1.5
    assert validation_pick.pick(grids)[0] == "a"  # +105% mean change vs +60%
    with pytest.raises(ValueError, match="no complete grid"):
        validation_pick.pick({})


def _study(path: pathlib.Path, values: list[float], pruned: int = 0) -> None:
    path.parent.mkdir(parents=True)
    study = optuna.create_study(storage=f"sqlite:///{path}", study_name="d:m:full", direction="maximize")
    for value in values:
        study.add_trial(optuna.trial.create_trial(value=value, params={}, distributions={}))
    for _ in range(pruned):
        study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.PRUNED, params={}, distributions={}))


def test_complete_grids_reads_best_values_and_skips_short_or_missing_studies(tmp_path):
    dataset = tmp_path / "toy"
    for i, method in enumerate(validation_pick.METHODS):
        _study(dataset / "tune" / method / "study.sqlite3", [0.1, 0.2 + i / 100, 0.15], pruned=1)  # 4 finished
    # the 10% regime: one method has only 3 finished trials, another no study at all
    _study(dataset / "tune" / "baseline-10pct" / "study.sqlite3", [0.1, 0.3, 0.2])
    grids, skipped = validation_pick.complete_grids([dataset], min_trials=4)
    assert list(grids) == ["toy full"]
    assert grids["toy full"]["baseline"] == pytest.approx(0.2)
    assert grids["toy full"]["ssl_dropout_only"] == pytest.approx(0.26)
    assert len(skipped) == 1 and skipped[0].startswith("toy 10pct: not complete (baseline, fd,")
    assert validation_pick.pick(grids)[0] == "ssl_dropout_only"  # the last method has the best value
    assert validation_pick.complete_grids([dataset], min_trials=5)[0] == {}


def test_main_refuses_a_folder_without_studies(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        validation_pick.main([str(tmp_path)])
    assert exit_info.value.code == 2
    assert f"{tmp_path}: no tune/ folder" in capsys.readouterr().err


def test_the_shipped_default_is_validations_pick_on_the_committed_grid():
    """Issue 15: the shipped default method is the one that wins on validation. Re-runs the pick
    on the committed studies, so a finished grid that changes the winner fails here until
    ``registry.DEFAULT_CONFIG`` (and the Makefile's CONFIG) follow it."""
    from recsys_ssl.registry import DEFAULT_CONFIG

    root = pathlib.Path(__file__).resolve().parent.parent
    grid = root / "bench" / "results" / "equal_tuning"
    grids, _ = validation_pick.complete_grids(sorted(p for p in grid.iterdir() if (p / "tune").is_dir()), 16)
    assert len(grids) >= 4  # Frappe 10% and full, ML-100K and synthetic 10%: committed
    assert validation_pick.pick(grids)[0] == DEFAULT_CONFIG
    makefile = (root / "Makefile").read_text()
    assert f"CONFIG ?= data/configs/{DEFAULT_CONFIG}.yaml" in makefile
    assert (root / "data" / "configs" / f"{DEFAULT_CONFIG}.yaml").exists()
