"""Early stopping on validation recall, ``recsys-ssl tune`` (kill -9 and resume, bad input) and
the tuned-config round trip, on real tiny data (TFDS synthetic_catalog/tiny, Optuna on SQLite)."""

import os
import pathlib
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pytest
from test_experiment_integration import write_stats

from recsys_ssl import config as cfg
from recsys_ssl import evaluate, train, tune
from recsys_ssl.callbacks import ValidationRecall
from recsys_ssl.datasets import inputs
from recsys_ssl.paths import RunLayout
from recsys_ssl.tf_setup import tf

ROOT = pathlib.Path(__file__).resolve().parent.parent
CONFIG = """\
name: tiny_baseline
method: baseline
model: {query_hidden: [16, 8], item_hidden: [16, 8]}
train: {batch_size: 64, learning_rate: 0.1, backup_every_steps: 1000}
"""


class _Scripted(ValidationRecall):
    """The callback with a scripted validation recall per epoch (the weights change for real)."""

    def __init__(self, values, patience):
        super().__init__(validation=None, k=50, patience=patience)
        self.values, self.snapshots = list(values), []

    def evaluate(self):
        self.snapshots.append([w.copy() for w in self.model.get_weights()])
        return {"recall@50": self.values[len(self.snapshots) - 1], "slices": {}}


def test_early_stopping_restores_the_best_epoch_and_stops_after_patience():
    model = tf.keras.Sequential([tf.keras.layers.Dense(1, input_shape=(2,))])
    model.compile(optimizer=tf.keras.optimizers.SGD(0.1), loss="mse")
    x, y = np.random.default_rng(0).normal(size=(64, 2)), np.ones((64, 1))
    callback = _Scripted([0.10, 0.30, 0.20, 0.25, 0.40, 0.50], patience=2)
    history = model.fit(x, y, epochs=6, batch_size=16, verbose=0, callbacks=[callback])
    assert len(history.history["loss"]) == 4  # epoch 2 best; epochs 3 and 4 worse -> stop
    assert callback.best_epoch == 2 and callback.best_value == pytest.approx(0.30)
    for got, want in zip(model.get_weights(), callback.snapshots[1]):
        np.testing.assert_array_equal(got, want)  # the weights after epoch 2, not after epoch 4
    assert not np.allclose(callback.snapshots[1][0], callback.snapshots[3][0])
    assert callback.summary()["curve"] == [[1, 0.10], [2, 0.30], [3, 0.20], [4, 0.25]]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("tune") / "run"
    dataset = inputs.load_dataset("synthetic_catalog/tiny", data_dir=str(RunLayout(run_dir).tfds))
    write_stats(run_dir, dataset)
    config = run_dir.parent / "tiny_baseline.yaml"
    config.write_text(CONFIG)
    return run_dir, config


def _tune_command(run_dir, config, trials):
    return [
        sys.executable,
        "-m",
        "recsys_ssl.cli",
        "tune",
        "--dataset",
        "synthetic_catalog/tiny",
        "--config",
        str(config),
        "--trials",
        str(trials),
        "--max-epochs",
        "6",
        "--run-dir",
        str(run_dir),
    ]


