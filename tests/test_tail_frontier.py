"""bench/results/tail_frontier.py: Spearman's rho against a hand computation, the per-method
summary and the both-bars count on real Optuna SQLite studies, and the CLI's errors."""

import pathlib
import sys

import optuna
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "bench" / "results"))

import tail_frontier  # noqa: E402


def test_spearman_matches_a_hand_computation_with_ties():
    # x ranks (1 = highest): 10 -> 1, 5 -> 2.5, 5 -> 2.5, 1 -> 4; y = (0, 1, 2, 3) ranks 4, 3, 2, 1.
    # Pearson of (1, 2.5, 2.5, 4) and (4, 3, 2, 1): centred (-1.5, 0, 0, 1.5) and (1.5, .5, -.5, -1.5)
    # -> cov -4.5, norms sqrt(4.5) and sqrt(5) -> rho = -4.5 / sqrt(22.5)
    assert tail_frontier.spearman([10, 5, 5, 1], [0, 1, 2, 3]) == pytest.approx(-4.5 / 22.5**0.5)
    assert tail_frontier.spearman([1, 2, 3], [4, 5, 6]) == pytest.approx(1.0)
    assert tail_frontier.spearman([1, 1, 1], [4, 5, 6]) != tail_frontier.spearman([1, 1, 1], [4, 5, 6])  # nan


def _study(path: pathlib.Path, points: list[tuple[float, float]], pruned: int = 0) -> None:
    path.parent.mkdir(parents=True)
    study = optuna.create_study(storage=f"sqlite:///{path}", study_name="d:m:full", direction="maximize")
    for value, tail in points:
        trial = optuna.trial.create_trial(value=value, params={}, distributions={}, user_attrs={"tail_recall": tail})
        study.add_trial(trial)
    for _ in range(pruned):  # pruned trials have no final value: never counted
        study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.PRUNED, params={}, distributions={}))


def test_frontier_reads_every_complete_trial_and_counts_both_bars(tmp_path, capsys):
    dataset = tmp_path / "toy"
    _study(dataset / "tune" / "baseline" / "study.sqlite3", [(0.50, 0.01), (0.30, 0.05)], pruned=2)
    _study(dataset / "tune" / "ssl_rfm" / "study.sqlite3", [(0.49, 0.04), (0.47, 0.06), (0.20, 0.02)])
    _study(dataset / "tune" / "so-10pct" / "study.sqlite3", [(0.9, 0.9)])  # the other regime: ignored
    per_method = {m: tail_frontier.trials(dataset / "tune" / m / "study.sqlite3") for m in ("baseline", "ssl_rfm")}
    assert per_method["baseline"] == [(0.50, 0.01), (0.30, 0.05)]
    result = tail_frontier.frontier(per_method, recall_bar=0.48, tail_bar=0.03)
    assert result["rows"]["baseline"] == {"trials": 2, "best": (0.50, 0.01), "tailmost": (0.30, 0.05), "both": 0}
    assert result["rows"]["ssl_rfm"] == {"trials": 3, "best": (0.49, 0.04), "tailmost": (0.47, 0.06), "both": 1}
    assert (result["trials"], result["both"]) == (5, 1)
    r50 = [0.50, 0.30, 0.49, 0.47, 0.20]
    tail = [0.01, 0.05, 0.04, 0.06, 0.02]
    assert result["spearman"] == pytest.approx(tail_frontier.spearman(r50, tail))

    assert tail_frontier.main([str(dataset), "--regime", "full"]) == 0
    out = capsys.readouterr().out
    assert "| ssl_rfm | 3 | 0.4900 / 0.0400 | 0.4700 / 0.0600 | 1 |" in out
    assert "1 of 5 trials meet both bars on validation" in out
    assert "| so |" not in out  # no full-data study for so


def test_a_trial_without_tail_recall_and_a_missing_folder_are_clear_errors(tmp_path, capsys):
    path = tmp_path / "toy" / "tune" / "fd" / "study.sqlite3"
    path.parent.mkdir(parents=True)
    study = optuna.create_study(storage=f"sqlite:///{path}", study_name="d:fd:full", direction="maximize")
    study.add_trial(optuna.trial.create_trial(value=0.3, params={}, distributions={}))
    with pytest.raises(SystemExit) as exit_info:
        tail_frontier.main([str(tmp_path / "toy")])
    assert exit_info.value.code == 2
    assert f"{path}: trial #0 has no tail_recall user attribute" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        tail_frontier.main([str(tmp_path)])
    assert f"{tmp_path}: no tune/ folder" in capsys.readouterr().err
