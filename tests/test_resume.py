"""A training process killed with SIGKILL resumes from its last BackupAndRestore backup."""
from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys

import pytest

import model_fixtures

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


