"""Loading a trained model: what ``train`` wrote under ``<run_dir>/train/<name>/``, rebuilt.

Lives next to the model (not in ``train``), so that evaluation and export load checkpoints
without importing the training code. ``WEIGHTS`` is where ``train`` saves the final weights;
``build_towers_now`` creates a model's tower variables before weights are restored into them.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from typing import Any

from recsys_ssl import artifacts
from recsys_ssl import config as cfg
from recsys_ssl import features as fs
from recsys_ssl.model import TwoTowerModel
from recsys_ssl.paths import RunLayout
from recsys_ssl.tf_setup import tf

WEIGHTS = "weights/final"


def build_towers_now(model: TwoTowerModel, spec: fs.FeatureSpec) -> None:
    """Creates the towers' variables (before fit(), so BackupAndRestore restores into them)."""
    model.query_tower(dummy_batch(spec.query_features))
    model.item_tower(dummy_batch(spec.item_features))
    model.built = True


@dataclasses.dataclass
class Trained:
    model: TwoTowerModel
    config: cfg.ExperimentConfig
    spec: fs.FeatureSpec
    manifest: dict[str, Any]
    directory: pathlib.Path


def dummy_batch(features: tuple[fs.Feature, ...]) -> dict[str, tf.Tensor]:
    """One example of padding/missing values: builds a tower's variables."""
    return {f.name: tf.constant([[""] * f.max_len] if f.multi_valued else [""]) for f in features}


def load_trained(run_dir: str | os.PathLike, name: str) -> Trained:
    """The trained model of ``<run_dir>/train/<name>`` (towers built and weights restored)."""
    directory = RunLayout(run_dir).train(name)
    manifest_path = directory / artifacts.MANIFEST
    if not manifest_path.exists():
        raise FileNotFoundError(
            f"{manifest_path} does not exist: train {name!r} first "
            f"(`recsys-ssl train --run-dir {run_dir} --name {name} ...`)"
        )
    manifest = json.loads(manifest_path.read_text())
    config = cfg.config_from_dict(manifest["config"], source=str(manifest_path))
    spec = fs.spec_from_dict(json.loads((directory / "spec.json").read_text()), source=manifest.get("spec_path", ""))
    vocabularies = json.loads((directory / "vocabularies.json").read_text())
    model = TwoTowerModel(spec, config, vocabularies, for_inference=True)
    build_towers_now(model, spec)
    model.load_weights(str(directory / manifest.get("weights", WEIGHTS))).expect_partial()
    return Trained(model=model, config=config, spec=spec, manifest=manifest, directory=directory)