def _states(db):
    """Trial states in order; [] while the study is still creating its database."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as connection:  # never creates the file
            return [row[0] for row in connection.execute("SELECT state FROM trials ORDER BY number")]
    except sqlite3.OperationalError:  # no file yet, or no tables yet
        return []


def _env():
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "TF_USE_LEGACY_KERAS": "1"}


@pytest.mark.timeout(600)
def test_tune_killed_with_sigkill_resumes_and_its_config_round_trips(tiny_run):
    run_dir, config = tiny_run
    db = tune.study_dir(run_dir, "tiny_baseline", "full") / "study.sqlite3"
    process = subprocess.Popen(
        _tune_command(run_dir, config, 4), cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 300
    # Kill during a trial that runs after at least one finished.
    while time.time() < deadline and process.poll() is None:
        states = _states(db)
        if states.count("COMPLETE") + states.count("PRUNED") >= 1 and states[-1:] == ["RUNNING"]:
            break
        time.sleep(0.2)
    assert process.poll() is None, "the study ended before it could be killed mid-trial"
    process.send_signal(signal.SIGKILL)
    process.wait()
    before = _states(db)
    assert before[-1] == "RUNNING"

    rerun = subprocess.run(_tune_command(run_dir, config, 4), cwd=ROOT, env=_env(), capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "1 interrupted trial(s) marked failed" in rerun.stdout
    after = _states(db)
    assert after[: len(before) - 1] == before[:-1]  # the stored trials are kept as they were
    assert after[len(before) - 1] == "FAIL"  # the killed trial: failed, never counted
    assert after.count("COMPLETE") + after.count("PRUNED") == 4

    # Round trip: the tuned YAML, trained for its epochs on the same carve-out with the same
    # seed, gives the best trial's validation recall.
    tuned_path = tune.tuned_path(run_dir, "tiny_baseline", "full")
    tuned = cfg.load_config(tuned_path)
    assert tuned.dataset == "synthetic_catalog/tiny" and tuned.train.batch_size and tuned.train.epochs
    import optuna

    best = optuna.load_study(
        study_name="synthetic_catalog/tiny:tiny_baseline:full", storage=f"sqlite:///{db}"
    ).best_value
    val = cfg.replace(tuned, top={"dataset": "synthetic_catalog/tiny-val"})
    data = train.load_training_data(val, run_dir)
    tf.keras.backend.clear_session()
    train.run(val, run_dir, data, name="roundtrip", verbose=0)
    metrics = evaluate.run(run_dir, "roundtrip", dataset_name="synthetic_catalog/tiny-val", ks=(50,))
    assert metrics["recall@50"] == pytest.approx(best, abs=1e-4)
    assert "## Parameter importances" in (db.parent / "tune_report.md").read_text()
    assert (db.parent / "validation_curves.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.timeout(300)
def test_tune_bad_input_fails_with_one_line(tiny_run, tmp_path):
    run_dir, config = tiny_run
    cases = [
        (["--trials", "0"], "--trials must be at least 1"),
        (["--space", "main.temperature=-1:2"], "outside its range"),
        (["--space", "main.temperature"], "expected FIELD=LOW:HIGH"),
        (["--set", "train.stpes=3"], "train.stpes: unknown field"),
    ]
    for extra, message in cases:
        result = subprocess.run(
            _tune_command(run_dir, config, 1) + extra, cwd=ROOT, env=_env(), capture_output=True, text=True
        )
        assert result.returncode == 2 and message in result.stderr, (extra, result.stderr[-1000:])
        assert "Traceback" not in result.stderr
    foreign = tmp_path / "study.sqlite3"
    tune.open_study(foreign, "frappe:baseline:full", seed=0)
    with pytest.raises(tune.TuneError, match="belongs to another dataset/config/regime"):
        tune.open_study(foreign, "synthetic_catalog/tiny:baseline:full", seed=0)


def test_search_space_fits_the_catalog_and_the_method():
    baseline = cfg.load_config("baseline")
    knobs = {k.field: k for k in tune.search_space(baseline, num_pairs=2000, num_items=300, num_item_features=5)}
    assert "ssl.alpha" not in knobs and knobs["train.batch_size"].choices == (32, 64, 128)
    ssl = {k.field: k for k in tune.search_space(cfg.load_config("ssl_cfm"), 2000, 300, 5)}
    assert ssl["ssl.batch_size"].choices == (64, 128) and ssl["ssl.cfm_group_size"].high == 4
    assert set(knobs) < set(ssl)  # SSL searches the baseline's space plus its own
    config = tune.apply_params(
        baseline, {"model.hidden_width": 512, "model.embedding_dim": 32, "main.temperature": 0.2}
    )
    assert config.model.query_hidden == config.model.item_hidden == [512, 32] and config.main.temperature == 0.2


def test_embedding_scale_scales_every_feature_table_of_the_model():
    import model_fixtures

    from recsys_ssl.model import TwoTowerModel

    data = model_fixtures.training_data()
    config = cfg.with_overrides(model_fixtures.tiny_config(), {"model.embedding_scale": 2.0})
    model = TwoTowerModel(data.spec, config, data.vocabularies, for_inference=True)
    train.build_towers_now(model, data.spec)
    widths = {v.name.split("/")[-2]: v.shape[-1] for v in model.item_tower.weights if "table_" in v.name}
    assert widths == {f"table_{f.name}": 2 * f.embedding_dim for f in data.spec.item_features}
    assert data.spec.scaled_embeddings(1.0) is data.spec


def test_warm_start_params_take_the_known_config_then_the_study_config():
    ssl = cfg.with_overrides(cfg.load_config("ssl_cfm"), {"ssl.temperature": 0.2, "ssl.cfm_group_size": 2})
    warm = cfg.with_overrides(
        cfg.load_config("baseline"),
        {
            "train.learning_rate": 0.0777,
            "train.optimizer": "adam",
            "train.batch_size": 100,  # 100: not a choice
            "model.query_hidden": [128, 64],
            "model.item_hidden": [128, 64],
            "ssl.alpha": 9.0,
        },
    )
    knobs = tune.search_space(ssl, num_pairs=20000, num_items=1000, num_item_features=5)
    params = tune.warm_start_params(knobs, warm, ssl, {"ssl.alpha": 0.05})
    assert params["train.learning_rate"] == 0.0777 and params["train.optimizer"] == "adam"
    assert params["model.hidden_width"] == 128 and params["model.embedding_dim"] == 64
    assert "train.batch_size" not in params  # left to the sampler
    assert params["ssl.alpha"] == 0.05  # the override, not the baseline's unread 9.0
    assert params["ssl.temperature"] == 0.2 and params["ssl.cfm_group_size"] == 2  # the study config's own


@pytest.mark.timeout(300)
def test_seeds_per_trial_and_warm_start(tiny_run, tmp_path):
    import optuna

    run_dir, config = tiny_run
    warm = tmp_path / "warm.yaml"
    warm.write_text(CONFIG.replace("learning_rate: 0.1", "learning_rate: 0.0777"))
    command = _tune_command(run_dir, config, 1)
    command[command.index("--max-epochs") + 1] = "2"
    result = subprocess.run(
        command + ["--seeds-per-trial", "2", "--warm-start", str(warm)],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    db = tune.study_dir(run_dir, "tiny_baseline", "full") / "study.sqlite3"
    study = optuna.load_study(study_name="synthetic_catalog/tiny:tiny_baseline:full:2seeds", storage=f"sqlite:///{db}")
    trial = study.trials[0]
    assert trial.params["train.learning_rate"] == pytest.approx(0.0777)
    values = trial.user_attrs["seed_values"]
    assert len(values) == 2 and trial.value == pytest.approx(sum(values) / 2)
