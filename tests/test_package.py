"""The installed stack: Keras 2 behind tf.keras, ScaNN's TF ops, the CLI."""

import os
import subprocess
import sys


def _run(code: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)


def test_import_gives_keras_2_and_scann_ops():
    result = _run(
        "import recsys_ssl\n"
        "from recsys_ssl.tf_setup import tf\n"
        "import tensorflow_recommenders as tfrs\n"
        "from scann import scann_ops\n"
        "assert tf.keras.__name__.startswith('tf_keras'), tf.keras.__name__\n"
        "print(tf.__version__, tfrs.__version__)\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("2.20.")


def test_keras_3_fails_fast_with_instructions():
    env = dict(os.environ, TF_USE_LEGACY_KERAS="0")
    result = _run("from recsys_ssl import tf_setup", env=env)
    assert result.returncode != 0
    assert "TF_USE_LEGACY_KERAS=1" in result.stderr and "KerasVersionError" in result.stderr


def test_cli_lists_every_stage():
    result = subprocess.run([sys.executable, "-m", "recsys_ssl.cli", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    for stage in ("data", "stats", "mi", "train", "evaluate", "export", "serve"):
        assert f"  {stage} " in result.stdout


def test_cli_rejects_unknown_stage():
    result = subprocess.run([sys.executable, "-m", "recsys_ssl.cli", "bogus"], capture_output=True, text=True)
    assert result.returncode == 2 and "unknown stage 'bogus'" in result.stderr
