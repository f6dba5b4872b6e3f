"""Plots: the series extracted from aggregate rows, and PNG files produced."""

from recsys_ssl import experiment, plots


def row(group, metric, mean, std=None, regime="full", sweep=None, config=None):
    return {
        "group": group,
        "config": config or group,
        "regime": regime,
        "sweep": sweep or {},
        "metric": metric,
        "mean": mean,
        "std": std,
        "n": 1,
        "relative": None,
    }


def test_popularity_series_orders_buckets_and_filters():
    rows = [
        row("ssl", "popularity_01/recall@50", 0.2),
        row("ssl", "popularity_00/recall@50", 0.8),
        row("ssl", "popularity_00/recall@10", 0.5),  # other metric
        row("ssl", "popularity_00/recall@50", 0.1, regime="10pct"),  # other regime
        row("base", "popularity_00/recall@50", 0.7),
        row("ssl_a1", "popularity_00/recall@50", 0.9, sweep={"ssl.alpha": 1}),  # sweep rows are left out
    ]
    assert plots.popularity_series(rows) == {"ssl": [0.8, 0.2], "base": [0.7]}


def test_sweep_series_sorted_by_value():
    rows = [
        row("ssl_cfm_alpha3", "recall@50", 0.4, 0.01, sweep={"ssl.alpha": 3}, config="ssl_cfm"),
        row("ssl_cfm_alpha0.1", "recall@50", 0.3, None, sweep={"ssl.alpha": 0.1}, config="ssl_cfm"),
        row("baseline", "recall@50", 0.2),
    ]
    assert plots.sweep_series(rows, "ssl.alpha") == {"ssl_cfm": [(0.1, 0.3, None), (3.0, 0.4, 0.01)]}


def test_experiment_plots_write_pngs(tmp_path):
    records = []
    for group, sweep in (
        ("baseline", {}),
        ("ssl_cfm_alpha0.1", {"ssl.alpha": 0.1}),
        ("ssl_cfm_alpha1", {"ssl.alpha": 1.0}),
        ("ssl_cfm_dropout_rate0", {"ssl.dropout_rate": 0.0}),
        ("ssl_cfm_dropout_rate0.3", {"ssl.dropout_rate": 0.3}),
    ):
        for seed in (0, 1):
            slices = {f"popularity_{b:02d}": {"recall@50": 0.1 * (10 - b) + 0.01 * seed} for b in range(10)}
            records.append(
                {
                    "group": group,
                    "config": group.split("_alpha")[0].split("_dropout")[0],
                    "regime": "full",
                    "seed": seed,
                    "sweep": sweep,
                    "metrics": experiment.flatten_metrics({"recall@50": 0.3 + 0.01 * seed, "slices": slices}),
                }
            )
    paths = plots.experiment_plots(experiment.aggregate(records), tmp_path)
    assert sorted(paths) == ["deciles_full", "sweep_alpha_full", "sweep_dropout_rate_full"]
    for path in paths.values():
        assert path.read_bytes()[:4] == b"\x89PNG" and path.stat().st_size > 5000


def test_main_redraws_from_results_json(tmp_path, capsys):
    import json

    rows = [row("base", f"popularity_{b:02d}/recall@50", 0.5 - 0.05 * b) for b in range(10)]
    (tmp_path / "results.json").write_text(json.dumps({"summary": rows}))
    assert plots.main([str(tmp_path / "results.json")]) == 0
    assert (tmp_path / "recall50_by_popularity_full.png").exists()
    assert "deciles_full" in capsys.readouterr().out
