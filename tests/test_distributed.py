"""Distribution: a 2-worker MultiWorkerMirroredStrategy run on localhost, and cross-replica negatives."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import model_fixtures
import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _manifest_line(output: str) -> dict:
    line = next(line for line in output.splitlines() if line.startswith("MANIFEST "))
    return json.loads(line[len("MANIFEST ") :])


@pytest.mark.timeout(180)
def test_two_worker_run_with_cross_replica_negatives_sees_the_global_batch(tmp_path):
    command = model_fixtures.script_command(
        tmp_path, "ssl", "rfm", strategy="multi_worker", cross_replica_negatives=True, steps_per_epoch=6
    )
    envs = model_fixtures.worker_envs(model_fixtures.free_ports(2), CUDA_VISIBLE_DEVICES="", PYTHONPATH=str(ROOT))
    results = model_fixtures.run_workers([(command, env) for env in envs], cwd=str(ROOT))
    for returncode, output in results:
        assert returncode == 0, output[-3000:]
    outputs = [output for _, output in results]
    for output in outputs:
        manifest = _manifest_line(output)
        assert manifest["replicas"] == 2
        assert manifest["steps"] == 6
        # Global batch 32 = 2 replicas x 16: each query's softmax saw all 32 candidates.
        assert manifest["final"]["candidates"] == 32.0
    written = json.loads((tmp_path / "train" / "ssl_rfm" / "manifest.json").read_text())
    assert written["strategy"] == "multi_worker" and written["cross_replica_negatives"] is True


_CROSS_REPLICA_CHECK = """
import json, sys
import numpy as np
from recsys_ssl.tf_setup import tf
from recsys_ssl import losses
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
z, z_prime = (np.array(a, np.float32) for a in json.loads(sys.argv[1]))

def replica_fn(z_local, z_prime_local):
    loss, logits, labels = losses.contrastive_loss(z_local, z_prime_local, 0.5, cross_replica=True)
    return loss, tf.shape(logits)

dataset = tf.data.Dataset.from_tensor_slices((z, z_prime)).batch(len(z))
inputs = next(iter(strategy.experimental_distribute_dataset(dataset)))
loss, shape = strategy.run(replica_fn, args=inputs)
print(json.dumps({"losses": [float(t.numpy()) for t in strategy.experimental_local_results(loss)],
                  "shapes": [t.numpy().tolist() for t in strategy.experimental_local_results(shape)]}))
"""


@pytest.mark.timeout(120)
def test_cross_replica_contrastive_loss_matches_the_global_numpy_loss():
    """Two replicas (MirroredStrategy on 2 logical CPUs, in a fresh process): each one's logits
    are [local_B, global_B] and its loss is the numpy loss of its rows against ALL second views,
    its positives on the diagonal of its own block."""
    rng = np.random.default_rng(0)
    z = rng.normal(size=(8, 4))
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    z_prime = rng.normal(size=(8, 4))
    z_prime /= np.linalg.norm(z_prime, axis=1, keepdims=True)
    result = subprocess.run(
        [sys.executable, "-c", _CROSS_REPLICA_CHECK, json.dumps([z.tolist(), z_prime.tolist()])],
        capture_output=True,
        text=True,
        timeout=100,
        cwd=str(ROOT),
        env=dict(os.environ, CUDA_VISIBLE_DEVICES="", PYTHONPATH=str(ROOT)),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["shapes"] == [[4, 8], [4, 8]]
    logits = z @ z_prime.T / 0.5
    per_row = -np.diag(logits - np.log(np.exp(logits).sum(axis=1, keepdims=True)))
    np.testing.assert_allclose(out["losses"], [per_row[:4].mean(), per_row[4:].mean()], rtol=1e-5)


@pytest.mark.timeout(180)
def test_parameter_server_run_on_localhost_completes(tmp_path):
    """A chief, one worker and one ps task: the chief trains, the others serve until it is done."""
    ports = model_fixtures.free_ports(3)
    cluster = {"chief": [f"localhost:{ports[0]}"], "worker": [f"localhost:{ports[1]}"], "ps": [f"localhost:{ports[2]}"]}
    command = model_fixtures.script_command(tmp_path, "ssl", "cfm", strategy="parameter_server", steps_per_epoch=4)

    def env(task_type):
        return dict(
            os.environ,
            TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": task_type, "index": 0}}),
            CUDA_VISIBLE_DEVICES="",
            PYTHONPATH=str(ROOT),
        )

    servers = [
        subprocess.Popen(command, env=env(t), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=str(ROOT))
        for t in ("ps", "worker")
    ]
    try:
        chief = subprocess.run(command, env=env("chief"), capture_output=True, text=True, timeout=150, cwd=str(ROOT))
    finally:
        for server in servers:
            server.kill()
            server.wait()
    assert chief.returncode == 0, chief.stdout[-2000:] + chief.stderr[-3000:]
    manifest = _manifest_line(chief.stdout)
    assert manifest["steps"] == 4 and np.isfinite(manifest["final"]["main_loss"])
    written = json.loads((tmp_path / "train" / "ssl_cfm" / "manifest.json").read_text())
    assert written["strategy"] == "parameter_server"
