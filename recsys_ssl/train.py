"""``recsys-ssl train``: fit a two-tower model (baseline, FD, SO or SSL) from a YAML config.

    recsys-ssl train --config data/configs/ssl_cfm.yaml [--run-dir DIR] [--steps 2000]

Reads the dataset (``recsys_ssl.datasets.inputs``), the statistics job's vocabularies and item
frequencies (``<run_dir>/stats``) and, for CFM, the MI job's groups (``<run_dir>/mi``); writes
``<run_dir>/train/<name>/``::

    manifest.json        config, dataset, spec, inputs, strategy, steps, final losses, throughput
    spec.json, vocabularies.json   what ``load_trained`` needs to rebuild the towers
    weights/final.*      the trained weights (TF checkpoint)
    checkpoints/         a weights checkpoint per epoch
    backup/              BackupAndRestore: a killed run, started again with the same command,
                         resumes from its last backup (every ``train.backup_every_steps`` steps)
    logs/                TensorBoard (main_loss, ssl_loss, loss, candidates)

Distribution (``--strategy``, default ``auto``): one device; ``mirrored`` (the local GPUs);
``multi_worker`` (MultiWorkerMirroredStrategy from $TF_CONFIG, every worker runs this same
command); ``parameter_server`` (embedding tables sharded over the ps tasks; the chief runs
this command, the worker and ps tasks run it too and serve). ``auto`` picks from $TF_CONFIG
and the visible GPUs. ``train.batch_size`` is the GLOBAL batch (split over replicas);
``--cross-replica-negatives`` makes every replica's softmax (main and SSL) run over the
global batch's candidates instead of its local slice.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import logging
import math
import os
import pathlib
import shutil
import sys
import tempfile
import time
from typing import Any, Callable, Mapping

import numpy as np

from recsys_ssl import artifacts
from recsys_ssl import config as cfg
from recsys_ssl import features as fs
from recsys_ssl.checkpoints import WEIGHTS, Trained, build_towers_now, dummy_batch, load_trained  # noqa: F401
from recsys_ssl.datasets import item_sampler
from recsys_ssl.model import TwoTowerModel
from recsys_ssl.paths import DEFAULT_RUN_DIR, RunLayout
from recsys_ssl.tf_setup import tf

log = logging.getLogger("recsys_ssl.train")


@dataclasses.dataclass
class TrainingData:
    """Everything training reads, whatever its source.

    batch_pairs(batch_size, seed): an endless, shuffled tf.data.Dataset of full pair batches
      (dicts of [B] / [B, max_len] tf.string), as ``inputs.batch(..., repeat=True, drop_remainder=True)``.
    num_pairs: training pairs per pass (sets the epoch length when the config does not).
    item_arrays: the corpus (``inputs.item_arrays()`` layout), for the uniform SSL batches.
    sources: what to record in the manifest (dataset name, stats/mi dirs ...).
    """

    spec: fs.FeatureSpec
    batch_pairs: Callable[[int, int], tf.data.Dataset]
    num_pairs: int
    item_arrays: Mapping[str, np.ndarray]
    vocabularies: Mapping[str, list[str]]
    item_frequencies: Mapping[str, int] | None = None
    cfm_groups: Mapping[str, Any] | None = None
    sources: dict[str, Any] = dataclasses.field(default_factory=dict)
    validation: Any = None  # callbacks.ValidationSet when the dataset is a validation view

    @property
    def num_items(self) -> int:
        return len(self.item_arrays[self.spec.item_key])


def load_training_data(
    config: cfg.ExperimentConfig,
    run_dir: str | os.PathLike,
    tfds_dir: str | None = None,
    raw_data_dir: str | None = None,
) -> TrainingData:
    """The config's dataset (TFDS folder ``tfds_dir``, default ``<run_dir>/tfds``) plus the batch
    jobs' artifacts under ``run_dir``."""
    from recsys_ssl.datasets import inputs  # the TFDS builders load only when training from a dataset

    layout = RunLayout(run_dir)
    dataset = inputs.load_dataset(config.dataset, data_dir=tfds_dir or str(layout.tfds), raw_data_dir=raw_data_dir)
    split = "train" if config.train.data_fraction == "full" else "train_10pct"
    stats_dir, mi_dir = layout.stats, layout.mi
    _check_stats(config, stats_dir, run_dir)
    cfm_groups = _read_cfm_groups(config, mi_dir, run_dir) if config.needs_cfm_groups else None
    pairs = dataset.pairs(split)
    num_pairs = dataset.num_examples(split)
    spec = dataset.spec

    def batch_pairs(batch_size: int, seed: int) -> tf.data.Dataset:
        return inputs.batch(pairs, spec, batch_size, shuffle=True, seed=seed, repeat=True, drop_remainder=True)

    validation = None
    if getattr(dataset, "validation_of", None) and config.train.early_stopping:
        from recsys_ssl.callbacks import ValidationSet

        validation = ValidationSet.from_dataset(dataset)
    return TrainingData(
        spec=spec,
        batch_pairs=batch_pairs,
        num_pairs=num_pairs,
        item_arrays=dataset.item_arrays(),
        validation=validation,
        vocabularies=artifacts.read_vocabularies(stats_dir),
        item_frequencies=_regime_frequencies(dataset, split, layout) if config.main.logq_correction else None,
        cfm_groups=cfm_groups,
        sources={
            "dataset": config.dataset,
            "split": split,
            "stats_dir": str(stats_dir),
            "frequencies": str(layout.stats if split == "train" else layout.stats_10pct),
            "mi_dir": str(mi_dir) if cfm_groups else None,
        },
    )


