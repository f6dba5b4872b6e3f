"""``recsys-ssl evaluate``: flags -> :func:`recsys_ssl.evaluate.run`, and the table it prints.

Kept out of :mod:`recsys_ssl.evaluate` (the metric library) because ``--oracle`` needs
:mod:`recsys_ssl.oracle`, which itself scores with the evaluate library.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
from typing import Sequence

from recsys_ssl import evaluate, oracle
from recsys_ssl.paths import DEFAULT_RUN_DIR


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recsys-ssl evaluate",
        description="Exact full-corpus Recall@K / MAP@K of a trained model, with head/tail slices; "
        "writes <run-dir>/eval/<name>/metrics.json.",
    )
    parser.add_argument("--run-dir", default=DEFAULT_RUN_DIR, help="the pipeline run's folder (default: %(default)s)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--name", help="the trained experiment's name (<run-dir>/train/<name>)")
    group.add_argument("--config", help="an experiment config; its name is the experiment's name")
    parser.add_argument("--split", default="test", help="the split to evaluate (default: test)")
    parser.add_argument(
        "--ks", type=int, nargs="+", default=list(evaluate.DEFAULT_KS), help="cut-offs K (default: 10 50 100)"
    )
    parser.add_argument(
        "--head-fraction",
        type=float,
        default=evaluate.PROTOCOL_HEAD_FRACTION,
        help="head = this fraction of the most frequent training items (0.2: PROTOCOL.md, 0.1: the paper)",
    )
    parser.add_argument(
        "--mode",
        choices=evaluate.MODES,
        default="auto",
        help="user-item excludes the user's train items; item-item the seed item (auto: from the spec)",
    )
    parser.add_argument(
        "--per-pair",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="every test pair is its own query (default: yes for item-item, no for user-item)",
    )
    parser.add_argument("--dataset", help="evaluate on this dataset instead of the one the model was trained on")
    parser.add_argument("--data-dir", help="raw data root (for MovieLens / CSV datasets not yet prepared)")
    parser.add_argument("--batch-size", type=int, default=1024, help="embedding batch size")
    parser.add_argument(
        "--oracle",
        action="store_true",
        help="synthetic_catalog only: the generator's oracle and the model's share of its recall",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.name:
        name = args.name
    elif args.config:
        from recsys_ssl import config as cfg

        name = cfg.load_config(args.config).name
    else:
        parser.error("pass --name or --config")
    metrics = evaluate.run(
        args.run_dir,
        name,
        split=args.split,
        ks=args.ks,
        head_fraction=args.head_fraction,
        mode=args.mode,
        dataset_name=args.dataset,
        raw_data_dir=args.data_dir,
        batch_size=args.batch_size,
        per_pair=args.per_pair,
        extend=oracle.attach if args.oracle else None,
    )
    print(
        f"{name} on {metrics['dataset']} ({metrics['split']}, {metrics['mode']}, "
        f"{metrics['counts']['queries']} queries x {metrics['counts']['items']} items, "
        f"head = top {metrics['head_fraction']:.0%} = {metrics['head_items']} items) in {metrics['seconds']:.2f} s"
    )
    print(evaluate.format_table(metrics))
    if "oracle" in metrics:
        print(oracle.format_report(metrics))
    print(f"wrote {pathlib.Path(args.run_dir) / 'eval' / name / 'metrics.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
