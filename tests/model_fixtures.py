"""A tiny learnable catalog for the model/training tests (no TFDS, no Beam).

Items have a category, a subcategory that determines the category (correlated: MI-high), a
colour (independent), tags drawn from the category, and an id. Each query prefers one
category; its positives are items of that category, with a power-law (popular-first) item
marginal, so logQ has something to correct.
"""

from __future__ import annotations

import collections

import numpy as np

from recsys_ssl import artifacts, features
from recsys_ssl.datasets import item_sampler
from recsys_ssl.tf_setup import tf

SPEC = features.spec_from_dict(
    {
        "name": "tiny",
        "query_key": "query_id",
        "item_key": "item_id",
        "query_features": [
            {"name": "query_id", "kind": "categorical", "embedding_dim": 8},
            {
                "name": "query_segment",
                "kind": "categorical",
                "embedding_dim": 4,
                "vocab": {"source": "inline", "values": ["s0", "s1", "s2", "s3"]},
            },
        ],
        "item_features": [
            {"name": "item_id", "kind": "categorical", "embedding_dim": 8},
            {"name": "category", "kind": "categorical", "embedding_dim": 4},
            {"name": "subcategory", "kind": "categorical", "embedding_dim": 4},
            {"name": "tags", "kind": "multi_categorical", "max_len": 4, "embedding_dim": 4},
            {"name": "colour", "kind": "categorical", "embedding_dim": 4, "vocab": {"source": "hash", "buckets": 8}},
        ],
    },
    source="tests/model_fixtures.py",
)

NUM_CATEGORIES = 4


def make_items(num_items: int = 96, seed: int = 0) -> dict[str, np.ndarray]:
    """The corpus in ``inputs.item_arrays()`` layout (object arrays; lists for multi-valued)."""
    rng = np.random.default_rng(seed)
    category = rng.integers(0, NUM_CATEGORIES, num_items)
    sub = category * 3 + rng.integers(0, 3, num_items)
    tags = np.empty(num_items, dtype=object)
    for i in range(num_items):
        count = rng.integers(0, 5)
        tags[i] = [f"t{category[i]}_{t}".encode() for t in rng.integers(0, 3, count)]
    return {
        "item_id": np.array([f"i{i}".encode() for i in range(num_items)], dtype=object),
        "category": np.array([f"c{c}".encode() for c in category], dtype=object),
        "subcategory": np.array([f"sc{s}".encode() for s in sub], dtype=object),
        "tags": tags,
        "colour": np.array([f"col{c}".encode() for c in rng.integers(0, 5, num_items)], dtype=object),
    }


def make_pairs(
    items: dict[str, np.ndarray], num_pairs: int = 2048, num_queries: int = 32, seed: int = 1
) -> dict[str, np.ndarray]:
    """Dense (padded) pairs: query features + the positive item's features."""
    rng = np.random.default_rng(seed)
    dense = item_sampler.pad_item_arrays(items, SPEC)
    categories = np.array([int(c.decode()[1:]) for c in items["category"]])
    queries = rng.integers(0, num_queries, num_pairs)
    rows = []
    for q in queries:
        candidates = np.flatnonzero(categories == q % NUM_CATEGORIES)
        weights = 1.0 / np.arange(1, len(candidates) + 1)  # popular-first power law
        rows.append(rng.choice(candidates, p=weights / weights.sum()))
    rows = np.array(rows)
    out = {name: array[rows] for name, array in dense.items()}
    out["query_id"] = np.array([f"q{q}".encode() for q in queries], dtype=object)
    out["query_segment"] = np.array([f"s{q % 4}".encode() for q in queries], dtype=object)
    return out


def vocabularies(items: dict[str, np.ndarray], pairs: dict[str, np.ndarray]) -> dict[str, list[str]]:
    """Frequency-ranked vocabularies (the stats job's order), item features from the corpus."""
    out = {}
    for feature in SPEC.item_features + SPEC.query_features:
        source = pairs if feature in SPEC.query_features else item_sampler.pad_item_arrays(items, SPEC)
        counts = collections.Counter(v.decode() for v in np.asarray(source[feature.name]).ravel() if v)
        out[feature.name] = [v for v, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]
    return out


def item_frequencies(items: dict[str, np.ndarray], pairs: dict[str, np.ndarray]) -> dict[str, int]:
    counts = collections.Counter(v.decode() for v in pairs["item_id"])
    return {i.decode(): counts.get(i.decode(), 0) for i in items["item_id"]}