def _check_stats(config: cfg.ExperimentConfig, stats_dir: pathlib.Path, run_dir: str | os.PathLike) -> None:
    """Raises unless the statistics job has written ``stats_dir`` for the config's dataset
    (FileNotFoundError: no manifest, with the command to run; ValueError: another dataset's)."""
    from recsys_ssl.datasets import inputs

    if not artifacts.exists(artifacts.join(stats_dir, artifacts.MANIFEST)):
        raise FileNotFoundError(
            f"{stats_dir}: no statistics artifacts (vocabularies, item frequencies); run "
            f"`recsys-ssl stats --dataset {config.dataset} --run-dir {run_dir}` first"
        )
    stats_manifest = artifacts.read_manifest(stats_dir)
    # A validation view (<name>-val) reads its base dataset's statistics.
    if stats_manifest.get("dataset") not in (None, config.dataset, inputs.base_name(config.dataset)):
        raise ValueError(
            f"{stats_dir}/manifest.json: statistics of dataset {stats_manifest.get('dataset')!r}, "
            f"but config {config.source} trains on {config.dataset!r}"
        )


def _read_cfm_groups(config: cfg.ExperimentConfig, mi_dir: pathlib.Path, run_dir: str | os.PathLike) -> dict[str, Any]:
    """The MI job's ``cfm_groups.json`` (``artifacts.read_cfm_groups``); FileNotFoundError, with
    the command to run, when the MI job has not run."""
    if not artifacts.exists(artifacts.join(mi_dir, artifacts.CFM_GROUPS)):
        raise FileNotFoundError(
            f"{mi_dir}: no {artifacts.CFM_GROUPS}; CFM needs the MI job: run "
            f"`recsys-ssl mi --dataset {config.dataset} --run-dir {run_dir}` first"
        )
    return artifacts.read_cfm_groups(mi_dir)


def _regime_frequencies(dataset, split: str, layout: RunLayout) -> dict[str, int]:
    """Item -> number of pairs in the regime's own training split (logQ's sampling probability).

    Full data: the statistics job's ``stats/``. 10% data: ``stats_10pct/`` (``recsys-ssl stats
    --split train_10pct``), else counted here from ``train_10pct``: the full split's counts would
    leak the withheld 90%'s popularity into the 10% model.
    """
    directory = layout.stats if split == "train" else layout.stats_10pct
    if artifacts.exists(artifacts.join(directory, artifacts.ITEM_FREQUENCIES)):
        return artifacts.read_item_frequencies(directory)
    items = dataset.pair_columns(split, [dataset.spec.item_key])[dataset.spec.item_key]
    counted = collections.Counter(fs.as_bytes(i).decode() for i in items)
    corpus = [fs.as_bytes(i).decode() for i in dataset.item_arrays()[dataset.spec.item_key]]
    print(
        f"train: item frequencies of {split} counted here ({len(items)} pairs); `recsys-ssl stats --split {split}` "
        f"writes them to {directory}",
        flush=True,
    )
    return {item: counted.get(item, 0) for item in corpus}


