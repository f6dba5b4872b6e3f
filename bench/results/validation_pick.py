"""Which method wins on validation across the equal-tuning grid: the shipped default (issue 15).

    .venv/bin/python bench/results/validation_pick.py \\
        bench/results/equal_tuning/{frappe,ml100k_user_item,synthetic_oracle_10k}

Reads only each study's best trial (``tune/<method>[-10pct]/study.sqlite3``): its validation
Recall@50 on the ``<dataset>-val`` carve-out of train. Test metrics are never read, so the pick
cannot leak the test split.

A *grid* is one (dataset, data regime). It counts only when every method has a study with at
least ``--trials`` finished trials (complete or pruned), so every method is ranked on the same
grids with the same budget.

The rule, fixed before the last grids finished: rank the methods inside each grid by validation
R@50 (1 = best; ties share the mean rank), then pick the lowest **mean rank** over the grids.
Ranks rather than relative gains, because gains are not comparable across datasets: on the
synthetic catalog a method moves validation R@50 by +29% where on Frappe +5% is large, and a
mean of gains would let one dataset decide. Ties in mean rank go to the larger mean relative
change vs the baseline, which the table also prints.

The table prints both the overall pick (the shipped default) and the best ``ssl_*``
configuration (the one issue 15's target is checked for).
"""

from __future__ import annotations

import argparse
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from equal_tuning import METHODS, REGIMES, study_key  # noqa: E402  (the grid's own names)

from recsys_ssl import tune  # noqa: E402

BASELINE = "baseline"
SSL_PREFIX = "ssl_"


def study_dir(dataset_dir: pathlib.Path, method: str, regime: str) -> pathlib.Path:
    return dataset_dir / "tune" / study_key(method, regime)


def load_study(path: pathlib.Path):
    """The one Optuna study stored in the SQLite file at ``path`` (``tune`` writes one per file)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = f"sqlite:///{path}"
    names = optuna.study.get_all_study_names(storage)
    if len(names) != 1:
        raise ValueError(f"{path}: expected one study, found {len(names)} ({names})")
    return optuna.load_study(study_name=names[0], storage=storage)


def best_validation(path: pathlib.Path, min_trials: int) -> float | None:
    """The best trial's validation R@50 of the study at ``path``; None when the study is missing
    or has fewer than ``min_trials`` finished (complete or pruned) trials."""
    if not path.exists():
        return None
    import optuna

    study = load_study(path)
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if tune.finished(study) < min_trials or not complete:  # tune's own count: complete or pruned
        return None
    return float(study.best_value)


def ranks(values: dict[str, float]) -> dict[str, float]:
    """1 = highest value; tied values share the mean of the ranks they span."""
    ordered = sorted(values, key=lambda m: -values[m])
    out, i = {}, 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and values[ordered[j + 1]] == values[ordered[i]]:
            j += 1
        for m in ordered[i : j + 1]:
            out[m] = (i + j) / 2 + 1
        i = j + 1
    return out


def pick(grids: dict[str, dict[str, float]], candidates: list[str] | None = None) -> tuple[str, dict[str, dict]]:
    """The method with the lowest mean rank over ``grids`` ({grid: {method: validation R@50}}),
    among ``candidates`` (default: all). Ranks are computed among all methods of a grid.
    Returns (winner, {method: {"mean_rank", "mean_change", "ranks"}})."""
    if not grids:
        raise ValueError("no complete grid: every method needs a finished study in at least one grid")
    stats = {}
    per_grid = {name: ranks(values) for name, values in grids.items()}
    methods = list(next(iter(grids.values())))
    for method in methods:
        r = [per_grid[name][method] for name in grids]
        changes = [values[method] / values[BASELINE] - 1.0 for values in grids.values()]
        stats[method] = {"mean_rank": sum(r) / len(r), "mean_change": sum(changes) / len(changes), "ranks": r}
    pool = candidates if candidates is not None else methods
    winner = min(pool, key=lambda m: (stats[m]["mean_rank"], -stats[m]["mean_change"]))
    return winner, stats


def complete_grids(dataset_dirs: list[pathlib.Path], min_trials: int) -> tuple[dict, list[str]]:
    """({"<dataset> <regime>": {method: validation R@50}} for complete grids, [incomplete grid notes])."""
    grids, skipped = {}, []
    for directory in dataset_dirs:
        for regime in REGIMES:
            values = {
                m: best_validation(study_dir(directory, m, regime) / "study.sqlite3", min_trials) for m in METHODS
            }
            missing = [m for m, v in values.items() if v is None]
            name = f"{directory.name} {regime}"
            if missing:
                skipped.append(f"{name}: not complete ({', '.join(missing)})")
            else:
                grids[name] = values
    return grids, skipped


def table(grids: dict[str, dict[str, float]], stats: dict[str, dict]) -> str:
    names = list(grids)
    lines = [
        "| method | " + " | ".join(names) + " | mean rank | mean change vs baseline |",
        "|---|" + "---|" * (len(names) + 2),
    ]
    for method in sorted(stats, key=lambda m: (stats[m]["mean_rank"], -stats[m]["mean_change"])):
        cells = [f"{grids[n][method]:.4f} ({r:g})" for n, r in zip(names, stats[method]["ranks"])]
        s = stats[method]
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {s['mean_rank']:.2f} | {s['mean_change']:+.1%} |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("datasets", nargs="+", type=pathlib.Path, help="an equal_tuning/<dataset> folder per dataset")
    parser.add_argument("--trials", type=int, default=16, help="finished trials a study needs to count")
    args = parser.parse_args(argv)
    for directory in args.datasets:
        if not (directory / "tune").is_dir():
            parser.error(f"{directory}: no tune/ folder (pass bench/results/equal_tuning/<dataset>)")
    try:
        grids, skipped = complete_grids(args.datasets, args.trials)
        winner, stats = pick(grids)
    except ValueError as error:
        parser.error(str(error))
    ssl_winner, _ = pick(grids, [m for m in stats if m.startswith(SSL_PREFIX)])
    print("Validation R@50 of each study's best trial (rank in its grid):\n")
    print(table(grids, stats))
    for note in skipped:
        print(f"\nskipped {note}")
    print(f"\npick over {len(grids)} grids: {winner} (the shipped default); best SSL configuration: {ssl_winner}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
