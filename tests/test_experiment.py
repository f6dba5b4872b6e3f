"""Experiment grids: cells, resumability, aggregation (mean / std / relative) and the tables."""

import json
import math

import pytest

from recsys_ssl import experiment


def metrics(recall10, recall50, head50=None, tail50=None, deciles=None):
    """A hand-made evaluate-style metrics dict."""
    out = {"recall@10": recall10, "recall@50": recall50, "map@10": recall10 / 2, "map@50": recall50 / 2, "slices": {}}
    if head50 is not None:
        out["slices"]["head"] = {"recall@50": head50, "test_interactions": 10, "items": 2}
        out["slices"]["tail"] = {"recall@50": tail50, "test_interactions": 5, "items": 8}
    for b, value in enumerate(deciles or []):
        out["slices"][f"popularity_{b:02d}"] = {"recall@50": value, "test_interactions": 1, "items": 1}
    return out


def record(group, regime, seed, m, sweep=None):
    return {
        "cell": f"{group}-{regime}-seed{seed}",
        "group": group,
        "config": group.split("_alpha")[0],
        "regime": regime,
        "seed": seed,
        "sweep": sweep or {},
        "metrics": experiment.flatten_metrics(m),
        "resumed": False,
    }


RECORDS = [
    record("baseline", "full", 0, metrics(0.20, 0.50, 0.6, 0.1)),
    record("baseline", "full", 1, metrics(0.30, 0.50, 0.6, 0.3)),
    record("ssl_cfm", "full", 0, metrics(0.25, 0.60, 0.7, 0.3)),
    record("ssl_cfm", "full", 1, metrics(0.35, 0.60, 0.7, 0.5)),
    record("baseline", "10pct", 0, metrics(0.10, 0.40)),
    record("ssl_cfm", "10pct", 0, metrics(0.15, 0.50)),
]


def test_grid_cells_and_names():
    cells = experiment.build_grid(["baseline", "data/configs/ssl_cfm.yaml"], [0, 1], ["full", "10pct"])
    assert len(cells) == 8
    assert cells[0].name == "baseline-full-seed0" and cells[-1].name == "ssl_cfm-10pct-seed1"
    swept = experiment.build_grid(["ssl_cfm"], [0], ["full"], experiment.parse_sweep("ssl.alpha=0.1,3"))
    assert [c.name for c in swept] == ["ssl_cfm_alpha0.1-full-seed0", "ssl_cfm_alpha3-full-seed0"]
    assert swept[1].sweep == (("ssl.alpha", 3),)
    with_baseline = experiment.build_grid(["baseline", "ssl_cfm"], [0], ["full"], ("ssl.alpha", [0.1, 3]))
    assert [c.name for c in with_baseline] == [
        "baseline-full-seed0",
        "ssl_cfm_alpha0.1-full-seed0",
        "ssl_cfm_alpha3-full-seed0",
    ]
    with pytest.raises(ValueError, match="regime"):
        experiment.build_grid(["baseline"], [0], ["half"])
    with pytest.raises(ValueError, match="SECTION.FIELD"):
        experiment.parse_sweep("alpha=1")
    # values read as YAML, as --set reads them: null switches an optional knob off
    assert experiment.parse_sweep("train.ema_momentum=null,0.999") == ("train.ema_momentum", [None, 0.999])
    assert experiment.parse_sweep("train.optimizer=adam,sgd") == ("train.optimizer", ["adam", "sgd"])


def test_mean_std_relative():
    rows = {(r["group"], r["regime"], r["metric"]): r for r in experiment.aggregate(RECORDS)}
    base = rows[("baseline", "full", "recall@10")]
    assert base["mean"] == 0.25 and base["n"] == 2 and base["relative"] is None
    assert math.isclose(base["std"], math.sqrt(0.005))  # ddof=1: ((0.05)^2 * 2) / 1
    ssl = rows[("ssl_cfm", "full", "recall@10")]
    assert math.isclose(ssl["relative"], 0.30 / 0.25 - 1)
    assert experiment.format_cell(ssl) == "0.3000 ± 0.0707 (+20.0%)"
    assert experiment.format_cell(rows[("ssl_cfm", "full", "tail/recall@50")]) == "0.4000 ± 0.1414 (+100.0%)"
    # One seed: no ±; relative within the same regime.
    assert experiment.format_cell(rows[("ssl_cfm", "10pct", "recall@50")]) == "0.5000 (+25.0%)"
    assert experiment.format_cell(None) == "-"


