"""Issue 15's target, read from the equal-tuning grid's results.json files, one per dataset.

    .venv/bin/python bench/results/target_check.py --regime 10pct \\
        bench/results/equal_tuning/{frappe,ml100k_user_item,synthetic_oracle_10k}/grid_10pct/results.json

The target: one SSL configuration, the same on every dataset, beats the equally tuned baseline
on tail Recall@50 by more than two of the baseline's standard deviations (over seeds) on at least
``--need`` datasets, with overall Recall@50 no more than ``--max-drop`` (1%) below the baseline's
mean. Per method and dataset the table prints the tail gain in baseline stds and the overall
change, and whether both conditions hold; the last column counts the datasets where they do.

Only the ``ssl_*`` methods can meet the target: FD and SO are the paper's baselines, shown
for comparison. Groups are matched across datasets by name with the regime suffix removed (``ssl_cfm-10pct``
-> ``ssl_cfm``), so the rows are methods. Nothing is recomputed from runs: only the summaries.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

TAIL, OVERALL = "tail/recall@50", "recall@50"
SSL_PREFIX = "ssl_"  # the SSL configurations; fd and so are the paper's baselines (PAPER.md section 4)


def method_name(group: str, regime: str) -> str:
    suffix = "-" + regime
    return group[: -len(suffix)] if group.endswith(suffix) else group


def summaries(results: dict, regime: str) -> dict[tuple[str, str], dict]:
    """(method, metric) -> the summary row (mean, std, n) of one regime."""
    out = {}
    for row in results["summary"]:
        if row.get("sweep") or row["regime"] != regime:
            continue
        out[(method_name(row["group"], regime), row["metric"])] = row
    return out


def check(rows: dict, method: str, baseline: str, max_drop: float) -> dict:
    """Tail gain in baseline stds, overall relative change, and whether the target holds."""
    base_tail, tail = rows[(baseline, TAIL)], rows[(method, TAIL)]
    base_all, overall = rows[(baseline, OVERALL)], rows[(method, OVERALL)]
    std = base_tail["std"] or 0.0
    gain = tail["mean"] - base_tail["mean"]
    stds = gain / std if std > 0 else (float("inf") if gain > 0 else 0.0)
    change = overall["mean"] / base_all["mean"] - 1.0
    return {"tail_stds": stds, "overall_change": change, "holds": stds > 2.0 and change >= -max_drop}


def target_table(datasets: dict[str, dict], regime: str, baseline: str, max_drop: float, need: int) -> str:
    per_dataset = {name: summaries(results, regime) for name, results in datasets.items()}
    methods = [
        m
        for m in dict.fromkeys(m for rows in per_dataset.values() for (m, _) in rows)
        if m != baseline and all((m, TAIL) in rows and (m, OVERALL) in rows for rows in per_dataset.values())
    ]
    names = list(datasets)
    lines = [
        "| method | " + " | ".join(names) + " | datasets where it holds |",
        "|---|" + "---|" * (len(names) + 1),
    ]
    for method in methods:
        cells, held = [], 0
        for name in names:
            c = check(per_dataset[name], method, baseline, max_drop)
            held += c["holds"]
            mark = "**yes**" if c["holds"] else "no"
            cells.append(f"tail {c['tail_stds']:+.1f} std, overall {c['overall_change']:+.1%}: {mark}")
        verdict = f"{held} of {len(names)}"
        if held >= need:  # FD and SO are the paper's baselines: they cannot meet an SSL target
            verdict += " (target met)" if method.startswith(SSL_PREFIX) else " (a baseline, not SSL)"
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {verdict} |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="+", type=pathlib.Path, help="a grid's results.json per dataset")
    parser.add_argument("--regime", default="10pct", choices=("10pct", "full"))
    parser.add_argument("--baseline", default="baseline", help="the baseline's method name (suffix removed)")
    parser.add_argument("--max-drop", type=float, default=0.01, help="largest allowed overall R@50 loss")
    parser.add_argument("--need", type=int, default=2, help="datasets on which the target must hold")
    args = parser.parse_args(argv)
    datasets = {}
    for path in args.results:
        try:
            with open(path) as f:
                datasets[path.parent.parent.name] = json.load(f)
        except (OSError, json.JSONDecodeError) as error:
            parser.error(f"{path}: cannot read a results.json ({error})")
    try:
        print(target_table(datasets, args.regime, args.baseline, args.max_drop, args.need))
    except KeyError as error:
        parser.error(f"the baseline or a metric is missing from a summary: {error}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