# -- distribution ------------------------------------------------------------------------------
def _tf_config() -> dict[str, Any]:
    return json.loads(os.environ.get("TF_CONFIG") or "{}")


def resolve_strategy_name(name: str) -> str:
    """``auto``: parameter_server if $TF_CONFIG has ps tasks, multi_worker if it has a cluster,
    mirrored with several GPUs, else default."""
    if name != "auto":
        return name
    cluster = _tf_config().get("cluster", {})
    if cluster.get("ps"):
        return "parameter_server"
    if sum(len(v) for v in cluster.values()) > 1:
        return "multi_worker"
    return "mirrored" if len(tf.config.list_physical_devices("GPU")) > 1 else "default"


def make_strategy(name: str) -> tf.distribute.Strategy:
    name = resolve_strategy_name(name)
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        if not _tf_config():
            raise ValueError("--strategy multi_worker needs $TF_CONFIG (see docs/training.md, 'Running on a cluster')")
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "parameter_server":
        resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
        num_ps = len(resolver.cluster_spec().as_dict().get("ps", []))
        if not num_ps:
            raise ValueError("--strategy parameter_server needs ps tasks in $TF_CONFIG")
        # Shard every variable of 256 KiB or more (the embedding tables) over the ps tasks.
        partitioner = tf.distribute.experimental.partitioners.MinSizePartitioner(
            min_shard_bytes=256 << 10, max_shards=num_ps
        )
        return tf.distribute.experimental.ParameterServerStrategy(resolver, variable_partitioner=partitioner)
    raise ValueError(f"unknown strategy {name!r}; one of {cfg.STRATEGIES}")


def _is_chief() -> bool:
    task = _tf_config().get("task", {})
    task_type, index = task.get("type"), task.get("index", 0)
    if task_type in (None, "chief"):
        return True
    has_chief = bool(_tf_config().get("cluster", {}).get("chief"))
    return task_type == "worker" and index == 0 and not has_chief


# -- model and input ---------------------------------------------------------------------------
def make_optimizer(config: cfg.ExperimentConfig) -> tf.keras.optimizers.Optimizer:
    """The config's optimizer; with ``train.ema_momentum``, tf_keras's own weight averaging
    (``use_ema``): the averages are optimizer variables (checkpointed by BackupAndRestore), and
    ``Model.fit`` overwrites the weights with them when it ends (``finalize_variable_values``).
    ``train.weight_decay``: the optimizers' decoupled weight decay (``var -= lr * wd * var``)."""
    ema = config.train.ema_momentum
    options = {} if ema is None else {"use_ema": True, "ema_momentum": ema}
    if config.train.weight_decay:
        options["weight_decay"] = config.train.weight_decay
    return {"adagrad": tf.keras.optimizers.Adagrad, "adam": tf.keras.optimizers.Adam, "sgd": tf.keras.optimizers.SGD}[
        config.train.optimizer
    ](learning_rate=config.train.learning_rate, **options)


def build_model(config: cfg.ExperimentConfig, data: TrainingData) -> TwoTowerModel:
    """The compiled model (call inside the strategy's scope)."""
    model = TwoTowerModel(
        data.spec, config, data.vocabularies, data.item_frequencies, data.cfm_groups, corpus_size=data.num_items
    )
    model.compile(optimizer=make_optimizer(config))
    build_towers_now(model, data.spec)
    return model


def backed_up_step(backup_dir: str | os.PathLike) -> int:
    """The optimizer step that BackupAndRestore will restore from ``backup_dir`` (0: none).

    Every worker restores from ``<backup_dir>/chief`` (tf-keras' WorkerTrainingState).
    """
    latest = tf.train.latest_checkpoint(str(pathlib.Path(backup_dir) / "chief"))
    if latest is None:
        return 0
    reader = tf.train.load_checkpoint(latest)
    key = next((k for k in reader.get_variable_to_shape_map() if k.startswith("model/optimizer/_iterations/")), None)
    return int(reader.get_tensor(key)) if key else 0


