"""Weight averaging (``train.ema_momentum``): the optimizer, early stopping on the averaged
weights, backups, the config and the tuning knob, each against an independent expectation
(a numpy EMA of the raw weight trajectory recorded step by step)."""

from __future__ import annotations

import model_fixtures
import numpy as np
import pytest
import yaml

from recsys_ssl import config as cfg
from recsys_ssl import train, tune
from recsys_ssl.callbacks import ValidationRecall, ValidationSet, averaged_weights
from recsys_ssl.datasets import item_sampler
from recsys_ssl.tf_setup import tf


def numpy_ema(trajectory: list[list[np.ndarray]], momentum: float) -> list[np.ndarray]:
    """tf_keras's rule: the average starts at the weights the optimizer was built on (before the
    first step) and after every step becomes ``m * average + (1 - m) * weights`` (no warm-up)."""
    average = [w.astype(np.float64) for w in trajectory[0]]
    for weights in trajectory[1:]:
        average = [momentum * a + (1 - momentum) * w for a, w in zip(average, weights)]
    return average


class _Trajectory(tf.keras.callbacks.Callback):
    """The raw trainable weights before training and after every step; ``epoch_ends[e]``: the
    number of recorded points at the end of epoch ``e`` (0-based)."""

    def __init__(self):
        super().__init__()
        self.points, self.epoch_ends = [], []

    def _record(self):
        self.points.append([v.numpy().copy() for v in self.model.trainable_variables])

    def on_train_begin(self, logs=None):
        self._record()

    def on_train_batch_end(self, batch, logs=None):
        self._record()

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_ends.append(len(self.points))


def _dense_model(momentum: float | None, seed: int = 0) -> tf.keras.Model:
    tf.keras.utils.set_random_seed(seed)
    model = tf.keras.Sequential([tf.keras.layers.Dense(2, input_shape=(3,))])
    config = model_fixtures.tiny_config(optimizer="sgd", learning_rate=0.1, ema_momentum=momentum)
    model.compile(optimizer=train.make_optimizer(config), loss="mse")
    return model


def _xy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 3)).astype(np.float32)
    return x, (x @ rng.normal(size=(3, 2)) + 1.0).astype(np.float32)


def _assert_weights(got, want, **tolerance):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        np.testing.assert_allclose(np.asarray(g), w, rtol=1e-5, atol=1e-6, **tolerance)


def test_make_optimizer_turns_tf_keras_ema_on_only_when_asked():
    off = train.make_optimizer(model_fixtures.tiny_config())
    on = train.make_optimizer(model_fixtures.tiny_config(optimizer="adam", ema_momentum=0.999))
    assert not off.use_ema
    assert on.use_ema and on.ema_momentum == 0.999 and on.ema_overwrite_frequency is None


def test_fit_ends_with_the_numpy_ema_of_the_raw_trajectory():
    model, trajectory = _dense_model(0.8), _Trajectory()
    x, y = _xy()
    model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0, callbacks=[trajectory])
    assert len(trajectory.points) == 1 + 8
    want = numpy_ema(trajectory.points, 0.8)
    _assert_weights(model.trainable_variables, want)
    assert not np.allclose(want[0], trajectory.points[-1][0], atol=1e-3)  # the averages, not the raw weights


class _WeightRecall(ValidationRecall):
    """ValidationRecall whose "recall" is a fixed function of the weights it is shown."""

    def __init__(self, patience: int = 5):
        super().__init__(validation=None, k=50, patience=patience)
        self.seen = []

    def evaluate(self):
        weights = [v.numpy().copy() for v in self.model.trainable_variables]
        self.seen.append(weights)
        return {"recall@50": -float(sum(np.abs(w).sum() for w in weights)), "slices": {}}


class _RawAfter(tf.keras.callbacks.Callback):
    """Runs after ValidationRecall: the weights it leaves behind."""

    def __init__(self):
        super().__init__()
        self.weights = []

    def on_epoch_end(self, epoch, logs=None):
        self.weights.append([v.numpy().copy() for v in self.model.trainable_variables])


