"""A training process killed with SIGKILL resumes from its last BackupAndRestore backup, and
ends with the model an uninterrupted run with the same seed ends with (preemption-exact)."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess

import model_fixtures
import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _command(
    run_dir, method: str = "ssl", augmentation: str | None = "cfm", sleep: float = 0.05, strategy: str = "default"
) -> list[str]:
    # 3 epochs x 40 steps, a backup every 10 steps, slowed down so the kill lands mid-run.
    return model_fixtures.script_command(
        run_dir,
        method,
        augmentation,
        epochs=3,
        steps_per_epoch=40,
        backup_every=10,
        sleep_per_step=sleep,
        strategy=strategy,
    )


def _final_weights(run_dir, name):
    from recsys_ssl.tf_setup import tf

    reader = tf.train.load_checkpoint(str(pathlib.Path(run_dir) / "train" / name / "weights" / "final"))
    return {
        key: reader.get_tensor(key)
        for key in reader.get_variable_to_shape_map()
        if "/.ATTRIBUTES/VARIABLE_VALUE" in key and "optimizer" not in key and "save_counter" not in key
    }


@pytest.mark.timeout(400)
@pytest.mark.parametrize("method, augmentation", [("baseline", None), ("ssl", "cfm")])
def test_resumed_run_ends_with_the_uninterrupted_runs_model(tmp_path, method, augmentation):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", PYTHONPATH=str(ROOT))
    name = f"{method}_{augmentation}" if augmentation else method
    straight = subprocess.run(
        _command(tmp_path / "straight", method, augmentation, sleep=0),
        env=env,
        capture_output=True,
        text=True,
        cwd=str(ROOT),
        timeout=200,
    )
    assert straight.returncode == 0, straight.stdout[-3000:] + straight.stderr[-3000:]
    backup = tmp_path / "killed" / "train" / name / "backup"
    killed = model_fixtures.sigkill_after_backup(
        _command(tmp_path / "killed", method, augmentation), backup, 50, 10, env=env, cwd=str(ROOT)
    )
    assert killed.returncode == -signal.SIGKILL
    resumed = subprocess.run(
        _command(tmp_path / "killed", method, augmentation, sleep=0),
        env=env,
        capture_output=True,
        text=True,
        cwd=str(ROOT),
        timeout=200,
    )
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    _assert_resumed_to_the_same_model(tmp_path / "straight", tmp_path / "killed", name)


def _assert_resumed_to_the_same_model(straight, killed, name):
    import numpy as np

    manifest = json.loads((killed / "train" / name / "manifest.json").read_text())
    assert 50 <= manifest["initial_step"] < 120 and manifest["steps"] == 120  # resumed mid-run (epoch 2 or 3)
    want, got = _final_weights(straight, name), _final_weights(killed, name)
    assert want.keys() == got.keys() and len(want) > 5
    for key in want:
        np.testing.assert_allclose(got[key], want[key], atol=1e-4, err_msg=key)


@pytest.mark.timeout(600)
@pytest.mark.parametrize("method, augmentation", [("ssl", "cfm")])
def test_two_worker_resumed_run_ends_with_the_uninterrupted_runs_model(tmp_path, method, augmentation):
    """MultiWorkerMirroredStrategy, 2 workers on localhost: both SIGKILLed after a backup, both
    started again with the same commands (same cluster), the chief's final weights equal an
    uninterrupted 2-worker run's. SSL-CFM only (~2 min of CI each): its state is a superset
    of the baseline's (the pair stream plus the uniform item batches' stream and the CFM
    masks' seeds); the single-process test above covers both methods."""
    name = f"{method}_{augmentation}" if augmentation else method

    def workers(run_dir, sleep, ports):
        command = _command(run_dir, method, augmentation, sleep, strategy="multi_worker")
        envs = model_fixtures.worker_envs(ports, CUDA_VISIBLE_DEVICES="", PYTHONPATH=str(ROOT))
        return [(command, env) for env in envs]

    for code, output in model_fixtures.run_workers(
        workers(tmp_path / "straight", 0, model_fixtures.free_ports(2)), cwd=str(ROOT)
    ):
        assert code == 0, output[-3000:]
    ports = model_fixtures.free_ports(2)
    backup = tmp_path / "killed" / "train" / name / "backup"
    killed = model_fixtures.sigkill_all_after_backup(
        workers(tmp_path / "killed", 0.05, ports), backup, 50, 10, cwd=str(ROOT)
    )
    assert [p.returncode for p in killed] == [-signal.SIGKILL] * 2
    for code, output in model_fixtures.run_workers(workers(tmp_path / "killed", 0, ports), cwd=str(ROOT)):
        assert code == 0, output[-3000:]
        assert '"replicas": 2' in output
    _assert_resumed_to_the_same_model(tmp_path / "straight", tmp_path / "killed", name)


@pytest.mark.timeout(180)
def test_sigkilled_training_resumes_from_its_last_backup(tmp_path):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", PYTHONPATH=str(ROOT))
    backup = tmp_path / "train" / "ssl_cfm" / "backup"
    # Kill once a backup taken after step 20 or more exists (saves every 10 steps).
    first = model_fixtures.sigkill_after_backup(_command(tmp_path), backup, 20, 10, env=env, cwd=str(ROOT))
    assert first.returncode == -signal.SIGKILL
    assert not (tmp_path / "train" / "ssl_cfm" / "manifest.json").exists()

    second = subprocess.run(_command(tmp_path), env=env, capture_output=True, text=True, cwd=str(ROOT), timeout=150)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    manifest = json.loads((tmp_path / "train" / "ssl_cfm" / "manifest.json").read_text())
    assert manifest["initial_step"] >= 20, manifest["initial_step"]  # resumed, not restarted from 0
    assert manifest["initial_step"] % 10 == 0  # ... exactly at a backup
    assert manifest["steps"] == 120  # and finished the schedule
