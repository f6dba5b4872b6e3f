"""``recsys-ssl train`` end to end on the tiny synthetic catalog; configs; ``load_trained``."""

from __future__ import annotations

import collections
import json
import pathlib

import numpy as np
import pytest

from recsys_ssl import artifacts, train
from recsys_ssl import config as cfg
from recsys_ssl.datasets import inputs, item_sampler
from recsys_ssl.paths import CONFIGS_DIR
from recsys_ssl.tf_setup import tf

METHOD_FILES = [
    "baseline",
    "fd",
    "so",
    "ssl_rfm",
    "ssl_rfm_no_complement",
    "ssl_cfm",
    "ssl_cfm_no_dropout",
    "ssl_dropout_only",
]


@pytest.mark.parametrize("name", METHOD_FILES)
def test_every_method_has_a_valid_config(name):
    config = cfg.load_config(CONFIGS_DIR / f"{name}.yaml")
    assert config.name == name
    assert config.method == name.split("_")[0] if name.startswith("ssl") else config.method == name
    if config.method == "ssl":
        assert config.augmentation == name[len("ssl_") :]


def test_config_errors_name_the_file_and_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nmethod: ssl\naugmentation: cfm\nssl: {alpha: high}\n")
    with pytest.raises(cfg.ConfigError, match=r"bad.yaml: ssl.alpha: must be a number, got 'high'"):
        cfg.load_config(bad)
    bad.write_text("name: x\nmethod: ssl\n")
    with pytest.raises(cfg.ConfigError, match="augmentation"):
        cfg.load_config(bad)
    bad.write_text("name: x\ntrain: {batch_sise: 3}\n")
    with pytest.raises(cfg.ConfigError, match=r"train.batch_sise: unknown field"):
        cfg.load_config(bad)


def test_schedule_steps_override_epochs():
    config = cfg.with_overrides(
        cfg.load_config(CONFIGS_DIR / "baseline.yaml"), {"train.batch_size": 512, "train.epochs": 8}
    )
    assert train.schedule(config, 5120) == (8, 10)
    assert train.schedule(cfg.replace(config, train={"steps": 25}), 5120) == (5, 5)  # exact: 5 x 5
    assert train.schedule(cfg.replace(config, train={"steps": 60}), 5120) == (6, 10)
    assert train.schedule(cfg.replace(config, train={"steps": 4}), 5120) == (1, 4)
    assert train.schedule(cfg.replace(config, train={"steps": 23}), 5120) == (3, 10)  # prime: rounded up


def _write_stats_and_mi(run_dir: pathlib.Path, dataset) -> None:
    """The batch jobs' artifacts, in their format, computed here in numpy (the Beam jobs are tested elsewhere)."""
    spec = dataset.spec
    items = item_sampler.pad_item_arrays(dataset.item_arrays(), spec)
    pairs = inputs.dataset_arrays(dataset.pairs("train"))
    files = {}
    vocab_sizes = {}
    for feature in spec.item_features + spec.query_features:
        column = items[feature.name] if feature in spec.item_features else pairs[feature.name]
        values = [v for row in column for v in (row if isinstance(row, (list, np.ndarray)) else [row]) if v]
        counts = collections.Counter(v.decode() for v in values)
        ranked = [v for v, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]
        files[f"vocab/{feature.name}.txt"] = artifacts.vocab_text(ranked)
        vocab_sizes[feature.name] = len(ranked)
    seen = collections.Counter(v.decode() for v in pairs[spec.item_key])
    frequencies = sorted(
        ((i.decode(), seen.get(i.decode(), 0)) for i in items[spec.item_key]), key=lambda kv: (-kv[1], kv[0])
    )
    files[artifacts.ITEM_FREQUENCIES] = artifacts.item_frequencies_text(frequencies)
    files[artifacts.MANIFEST] = artifacts.dumps_json(
        artifacts.make_manifest(
            "stats", dataset=dataset.name, spec=spec.to_dict(), inputs={}, counts={"vocab_sizes": vocab_sizes}
        )
    )
    artifacts.write_files(run_dir / "stats", files)
    names = spec.mi_features
    groups = dataset.metadata.get("planted_groups") or []
    mi = np.eye(len(names))
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            if i != j and any(a in g and b in g for g in groups):
                mi[i, j] = 0.5
    artifacts.write_files(run_dir / "mi", {artifacts.CFM_GROUPS: artifacts.dumps_json(artifacts.cfm_groups(names, mi))})


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    dataset = inputs.load_dataset("synthetic_catalog/tiny", data_dir=run_dir / "tfds")
    _write_stats_and_mi(run_dir, dataset)
    return run_dir


