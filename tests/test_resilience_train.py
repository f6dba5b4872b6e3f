"""`recsys-ssl train --config C --steps N`, killed with SIGKILL mid-run, then the very same command
again: it resumes from its last backup and finishes exactly N steps.

tests/test_resume.py pins the resume mechanics through ``train.run`` (fixture data, a slowed
step); this is the user's path: the CLI, a prepared dataset, the stats job's artifacts, a YAML
config and the ``--steps`` override (which must survive the restart, not restart the count).
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys

import model_fixtures
import pytest

from recsys_ssl import cli

ROOT = pathlib.Path(__file__).resolve().parent.parent
STEPS = 300
BACKUP_EVERY = 25

CONFIG = f"""\
name: tiny_baseline
method: baseline
dataset: synthetic_catalog/tiny
model: {{query_hidden: [16], item_hidden: [16]}}
train: {{batch_size: 64, learning_rate: 0.1, epochs: 1, backup_every_steps: {BACKUP_EVERY}}}
"""


@pytest.mark.timeout(240)
def test_sigkilled_train_command_rerun_resumes_and_finishes(tmp_path, capsys):
    run_dir = tmp_path / "run"
    # The pipeline before training, in this process: the dataset and the stats job's artifacts.
    assert cli.main(["data", "--dataset", "synthetic_catalog/tiny", "--run-dir", str(run_dir)]) == 0
    assert (
        cli.main(
            [
                "stats",
                "--dataset",
                "synthetic_catalog/tiny",
                "--run-dir",
                str(run_dir),
                "--direct_running_mode=in_memory",
            ]
        )
        == 0
    )
    capsys.readouterr()
    config = tmp_path / "tiny_baseline.yaml"
    config.write_text(CONFIG)
    command = [
        sys.executable,
        "-m",
        "recsys_ssl.cli",
        "train",
        "--config",
        str(config),
        "--run-dir",
        str(run_dir),
        "--steps",
        str(STEPS),
        "--quiet",
    ]
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    train_dir = run_dir / "train" / "tiny_baseline"

    first = model_fixtures.sigkill_after_backup(
        command, train_dir / "backup", BACKUP_EVERY, BACKUP_EVERY, env=env, cwd=ROOT
    )
    assert first.returncode == -signal.SIGKILL
    assert not (train_dir / "manifest.json").exists()  # a killed run published nothing

    second = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert f"trained tiny_baseline: {STEPS} steps" in second.stdout
    manifest = json.loads((train_dir / "manifest.json").read_text())
    assert manifest["steps"] == STEPS  # the --steps override held across the restart
    assert BACKUP_EVERY <= manifest["initial_step"] < STEPS  # resumed from a backup, not from 0
    assert manifest["initial_step"] % BACKUP_EVERY == 0
    assert list(train_dir.glob("weights/final.*"))