def cfm_groups() -> dict:
    """MI job output for the tiny spec: category <-> subcategory strongly, tags with both."""
    names = SPEC.mi_features  # category, subcategory, tags, colour
    mi = np.array(
        [
            [1.4, 1.3, 0.9, 0.01],
            [1.3, 2.5, 0.8, 0.02],
            [0.9, 0.8, 1.9, 0.03],
            [0.01, 0.02, 0.03, 1.6],
        ]
    )
    return artifacts.cfm_groups(names, mi)


def pair_batches(pairs: dict[str, np.ndarray], batch_size: int, seed: int = 0) -> tf.data.Dataset:
    data = {name: tf.constant(array.tolist(), tf.string) for name, array in pairs.items()}
    return (
        tf.data.Dataset.from_tensor_slices(data)
        .shuffle(len(pairs["item_id"]), seed=seed)
        .batch(batch_size, drop_remainder=True)
        .repeat()
    )


def write_artifacts(run_dir, items, pairs) -> None:
    """The stats and MI artifacts of the tiny catalog, in the batch jobs' format."""
    vocab = vocabularies(items, pairs)
    files = {f"vocab/{name}.txt": artifacts.vocab_text(values) for name, values in vocab.items()}
    freq = sorted(item_frequencies(items, pairs).items(), key=lambda kv: (-kv[1], kv[0]))
    files[artifacts.ITEM_FREQUENCIES] = artifacts.item_frequencies_text(freq)
    manifest = artifacts.make_manifest(
        "stats",
        dataset="tiny",
        spec=SPEC.to_dict(),
        inputs={},
        counts={"vocab_sizes": {k: len(v) for k, v in vocab.items()}},
    )
    files[artifacts.MANIFEST] = artifacts.dumps_json(manifest)
    artifacts.write_files(f"{run_dir}/stats", files)
    groups = cfm_groups()
    artifacts.write_files(f"{run_dir}/mi", {artifacts.CFM_GROUPS: artifacts.dumps_json(groups)})


# -- training on the tiny catalog (also run as a script by the distributed/resume tests) ---------
def tiny_config(method: str = "baseline", augmentation: str | None = None, **train):
    from recsys_ssl import config as cfg

    return cfg.config_from_dict(
        {
            "name": f"{method}{'_' + augmentation if augmentation else ''}",
            "method": method,
            "augmentation": augmentation,
            "dataset": "tiny",
            "model": {"query_hidden": [16, 8], "item_hidden": [16, 8]},
            "main": {"temperature": 0.2},
            "ssl": {"temperature": 0.2, "alpha": 1.0, "dropout_rate": 0.3},
            "train": {"batch_size": 32, "learning_rate": 0.1, "epochs": 1, "steps_per_epoch": 50, **train},
        },
        source="tests/model_fixtures.py",
    )


def training_data(num_items: int = 96, num_pairs: int = 2048):
    from recsys_ssl import train

    items = make_items(num_items)
    pairs = make_pairs(items, num_pairs)
    return train.TrainingData(
        spec=SPEC,
        batch_pairs=lambda batch_size, seed: pair_batches(pairs, batch_size, seed),
        num_pairs=num_pairs,
        item_arrays=items,
        vocabularies=vocabularies(items, pairs),
        item_frequencies=item_frequencies(items, pairs),
        cfm_groups=cfm_groups(),
        sources={"dataset": "tiny"},
    )


class _Sleep(tf.keras.callbacks.Callback):
    def __init__(self, seconds):
        super().__init__()
        self.seconds = seconds

    def on_train_batch_end(self, batch, logs=None):
        import time

        time.sleep(self.seconds)


def _main(argv=None) -> int:
    import argparse

    from recsys_ssl import train

    parser = argparse.ArgumentParser()
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--method", default="baseline")
    parser.add_argument("--augmentation")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--steps-per-epoch", type=int, default=20)
    parser.add_argument("--backup-every", type=int, default=100)
    parser.add_argument("--strategy", default="default")
    parser.add_argument("--cross-replica-negatives", action="store_true")
    parser.add_argument("--sleep-per-step", type=float, default=0.0)
    args = parser.parse_args(argv)
    if train.serve_if_not_chief(args.strategy):  # parameter-server workers and ps tasks
        return 0
    config = tiny_config(
        args.method,
        args.augmentation,
        epochs=args.epochs,
        steps_per_epoch=args.steps_per_epoch,
        backup_every_steps=args.backup_every,
        strategy=args.strategy,
        cross_replica_negatives=args.cross_replica_negatives,
    )
    extra = [_Sleep(args.sleep_per_step)] if args.sleep_per_step else []
    manifest = train.run(config, args.run_dir, training_data(), verbose=2, extra_callbacks=extra)
    print("MANIFEST", json.dumps({k: manifest[k] for k in ("steps", "initial_step", "replicas", "final")}))
    return 0


