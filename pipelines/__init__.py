"""Apache Beam batch jobs: feature statistics and pairwise mutual information.

They depend on the feature spec (``recsys_ssl.features``), never on the TensorFlow model, and
run locally by default (multi-process, no runner download) and unchanged on Dataflow, Flink
or Spark through standard Beam pipeline options.
"""
