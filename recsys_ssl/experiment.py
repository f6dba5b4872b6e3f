"""Experiment grids: methods x seeds x data regimes (x optional sweeps), resumable, with tables.

``recsys-ssl experiment --run-dir R --configs baseline fd so ssl_cfm --seeds 0 1 2``
trains and evaluates every cell of the grid, then aggregates:

* one cell = one config (a method, e.g. ``data/configs/ssl_cfm.yaml``) x one data regime
  (``full`` or ``10pct``: ``train.data_fraction``) x one seed (x one sweep value), named
  ``<config>-<regime>-seed<seed>`` (``<config>_<field><value>-...`` for a sweep value);
  it trains to ``<run_dir>/train/<cell>`` and writes ``<run_dir>/eval/<cell>/metrics.json``;
* resumable: a cell whose ``metrics.json`` exists is read back, never re-run; a cell whose
  training finished but whose evaluation did not is only evaluated;
* results under ``<run_dir>/experiments/<name>/``: ``results.json`` (every run's metrics
  and the summary), ``results.csv`` (one row per group x metric: mean, std, n, relative
  change vs the baseline), ``results.md`` (the paper's tables: overall; head / tail;
  ablation) and the plots (:mod:`recsys_ssl.plots`).

Aggregation: mean over seeds, sample standard deviation (ddof=1; ``None`` for one seed),
relative change = mean / baseline mean - 1 in the same regime (and sweep value: none).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import math
import pathlib
import sys
import time
from typing import Any, Callable, Iterable, Mapping, Sequence

from recsys_ssl import registry
from recsys_ssl.paths import DEFAULT_RUN_DIR

REGIMES = ("full", "10pct")
# The main comparison (baseline, fd, so, ssl_cfm), then the ablation: every method's and
# augmentation's shipped config, in the registry's order.
DEFAULT_CONFIGS = registry.shipped_configs()
OVERALL_METRICS = ("recall@10", "recall@50", "map@10", "map@50")
SLICE_METRICS = ("head/recall@10", "head/recall@50", "tail/recall@10", "tail/recall@50")
ABLATION_METRIC = "recall@50"
REGIME_TITLES = {"full": "full data", "10pct": "10% data"}


# -- the grid ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Cell:
    """One training + evaluation run of the grid."""

    group: str  # the config name, with the sweep value when there is one (e.g. ssl_cfm_alpha0.3)
    config_name: str
    regime: str
    seed: int
    sweep: tuple[tuple[str, Any], ...] = ()  # (("ssl.alpha", 0.3),)

    @property
    def name(self) -> str:
        return f"{self.group}-{self.regime}-seed{self.seed}"


def parse_sweep(text: str) -> tuple[str, list[Any]]:
    """``ssl.alpha=0.1,0.3,1,3`` -> ("ssl.alpha", [0.1, 0.3, 1, 3]): each value is read as YAML,
    as ``--set`` reads its value (numbers stay numbers, ``null`` is None, ``true`` a bool)."""
    import yaml

    field, sep, values = text.partition("=")
    if not sep or "." not in field or not values:
        raise ValueError(f"--sweep {text!r}: expected SECTION.FIELD=v1,v2,... (e.g. ssl.alpha=0.1,0.3,1,3)")
    parsed = []
    for value in values.split(","):
        try:
            parsed.append(yaml.safe_load(value))
        except yaml.YAMLError:
            parsed.append(value)
    return field, parsed


def _sweep_label(field: str, value: Any) -> str:
    return f"{field.rpartition('.')[2]}{value}"


def build_grid(
    configs: Sequence[str],
    seeds: Sequence[int],
    regimes: Sequence[str] = REGIMES,
    sweep: tuple[str, Sequence[Any]] | None = None,
    unswept: Sequence[str] = ("baseline",),
) -> list[Cell]:
    """Cells in a stable order: config, then sweep value, then regime, then seed.

    The sweep applies to every config but those named in ``unswept`` (the baseline runs once,
    as the sweep plots' reference line and the relative changes' denominator)."""
    for regime in regimes:
        if regime not in REGIMES:
            raise ValueError(f"regime {regime!r} is not one of {REGIMES}")
    cells = []
    for config in configs:
        name = pathlib.Path(config).stem
        variants = [((), name)]
        if sweep and name not in unswept:
            field, values = sweep
            variants = [(((field, v),), f"{name}_{_sweep_label(field, v)}") for v in values]
        for assignment, group in variants:
            for regime in regimes:
                for seed in seeds:
                    cells.append(Cell(group=group, config_name=config, regime=regime, seed=int(seed), sweep=assignment))
    return cells


def cell_config(cell: Cell, overrides: Mapping[str, Any] | None = None):
    """The cell's ExperimentConfig: its config file with name, seed, data fraction, sweep value
    and ``overrides`` ({"train.steps": 100, "10pct:train.epochs": 40, ...}: a ``REGIME:`` prefix
    applies only to that regime's cells) applied, type-checked as a config file is."""
    from recsys_ssl import config as cfg

    base = cfg.load_config(cell.config_name)
    applied = [("train.data_fraction", cell.regime), ("name", cell.name), ("seed", cell.seed)]
    # Overrides for every regime first, then the ones scoped to this cell's ("10pct:train.epochs").
    applied += [(f, v) for f, v in (overrides or {}).items() if ":" not in f]
    applied += [(f.partition(":")[2], v) for f, v in (overrides or {}).items() if f.partition(":")[0] == cell.regime]
    # Type-checked as a file's would be (a "false" string must not pass as true).
    return cfg.with_overrides(base, applied + list(cell.sweep), source="--set/--sweep")


# -- running (the real train + evaluate, resumable) -----------------------------------------------


def metrics_path(run_dir: str | pathlib.Path, cell: Cell) -> pathlib.Path:
    from recsys_ssl.paths import RunLayout

    return RunLayout(run_dir).eval(cell.name) / "metrics.json"


def train_and_evaluate(cell: Cell, run_dir: str | pathlib.Path, options: Mapping[str, Any]) -> dict[str, Any]:
    """The default per-cell function: train (unless finished) then evaluate; returns metrics."""
    from recsys_ssl import evaluate, train

    config = cell_config(cell, options.get("overrides"))
    try:
        train.load_trained(run_dir, cell.name)
        print(f"[{cell.name}] trained model found; evaluating only")
    except FileNotFoundError:  # not trained, or killed before the end (train.run resumes from backup/)
        data = train.load_training_data(config, run_dir, raw_data_dir=options.get("raw_data_dir"))
        train.run(config, run_dir, data, name=cell.name, verbose=options.get("verbose", "auto"))
    return evaluate.run(
        run_dir,
        cell.name,
        ks=options.get("ks", evaluate.DEFAULT_KS),
        head_fraction=options.get("head_fraction", evaluate.PROTOCOL_HEAD_FRACTION),
        raw_data_dir=options.get("raw_data_dir"),
    )


def run_grid(
    cells: Sequence[Cell],
    run_dir: str | pathlib.Path,
    cell_fn: Callable[[Cell, str | pathlib.Path, Mapping[str, Any]], Mapping[str, Any]] = train_and_evaluate,
    options: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Runs the cells that have no metrics.json yet; returns one record per cell.

    A record: {"cell": name, "group", "config", "regime", "seed", "sweep": {field: value},
    "metrics": flat metrics (:func:`flatten_metrics`), "resumed": bool}.
    """
    records = []
    for number, cell in enumerate(cells, 1):
        path = metrics_path(run_dir, cell)
        resumed = path.exists()
        if resumed:
            metrics = json.loads(path.read_text())
            check_resumed_config(cell, metrics, options or {}, path)
            print(f"[{number}/{len(cells)}] {cell.name}: done before, read {path}")
        else:
            print(f"[{number}/{len(cells)}] {cell.name}: training and evaluating")
            started = time.perf_counter()
            metrics = dict(cell_fn(cell, run_dir, options or {}))
            if not path.exists():  # the real cell function writes it; a custom one may not
                from recsys_ssl import evaluate

                evaluate.write_metrics(run_dir, cell.name, metrics)
            print(
                f"[{number}/{len(cells)}] {cell.name}: recall@50 {metrics.get('recall@50')} "
                f"in {time.perf_counter() - started:.1f} s"
            )
        records.append(
            {
                "cell": cell.name,
                "group": cell.group,
                "config": pathlib.Path(cell.config_name).stem,
                "regime": cell.regime,
                "seed": cell.seed,
                "sweep": dict(cell.sweep),
                "metrics": flatten_metrics(metrics),
                "resumed": resumed,
            }
        )
    return records


def _flat_dict(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in d.items():
        if isinstance(value, Mapping):
            out.update(_flat_dict(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = list(value) if isinstance(value, tuple) else value
    return out


def check_resumed_config(
    cell: Cell, metrics: Mapping[str, Any], options: Mapping[str, Any], path: pathlib.Path
) -> None:
    """A finished cell is reused only if it ran with the config this grid asks for.

    Cell names carry config, regime and seed, not ``--set`` overrides (steps, dataset ...);
    reusing a cell trained otherwise would mix runs silently, so it is an error instead.
    """
    asked_fraction = options.get("head_fraction")
    if asked_fraction is not None and metrics.get("head_fraction") not in (None, asked_fraction):
        raise ValueError(
            f"{path}: cell {cell.name} was evaluated with --head-fraction {metrics['head_fraction']}, this grid asks "
            f"{asked_fraction}; every metrics.json also has head_10pct / head_20pct slices, or re-evaluate the cell "
            f"(recsys-ssl evaluate --name {cell.name} --head-fraction {asked_fraction})"
        )
    stored_ks = metrics.get("definition", {}).get("ks")
    missing_ks = sorted(set(options.get("ks") or ()) - set(stored_ks or ())) if stored_ks else []
    if missing_ks:
        raise ValueError(f"{path}: cell {cell.name} has no metrics at K = {missing_ks}; re-evaluate it with --ks")
    stored = metrics.get("config")
    if stored is None:  # metrics written without the config (not by evaluate.run)
        return
    from recsys_ssl import config as cfg

    asked = cell_config(cell, options.get("overrides"))
    expected = _flat_dict(asked.to_dict())
    stored = _flat_dict(stored)
    # A key the stored config lacks is a field added since the cell ran: it matches at its default.
    defaults = _flat_dict(cfg.ExperimentConfig(name=cell.config_name).to_dict())
    # Sections the method never reads (a baseline's ssl.alpha) cannot make its results differ.
    unread = tuple(f"{section}." for section in asked.unread_sections)
    # A knob asked as None (derived from the catalog: cfg.AUTO_FIELDS) matches what the cell derived.
    derived = {k for k in cfg.AUTO_FIELDS if expected.get(k, 0) is None}
    differences = [
        f"{k}: {stored.get(k, defaults.get(k))!r} (stored) != {v!r} (asked)"
        for k, v in expected.items()
        if stored.get(k, defaults.get(k)) != v and not k.startswith(unread) and k not in derived
    ]
    if differences:
        raise ValueError(
            f"{path}: cell {cell.name} finished with a different config ({'; '.join(differences)}); "
            "use another --run-dir for this grid, or delete that cell's eval/ and train/ folders to rerun it"
        )


# -- aggregation (pure) -------------------------------------------------------------------------


def flatten_metrics(metrics: Mapping[str, Any]) -> dict[str, float | None]:
    """evaluate's metrics dict -> {"recall@10": .., "map@10": .., "head/recall@10": .., ...}."""
    flat = {key: value for key, value in metrics.items() if "@" in key and not isinstance(value, (dict, list))}
    for name, values in metrics.get("slices", {}).items():
        for key, value in values.items():
            if "@" in key:
                flat[f"{name}/{key}"] = value
    return flat


def mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (ddof=1; None with fewer than two values)."""
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    mean = math.fsum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1))


def aggregate(records: Sequence[Mapping[str, Any]], baseline: str | None = "baseline") -> list[dict[str, Any]]:
    """One row per (group, regime, metric): {"group", "config", "regime", "sweep", "metric",
    "mean", "std", "n", "relative"}; "relative" = mean / mean of the baseline group in the
    same regime - 1 (None for the baseline itself or when it is missing)."""
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for record in records:
        groups.setdefault((record["group"], record["regime"]), []).append(record)
    rows = []
    for (group, regime), members in groups.items():
        metrics = list(dict.fromkeys(key for m in members for key in m["metrics"]))
        for metric in metrics:
            mean, std = mean_std([m["metrics"].get(metric) for m in members])
            rows.append(
                {
                    "group": group,
                    "config": members[0]["config"],
                    "regime": regime,
                    "sweep": members[0]["sweep"],
                    "metric": metric,
                    "mean": mean,
                    "std": std,
                    "n": sum(m["metrics"].get(metric) is not None for m in members),
                    "relative": None,
                }
            )
    base = {(r["regime"], r["metric"]): r["mean"] for r in rows if r["group"] == baseline}
    for row in rows:
        reference = base.get((row["regime"], row["metric"]))
        if row["group"] != baseline and reference and row["mean"] is not None:
            row["relative"] = row["mean"] / reference - 1.0
    return rows


def format_cell(row: Mapping[str, Any] | None, digits: int = 4) -> str:
    """``0.2793 ± 0.0012 (+10.2%)``; ``-`` for a missing value; no ± with one seed."""
    if row is None or row["mean"] is None:
        return "-"
    text = f"{row['mean']:.{digits}f}"
    if row["std"] is not None:
        text += f" ± {row['std']:.{digits}f}"
    if row["relative"] is not None:
        text += f" ({row['relative']:+.1%})"
    return text


def _lookup(rows: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str, str], Mapping[str, Any]]:
    return {(r["group"], r["regime"], r["metric"]): r for r in rows}


def _markdown_table(header: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines)


def _ordered(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(values))


def markdown_tables(
    rows: Sequence[Mapping[str, Any]],
    groups: Sequence[str] | None = None,
    ablation: Sequence[str] | None = None,
    baseline: str = "baseline",
) -> str:
    """The paper's three tables from :func:`aggregate` rows.

    Overall: one row per group, per regime the columns Recall@10, Recall@50, MAP@10, MAP@50.
    Head / tail: per regime Recall@10 and Recall@50 on the head and on the tail.
    Ablation: Recall@50 per regime for ``ablation`` groups (default: the baseline and every
    group whose name starts with ``ssl``: the paper's masking / dropout variants).
    """
    table = _lookup(rows)
    groups = list(groups or _ordered(r["group"] for r in rows))
    regimes = [r for r in REGIMES if any(row["regime"] == r for row in rows)]
    if ablation is None:
        ablation = [g for g in groups if g == baseline or g.startswith("ssl")]
    parts = ["## Overall", ""]
    header = ["method"] + [
        f"{m.replace('recall', 'Recall').replace('map', 'MAP')} ({REGIME_TITLES[r]})"
        for r in regimes
        for m in OVERALL_METRICS
    ]
    body = [[g] + [format_cell(table.get((g, r, m))) for r in regimes for m in OVERALL_METRICS] for g in groups]
    parts += [_markdown_table(header, body), "", "## Head / tail", ""]
    header = ["method"] + [
        f"{m.split('/')[0]} Recall@{m.split('@')[1]} ({REGIME_TITLES[r]})" for r in regimes for m in SLICE_METRICS
    ]
    body = [[g] + [format_cell(table.get((g, r, m))) for r in regimes for m in SLICE_METRICS] for g in groups]
    parts += [_markdown_table(header, body), "", "## Ablation (Recall@50)", ""]
    header = ["variant"] + [f"Recall@50 ({REGIME_TITLES[r]})" for r in regimes]
    body = [[g] + [format_cell(table.get((g, r, ABLATION_METRIC))) for r in regimes] for g in ablation]
    parts += [_markdown_table(header, body), ""]
    parts += [
        "Cells: mean ± sample std over seeds (relative change vs the baseline, same regime). "
        "Head = the most frequent training items (see each run's metrics.json for the fraction).",
        "",
    ]
    return "\n".join(parts)


def results_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["group", "config", "regime", "sweep", "metric", "mean", "std", "n", "relative_vs_baseline"])
    for r in rows:
        sweep = ";".join(f"{k}={v}" for k, v in r["sweep"].items())
        writer.writerow(
            [
                r["group"],
                r["config"],
                r["regime"],
                sweep,
                r["metric"],
                *("" if r[k] is None else repr(float(r[k])) for k in ("mean", "std")),
                r["n"],
                "" if r["relative"] is None else repr(float(r["relative"])),
            ]
        )
    return out.getvalue()


def write_results(
    out_dir: str | pathlib.Path,
    records: Sequence[Mapping[str, Any]],
    grid: Mapping[str, Any],
    baseline: str = "baseline",
    plots: bool = True,
) -> dict[str, pathlib.Path]:
    """results.json, results.csv, results.md (+ PNG plots) under ``out_dir``."""
    from recsys_ssl import artifacts

    out_dir = pathlib.Path(out_dir)
    rows = aggregate(records, baseline)
    groups = _ordered(r["group"] for r in records)
    paths = {"json": out_dir / "results.json", "csv": out_dir / "results.csv", "md": out_dir / "results.md"}
    artifacts.write_text(
        paths["json"], json.dumps({"grid": dict(grid), "runs": list(records), "summary": rows}, indent=1) + "\n"
    )
    artifacts.write_text(paths["csv"], results_csv(rows))
    title = f"# Experiment {grid.get('name', '')}\n\n"
    if grid.get("head_fraction") is not None:
        title += (
            f"Head = the top {grid['head_fraction']:.0%} most frequent training items; seeds "
            f"{grid.get('seeds')}; configs {grid.get('configs')}.\n\n"
        )
    artifacts.write_text(paths["md"], title + markdown_tables(rows, groups, baseline=baseline))
    if plots:
        from recsys_ssl import plots as plotting

        paths.update(plotting.experiment_plots(rows, out_dir, baseline=baseline))
    return paths


# -- CLI ------------------------------------------------------------------------------------------


def parse_override(text: str) -> tuple[str, Any]:
    """``[REGIME:]FIELD=VALUE`` -> (field, value) (:func:`config.parse_override`); a ``10pct:`` or
    ``full:`` prefix scopes the override to that data regime's cells (e.g. ``10pct:train.epochs=40``)."""
    from recsys_ssl import config as cfg

    try:
        return cfg.parse_override(text, scopes=REGIMES, scope_name="REGIME")
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _parser() -> argparse.ArgumentParser:
    from recsys_ssl import evaluate  # TensorFlow loads only when a command runs

    parser = argparse.ArgumentParser(
        prog="recsys-ssl experiment",
        description="Train and evaluate methods x seeds x data regimes (resumable); write results.json, "
        "results.csv, results.md and plots under <run-dir>/experiments/<name>/.",
    )
    parser.add_argument("--run-dir", default=DEFAULT_RUN_DIR, help="the run folder (default: %(default)s)")
    parser.add_argument("--name", default="main", help="the experiment's name (its output folder)")
    parser.add_argument(
        "--configs",
        nargs="+",
        default=list(DEFAULT_CONFIGS),
        help="config names or files, one per method (default: the paper's main + ablation set)",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--regimes", nargs="+", default=list(REGIMES), choices=REGIMES)
    parser.add_argument(
        "--sweep",
        help="one field swept over values, e.g. ssl.alpha=0.1,0.3,1,3 or "
        "ssl.dropout_rate=0,0.1,0.3,0.5 (every config but the baseline)",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        type=parse_override,
        default=[],
        help="config override for every cell, e.g. --set train.steps=200 --set dataset=movielens/100k-user-item; "
        "the value is YAML (--set model.item_hidden=[512,128]); a REGIME: prefix scopes it to one "
        "data regime (--set 10pct:train.epochs=40)",
    )
    parser.add_argument("--baseline", default="baseline", help="the group relative changes are computed against")
    parser.add_argument("--ks", type=int, nargs="+", default=list(evaluate.DEFAULT_KS))
    parser.add_argument("--head-fraction", type=float, default=evaluate.PROTOCOL_HEAD_FRACTION)
    parser.add_argument("--data-dir", help="raw data root (MovieLens)")
    parser.add_argument("--no-plots", action="store_true")
    parser.add_argument("--quiet", action="store_true", help="one line per epoch instead of Keras progress bars")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)

    sweep = parse_sweep(args.sweep) if args.sweep else None
    cells = build_grid(args.configs, args.seeds, args.regimes, sweep, unswept=[args.baseline])
    options = {
        "overrides": dict(args.overrides),
        "ks": args.ks,
        "head_fraction": args.head_fraction,
        "raw_data_dir": args.data_dir,
        "verbose": 2 if args.quiet else "auto",
    }
    print(
        f"experiment {args.name}: {len(cells)} cells ({len(args.configs)} configs x "
        f"{len(sweep[1]) if sweep else 1} sweep values x {len(args.regimes)} regimes x {len(args.seeds)} seeds)"
    )
    records = run_grid(cells, args.run_dir, options=options)
    grid = {
        "name": args.name,
        "configs": args.configs,
        "seeds": args.seeds,
        "regimes": args.regimes,
        "sweep": list(sweep) if sweep else None,
        "overrides": dict(args.overrides),
        "baseline": args.baseline,
        "ks": args.ks,
        "head_fraction": args.head_fraction,
    }
    out_dir = pathlib.Path(args.run_dir) / "experiments" / args.name
    paths = write_results(out_dir, records, grid, baseline=args.baseline, plots=not args.no_plots)
    print((out_dir / "results.md").read_text())
    for kind, path in paths.items():
        print(f"wrote {kind}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
