"""What the two Beam jobs share: command-line inputs, pipeline options, the runner, counters.

Beam options pass through unchanged; without ``--runner`` a job runs locally on Beam's
FnApiRunner with 2 worker processes, never Prism (:mod:`recsys_ssl.beam_runner`).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pathlib

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines import sources
from recsys_ssl import artifacts, beam_runner, paths
from recsys_ssl import features as features_lib

# The options, the runner and the run live in the library (the Beam data stage uses them too).
pipeline_options = beam_runner.pipeline_options
make_runner = beam_runner.make_runner
counters = beam_runner.counters
run_and_report = beam_runner.run_and_report

TRAIN_SPLITS = ("train", "train_10pct")


def job_parser(prog: str, description: str, runner_example: str) -> argparse.ArgumentParser:
    """The argument parser of a Beam job's CLI: its input arguments; the rest passes to Beam."""
    parser = argparse.ArgumentParser(
        prog=prog,
        allow_abbrev=False,  # never swallow a Beam option that shares a prefix with ours
        description=f"{description} Unrecognised arguments are Beam pipeline options (e.g. --runner={runner_example}).",
    )
    add_input_arguments(parser)
    return parser


def add_input_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("inputs (a project dataset, or your own files)")
    group.add_argument(
        "--dataset",
        default=None,
        help="a project dataset, e.g. synthetic_catalog/10k (the default when no --items-file)",
    )
    group.add_argument(
        "--tfds-dir", default=None, help="TFDS data_dir (default $RECSYS_SSL_TFDS_DIR, else <run-dir>/tfds)"
    )
    group.add_argument("--data-dir", default=None, help="raw data root for datasets built from raw files (MovieLens)")
    group.add_argument(
        "--items-file", default=None, help="glob of item files (each item once): Parquet, CSV or TFRecord"
    )
    group.add_argument("--pairs-file", default=None, help="glob of TRAIN pair files (query and item features)")
    group.add_argument(
        "--spec", default=None, help="feature spec YAML for --items-file/--pairs-file (path or name in data/specs)"
    )
    group.add_argument(
        "--format", choices=sources.FORMATS, default=None, help="file format (default: from the extension)"
    )
    group.add_argument(
        "--split",
        choices=TRAIN_SPLITS,
        default="train",
        help="the training pairs of a project dataset: train (full data) or train_10pct (the 10%%-data "
        "regime, whose item frequencies must not see the withheld 90%%); output <run-dir>/<job>_10pct",
    )
    parser.add_argument(
        "--run-dir", default=paths.DEFAULT_RUN_DIR, help="artifacts go to <run-dir>/<job> (default %(default)s)"
    )
    parser.add_argument(
        "--output-dir", default=None, help="write the artifacts here instead of <run-dir>/<job> (any Beam filesystem)"
    )
    parser.add_argument(
        "--batch-size", type=int, default=sources.DEFAULT_BATCH_SIZE, help="items per batch (default %(default)s)"
    )


@dataclasses.dataclass
class Inputs:
    """A job's resolved inputs: the spec and the item / train-pair sources."""

    dataset: str | None
    spec: features_lib.FeatureSpec
    items: sources.Source
    pairs: sources.Source | None
    metadata: dict


def _format_of(pattern: str, flag: str | None) -> str:
    if flag:
        return flag
    suffix = pathlib.PurePath(pattern.replace("*", "x")).suffix.lower().lstrip(".")
    guess = {"parquet": "parquet", "pq": "parquet", "csv": "csv", "tfrecord": "tfrecord", "tfrecords": "tfrecord"}.get(
        suffix
    )
    if guess is None:
        raise SystemExit(
            f"cannot tell the format of {pattern!r} from its extension: pass --format {{{','.join(sources.FORMATS)}}}"
        )
    return guess


