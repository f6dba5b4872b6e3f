"""One compact Markdown table from an experiment's results.json: method x regime rows.

    .venv/bin/python bench/results/compact_table.py bench/results/ml100k_user_item/results.json
    .venv/bin/python bench/results/compact_table.py results.json --baseline baseline-10pct

Columns: Recall@10, Recall@50, MAP@50, head / tail Recall@50 (the experiment's --head-fraction
slice), each "mean ± std (relative change vs the baseline)". A cell is marked ``*`` when its
difference from the baseline's mean exceeds two of the baseline's standard deviations (the issue's
significance rule); nothing here is recomputed from runs, it only reads the summary.
"""

from __future__ import annotations

import json
import sys

COLUMNS = (
    ("recall@10", "Recall@10"),
    ("recall@50", "Recall@50"),
    ("map@50", "MAP@50"),
    ("head/recall@50", "head R@50"),
    ("tail/recall@50", "tail R@50"),
)
REGIMES = (("full", "full"), ("10pct", "10%"))


def compact_table(results: dict, baseline: str = "baseline") -> str:
    summary = {(r["group"], r["regime"], r["metric"]): r for r in results["summary"] if not r.get("sweep")}
    groups = list(dict.fromkeys(r["group"] for r in results["summary"] if not r.get("sweep")))
    lines = [
        "| method | data | " + " | ".join(title for _, title in COLUMNS) + " |",
        "|---|---|" + "---|" * len(COLUMNS),
    ]
    for regime, regime_title in REGIMES:
        for group in groups:
            cells = []
            for metric, _ in COLUMNS:
                row = summary.get((group, regime, metric))
                if row is None or row["mean"] is None:
                    cells.append("-")
                    continue
                text = f"{row['mean']:.4f} ± {row['std'] or 0:.4f}"
                base = summary.get((baseline, regime, metric))
                if group != baseline and base and base["mean"]:
                    text += f" ({row['mean'] / base['mean'] - 1:+.1%})"
                    if base["std"] and abs(row["mean"] - base["mean"]) > 2 * base["std"]:
                        text += " *"
                cells.append(text)
            if any(c != "-" for c in cells):
                lines.append(f"| {group} | {regime_title} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    baseline = "baseline"
    if len(argv) == 3 and argv[1] == "--baseline":  # e.g. a tuned grid's "baseline-10pct"
        baseline = argv[2]
    elif len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    with open(argv[0]) as f:
        print(compact_table(json.load(f), baseline))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