def training_dataset(
    config: cfg.ExperimentConfig, data: TrainingData, seed: int, skip_steps: int = 0
) -> tf.data.Dataset:
    """Elements ``{"pairs": ..., "ssl_items": ..., "negative_items": ...}`` (ssl_items for SSL/SO;
    negative_items, ``main.mixed_negatives`` uniform corpus items, when that is on), global batches.

    The stream is a pure function of the seed (seeded shuffles, repeated): batch ``n`` is the
    same in every run. ``skip_steps``: start at batch ``skip_steps`` -- a run resumed from a
    backup at step ``s`` reads exactly the batches the uninterrupted run read from step ``s``
    on (Keras restores the step and the weights, but starts a fresh iterator); with the
    step-keyed augmentation seeds (``TwoTowerModel._step_seed``) the resumed run then ends with
    the uninterrupted run's model.
    """
    streams = {"pairs": data.batch_pairs(config.train.batch_size, seed)}
    if config.uses_ssl_batch:
        streams["ssl_items"] = item_sampler.uniform_item_batches(
            data.item_arrays, data.spec, config.ssl.batch_size or config.train.batch_size, seed=seed + 1
        )
    if config.main.mixed_negatives:  # its own uniform draw, independent of the SSL batch
        streams["negative_items"] = item_sampler.uniform_item_batches(
            data.item_arrays, data.spec, config.main.mixed_negatives, seed=seed + 2, what="main.mixed_negatives"
        )
    dataset = tf.data.Dataset.zip(streams) if len(streams) > 1 else streams["pairs"].map(lambda p: {"pairs": p})
    if skip_steps:
        dataset = dataset.skip(skip_steps)
    options = tf.data.Options()
    # Every worker reads the whole stream and keeps its share of the batches (in-memory data
    # has no files to shard by).
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options).prefetch(tf.data.AUTOTUNE)


