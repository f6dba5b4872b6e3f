"""Shared fixtures of the export / index / serve / retrieve tests (no tests here).

A tiny spec (2 query features, 3 item features, multi-valued on both sides), real towers
from ``recsys_ssl.towers`` with random weights, a 200-item corpus, and one export of it,
made once per pytest session (export takes a few seconds) and copied for tests that change it.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys
import time

import numpy as np

from recsys_ssl import features as fs

ROOT = pathlib.Path(__file__).resolve().parent.parent
PYTHON = sys.executable
NUM_ITEMS = 200
GENRES = [f"g{i}" for i in range(8)]
TAGS = [f"t{i}" for i in range(12)]
USERS = [f"u{i}" for i in range(50)]

SPEC = fs.spec_from_dict(
    {
        "name": "tiny",
        "query_key": "user_id",
        "item_key": "item_id",
        "query_features": [
            {"name": "user_id", "kind": "categorical", "embedding_dim": 8},
            {"name": "user_tags", "kind": "multi_categorical", "max_len": 3, "embedding_dim": 8},
        ],
        "item_features": [
            {"name": "item_id", "kind": "categorical", "embedding_dim": 8},
            {"name": "genre", "kind": "categorical", "embedding_dim": 4},
            {"name": "tags", "kind": "multi_categorical", "max_len": 4, "embedding_dim": 4},
        ],
    },
    source="tiny-spec",
)


def item_arrays(num_items: int = NUM_ITEMS, seed: int = 0, prefix: str = "i") -> dict[str, np.ndarray]:
    """The corpus in Dataset.item_arrays() layout: bytes, and lists of bytes (ragged)."""
    rng = np.random.default_rng(seed)
    tags = np.empty(num_items, dtype=object)
    for i in range(num_items):
        tags[i] = [t.encode() for t in rng.choice(TAGS, size=rng.integers(0, 5), replace=False)]
    return {
        "item_id": np.array([f"{prefix}{i}".encode() for i in range(num_items)], dtype=object),
        "genre": np.array([g.encode() for g in rng.choice(GENRES, size=num_items)], dtype=object),
        "tags": tags,
    }


def query_instances(num: int, seed: int = 1) -> list[dict]:
    """JSON-able query instances (row format), ragged multi-valued lists."""
    rng = np.random.default_rng(seed)
    return [
        {
            "user_id": str(rng.choice(USERS)),
            "user_tags": [str(t) for t in rng.choice(TAGS, size=rng.integers(0, 4), replace=False)],
        }
        for _ in range(num)
    ]


def build_towers(seed: int = 0):
    from recsys_ssl import towers
    from recsys_ssl.tf_setup import tf

    tf.keras.utils.set_random_seed(seed)
    vocabularies = {
        "user_id": USERS,
        "user_tags": TAGS,
        "item_id": [f"i{i}" for i in range(NUM_ITEMS)],
        "genre": GENRES,
        "tags": TAGS,
    }
    return towers.build_towers(SPEC, vocabularies, query_hidden=[16], item_hidden=[16])


_CACHE: dict = {}


def exported(tmp_path_factory):
    """(towers, export_dir, version_dir) of one export, shared by the whole session. Read-only!"""
    if "export" not in _CACHE:
        from recsys_ssl import export

        query_tower, item_tower = build_towers()
        export_dir = tmp_path_factory.mktemp("export")
        tuning = {
            "user_id": np.array([q["user_id"] for q in query_instances(64, seed=7)], dtype=object),
            "user_tags": np.array([q["user_tags"] for q in query_instances(64, seed=7)] + [[]], dtype=object)[:64],
        }
        version = export.export_models(
            query_tower,
            item_tower,
            SPEC,
            item_arrays(),
            export_dir,
            "tiny",
            k=10,
            tuning_queries=tuning,
            log=lambda *a: None,
        )
        _CACHE["export"] = ((query_tower, item_tower), export_dir, version)
    return _CACHE["export"]


def copy_export(tmp_path, tmp_path_factory) -> pathlib.Path:
    """A private copy of the session export root, for tests that add versions."""
    _, export_dir, _ = exported(tmp_path_factory)
    target = tmp_path / "export"
    shutil.copytree(export_dir, target)
    return target


def to_query_arrays(instances: list[dict]) -> dict[str, np.ndarray]:
    from recsys_ssl import retrieve

    return retrieve.instances_to_arrays(
        instances,
        [
            {"name": "user_id", "kind": "categorical", "max_len": 0},
            {"name": "user_tags", "kind": "multi_categorical", "max_len": 3},
        ],
    )


def run_cli(*args: str, timeout: float = 200) -> subprocess.CompletedProcess:
    """``recsys-ssl <args>`` in a subprocess from the repository root; output captured as text."""
    return subprocess.run(
        [PYTHON, "-m", "recsys_ssl.cli", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


def start_server(export_dir, *extra: str, env=None, log: list | None = None):
    """Starts `recsys-ssl serve --port 0` in a subprocess; returns (process, base_url).

    log: a list that receives every line the server prints (its log), as it prints it.
    """
    proc = subprocess.Popen(
        [PYTHON, "-m", "recsys_ssl.cli", "serve", "--export-dir", str(export_dir), "--port", "0", *extra],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=dict(os.environ, **(env or {})),
    )
    deadline = time.time() + 120
    lines = []
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            if proc.poll() is not None:
                raise RuntimeError("server exited:\n" + "".join(lines))
            continue
        lines.append(line)
        if line.startswith("serving on http://"):
            url = line.split()[2]
            # Keep draining the output so the server never blocks on a full pipe.
            import threading

            if log is not None:
                log.extend(lines)
            threading.Thread(target=_drain, args=(proc, log), daemon=True).start()
            return proc, url
    proc.kill()
    raise RuntimeError("server did not start:\n" + "".join(lines))


def _drain(proc, log: list | None) -> None:
    for line in proc.stdout:
        if log is not None:
            log.append(line)


def stop_server(proc) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


def read_json(path) -> dict:
    return json.loads(pathlib.Path(path).read_text())
