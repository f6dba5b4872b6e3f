"""TFDS builders (synthetic catalog, MovieLens raw files, your CSVs) and the tf.data inputs."""
