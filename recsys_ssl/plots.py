"""PNG plots of experiment results (matplotlib, Agg backend; no display needed).

* :func:`plot_popularity_deciles`: Recall@50 by item-popularity decile, one line per method
  (decile 1 = the 10% most frequent training items; see ``evaluate.popularity_buckets``).
* :func:`plot_sweep`: a metric against a swept hyper-parameter (the paper's figure 6, SSL
  weight alpha, and figure 7, multi-valued dropout rate), mean ± std over seeds.

Inputs are :func:`recsys_ssl.experiment.aggregate` rows, so a plot never re-runs anything.
"""

from __future__ import annotations

import pathlib
import re
from typing import Any, Mapping, Sequence

_BUCKET = re.compile(r"^popularity_(\d+)/(.+)$")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def popularity_series(
    rows: Sequence[Mapping[str, Any]], metric: str = "recall@50", regime: str = "full", include_sweeps: bool = False
) -> dict[str, list[float | None]]:
    """group -> [mean of ``popularity_BB/<metric>`` for B = 0, 1, ...] (bucket 0 = most popular)."""
    series: dict[str, dict[int, float | None]] = {}
    for row in rows:
        match = _BUCKET.match(row["metric"])
        if not match or match.group(2) != metric or row["regime"] != regime or (row["sweep"] and not include_sweeps):
            continue
        series.setdefault(row["group"], {})[int(match.group(1))] = row["mean"]
    return {g: [b.get(i) for i in range(max(b) + 1)] for g, b in series.items()}


def sweep_series(
    rows: Sequence[Mapping[str, Any]], field: str, metric: str = "recall@50", regime: str = "full"
) -> dict[str, list[tuple[float, float, float | None]]]:
    """config -> [(swept value, mean, std)] sorted by value, for rows swept over ``field``."""
    series: dict[str, list[tuple[float, float, float | None]]] = {}
    for row in rows:
        if field in row["sweep"] and row["metric"] == metric and row["regime"] == regime and row["mean"] is not None:
            series.setdefault(row["config"], []).append((float(row["sweep"][field]), row["mean"], row["std"]))
    return {config: sorted(points) for config, points in series.items()}


def plot_popularity_deciles(
    series: Mapping[str, Sequence[float | None]], path: str | pathlib.Path, metric: str = "recall@50"
) -> pathlib.Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for group, values in series.items():
        xs = [i + 1 for i, v in enumerate(values) if v is not None]
        ax.plot(xs, [v for v in values if v is not None], marker="o", label=group)
    ax.set_xlabel("item popularity decile (1 = most frequent in training)")
    ax.set_ylabel(metric.replace("recall", "Recall"))
    ax.set_title(f"{metric.replace('recall', 'Recall')} by item popularity")
    ax.set_xticks(range(1, 1 + max((len(v) for v in series.values()), default=10)))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_sweep(
    series: Mapping[str, Sequence[tuple[float, float, float | None]]],
    field: str,
    path: str | pathlib.Path,
    metric: str = "recall@50",
    log_x: bool = False,
    reference: tuple[str, float] | None = None,
) -> pathlib.Path:
    """One line per swept config; ``reference`` = (label, value) draws e.g. the baseline dashed."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    if reference is not None:
        ax.axhline(reference[1], color="grey", linestyle="--", label=reference[0])
    for config, points in series.items():
        xs, means, stds = zip(*points)
        ax.errorbar(xs, means, yerr=[s or 0.0 for s in stds], marker="o", capsize=3, label=config)
    if log_x and all(x > 0 for points in series.values() for x, _, _ in points):
        ax.set_xscale("log")
    ax.set_xlabel(field)
    ax.set_ylabel(metric.replace("recall", "Recall"))
    ax.set_title(f"{metric.replace('recall', 'Recall')} vs {field} (mean ± std over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def _save(fig, path: str | pathlib.Path) -> pathlib.Path:
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    fig.clf()
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def experiment_plots(
    rows: Sequence[Mapping[str, Any]],
    out_dir: str | pathlib.Path,
    metric: str = "recall@50",
    baseline: str = "baseline",
) -> dict[str, pathlib.Path]:
    """Every plot the rows support: popularity deciles per regime; one sweep plot per swept
    field (with the ``baseline`` group as a dashed line when the rows have it)."""
    out_dir = pathlib.Path(out_dir)
    paths = {}
    for regime in sorted({r["regime"] for r in rows}):
        series = popularity_series(rows, metric, regime)
        if series:
            paths[f"deciles_{regime}"] = plot_popularity_deciles(
                series, out_dir / f"{metric.replace('@', '')}_by_popularity_{regime}.png", metric
            )
    fields = sorted({field for r in rows for field in r["sweep"]})
    for field in fields:
        for regime in sorted({r["regime"] for r in rows}):
            series = sweep_series(rows, field, metric, regime)
            if series:
                name = field.rpartition(".")[2]
                reference = next(
                    (
                        (baseline, r["mean"])
                        for r in rows
                        if r["group"] == baseline
                        and not r["sweep"]
                        and r["metric"] == metric
                        and r["regime"] == regime
                        and r["mean"] is not None
                    ),
                    None,
                )
                paths[f"sweep_{name}_{regime}"] = plot_sweep(
                    series,
                    field,
                    out_dir / f"sweep_{name}_{regime}.png",
                    metric,
                    log_x=name == "alpha",
                    reference=reference,
                )
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m recsys_ssl.plots <experiments/NAME/results.json> [--out DIR]``: redraw the plots."""
    import argparse
    import json

    parser = argparse.ArgumentParser(prog="python -m recsys_ssl.plots", description=main.__doc__)
    parser.add_argument("results", help="an experiment's results.json")
    parser.add_argument("--out", help="output folder (default: next to results.json)")
    parser.add_argument("--metric", default="recall@50")
    args = parser.parse_args(argv)
    results = pathlib.Path(args.results)
    rows = json.loads(results.read_text())["summary"]
    for kind, path in experiment_plots(rows, args.out or results.parent, args.metric).items():
        print(f"wrote {kind}: {path}")
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())


