"""A training process killed with SIGKILL resumes from its last BackupAndRestore backup."""
from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _command(run_dir) -> list[str]:
    # 3 epochs x 40 steps, a backup every 10 steps, slowed down so the kill lands mid-run.
    return [sys.executable, str(ROOT / "tests" / "model_fixtures.py"), "--run-dir", str(run_dir),
            "--method", "ssl", "--augmentation", "cfm", "--epochs", "3", "--steps-per-epoch", "40",
            "--backup-every", "10", "--sleep-per-step", "0.05"]


@pytest.mark.timeout(180)
def test_sigkilled_training_resumes_from_its_last_backup(tmp_path):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", PYTHONPATH=str(ROOT))
    backup = tmp_path / "train" / "ssl_cfm" / "backup"
    first = subprocess.Popen(_command(tmp_path), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, cwd=str(ROOT))
    try:
        deadline = time.time() + 120
        # Wait for a backup taken after step 20 or more (its checkpoint index says which save).
        while time.time() < deadline and first.poll() is None:
            if _backed_up_steps(backup) >= 20:
                break
            time.sleep(0.1)
        assert first.poll() is None, "training finished before it could be killed:\n" + first.stdout.read()[-2000:]
        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == -signal.SIGKILL
    assert not (tmp_path / "train" / "ssl_cfm" / "manifest.json").exists()

    second = subprocess.run(_command(tmp_path), env=env, capture_output=True, text=True, cwd=str(ROOT), timeout=150)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    manifest = json.loads((tmp_path / "train" / "ssl_cfm" / "manifest.json").read_text())
    assert manifest["initial_step"] >= 20, manifest["initial_step"]  # resumed, not restarted from 0
    assert manifest["initial_step"] % 10 == 0  # ... exactly at a backup
    assert manifest["steps"] == 120  # and finished the schedule


def _backed_up_steps(backup: pathlib.Path) -> int:
    """Steps covered by the newest COMPLETE backup (saves every 10 steps; ckpt-N is the N-th).

    The ``checkpoint`` state file names a save only once it is fully written."""
    import re

    newest = 0
    for state in backup.rglob("checkpoint"):
        match = re.search(r'^model_checkpoint_path: "ckpt-(\d+)"', state.read_text(), re.MULTILINE)
        if match:
            newest = max(newest, int(match.group(1)))
    return 10 * newest
