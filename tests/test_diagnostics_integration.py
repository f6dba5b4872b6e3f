"""`recsys-ssl diagnose` on really trained tiny models: TFDS synthetic_catalog/tiny -> train a
baseline and an SSL-CFM model -> diagnose both (side by side) -> diagnostics.json, the plots."""

import json

import numpy as np
import pytest
from test_experiment_integration import write_stats

from recsys_ssl import artifacts, cli, diagnostics, evaluate, evaluate_cli, train
from recsys_ssl.checkpoints import load_trained
from recsys_ssl.datasets import inputs
from recsys_ssl.paths import RunLayout

CONFIG = """\
name: {name}
method: {method}
augmentation: {augmentation}
dataset: synthetic_catalog/tiny
model: {{query_hidden: [16, 8], item_hidden: [16, 8]}}
main: {{temperature: 0.2}}
ssl: {{temperature: 0.2, alpha: 1.0}}
train: {{batch_size: 64, learning_rate: 0.1, steps: 15, backup_every_steps: 100}}
"""


def write_cfm_groups(run_dir, spec):
    """A hand-made MI matrix for the catalog's MI features, in the MI job's cfm_groups.json format."""
    names = list(spec.mi_features)
    mi = np.eye(len(names)) + np.fromfunction(lambda i, j: 1.0 / (1.0 + abs(i - j)), (len(names),) * 2)
    groups = artifacts.cfm_groups(names, mi, by_grouping={g: mi for g in artifacts.GROUPINGS})
    artifacts.write_files(str(RunLayout(run_dir).mi), {artifacts.CFM_GROUPS: artifacts.dumps_json(groups)})


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    dataset = inputs.load_dataset("synthetic_catalog/tiny", data_dir=str(RunLayout(run_dir).tfds))
    write_stats(run_dir, dataset)
    write_cfm_groups(run_dir, dataset.spec)
    configs = []
    for name, method, augmentation in (("tiny_base", "baseline", "null"), ("tiny_cfm", "ssl", "cfm")):
        path = run_dir / f"{name}.yaml"
        path.write_text(CONFIG.format(name=name, method=method, augmentation=augmentation))
        assert train.main(["--config", str(path), "--run-dir", str(run_dir), "--quiet"]) == 0
        configs.append(str(path))
    return run_dir, configs


def check_fields(result, head_items, ssl):
    counts = result["counts"]
    assert counts["items"] == 500 and counts["head_items"] == head_items and counts["tail_items"] == 500 - head_items
    query_item = result["alignment"]["query_item"]
    assert query_item["pairs"]["all"] == counts["test_interactions"] > 0
    assert query_item["pairs"]["head"] + query_item["pairs"]["tail"] == query_item["pairs"]["all"]
    for name in ("all", "head", "tail"):
        assert 0.0 <= query_item[name] <= 4.0
        assert -8.0 <= result["uniformity"][name] <= 0.0
    assert result["uniformity"]["items"] == {"all": 500, "head": head_items, "tail": 500 - head_items}
    views = result["alignment"]["ssl_views"]
    if ssl:
        assert views["pairs"] == {"all": 500, "head": head_items, "tail": 500 - head_items}
        assert 0.0 < views["all"] <= 4.0  # CFM's two views differ
    else:
        assert views is None
    nearest = result["nearest_head_cosine"]
    assert -1.0 <= nearest["q25"] <= nearest["median"] <= nearest["q75"] <= 1.0
    assert sum(nearest["histogram"]["counts"]) == nearest["tail_items"] == 500 - head_items
    assert len(nearest["histogram"]["edges"]) == diagnostics.HISTOGRAM_BINS + 1
    recall = result["recall_by_popularity"]
    assert len(recall["deciles"]["recall@50"]) == evaluate.NUM_POPULARITY_BUCKETS
    assert sum(recall["test_interactions"]) == counts["test_interactions"]


@pytest.mark.timeout(240)
def test_diagnose_two_models_side_by_side(trained_run, capsys):
    run_dir, configs = trained_run
    argv = ["diagnose", "--run-dir", str(run_dir), "--config", configs[0], "--config", configs[1]]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    print(out)  # shown with -s: the table of the report
    assert "tail->head cos mean" in out and "tiny_base" in out and "tiny_cfm" in out
    results = {}
    for name, ssl in (("tiny_base", False), ("tiny_cfm", True)):
        folder = RunLayout(run_dir).eval(name)
        results[name] = json.loads((folder / "diagnostics.json").read_text())
        check_fields(results[name], head_items=100, ssl=ssl)
        assert results[name]["recall_by_popularity"]["source"].startswith("computed")
        assert (folder / "diagnostics.png").stat().st_size > 10_000
    assert (run_dir / "eval" / "diagnostics_tiny_base_vs_tiny_cfm.png").stat().st_size > 10_000
    assert "uniformity head" in (run_dir / "eval" / "diagnostics_tiny_base_vs_tiny_cfm.txt").read_text()

    # The computed recall by decile is the evaluator's (`recsys-ssl evaluate` on the same model).
    assert evaluate_cli.main(["--run-dir", str(run_dir), "--name", "tiny_base"]) == 0
    metrics = json.loads((RunLayout(run_dir).eval("tiny_base") / "metrics.json").read_text())
    expected = diagnostics.decile_recall(metrics)
    for key in ("deciles", "head", "tail", "overall"):
        for metric, value in expected[key].items():
            assert results["tiny_base"]["recall_by_popularity"][key][metric] == pytest.approx(value, abs=1e-12)
    # ... and, now that metrics.json scored this very model, the diagnostics read it from there.
    trained = load_trained(run_dir, "tiny_base")
    arrays = diagnostics.read_arrays(
        inputs.load_dataset("synthetic_catalog/tiny", data_dir=str(RunLayout(run_dir).tfds)), "test", 1024
    )
    embedded = diagnostics.embed(trained, trained.spec, arrays, head_fraction=0.2)
    read = diagnostics.popularity_recall(run_dir, "tiny_base", trained, embedded, "test", 0.2, (10, 50, 100))
    assert read["source"] == str(RunLayout(run_dir).eval("tiny_base") / "metrics.json")
    assert read["deciles"] == expected["deciles"]


def test_no_trained_model_is_a_one_line_error(tmp_path, capsys):
    assert cli.main(["diagnose", "--run-dir", str(tmp_path), "--name", "nothing"]) == 2
    error = capsys.readouterr().err
    assert len(error.strip().splitlines()) == 1
    assert str(tmp_path / "train" / "nothing" / "manifest.json") in error