@pytest.mark.timeout(240)
def test_cli_trains_ssl_cfm_and_load_trained_restores_it(run_dir, capsys):
    argv = [
        "--config",
        str(CONFIGS_DIR / "ssl_cfm.yaml"),
        "--run-dir",
        str(run_dir),
        "--dataset",
        "synthetic_catalog/tiny",
        "--steps",
        "30",
        "--batch-size",
        "64",
        "--name",
        "cfm_smoke",
        "--quiet",
    ]
    assert train.main(argv) == 0
    assert "trained cfm_smoke: 30 steps" in capsys.readouterr().out
    directory = run_dir / "train" / "cfm_smoke"
    manifest = json.loads((directory / artifacts.MANIFEST).read_text())
    assert manifest["steps"] == 30 and manifest["inputs"]["dataset"] == "synthetic_catalog/tiny"
    assert set(manifest["final"]) >= {"main_loss", "ssl_loss"}
    assert manifest["config"]["method"] == "ssl" and manifest["config"]["augmentation"] == "cfm"
    assert list((directory / "logs").rglob("events.out.tfevents*"))  # TensorBoard
    assert list((directory / "checkpoints").glob("epoch-*.index"))

    trained = train.load_trained(run_dir, "cfm_smoke")
    dataset = inputs.load_dataset("synthetic_catalog/tiny", data_dir=run_dir / "tfds")
    batch = next(iter(inputs.batch(dataset.pairs("test"), dataset.spec, 8)))
    query, item = trained.model.query_tower(batch), trained.model.item_tower(batch)
    assert query.shape == (8, 64) and item.shape == (8, 64)
    np.testing.assert_allclose(np.linalg.norm(item.numpy(), axis=1), 1.0, rtol=1e-5)
    # The restored weights are the trained ones (not a fresh initialisation).
    reader = tf.train.load_checkpoint(str(directory / train.WEIGHTS))
    index = trained.model.item_tower.feature_names.index("item_id")
    key = f"item_tower/embeddings/{index}/embedding/embeddings/.ATTRIBUTES/VARIABLE_VALUE"
    table = trained.model.item_tower.embeddings[index].embedding.embeddings
    assert not np.allclose(reader.get_tensor(key), 0.0)
    np.testing.assert_allclose(table.numpy(), reader.get_tensor(key))


def test_cfm_without_mi_artifacts_says_which_job_to_run(run_dir, tmp_path):
    (tmp_path / "stats").symlink_to(run_dir / "stats")
    (tmp_path / "tfds").symlink_to(run_dir / "tfds")
    config = cfg.replace(cfg.load_config(CONFIGS_DIR / "ssl_cfm.yaml"), top={"dataset": "synthetic_catalog/tiny"})
    with pytest.raises(FileNotFoundError, match="recsys-ssl mi"):
        train.load_training_data(config, tmp_path)


def test_missing_stats_say_which_job_to_run(run_dir, tmp_path):
    (tmp_path / "tfds").symlink_to(run_dir / "tfds")
    config = cfg.replace(cfg.load_config(CONFIGS_DIR / "baseline.yaml"), top={"dataset": "synthetic_catalog/tiny"})
    with pytest.raises(FileNotFoundError, match="recsys-ssl stats"):
        train.load_training_data(config, tmp_path)


@pytest.mark.timeout(240)
@pytest.mark.parametrize("name", METHOD_FILES)
def test_a_few_hundred_steps_on_the_synthetic_catalog_lower_both_losses(run_dir, name):
    """Every shipped method config, on the synthetic catalog through the real data path: 200 steps."""
    config = cfg.replace(
        cfg.load_config(CONFIGS_DIR / f"{name}.yaml"),
        top={"dataset": "synthetic_catalog/tiny"},
        train={"batch_size": 64},
    )
    data = train.load_training_data(config, run_dir)
    tf.keras.utils.set_random_seed(0)
    model = train.build_model(config, data)
    history = model.fit(train.training_dataset(config, data, seed=0), epochs=4, steps_per_epoch=50, verbose=0).history
    assert history["main_loss"][-1] < history["main_loss"][0], history["main_loss"]
    if config.uses_ssl_batch:
        assert history["ssl_loss"][-1] < history["ssl_loss"][0], history["ssl_loss"]


def test_tfds_dir_flag_and_the_deprecated_data_dir_alias(capsys):
    args = train.parse_args(["--config", "baseline", "--tfds-dir", "t"])
    assert args.tfds_dir == "t" and capsys.readouterr().err == ""
    old = train.parse_args(["--config", "baseline", "--data-dir", "t"])  # old commands still run ...
    assert old.tfds_dir == "t"
    err = capsys.readouterr().err  # ... with a one-line notice
    assert err.count("\n") == 1 and "--data-dir is deprecated" in err and "--tfds-dir" in err


def _saved_weights(path: pathlib.Path) -> dict[str, np.ndarray]:
    reader = tf.train.load_checkpoint(str(path))
    return {
        key: reader.get_tensor(key)
        for key in reader.get_variable_to_shape_map()
        if "/.ATTRIBUTES/VARIABLE_VALUE" in key and "save_counter" not in key
    }


@pytest.mark.timeout(180)
def test_a_non_durable_run_writes_no_backups_or_logs_and_trains_the_same_model(tmp_path):
    """``durable=False`` (tuning trials) drops only I/O: the same seed gives the same weights
    (optimizer slots included) as a durable run, with no backup/, checkpoints/ or logs/."""
    import model_fixtures

    data = model_fixtures.training_data()
    config = model_fixtures.tiny_config("ssl", "cfm", epochs=2, steps_per_epoch=20, backup_every_steps=5)
    runs = {}
    for durable in (True, False):
        tf.keras.backend.clear_session()
        run_dir = tmp_path / ("durable" if durable else "throwaway")
        manifest = train.run(config, run_dir, data, verbose=0, durable=durable)
        assert manifest["steps"] == 40
        out = run_dir / "train" / config.name
        assert all((out / part).exists() == durable for part in ("backup", "checkpoints", "logs")), durable
        runs[durable] = _saved_weights(out / train.WEIGHTS)
    assert runs[True].keys() == runs[False].keys() and len(runs[True]) > 4
    for key, value in runs[True].items():
        np.testing.assert_array_equal(value, runs[False][key], err_msg=key)