def test_markdown_layout():
    text = experiment.markdown_tables(experiment.aggregate(RECORDS))
    lines = text.splitlines()
    overall = lines[lines.index("## Overall") + 2 :][:4]
    assert overall[0] == (
        "| method | Recall@10 (full data) | Recall@50 (full data) | MAP@10 (full data) | MAP@50 (full data) "
        "| Recall@10 (10% data) | Recall@50 (10% data) | MAP@10 (10% data) | MAP@50 (10% data) |"
    )
    assert overall[2].startswith("| baseline | 0.2500 ± 0.0707 | 0.5000 ± 0.0000 | 0.1250 ± 0.0354 |")
    assert overall[3].split(" | ")[5] == "0.1500 (+50.0%)"
    head_tail = lines[lines.index("## Head / tail") + 2]
    assert head_tail.startswith("| method | head Recall@10 (full data) | head Recall@50 (full data) |")
    assert "| 0.7000 ± 0.0000 (+16.7%) |" in lines[lines.index("## Head / tail") + 5]
    ablation = lines[lines.index("## Ablation (Recall@50)") + 2 :][:4]
    assert ablation[0] == "| variant | Recall@50 (full data) | Recall@50 (10% data) |"
    assert ablation[3] == "| ssl_cfm | 0.6000 ± 0.0000 (+20.0%) | 0.5000 (+25.0%) |"


def test_resumable_runner_skips_finished_cells(tmp_path):
    calls = []

    def fake_train_and_evaluate(cell, run_dir, options):
        calls.append(cell.name)
        return metrics(0.1 * (cell.seed + 1), 0.5)

    cells = experiment.build_grid(["baseline", "ssl_cfm"], [0, 1], ["full"])
    first = experiment.run_grid(cells[:2], tmp_path, fake_train_and_evaluate)
    assert calls == ["baseline-full-seed0", "baseline-full-seed1"] and not any(r["resumed"] for r in first)
    written = experiment.metrics_path(tmp_path, cells[0])
    mtime = written.stat().st_mtime_ns
    records = experiment.run_grid(cells, tmp_path, fake_train_and_evaluate)
    assert calls[2:] == ["ssl_cfm-full-seed0", "ssl_cfm-full-seed1"]  # only the new cells ran
    assert [r["resumed"] for r in records] == [True, True, False, False]
    assert written.stat().st_mtime_ns == mtime
    assert records[1]["metrics"]["recall@10"] == 0.2  # read back from metrics.json


def test_resume_check_treats_a_field_added_later_as_its_default(tmp_path):
    cell = experiment.build_grid(["baseline"], [0], ["full"])[0]
    stored = experiment.cell_config(cell).to_dict()
    del stored["main"]["logq_weight"]  # a cell that finished before the field existed
    experiment.check_resumed_config(cell, {"config": stored}, {}, tmp_path)  # asked: the default, 1.0
    with pytest.raises(ValueError, match=r"main.logq_weight: 1.0 \(stored\) != 0.5 \(asked\)"):
        experiment.check_resumed_config(cell, {"config": stored}, {"overrides": {"main.logq_weight": 0.5}}, tmp_path)


def test_resume_check_ignores_sections_the_method_does_not_read(tmp_path):
    baseline, cfm = experiment.build_grid(["baseline", "ssl_cfm"], [0], ["full"])
    for cell in (baseline, cfm):
        stored = experiment.cell_config(cell, {"ssl.alpha": 0.1}).to_dict()
        asked = {"overrides": {"ssl.alpha": 3.0}}
        if cell is baseline:  # the baseline never reads ssl.alpha: its finished cell is reused
            experiment.check_resumed_config(cell, {"config": stored}, asked, tmp_path)
        else:
            with pytest.raises(ValueError, match=r"ssl.alpha: 0.1 \(stored\) != 3.0 \(asked\)"):
                experiment.check_resumed_config(cell, {"config": stored}, asked, tmp_path)
    stored = experiment.cell_config(baseline).to_dict()
    with pytest.raises(ValueError, match="main.temperature"):  # what it does read still counts
        experiment.check_resumed_config(
            baseline, {"config": stored}, {"overrides": {"main.temperature": 0.2}}, tmp_path
        )


