"""One place that imports TensorFlow and checks that ``tf.keras`` is Keras 2.

Use ``from recsys_ssl.tf_setup import tf`` in modules that need TensorFlow.
"""

import recsys_ssl  # noqa: F401  (sets TF_USE_LEGACY_KERAS and TensorFlow's log level first)


class KerasVersionError(ImportError):
    """tf.keras resolved to Keras 3, which TensorFlow Recommenders does not support."""


def check_keras_2(tf_module) -> None:
    """Raises KerasVersionError unless ``tf_module.keras`` is Keras 2 (tf-keras)."""
    keras_module = getattr(tf_module.keras, "__name__", "") or ""
    if not keras_module.startswith("tf_keras"):
        raise KerasVersionError(
            "recsys_ssl needs Keras 2 behind tf.keras, but tf.keras is "
            f"{keras_module or 'Keras 3'}. Set TF_USE_LEGACY_KERAS=1 before tensorflow is "
            "first imported (import recsys_ssl first, or export it in the shell), and make "
            "sure tf-keras matching your TensorFlow is installed: "
            "pip install 'tf-keras==2.20.*'."
        )


import tensorflow as tf  # noqa: E402  (the env var must be set first)

check_keras_2(tf)

__all__ = ["tf", "check_keras_2", "KerasVersionError"]