def test_validation_recall_judges_the_averages_and_training_continues_raw():
    x, y = _xy()
    momentum = 0.7
    reference, reference_path = _dense_model(momentum), _Trajectory()  # the same run without the callback
    reference.fit(x, y, batch_size=8, epochs=3, shuffle=False, verbose=0, callbacks=[reference_path])
    model, path, recall, after = _dense_model(momentum), _Trajectory(), _WeightRecall(), _RawAfter()
    model.fit(x, y, batch_size=8, epochs=3, shuffle=False, verbose=0, callbacks=[path, recall, after])

    assert len(path.points) == len(reference_path.points) == 1 + 12
    for got, want in zip(path.points, reference_path.points):
        _assert_weights(got, want)  # the swaps never moved the raw trajectory
    for epoch, end in enumerate(path.epoch_ends):
        averaged = numpy_ema(path.points[:end], momentum)
        _assert_weights(recall.seen[epoch], averaged)  # evaluated: the averaged weights
        want_value = -sum(np.abs(w.astype(np.float32)).sum() for w in averaged)
        assert recall.history[epoch][1] == pytest.approx(want_value, rel=1e-5)
        _assert_weights(after.weights[epoch], path.points[end - 1])  # left behind: the raw weights
    best = int(np.argmax([v for _, v in recall.history]))
    assert recall.best_epoch == best + 1
    _assert_weights(model.trainable_variables, recall.seen[best])  # restored: the best epoch's averages


def test_averaged_weights_without_ema_leaves_the_weights_alone():
    model = _dense_model(None)
    x, y = _xy()
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    before = [v.numpy().copy() for v in model.trainable_variables]
    with averaged_weights(model) as swapped:
        assert not swapped
        _assert_weights(model.trainable_variables, before)


def test_a_run_resumed_from_its_backup_keeps_the_averages(tmp_path):
    """BackupAndRestore checkpoints the averages (optimizer variables): one epoch, then a fresh
    model resumed from the backup for the second, ends where a straight two-epoch run ends."""
    x, y = _xy()
    straight = _dense_model(0.8)
    straight.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    backup = tf.keras.callbacks.BackupAndRestore(str(tmp_path / "backup"), delete_checkpoint=False)
    _dense_model(0.8).fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0, callbacks=[backup])
    resumed = _dense_model(0.8, seed=1)  # other initial weights: everything must come from the backup
    backup = tf.keras.callbacks.BackupAndRestore(str(tmp_path / "backup"), delete_checkpoint=False)
    history = resumed.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0, callbacks=[backup])
    assert len(history.history["loss"]) == 1 and int(resumed.optimizer.iterations.numpy()) == 8
    _assert_weights(resumed.trainable_variables, [v.numpy() for v in straight.trainable_variables])


# -- the two-tower model, its real validation evaluation, under MirroredStrategy ---------------------


class _ReEvaluate(tf.keras.callbacks.Callback):
    """After ValidationRecall: checks the raw weights are back, then evaluates the numpy EMA of the
    recorded trajectory with the same evaluation and keeps the value (the raw weights restored)."""

    def __init__(self, recall: ValidationRecall, path: _Trajectory, momentum: float):
        super().__init__()
        self.recall, self.path, self.momentum, self.values, self.averages = recall, path, momentum, [], []

    def on_epoch_end(self, epoch, logs=None):
        variables = self.model.trainable_variables
        raw = [v.numpy().copy() for v in variables]
        _assert_weights(raw, self.path.points[-1])
        averaged = numpy_ema(self.path.points, self.momentum)
        self.averages.append(averaged)
        for variable, value in zip(variables, averaged):
            variable.assign(value.astype(np.float32))
        self.values.append(float(self.recall.evaluate()["recall@50"]))
        for variable, value in zip(variables, raw):
            variable.assign(value)


def _validation_set() -> ValidationSet:
    items = model_fixtures.make_items()
    train_pairs = model_fixtures.make_pairs(items, 512, seed=5)
    held_out = model_fixtures.make_pairs(items, 128, seed=7)
    corpus = item_sampler.pad_item_arrays(items, model_fixtures.SPEC)
    return ValidationSet(model_fixtures.SPEC, corpus, (train_pairs["query_id"], train_pairs["item_id"]), held_out)


