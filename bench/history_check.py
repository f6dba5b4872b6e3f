"""Does a query tower that sees the user's other apps beat one that sees only the user id?
A validation-only check on Frappe (``frappe-random``), outside the library's datasets.

    python bench/history_check.py --config bench/results/tuning/frappe_ema/tuned_baseline.yaml \
        [--work-dir /tmp/history_check] [--data-dir ../shared/data] [--seeds 0 1 2] \
        [--variants nohist hist_shared hist_own] [--carve-seed 0]

The Frappe builder has no history feature yet, so this script writes the check's own CSVs
under ``--work-dir`` (never into the repository: Frappe's terms forbid redistribution):

* only Frappe's ``train`` rows are read; per user a seeded random ceil(10%) of the train apps
  (users with one app keep it) becomes this check's ``test`` split: a validation carve-out of
  the ``<dataset>-val`` view's size, drawn here (``--carve-seed``) rather than by
  ``_common.validation_split``, so several carve-outs can be compared; the real test split is
  never read;
* ``history`` (multi-valued, ``|``-separated, at most 64 apps, a seeded sample when longer):
  on a training row the user's OTHER training apps (never the row's own app, which would leak
  the label), on a carve-out row all of the user's training apps (what a request would send);
* one dataset per variant, ``interactions_csv/frappe_<variant>``, with ``data/specs/frappe.yaml``
  plus, for ``hist_*``, the query feature ``history`` (``hist_shared``: read through the item
  tower's ``item_id`` table, ``shares_embedding``; ``hist_own``: its own table).

Each variant then runs ``recsys-ssl data``, ``stats`` and ``experiment`` with ``--config``
(early stopping off: the config's epochs), and the script prints one line per variant:
mean ± std Recall@50 overall and tail over the seeds, from each experiment's results.json.
"""

from __future__ import annotations

import argparse
import collections
import csv
import json
import math
import os
import pathlib
import random
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
MAX_HISTORY = 64
_HISTORY = f"  - {{name: history, kind: multi_categorical, max_len: {MAX_HISTORY}, embedding_dim: 32%s}}\n"
VARIANTS = {"nohist": None, "hist_shared": _HISTORY % ", shares_embedding: item_id", "hist_own": _HISTORY % ""}


def carve(rows: list[dict], seed: int = 0) -> tuple[set, dict[str, list[str]]]:
    """(the carve-out's (user, app) keys, user -> the apps left for training, file order)."""
    by_user: dict[str, list[str]] = collections.defaultdict(list)
    for row in rows:
        by_user[row["user_id"]].append(row["item_id"])
    rng, held_out = random.Random(seed), set()
    for user, apps in by_user.items():
        if len(apps) > 1:
            held_out.update((user, app) for app in rng.sample(sorted(apps), math.ceil(0.1 * len(apps))))
    kept = {user: [a for a in apps if (user, a) not in held_out] for user, apps in by_user.items()}
    return held_out, kept


def write_interactions(rows: list[dict], path: pathlib.Path, with_history: bool, carve_seed: int = 0) -> None:
    held_out, kept = carve(rows, carve_seed)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["user_id", "item_id", "split"] + (["history"] if with_history else []))
        for row in rows:
            user, app = row["user_id"], row["item_id"]
            history = [a for a in kept[user] if a != app]  # a training row never sees its own app
            if len(history) > MAX_HISTORY:
                history = random.Random(f"{user}-{app}").sample(history, MAX_HISTORY)
            split = "test" if (user, app) in held_out else "train"
            writer.writerow([user, app, split] + (["|".join(history)] if with_history else []))


def write_spec(variant: str, path: pathlib.Path) -> None:
    spec = (ROOT / "data" / "specs" / "frappe.yaml").read_text().replace("name: frappe\n", f"name: frappe_{variant}\n")
    anchor = "  - {name: user_id, kind: categorical, embedding_dim: 32}\n"
    if VARIANTS[variant]:
        if anchor not in spec:
            sys.exit(f"data/specs/frappe.yaml: no line {anchor.strip()!r} to add the history after")
        spec = spec.replace(anchor, anchor + VARIANTS[variant])
    path.write_text(spec)


def run(command: list[str]) -> None:
    print("+", " ".join(command), flush=True)
    subprocess.run(command, check=True, cwd=ROOT)


def summary(results: pathlib.Path) -> str:
    """The experiment's own summary rows (mean, sample std, n over seeds) for R@50 and tail R@50."""
    rows = {r["metric"]: r for r in json.loads(results.read_text())["summary"]}
    overall, tail = rows["recall@50"], rows["tail/recall@50"]
    return (
        f"R@50 {overall['mean']:.4f} ± {overall['std']:.4f}, tail R@50 {tail['mean']:.4f} ± {tail['std']:.4f} "
        f"({overall['n']} seeds)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--work-dir", default="/tmp/history_check")
    parser.add_argument("--data-dir", default=os.environ.get("RECSYS_SSL_DATA", str(ROOT.parent / "shared" / "data")))
    parser.add_argument("--seeds", nargs="+", default=["0", "1", "2"])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--carve-seed", type=int, default=0, help="the carve-out's random seed (another carve-out)")
    args = parser.parse_args(argv)
    source = pathlib.Path(args.data_dir) / "frappe"
    if not (source / "interactions.csv").exists():
        sys.exit(f"{source}/interactions.csv: not found (--data-dir or $RECSYS_SSL_DATA)")
    with (source / "interactions.csv").open() as f:
        rows = [row for row in csv.DictReader(f) if row["split"] == "train"]
    work, cli = pathlib.Path(args.work_dir), [sys.executable, "-m", "recsys_ssl.cli"]
    lines = []
    for variant in args.variants:
        folder = work / variant
        folder.mkdir(parents=True, exist_ok=True)
        write_interactions(rows, folder / "interactions.csv", VARIANTS[variant] is not None, args.carve_seed)
        write_spec(variant, folder / "spec.yaml")
        dataset, run_dir = f"interactions_csv/frappe_{variant}", str(folder / "run")
        if not (folder / "run" / "stats").exists():
            run(cli + ["data", "--dataset", dataset, "--run-dir", run_dir, "--spec", str(folder / "spec.yaml"),
                       "--interactions", str(folder / "interactions.csv"), "--items", str(source / "items.csv"),
                       "--split-column", "split"])  # fmt: skip
            run(cli + ["stats", "--dataset", dataset, "--run-dir", run_dir])
        run(cli + ["experiment", "--run-dir", run_dir, "--name", "check", "--configs", args.config,
                   "--set", f"dataset={dataset}", "--set", "train.early_stopping=false",
                   "--seeds", *args.seeds, "--regimes", "full"])  # fmt: skip
        lines.append(f"{variant}: {summary(folder / 'run' / 'experiments' / 'check' / 'results.json')}")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