if __name__ == "__main__":
    import json
    import sys

    sys.exit(_main())


def script_command(run_dir, method: str = "ssl", augmentation: str | None = None, **flags) -> list[str]:
    """The command line that runs this module as a training script (``_main``) on the tiny catalog:
    ``--name value`` per keyword (``steps_per_epoch=6`` -> ``--steps-per-epoch 6``; True: a bare flag)."""
    import pathlib
    import sys

    command = [sys.executable, str(pathlib.Path(__file__).resolve()), "--run-dir", str(run_dir), "--method", method]
    command += ["--augmentation", augmentation] if augmentation else []
    for name, value in flags.items():
        flag = "--" + name.replace("_", "-")
        command += [flag] if value is True else [flag, str(value)]
    return command


def backed_up_steps(backup, backup_every: int) -> int:
    """Steps covered by the newest COMPLETE BackupAndRestore save under ``backup`` (ckpt-N is the N-th).

    The ``checkpoint`` state file names a save only once it is fully written. Only the chief's
    folder counts: every worker restores from ``backup/chief``; another worker's scratch copy
    (``backup/workertemp_<i>``) can name a save the chief has not finished yet.
    """
    import pathlib
    import re

    state = pathlib.Path(backup) / "chief" / "checkpoint"
    try:
        match = re.search(r'^model_checkpoint_path: "ckpt-(\d+)"', state.read_text(), re.MULTILINE)
    except FileNotFoundError:
        return 0
    return backup_every * int(match.group(1)) if match else 0


def sigkill_after_backup(
    command: list[str], backup, min_steps: int, backup_every: int, *, env, cwd, timeout: float = 120
):
    """Starts a training command, SIGKILLs it once a backup covers ``min_steps``; returns the process.

    Fails (AssertionError) if training ends by itself before it could be killed.
    """
    return sigkill_all_after_backup([(command, env)], backup, min_steps, backup_every, cwd=cwd, timeout=timeout)[0]


def sigkill_all_after_backup(commands, backup, min_steps: int, backup_every: int, *, cwd, timeout: float = 120):
    """Starts every ``(command, env)`` (the workers of one run), SIGKILLs them all once a backup
    under ``backup`` covers ``min_steps``; returns the processes.

    Fails (AssertionError) if a process ends by itself before they could be killed.
    """
    import os
    import signal
    import subprocess
    import tempfile
    import time

    logs = [tempfile.TemporaryFile("w+") for _ in commands]  # files, not pipes: nothing blocks on a full pipe
    processes = [
        subprocess.Popen(command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
        for (command, env), log in zip(commands, logs)
    ]
    try:
        deadline = time.time() + timeout
        while (
            time.time() < deadline
            and all(p.poll() is None for p in processes)
            and backed_up_steps(backup, backup_every) < min_steps
        ):
            time.sleep(0.02)
        for process, log in zip(processes, logs):
            log.seek(0)
            assert process.poll() is None, "training ended before it could be killed:\n" + log.read()[-3000:]
        for process in processes:
            os.kill(process.pid, signal.SIGKILL)
        for process in processes:
            process.wait(timeout=30)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
        for log in logs:
            log.close()
    return processes


def free_ports(count: int) -> list[int]:
    """``count`` localhost ports free right now (for a TF_CONFIG cluster)."""
    import socket

    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def worker_envs(ports: list[int], **extra) -> list[dict]:
    """The environments of a MultiWorkerMirroredStrategy cluster of ``len(ports)`` workers on localhost."""
    import json
    import os

    cluster = {"worker": [f"localhost:{port}" for port in ports]}
    return [
        dict(os.environ, TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}}), **extra)
        for i in range(len(ports))
    ]


def run_workers(commands, *, cwd, timeout: float = 150) -> list[tuple[int, str]]:
    """Runs every ``(command, env)`` at once (the workers of one run) to the end: [(returncode, output)]."""
    import subprocess

    processes = [
        subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=cwd)
        for command, env in commands
    ]
    outputs = []
    try:
        for process in processes:
            outputs.append(process.communicate(timeout=timeout)[0])
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    return [(process.returncode, output) for process, output in zip(processes, outputs)]