@pytest.mark.timeout(120)
def test_two_tower_validation_under_mirrored_strategy_reads_the_averaged_weights():
    momentum = 0.6
    config = model_fixtures.tiny_config(epochs=3, steps_per_epoch=6, ema_momentum=momentum)
    data = model_fixtures.training_data()
    tf.keras.utils.set_random_seed(0)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        model = train.build_model(config, data)
    path = _Trajectory()
    recall = ValidationRecall(_validation_set(), k=50, patience=5)
    check = _ReEvaluate(recall, path, momentum)
    model.fit(
        train.training_dataset(config, data, seed=0),
        epochs=3,
        steps_per_epoch=6,
        verbose=0,
        callbacks=[path, recall, check],
    )
    assert [v for _, v in recall.history] == pytest.approx(check.values, abs=1e-9)
    best = recall.best_epoch - 1
    _assert_weights(model.trainable_variables, check.averages[best])
    assert not np.allclose(check.averages[-1][0], path.points[-1][0], atol=1e-4)  # averaging did something


# -- config and tuning ----------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [1.0, -0.1, 1.5])
def test_a_momentum_outside_zero_one_fails_naming_the_field(tmp_path, bad):
    path = tmp_path / "x.yaml"
    path.write_text(f"name: x\ntrain: {{ema_momentum: {bad}}}\n")
    with pytest.raises(cfg.ConfigError, match=r"x\.yaml: train\.ema_momentum: must be in \[0, 1\)"):
        cfg.load_config(path)
    with pytest.raises(cfg.ConfigError, match=r"--set: train\.ema_momentum"):
        cfg.with_overrides(cfg.load_config("baseline"), {"train.ema_momentum": bad})
    path.write_text("name: x\ntrain: {ema_momentum: high}\n")
    with pytest.raises(cfg.ConfigError, match=r"train\.ema_momentum: must be a number"):
        cfg.load_config(path)


@pytest.mark.parametrize("momentum", [None, 0.0, 0.99, 0.999])
def test_yaml_round_trip_and_train_print_config(tmp_path, capsys, momentum):
    config = cfg.with_overrides(cfg.load_config("baseline"), {"train.ema_momentum": momentum})
    assert config.train.ema_momentum == momentum
    path = tmp_path / "c.yaml"
    path.write_text(cfg.to_yaml(config))
    assert cfg.load_config(path).to_dict() == config.to_dict()
    assert train.main(["--config", str(path), "--print-config"]) == 0
    assert cfg.config_from_dict(yaml.safe_load(capsys.readouterr().out)).train.ema_momentum == momentum


def test_tuning_knob_zero_is_off_and_the_tuned_yaml_round_trips(tmp_path):
    baseline = cfg.load_config("baseline")
    knobs = {k.field: k for k in tune.search_space(baseline, num_pairs=2000, num_items=300, num_item_features=5)}
    assert knobs["train.ema_momentum"].kind == "choice" and knobs["train.ema_momentum"].choices == (
        0.0,
        0.98,
        0.99,
        0.999,
    )
    assert tune.apply_params(baseline, {"train.ema_momentum": 0.0}).train.ema_momentum is None
    assert tune.apply_params(baseline, {"train.ema_momentum": 0}).train.ema_momentum is None
    tuned = tune.apply_params(baseline, {"train.ema_momentum": 0.999, "main.temperature": 0.2})
    assert tuned.train.ema_momentum == 0.999
    path = tmp_path / "tuned.yaml"
    path.write_text(cfg.to_yaml(tuned))
    assert cfg.load_config(path).train.ema_momentum == 0.999
    # A warm start from a config without averaging proposes "off" (0), one with it its momentum.
    knob_list = list(knobs.values())
    assert tune.warm_start_params(knob_list, baseline, baseline, {})["train.ema_momentum"] == 0.0
    assert tune.warm_start_params(knob_list, tuned, baseline, {})["train.ema_momentum"] == 0.999
