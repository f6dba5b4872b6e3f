"""recsys_ssl: self-supervised learning for large-scale item retrieval.

Importing the package sets ``TF_USE_LEGACY_KERAS=1`` so that ``tf.keras`` is Keras 2
(tf-keras), which TensorFlow Recommenders needs. TensorFlow itself is imported lazily, by
the modules that need it, through :func:`recsys_ssl.tf_setup.tensorflow`; Beam workers and
the CLI's argument parsing stay light.
"""

import glob as _glob
import os

# Must happen before tensorflow is first imported anywhere in the process.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
# TensorFlow's C++ start-up logging drowns the progress bars: INFO and WARNING off; on a
# machine without an NVIDIA device its ERROR lines too, which there are only "failed call to
# cuInit" and CPU-feature notes (TF_CPP_MIN_LOG_LEVEL=0 turns them back on). The project's
# own warnings go through Python logging and are not affected.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2" if _glob.glob("/dev/nvidia[0-9]*") else "3")

__version__ = "0.1.0"

import sys as _sys

if "tensorflow" in _sys.modules:  # imported before us: check now rather than fail later.
    from recsys_ssl import tf_setup as _tf_setup

    _tf_setup.check_keras_2(_sys.modules["tensorflow"])
