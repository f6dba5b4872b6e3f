"""``recsys-ssl <stage>``: one subcommand per pipeline stage.

Each stage owns its own argument parser in its own module (``main(argv) -> int``); this
module only routes, and imports a stage's module only when that stage runs, so that
``recsys-ssl --help`` and the Beam jobs start without loading TensorFlow.
"""

from __future__ import annotations

import importlib
import os
import sys

# stage -> (module with main(argv), one-line help). Order = the pipeline's order.
STAGES: dict[str, tuple[str, str]] = {
    "data": (
        "recsys_ssl.datasets.build",
        "build a TFDS dataset (synthetic catalog, MovieLens, your CSVs) and print its summary",
    ),
    "stats": ("pipelines.feature_stats", "Beam job: vocabularies, item frequencies, missing/malformed counts"),
    "mi": ("pipelines.mutual_info", "Beam job: pairwise mutual information of item features and CFM masking groups"),
    "train": ("recsys_ssl.train", "train a two-tower model (baseline, FD, SO or SSL) from a YAML config"),
    "tune": (
        "recsys_ssl.tune",
        "resumable hyper-parameter search (Optuna) on the validation carve-out -> a tuned config",
    ),
    "evaluate": ("recsys_ssl.evaluate_cli", "exact full-corpus Recall@K / MAP@K with head and tail slices"),
    "diagnose": (
        "recsys_ssl.diagnostics",
        "why a method moves the tail: alignment, uniformity, tail->head cosine, recall by decile",
    ),
    "experiment": ("recsys_ssl.experiment", "methods x seeds x data regimes, resumable, with tables and plots"),
    "export": ("recsys_ssl.export", "SavedModels (query, item, ScaNN retrieval) and a tuned ScaNN index"),
    "index": ("recsys_ssl.index_cli", "manage the ScaNN index (e.g. `index add` new items)"),
    "retrieve": ("recsys_ssl.retrieve", "batch retrieval queries from a file to a file"),
    "serve": ("recsys_ssl.serve.cli", "HTTP server with TF Serving's REST predict API over the exported artifacts"),
    "demo": ("recsys_ssl.demo", "the whole pipeline on the synthetic catalog, end to end"),
}


def _usage() -> str:
    width = max(map(len, STAGES))
    lines = ["usage: recsys-ssl <stage> [options]   (recsys-ssl <stage> --help for a stage's options)", "", "stages:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in STAGES.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    stage, rest = argv[0], argv[1:]
    if stage not in STAGES:
        print(f"recsys-ssl: unknown stage {stage!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(STAGES[stage][0])
    try:
        return int(module.main(rest) or 0)
    except (ValueError, OSError) as error:  # bad input (SpecError, CSV rows, missing files): one clear line
        if os.environ.get("RECSYS_SSL_TRACEBACK"):  # a bug rather than bad input? show where
            raise
        print(f"recsys-ssl {stage}: error: {error}  (RECSYS_SSL_TRACEBACK=1 shows the traceback)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