def resolve_inputs(args: argparse.Namespace, need_pairs: bool) -> Inputs:
    """--items-file/--pairs-file/--spec, else the TFDS dataset (prepared here if missing)."""
    if args.items_file:
        if getattr(args, "split", "train") != "train":
            raise SystemExit(
                "--split chooses a project dataset's pairs; with --pairs-file, pass the regime's own pairs"
            )
        if not args.spec:
            raise SystemExit("--items-file needs --spec (the feature spec that describes its columns)")
        spec = features_lib.load_spec(args.spec)
        items = sources.Source(_format_of(args.items_file, args.format), files=local_path_or_url(args.items_file))
        pairs = (
            sources.Source(_format_of(args.pairs_file, args.format), files=local_path_or_url(args.pairs_file))
            if args.pairs_file
            else None
        )
        if need_pairs and pairs is None:
            raise SystemExit("this job needs the training pairs: pass --pairs-file")
        return Inputs(None, spec, items, pairs, {})
    name = args.dataset or "synthetic_catalog/10k"
    from recsys_ssl.datasets import inputs  # TFDS; imported only for project datasets

    tfds_dir = local_path_or_url(args.tfds_dir or str(paths.tfds_dir(args.run_dir)))
    kwargs = {"data_dir": tfds_dir}
    if args.data_dir:
        kwargs["raw_data_dir"] = args.data_dir
    handle = inputs.load_dataset(name, **kwargs)
    items_dir, pairs_dir = prepared_dirs(handle, tfds_dir)
    return Inputs(
        name,
        handle.spec,
        sources.Source("tfds", tfds_dir=items_dir, split=getattr(handle, "items_split", "items")),
        sources.Source("tfds", tfds_dir=pairs_dir, split=getattr(args, "split", "train")),
        dict(getattr(handle, "metadata", {}) or {}),
    )


def prepared_dirs(handle, tfds_dir: str) -> tuple[str, str]:
    """(items builder dir, pairs builder dir) of a dataset handle: <tfds_dir>/<builder>/<config>/<version>."""
    for attribute in ("items_dir", "pairs_dir"):
        if not hasattr(handle, attribute):
            break
    else:
        return str(handle.items_dir), str(handle.pairs_dir)
    builders = {}
    for role in ("items", "pairs"):
        builder = getattr(handle, f"{role}_builder", None)
        if builder is not None:
            builders[role] = str(builder.data_dir)
    if len(builders) == 2:
        return builders["items"], builders["pairs"]
    raise RuntimeError(
        f"dataset handle {type(handle).__name__} exposes neither items_dir/pairs_dir nor items_builder/pairs_builder"
    )


def output_dir(args: argparse.Namespace, job: str) -> str:
    """--output-dir, else <run-dir>/<job> (<job>_10pct for ``--split train_10pct``); local paths
    made absolute (workers may not share our cwd)."""
    folder = job if getattr(args, "split", "train") == "train" else f"{job}_10pct"
    return local_path_or_url(args.output_dir or str(paths.RunLayout(args.run_dir).root / folder))


def make_pipeline(options: PipelineOptions) -> beam.Pipeline:
    """A pipeline on the runner the options name; locally the FnApiRunner (never Prism)."""
    runner = make_runner(options)
    return beam.Pipeline(runner=runner, options=options) if runner else beam.Pipeline(options=options)


def local_path_or_url(path: str) -> str:
    return path if "://" in path else os.path.abspath(path)


def write_job_manifest(job: str, settings, counts: dict, extra_options: dict | None = None) -> dict:
    """Writes and returns ``<settings.out_dir>/manifest.json``: what a job read and counted, and its options.

    ``settings``: a job's settings (``StatsSettings``, ``MISettings``): ``out_dir``, ``dataset``,
    ``spec_dict``, ``inputs`` and ``options``.
    """
    manifest = artifacts.make_manifest(
        job,
        dataset=settings.dataset,
        spec=settings.spec_dict,
        inputs=settings.inputs,
        counts=counts,
        options={**settings.options, **(extra_options or {})},
    )
    artifacts.write_text(artifacts.join(settings.out_dir, artifacts.MANIFEST), artifacts.dumps_json(manifest))
    return manifest
