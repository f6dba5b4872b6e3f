"""bench/results/target_check.py on hand-made summaries: the 2-std tail rule, the 1% overall rule,
the count over datasets, and that the paper's baselines cannot meet the SSL target."""

import json
import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "bench" / "results"))

import target_check  # noqa: E402


def _rows(group, overall, tail, regime="10pct"):
    """Summary rows of one group: (mean, std) for overall and tail Recall@50."""
    return [
        {"group": group, "regime": regime, "sweep": {}, "metric": metric, "mean": mean, "std": std, "n": 5}
        for metric, (mean, std) in (("recall@50", overall), ("tail/recall@50", tail))
    ]


def _dataset(*groups):
    return {"summary": [row for group in groups for row in _rows(*group)]}


def test_check_applies_both_rules_against_the_baseline():
    rows = target_check.summaries(
        _dataset(
            ("baseline-10pct", (0.30, 0.01), (0.10, 0.01)),
            ("ssl_a-10pct", (0.298, 0.01), (0.125, 0.01)),  # tail +2.5 std, overall -0.67%: holds
            ("ssl_b-10pct", (0.290, 0.01), (0.150, 0.01)),  # tail +5 std, overall -3.3%: fails
            ("ssl_c-10pct", (0.35, 0.01), (0.115, 0.01)),  # tail +1.5 std: fails
        ),
        "10pct",
    )
    a = target_check.check(rows, "ssl_a", "baseline", 0.01)
    assert abs(a["tail_stds"] - 2.5) < 1e-9 and abs(a["overall_change"] - (0.298 / 0.30 - 1)) < 1e-12
    assert a["holds"]
    assert not target_check.check(rows, "ssl_b", "baseline", 0.01)["holds"]
    assert not target_check.check(rows, "ssl_c", "baseline", 0.01)["holds"]


def test_table_counts_datasets_and_excludes_baselines_from_the_target(tmp_path, capsys):
    one = _dataset(
        ("baseline-10pct", (0.30, 0.01), (0.10, 0.01)),
        ("ssl_a-10pct", (0.31, 0.01), (0.13, 0.01)),  # holds
        ("so-10pct", (0.31, 0.01), (0.13, 0.01)),  # holds, but SO is a baseline
    )
    two = _dataset(
        ("baseline-10pct", (0.20, 0.02), (0.05, 0.005)),
        ("ssl_a-10pct", (0.20, 0.02), (0.065, 0.005)),  # +3 std, overall 0%: holds
        ("so-10pct", (0.21, 0.02), (0.065, 0.005)),  # holds
    )
    three = _dataset(
        ("baseline-10pct", (0.10, 0.01), (0.02, 0.002)),
        ("ssl_a-10pct", (0.09, 0.01), (0.03, 0.002)),  # overall -10%: fails
        ("so-10pct", (0.10, 0.01), (0.02, 0.002)),  # no tail gain
        ("ssl_only_here-10pct", (0.2, 0.01), (0.2, 0.01)),  # missing elsewhere: no row
    )
    paths = []
    for name, results in (("d1", one), ("d2", two), ("d3", three)):
        path = tmp_path / name / "grid_10pct" / "results.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(results))
        paths.append(str(path))
    assert target_check.main(paths) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "| method | d1 | d2 | d3 | datasets where it holds |"
    rows = {line.split("|")[1].strip(): line for line in lines[2:]}
    assert set(rows) == {"ssl_a", "so"}
    assert rows["ssl_a"].endswith("| 2 of 3 (target met) |")
    assert "tail +3.0 std, overall +0.0%: **yes**" in rows["ssl_a"]
    assert "overall -10.0%: no" in rows["ssl_a"]
    assert rows["so"].endswith("| 2 of 3 (a baseline, not SSL) |")


def test_unreadable_results_name_the_file(tmp_path, capsys):
    bad = tmp_path / "x" / "grid_10pct" / "results.json"
    bad.parent.mkdir(parents=True)
    bad.write_text("{not json")
    with pytest.raises(SystemExit) as exit_:  # argparse's error: exit status 2
        target_check.main([str(bad)])
    assert exit_.value.code == 2
    assert str(bad) in capsys.readouterr().err
