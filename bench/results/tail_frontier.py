"""What the tuner saw of the overall / tail trade-off: every finished trial of one grid's studies.

    .venv/bin/python bench/results/tail_frontier.py bench/results/equal_tuning/frappe \\
        --regime full --recall 0.48 --tail 0.03

Issue 15 asks for a shipped method that reaches overall Recall@50 >= .48 together with tail
Recall@50 >= .03 on Frappe at full data. The grid's test tables say whether the tuned configs
reach it; this says whether *any* configuration the tuner tried reached it on validation, so
whether a different pick from the same studies could have. It reads each trial's validation
Recall@50 (the objective) and its validation tail Recall@50 (``tail_recall``, the mean over the
trial's seeds at the best epoch, ``recsys_ssl.tune``), never the test split.

Per method: finished trials, the best-objective trial's (R@50, tail), the highest-tail trial's
(R@50, tail), and the trials meeting both bars. The last line gives, over all trials of the
grid, the Spearman rank correlation between R@50 and tail: near zero or negative means the
objective does not select for tail, so tuning harder on R@50 will not find it.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from equal_tuning import METHODS, REGIMES  # noqa: E402  (the grid's own names)
from validation_pick import load_study, ranks, study_dir  # noqa: E402


def trials(path: pathlib.Path) -> list[tuple[float, float]]:
    """(validation R@50, validation tail R@50) of every complete trial in the study at ``path``."""
    import optuna

    study = load_study(path)
    out = []
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        if "tail_recall" not in trial.user_attrs:
            raise ValueError(f"{path}: trial #{trial.number} has no tail_recall user attribute")
        out.append((float(trial.value), float(trial.user_attrs["tail_recall"])))
    return out


def spearman(x: list[float], y: list[float]) -> float:
    """Spearman's rho: the Pearson correlation of the ranks, tied values sharing their mean rank."""
    rx = ranks(dict(enumerate(x)))
    ry = ranks(dict(enumerate(y)))
    a = np.array([rx[i] for i in range(len(x))])
    b = np.array([ry[i] for i in range(len(y))])
    if a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def frontier(per_method: dict[str, list[tuple[float, float]]], recall_bar: float, tail_bar: float) -> dict:
    """Per method: the summary row; plus the grid's rank correlation and the count meeting both bars."""
    rows = {}
    for method, points in per_method.items():
        if not points:
            continue
        best = max(points, key=lambda p: p[0])
        tailmost = max(points, key=lambda p: (p[1], p[0]))
        both = [p for p in points if p[0] >= recall_bar and p[1] >= tail_bar]
        rows[method] = {"trials": len(points), "best": best, "tailmost": tailmost, "both": len(both)}
    everything = [p for points in per_method.values() for p in points]
    return {
        "rows": rows,
        "trials": len(everything),
        "both": sum(r["both"] for r in rows.values()),
        "spearman": spearman([p[0] for p in everything], [p[1] for p in everything]) if everything else float("nan"),
    }


def table(result: dict, recall_bar: float, tail_bar: float) -> str:
    lines = [
        f"| method | complete trials | best R@50 trial: R@50 / tail | highest-tail trial: R@50 / tail "
        f"| trials with R@50 >= {recall_bar:g} and tail >= {tail_bar:g} |",
        "|---|---|---|---|---|",
    ]
    for method, r in result["rows"].items():
        (b0, b1), (t0, t1) = r["best"], r["tailmost"]
        lines.append(f"| {method} | {r['trials']} | {b0:.4f} / {b1:.4f} | {t0:.4f} / {t1:.4f} | {r['both']} |")
    lines.append(
        f"\n{result['both']} of {result['trials']} trials meet both bars on validation; Spearman rho "
        f"(R@50, tail) over all trials: {result['spearman']:+.2f}"
    )
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", type=pathlib.Path, help="an equal_tuning/<dataset> folder")
    parser.add_argument("--regime", default="full", choices=REGIMES)
    parser.add_argument("--recall", type=float, default=0.48, help="the overall Recall@50 bar")
    parser.add_argument("--tail", type=float, default=0.03, help="the tail Recall@50 bar")
    args = parser.parse_args(argv)
    if not (args.dataset / "tune").is_dir():
        parser.error(f"{args.dataset}: no tune/ folder (pass bench/results/equal_tuning/<dataset>)")
    per_method = {}
    try:
        for method in METHODS:
            path = study_dir(args.dataset, method, args.regime) / "study.sqlite3"
            per_method[method] = trials(path) if path.exists() else []
    except ValueError as error:
        parser.error(str(error))
    if not any(per_method.values()):
        parser.error(f"{args.dataset}: no complete trial in any {args.regime} study")
    print(f"Validation (R@50, tail R@50) of every complete trial, {args.dataset.name} {args.regime}:\n")
    print(table(frontier(per_method, args.recall, args.tail), args.recall, args.tail))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