def test_write_results_files(tmp_path):
    deciles = [0.9, 0.7, 0.5, 0.3, 0.1]
    records = RECORDS + [record("so", "full", 0, metrics(0.2, 0.5, deciles=deciles))]
    paths = experiment.write_results(tmp_path, records, {"name": "t"})
    saved = json.loads(paths["json"].read_text())
    assert len(saved["runs"]) == 7 and saved["grid"] == {"name": "t"}
    csv_lines = paths["csv"].read_text().splitlines()
    assert csv_lines[0] == "group,config,regime,sweep,metric,mean,std,n,relative_vs_baseline"
    row = next(line.split(",") for line in csv_lines if line.startswith("ssl_cfm,ssl_cfm,full,,recall@10,"))
    assert float(row[5]) == 0.3 and row[7] == "2"
    assert math.isclose(float(row[6]), math.sqrt(0.005)) and math.isclose(float(row[8]), 0.2)
    assert paths["md"].read_text().startswith("# Experiment t\n\n## Overall")
    assert paths["deciles_full"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cell_config_applies_regime_seed_sweep_and_overrides(tmp_path, monkeypatch):
    from recsys_ssl import config as cfg
    from recsys_ssl import paths

    (tmp_path / "ssl_cfm.yaml").write_text("name: ssl_cfm\nmethod: ssl\naugmentation: cfm\n")
    monkeypatch.setattr(paths, "CONFIGS_DIR", tmp_path)
    cell = experiment.build_grid(["ssl_cfm"], [2], ["10pct"], ("ssl.alpha", [0.3]))[0]
    config = experiment.cell_config(cell, {"train.steps": 7, "dataset": "movielens/100k-user-item"})
    assert (config.name, config.seed, config.train.data_fraction) == ("ssl_cfm_alpha0.3-10pct-seed2", 2, "10pct")
    assert (config.ssl.alpha, config.train.steps, config.dataset) == (0.3, 7, "movielens/100k-user-item")
    assert isinstance(config, cfg.ExperimentConfig)


def test_overrides_are_yaml_typed_and_regime_scoped(tmp_path, monkeypatch):
    from recsys_ssl import config as cfg
    from recsys_ssl import paths

    (tmp_path / "baseline.yaml").write_text("name: baseline\nmethod: baseline\n")
    monkeypatch.setattr(paths, "CONFIGS_DIR", tmp_path)
    overrides = dict(
        experiment.parse_override(t)
        for t in (
            "main.logq_correction=false",
            "model.query_hidden=[128, 32]",
            "model.item_hidden=[64,32]",
            "train.epochs=8",
            "10pct:train.epochs=40",
            "full:train.learning_rate=0.2",
        )
    )
    assert overrides["main.logq_correction"] is False and overrides["model.query_hidden"] == [128, 32]
    full_cell, tenth_cell = experiment.build_grid(["baseline"], [0], ["full", "10pct"])
    full, tenth = experiment.cell_config(full_cell, overrides), experiment.cell_config(tenth_cell, overrides)
    assert (full.train.epochs, tenth.train.epochs) == (8, 40)
    assert (full.train.learning_rate, tenth.train.learning_rate) == (
        0.2,
        cfg.load_config("baseline").train.learning_rate,
    )
    assert full.main.logq_correction is False and full.model.item_hidden == [64, 32]
    with pytest.raises(cfg.ConfigError, match="logq_correction"):
        experiment.cell_config(full_cell, {"main.logq_correction": "no"})
    for bad in ("train.epochs", "5pct:train.epochs=3", "10pct:=3"):
        with pytest.raises(Exception, match="REGIME"):
            experiment.parse_override(bad)
