"""bench/results/compact_table.py on a hand-made summary: means, relative change, the 2-std mark."""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "bench" / "results"))

import compact_table  # noqa: E402


def _row(group, regime, metric, mean, std):
    return {
        "group": group,
        "config": group,
        "regime": regime,
        "sweep": {},
        "metric": metric,
        "mean": mean,
        "std": std,
        "n": 3,
        "relative": None,
    }


def test_compact_table_marks_only_differences_beyond_two_baseline_stds():
    summary = [
        _row("baseline", "full", "recall@50", 0.30, 0.01),
        _row("ssl_cfm", "full", "recall@50", 0.33, 0.02),  # +0.03 > 2 x 0.01: marked
        _row("so", "full", "recall@50", 0.315, 0.00),  # +0.015 < 0.02: not marked
        _row("baseline", "10pct", "recall@50", 0.10, 0.005),
        _row("ssl_cfm", "10pct", "recall@50", 0.08, 0.001),  # -0.02 beyond 2 std: marked too
        {**_row("ssl_cfm_alpha1", "full", "recall@50", 0.9, 0.0), "sweep": {"ssl.alpha": 1}},  # sweeps ignored
    ]
    lines = compact_table.compact_table({"summary": summary}).splitlines()
    rows = {tuple(c.strip() for c in line.strip("|").split("|")[:2]): line for line in lines[2:]}
    assert set(rows) == {
        ("baseline", "full"),
        ("ssl_cfm", "full"),
        ("so", "full"),
        ("baseline", "10%"),
        ("ssl_cfm", "10%"),
    }
    assert "0.3300 ± 0.0200 (+10.0%) *" in rows[("ssl_cfm", "full")]
    assert "0.3150 ± 0.0000 (+5.0%)" in rows[("so", "full")] and "*" not in rows[("so", "full")]
    assert "0.0800 ± 0.0010 (-20.0%) *" in rows[("ssl_cfm", "10%")]
    assert "| 0.3000 ± 0.0100 |" in rows[("baseline", "full")]
    assert rows[("baseline", "full")].count(" - ") == 4  # the other four columns are absent


def test_baseline_flag_names_the_reference_group(tmp_path, capsys):
    """A tuned grid's groups are its config files' stems: ``--baseline baseline-10pct``."""
    import json

    summary = [
        _row("baseline-10pct", "10pct", "tail/recall@50", 0.010, 0.002),
        _row("ssl_cfm-10pct", "10pct", "tail/recall@50", 0.020, 0.001),  # +0.010 > 2 x 0.002
    ]
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"summary": summary}))
    assert compact_table.main([str(path), "--baseline", "baseline-10pct"]) == 0
    assert "0.0200 ± 0.0010 (+100.0%) *" in capsys.readouterr().out
    assert compact_table.main([str(path), "--baseline"]) == 2