def schedule(config: cfg.ExperimentConfig, num_pairs: int) -> tuple[int, int]:
    """(epochs, steps_per_epoch): ``train.epochs`` passes, or ``train.steps`` steps in all.

    For ``train.steps`` the epoch is shortened to a divisor of it (at least half the natural
    epoch), so the total is exact; when there is none, the total is rounded up to whole epochs.
    """
    if config.train.batch_size is None or (config.train.epochs is None and not config.train.steps):
        raise ValueError(
            f"{config.source}: train.batch_size / train.epochs are derived from the catalog: "
            "call cfg.resolve_auto first"
        )
    steps_per_epoch = config.train.steps_per_epoch or max(1, num_pairs // config.train.batch_size)
    steps = config.train.steps
    if not steps:
        return config.train.epochs, steps_per_epoch
    if steps <= steps_per_epoch:
        return 1, steps
    divisors = [d for d in range(steps_per_epoch, (steps_per_epoch + 1) // 2 - 1, -1) if d > 0 and steps % d == 0]
    if divisors:
        return steps // divisors[0], divisors[0]
    epochs = math.ceil(steps / steps_per_epoch)
    log.warning(
        "train.steps %d is not a multiple of an epoch length near %d: training %d steps",
        steps,
        steps_per_epoch,
        epochs * steps_per_epoch,
    )
    return epochs, steps_per_epoch


class _Throughput(tf.keras.callbacks.Callback):
    """Examples (pairs) per second after the first step (which includes tracing)."""

    def __init__(self, batch_size: int):
        super().__init__()
        self.batch_size, self.steps, self._start, self.seconds = batch_size, 0, None, 0.0

    def on_train_batch_end(self, batch, logs=None):
        now = time.perf_counter()
        if self._start is not None:
            self.steps += 1
            self.seconds = now - self._start
        else:
            self._start = now

    @property
    def examples_per_second(self) -> float | None:
        return self.steps * self.batch_size / self.seconds if self.steps and self.seconds else None


class _InitialStep(tf.keras.callbacks.Callback):
    """The optimizer step a fit() started from (> 0 when BackupAndRestore resumed a run)."""

    step = 0

    def on_train_begin(self, logs=None):
        self.step = int(self.model.optimizer.iterations.numpy())


# -- the run -----------------------------------------------------------------------------------
def run(
    config: cfg.ExperimentConfig,
    run_dir: str | os.PathLike,
    data: TrainingData,
    name: str | None = None,
    strategy: tf.distribute.Strategy | None = None,
    verbose: int | str = "auto",
    extra_callbacks: list[tf.keras.callbacks.Callback] = (),
    report: Callable[[int, float], None] | None = None,
    durable: bool = True,
) -> dict[str, Any]:
    """Trains, writes ``<run_dir>/train/<name>/`` and returns its manifest (dict).

    ``durable=False``: a throwaway run, never resumed (a tuning trial): no backups, per-epoch
    checkpoints or TensorBoard logs (~13% of a trial's time on 2 cores; the same model).

    A run whose ``backup/`` exists (killed, or finished) resumes from it: ``initial_step`` in
    the manifest says where this invocation started. Knobs left to the catalog (batch size,
    epochs, SSL batch: ``cfg.resolve_auto``) are derived here and logged; the manifest holds
    the concrete config. With ``data.validation`` (a ``<name>-val`` dataset), early stopping
    on validation recall runs after every epoch (``report(epoch, recall)`` is called too).
    """
    config, derived = cfg.resolve_auto(config, data.num_pairs, data.num_items)
    for line in derived:  # what the catalog decided: said once per run (tune's trials run quietly)
        if verbose != 0:
            print(f"derived {line}")
    name = name or config.name
    train_dir = RunLayout(run_dir).train(name)
    strategy = strategy or make_strategy(config.train.strategy)
    chief = _is_chief()
    out_dir = _output_dir(train_dir, name, chief)
    tf.keras.utils.set_random_seed(config.seed)
    epochs, steps_per_epoch = schedule(config, data.num_pairs)
    replicas = _replicas(strategy, config)
    with strategy.scope():
        model = build_model(config, data)
    # Resuming from a backup: skip the batches already trained on (see training_dataset).
    resume_step = backed_up_step(train_dir / "backup")
    dataset = training_dataset(config, data, config.seed, skip_steps=resume_step)
    # ParameterServerStrategy allows no batch-level callbacks: back up per epoch, no throughput.
    parameter_server = isinstance(strategy, tf.distribute.experimental.ParameterServerStrategy)
    callbacks, monitors = _callbacks(
        config, data, train_dir, out_dir, steps_per_epoch, parameter_server, report, durable
    )
    log.info(_start_line(name, config, epochs, steps_per_epoch, replicas))
    history = model.fit(
        dataset,
        epochs=epochs,
        steps_per_epoch=steps_per_epoch,
        callbacks=callbacks + list(extra_callbacks),
        verbose=verbose,
    )
    model.save_weights(str(out_dir / WEIGHTS))
    manifest = _manifest(config, data, name, strategy, (epochs, steps_per_epoch), model, history, monitors, derived)
    _write_run_files(out_dir, data, manifest)
    if not chief:
        shutil.rmtree(out_dir, ignore_errors=True)
    return manifest


def _start_line(name: str, config: cfg.ExperimentConfig, epochs: int, steps_per_epoch: int, replicas: int) -> str:
    return (
        f"training {name} ({config.method}) for {epochs} epochs x {steps_per_epoch} steps, "
        f"global batch {config.train.batch_size} on {replicas} replica(s)"
    )


def _replicas(strategy: tf.distribute.Strategy, config: cfg.ExperimentConfig) -> int:
    """The strategy's replica count; ValueError unless the global batch splits evenly over them."""
    replicas = strategy.num_replicas_in_sync
    if config.train.batch_size % replicas:
        raise ValueError(f"train.batch_size {config.train.batch_size} must be divisible by the {replicas} replicas")
    return replicas


def _output_dir(train_dir: pathlib.Path, name: str, chief: bool) -> pathlib.Path:
    """Where this worker writes (created): ``train_dir`` on the chief. Non-chief workers of a
    multi-worker run write their copies to a scratch folder (``run`` deletes it at the end)."""
    out_dir = train_dir if chief else pathlib.Path(tempfile.mkdtemp(prefix=f"recsys_ssl_worker_{name}_"))
    out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir


def _write_run_files(out_dir: pathlib.Path, data: TrainingData, manifest: Mapping[str, Any]) -> None:
    """Next to the weights: ``spec.json``, ``vocabularies.json`` (what ``load_trained`` rebuilds
    the towers from) and, last, ``manifest.json``."""
    (out_dir / "spec.json").write_text(json.dumps(data.spec.to_dict(), indent=1) + "\n")
    (out_dir / "vocabularies.json").write_text(json.dumps(dict(data.vocabularies)) + "\n")
    (out_dir / artifacts.MANIFEST).write_text(artifacts.dumps_json(manifest))


@dataclasses.dataclass
class _Monitors:
    """The callbacks whose results the manifest records."""

    throughput: _Throughput
    start: _InitialStep
    early_stopping: Any = None  # callbacks.ValidationRecall, with a validation set


def _callbacks(
    config: cfg.ExperimentConfig,
    data: TrainingData,
    train_dir: pathlib.Path,
    out_dir: pathlib.Path,
    steps_per_epoch: int,
    parameter_server: bool,
    report: Callable[[int, float], None] | None,
    durable: bool,
) -> tuple[list[tf.keras.callbacks.Callback], _Monitors]:
    """Backups (resume), per-epoch checkpoints, TensorBoard (the three only when ``durable``),
    throughput, early stopping."""
    monitors = _Monitors(_Throughput(config.train.batch_size), _InitialStep())  # start: after BackupAndRestore
    if data.validation is not None and config.train.early_stopping:
        from recsys_ssl.callbacks import ValidationRecall

        monitors.early_stopping = ValidationRecall(
            data.validation,
            k=config.train.early_stopping_k,
            patience=config.train.early_stopping_patience,
            report=report,
        )
    callbacks = [
        # A throwaway run (a tuning trial) is never resumed or inspected: none of the three.
        *(_durability_callbacks(config, train_dir, out_dir, steps_per_epoch, parameter_server) if durable else []),
        *([] if parameter_server else [monitors.throughput]),
        monitors.start,
        # Before the checkpoint of the final weights: it restores the best epoch's at train end.
        *([monitors.early_stopping] if monitors.early_stopping else []),
    ]
    return callbacks, monitors


def _durability_callbacks(
    config: cfg.ExperimentConfig,
    train_dir: pathlib.Path,
    out_dir: pathlib.Path,
    steps_per_epoch: int,
    parameter_server: bool,
) -> list[tf.keras.callbacks.Callback]:
    """What a durable run writes besides its weights: backups (resume), per-epoch checkpoints, logs."""
    return [
        tf.keras.callbacks.BackupAndRestore(
            str(train_dir / "backup"),
            delete_checkpoint=False,
            save_freq="epoch" if parameter_server else config.train.backup_every_steps,
        ),
        tf.keras.callbacks.ModelCheckpoint(str(out_dir / "checkpoints" / "epoch-{epoch:03d}"), save_weights_only=True),
        tf.keras.callbacks.TensorBoard(
            str(out_dir / "logs"), update_freq="epoch" if parameter_server else max(1, min(100, steps_per_epoch))
        ),
    ]


def _manifest(
    config: cfg.ExperimentConfig,
    data: TrainingData,
    name: str,
    strategy: tf.distribute.Strategy,
    epochs_and_steps: tuple[int, int],
    model: TwoTowerModel,
    history: tf.keras.callbacks.History,
    monitors: _Monitors,
    derived: list[str],
) -> dict[str, Any]:
    """What ``run`` records in ``manifest.json``."""
    epochs, steps_per_epoch = epochs_and_steps
    return {
        "stage": "train",
        "name": name,
        "config": config.to_dict(),
        "config_path": config.source,
        "spec_path": data.spec.source,
        "inputs": data.sources,
        "strategy": resolve_strategy_name(config.train.strategy),
        "strategy_class": type(strategy).__name__,
        "replicas": strategy.num_replicas_in_sync,
        "cross_replica_negatives": config.train.cross_replica_negatives,
        "epochs": epochs,
        "steps_per_epoch": steps_per_epoch,
        "steps": int(model.optimizer.iterations.numpy()),
        "initial_step": monitors.start.step,
        "history": {key: [float(v) for v in values] for key, values in history.history.items()},
        "final": {key: float(values[-1]) for key, values in history.history.items() if values},
        "examples_per_second": monitors.throughput.examples_per_second,
        "derived": derived,
        "early_stopping": monitors.early_stopping.summary() if monitors.early_stopping else None,
        "weights": WEIGHTS,
        "versions": artifacts.versions(),
    }


# -- CLI ---------------------------------------------------------------------------------------
def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="recsys-ssl train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="experiment YAML (data/configs/<method>.yaml, or a bare name)")
    parser.add_argument(
        "--run-dir", default=DEFAULT_RUN_DIR, help=f"the run's artifact folder (default {DEFAULT_RUN_DIR})"
    )
    parser.add_argument("--name", help="the run name under <run-dir>/train/ (default: the config's name)")
    parser.add_argument("--dataset", help="override the config's dataset (e.g. movielens/100k-item-item)")
    parser.add_argument("--tfds-dir", help="TFDS data_dir (default $RECSYS_SSL_TFDS_DIR, else <run-dir>/tfds)")
    parser.add_argument("--data-dir", dest="old_tfds_dir", help=argparse.SUPPRESS)  # the old name of --tfds-dir
    parser.add_argument("--raw-data-dir", help="raw MovieLens root (default $RECSYS_SSL_DATA, else ../shared/data)")
    parser.add_argument("--steps", type=int, help="total training steps (overrides train.steps / epochs)")
    parser.add_argument("--epochs", type=int, help="override train.epochs")
    parser.add_argument("--batch-size", type=int, help="override train.batch_size (global)")
    parser.add_argument("--seed", type=int, help="override the config's seed")
    parser.add_argument("--data-fraction", choices=cfg.DATA_FRACTIONS, help="train on all pairs or the 10%% sample")
    parser.add_argument(
        "--strategy", choices=cfg.STRATEGIES, help="tf.distribute strategy (default: the config's, auto)"
    )
    parser.add_argument(
        "--cross-replica-negatives",
        action="store_true",
        default=None,
        help="softmax over the global batch's candidates (all replicas)",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        type=_override,
        default=[],
        help="config override, as `experiment --set`: --set main.temperature=0.1 "
        "--set model.item_hidden=[256,64] (the value is YAML; an unknown knob fails naming it)",
    )
    parser.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")
    parser.add_argument("--quiet", action="store_true", help="one line per epoch instead of progress bars")
    args = parser.parse_args(argv)
    if args.old_tfds_dir is not None:  # every other command's --data-dir is the raw-data root
        print("recsys-ssl train: --data-dir is deprecated here, use --tfds-dir (the TFDS folder)", file=sys.stderr)
        args.tfds_dir = args.tfds_dir or args.old_tfds_dir
    return args


def _override(text: str) -> tuple[str, Any]:
    try:
        return cfg.parse_override(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def apply_overrides(config: cfg.ExperimentConfig, args: argparse.Namespace) -> cfg.ExperimentConfig:
    top = {k: v for k, v in (("dataset", args.dataset), ("seed", args.seed)) if v is not None}
    train = {
        k: v
        for k, v in (
            ("steps", args.steps),
            ("epochs", args.epochs),
            ("batch_size", args.batch_size),
            ("data_fraction", args.data_fraction),
            ("strategy", args.strategy),
            ("cross_replica_negatives", args.cross_replica_negatives),
        )
        if v is not None
    }
    config = cfg.replace(config, top=top, train=train)
    return cfg.with_overrides(config, args.overrides) if args.overrides else config


def serve_if_not_chief(strategy_name: str) -> bool:
    """Parameter-server clusters: worker and ps tasks run a server until the chief is done."""
    task = _tf_config().get("task", {})
    if resolve_strategy_name(strategy_name) != "parameter_server" or task.get("type") not in ("worker", "ps"):
        return False
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    server = tf.distribute.Server(
        resolver.cluster_spec(),
        job_name=resolver.task_type,
        task_index=resolver.task_id,
        protocol=resolver.rpc_layer or "grpc",
        start=True,
    )
    log.info("serving as %s %d for the parameter-server chief", resolver.task_type, resolver.task_id)
    server.join()
    return True


def main(argv: list[str] | None = None) -> int:
    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    config = apply_overrides(cfg.load_config(args.config), args)
    if args.print_config:
        print(cfg.to_yaml(config), end="")
        return 0
    if serve_if_not_chief(config.train.strategy):
        return 0
    # The strategy first: multi-worker collectives must be configured before TensorFlow runs anything.
    strategy = make_strategy(config.train.strategy)
    data = load_training_data(config, args.run_dir, tfds_dir=args.tfds_dir, raw_data_dir=args.raw_data_dir)
    manifest = run(config, args.run_dir, data, name=args.name, strategy=strategy, verbose=2 if args.quiet else "auto")
    final = manifest["final"]
    print(
        f"trained {manifest['name']}: {manifest['steps']} steps, "
        + ", ".join(f"{k} {final[k]:.4f}" for k in ("main_loss", "ssl_loss") if k in final)
        + f" -> {RunLayout(args.run_dir).train(manifest['name'])}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