def plot_validation_curves(
    curves: Mapping[int, Sequence[Sequence[float]]],
    best: int,
    path: str | pathlib.Path,
    title: str = "validation Recall@50 per epoch",
) -> pathlib.Path:
    """A tuning study's per-epoch validation curves: every trial faint, trial ``best`` bold.

    curves: trial number -> [(epoch, recall), ...] (a pruned trial's curve just stops).
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for number, curve in curves.items():
        if curve and number != best:
            ax.plot([e for e, _ in curve], [v for _, v in curve], color="grey", alpha=0.3, linewidth=1)
    if curves.get(best):
        ax.plot(
            [e for e, _ in curves[best]],
            [v for _, v in curves[best]],
            color="C0",
            linewidth=2.5,
            marker="o",
            label=f"best trial #{best}",
        )
        ax.legend()
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation Recall@50")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    path = pathlib.Path(path)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_diagnostics(
    by_name: Mapping[str, Mapping[str, Any]],
    path: str | pathlib.Path,
    rows: Sequence[tuple[str, Sequence[float | None]]],
    k: int = 50,
) -> pathlib.Path:
    """``recsys-ssl diagnose``'s figure, models side by side (``by_name``: name -> diagnostics.json):
    Recall@k by popularity decile (bars), the histogram of each tail item's cosine to its
    nearest head item, and ``rows`` (``diagnostics.table_rows``: quantity, value per model) as a table."""
    plt = _pyplot()
    fig = plt.figure(figsize=(13, 8.5))
    grid = fig.add_gridspec(2, 2, height_ratios=[3, 2.2])
    bars, hist, table = fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[0, 1]), fig.add_subplot(grid[1, :])
    width = 0.8 / max(len(by_name), 1)
    for n, (name, diagnostics) in enumerate(by_name.items()):
        deciles = diagnostics["recall_by_popularity"]["deciles"].get(f"recall@{k}", [])
        xs = [i + 1 + (n - (len(by_name) - 1) / 2) * width for i in range(len(deciles))]
        bars.bar(xs, [v or 0.0 for v in deciles], width=width, label=name)
        nearest = diagnostics["nearest_head_cosine"]
        edges, counts = nearest["histogram"]["edges"], nearest["histogram"]["counts"]
        share = [c / max(sum(counts), 1) for c in counts]
        hist.stairs(share, edges, label=f"{name} (mean {nearest['mean']:.3f})" if nearest["mean"] is not None else name)
    bars.set_xlabel("item popularity decile (1 = most frequent in training)")
    bars.set_ylabel(f"Recall@{k}")
    bars.set_title(f"Recall@{k} by item popularity")
    bars.set_xticks(range(1, 11))
    occupied = [
        e
        for d in by_name.values()
        for e, c in zip(d["nearest_head_cosine"]["histogram"]["edges"], d["nearest_head_cosine"]["histogram"]["counts"])
        if c
    ]
    hist.set_xlim(max(-1.0, min(occupied, default=-1.0) - 0.05), 1.0)  # the occupied range only
    hist.set_xlabel("cosine of a tail item to its nearest head item")
    hist.set_ylabel("share of tail items")
    hist.set_title("tail -> nearest head item")
    for ax in (bars, hist):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    table.axis("off")
    cells = [["-" if v is None else f"{v:.4f}" for v in values] for _, values in rows]
    drawn = table.table(cellText=cells, rowLabels=[label for label, _ in rows], colLabels=list(by_name), loc="center")
    drawn.auto_set_font_size(False)
    drawn.set_fontsize(8)
    table.set_title("alignment (lower = positives closer), uniformity (lower = more spread), head vs tail", fontsize=9)
    return _save(fig, path)
