"""``recsys-ssl data``: build a TFDS dataset and print its summary.

    recsys-ssl data --dataset synthetic_catalog/10k [--run-dir R] [--tfds-dir D]
    recsys-ssl data --dataset movielens/100k-user-item --data-dir ../shared/data
    recsys-ssl data --dataset interactions_csv/mine --interactions i.csv --items items.csv \\
        [--queries q.csv] --spec my_spec.yaml [--split-column split]
    recsys-ssl data --dataset interactions_csv/mine --interactions 'data/interactions-*.parquet' \\
        --items data/items.parquet --spec my_spec.yaml
    recsys-ssl data --dataset synthetic_catalog/1m --beam [Beam flags, e.g. --runner=DaskRunner ...]

``--beam`` generates with Apache Beam (recsys_ssl/datasets/beam_generate.py; docs/cluster.md):
the local FnApiRunner with 2 worker processes unless the Beam flags name another runner.

The summary: examples per split, items, queries, the features, the share of train pairs
that go to the 20% most popular items, and every dropped row count.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from recsys_ssl import paths


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recsys-ssl data",
        allow_abbrev=False,
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--dataset",
        default="synthetic_catalog/10k",
        help="synthetic_catalog/{tiny,10k,100k,1m}, movielens/{100k,1m}-{user-item,item-item}, "
        "interactions_csv/<name> (default: %(default)s)",
    )
    parser.add_argument(
        "--run-dir", default=paths.DEFAULT_RUN_DIR, help="the run's artifact folder (default: %(default)s)"
    )
    parser.add_argument("--data-dir", default=None, help="raw data root holding movielens-100k/ (MovieLens only)")
    parser.add_argument(
        "--tfds-dir", default=None, help="TFDS data_dir (default: $RECSYS_SSL_TFDS_DIR, else <run-dir>/tfds)"
    )
    parser.add_argument(
        "--beam",
        action="store_true",
        help="generate with Apache Beam; unrecognised arguments are Beam pipeline options (docs/cluster.md)",
    )
    csv_group = parser.add_argument_group(
        "interactions_csv",
        "each input is a file, a glob pattern ('data/interactions-*.csv') or a comma-separated list "
        "of them, read in sorted path order; CSV, or Parquet by the .parquet extension",
    )
    csv_group.add_argument("--interactions", help="query id, item id, optional timestamp / split columns")
    csv_group.add_argument("--items", help="one row per item with its features")
    csv_group.add_argument("--queries", help="(optional) one row per query with its features")
    csv_group.add_argument("--spec", help="feature spec (YAML/JSON) describing the CSV columns")
    csv_group.add_argument("--split-column", help="column holding train/test (default: split per query by time)")
    csv_group.add_argument("--name", help="dataset name (default: the part after interactions_csv/)")
    return parser


def summary(ds) -> dict:
    """What ``recsys-ssl data`` prints: counts per split, corpus size, features, head share, drops."""
    from recsys_ssl.datasets import inputs

    metadata = ds.metadata
    counts = metadata.get("counts", {})
    out = {
        "dataset": ds.name,
        "interactions": counts.get("interactions", counts.get("pairs")),
        "splits": {split: ds.num_examples(split) for split in inputs.SPLITS},
        "items": ds.num_items,
        "queries": counts.get("queries", counts.get("users")),
        "query_features": ds.spec.query_feature_names,
        "item_features": ds.spec.item_feature_names,
        "head_share_train": counts.get("head_share"),
        "dropped": metadata.get("dropped", {}),
        "skipped": metadata.get("skipped", {}),
        "tfds_dir": str(ds.pairs_builder.data_dir),
    }
    for key in ("planted_groups", "zipf_exponent", "seed"):
        if key in metadata:
            out[key] = metadata[key]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args, beam_args = parser.parse_known_args(argv)
    if beam_args and not args.beam:
        parser.error(f"unrecognized arguments: {' '.join(beam_args)} (Beam options go with --beam)")
    from recsys_ssl.datasets import inputs, interactions_csv

    tfds_dir = args.tfds_dir or paths.tfds_dir(args.run_dir)
    csv_configs = None
    name = args.dataset
    if name.startswith("interactions_csv"):
        csv_name = args.name or name.partition("/")[2]
        if not csv_name:
            print("recsys-ssl data: interactions_csv needs a name: --dataset interactions_csv/<name>", file=sys.stderr)
            return 2
        name = f"interactions_csv/{csv_name}"
        given = [args.interactions, args.items, args.spec]
        if any(given) and not all(given):
            print("recsys-ssl data: interactions_csv needs --interactions, --items and --spec", file=sys.stderr)
            return 2
        if all(given):
            csv_configs = interactions_csv.make_configs(
                csv_name, args.interactions, args.items, args.spec, queries=args.queries, split_column=args.split_column
            )
    start = time.time()
    # Bad input raises FileNotFoundError / ValueError naming the file, line or column; the CLI
    # router (recsys_ssl.cli) turns it into one `recsys-ssl data: error: ...` line, exit 2.
    ds = inputs.load_dataset(
        name,
        data_dir=tfds_dir,
        raw_data_dir=args.data_dir,
        csv_configs=csv_configs,
        beam_args=beam_args if args.beam else None,
    )
    out = summary(ds)
    out["seconds"] = round(time.time() - start, 1)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
