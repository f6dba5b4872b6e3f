"""The equal-tuning grid of issue 15 (item 6), resumable across machines and sessions.

For one dataset: for each data regime and each method, one ``recsys-ssl tune`` study with the
same ``--trials`` budget, then the tuned config on test for every seed (``recsys-ssl
experiment``). When every method of a regime has all its seeds, the regime's table is written.

The grid is hours of CPU (a Frappe trial is ~50 s on 2 cores; 7 methods x 2 regimes x 3
datasets), more than one session or machine. So every finished piece is copied into
``--results`` (committed), and copied back into ``--run-dir`` before the next command needs
it: a later run on a fresh clone, with no ``runs/``, continues where the last one stopped.
A finished study is not rerun, a finished cell is not retrained, and a study cut off by
``--minutes`` resumes from its SQLite database (Optuna marks the cut trial failed, never
counts it).

Layout of ``--results`` (everything small; no checkpoints)::

    tune/<config>[-10pct]/study.sqlite3   the Optuna study (the resume point)
    tune/<config>[-10pct]/tune_report.md  best trial, importances, curves (tune's own report)
    tuned/<config>[-10pct].yaml           the tuned config that the test cells train
    eval/<cell>/metrics.json              each test cell's metrics (experiment's own file)
    grid_<regime>/results.{md,csv,json}   the regime's table, once every cell has run

Usage (the commands of ``bench/results/equal_tuning/README.md``)::

    python bench/equal_tuning.py --dataset frappe --results bench/results/equal_tuning/frappe \\
        --run-dir runs/grid_frappe --trials 12 --seeds 0 1 2 3 4 --minutes 90
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
import shutil
import subprocess
import sys
import time

# The methods of issue 15's grid (shipped configs; CFM's grouping and id placement are knobs
# of the study, so its best option is the tuner's pick).
METHODS = (
    "baseline",
    "fd",
    "so",
    "ssl_rfm",
    "ssl_cfm",
    "ssl_rfm_no_complement",
    "ssl_dropout_only",
)
REGIMES = ("10pct", "full")  # 10% first: the paper's claim is about sparse supervision


def study_key(config: str, regime: str) -> str:
    """``tune``'s own naming: ``<config>`` for full data, ``<config>-10pct`` for 10%."""
    return config + ("-10pct" if regime == "10pct" else "")


def cell_name(config: str, regime: str, seed: int) -> str:
    """``experiment``'s name for a test cell of the tuned config: its group is the config file's
    stem (``tuned/<config>[-10pct].yaml``), then the regime and seed (``experiment.Cell``)."""
    return f"{study_key(config, regime)}-{regime}-seed{seed}"


@dataclasses.dataclass(frozen=True)
class Pieces:
    """Where one (config, regime)'s pieces live under a root (the run dir or the results)."""

    root: pathlib.Path

    def study(self, config: str, regime: str) -> pathlib.Path:
        return self.root / "tune" / study_key(config, regime)

    def tuned(self, config: str, regime: str) -> pathlib.Path:
        return self.root / "tuned" / (study_key(config, regime) + ".yaml")

    def metrics(self, config: str, regime: str, seed: int) -> pathlib.Path:
        return self.root / "eval" / cell_name(config, regime, seed) / "metrics.json"

    def files(self, config: str, regime: str, seeds) -> list[pathlib.Path]:
        """Every committed piece of one (config, regime), relative to the root."""
        study = self.study(config, regime)
        out = [study / name for name in ("study.sqlite3", "tune_report.md", "validation_curves.png")]
        out.append(self.tuned(config, regime))
        out += [self.metrics(config, regime, s) for s in seeds]
        return [p.relative_to(self.root) for p in out]


def copy_pieces(source: Pieces, target: Pieces, config: str, regime: str, seeds) -> list[str]:
    """Copies the pieces ``source`` has and ``target`` lacks or holds older; returns them.

    Newer-wins keeps a run dir's study (which grew since its last save) from being rolled
    back by the results' copy, and the reverse when saving.
    """
    copied = []
    for relative in source.files(config, regime, seeds):
        src, dst = source.root / relative, target.root / relative
        if not src.exists():
            continue
        if dst.exists() and dst.stat().st_mtime >= src.stat().st_mtime:
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)
        copied.append(str(relative))
    return copied


def finished_trials(study_db: pathlib.Path) -> int:
    """COMPLETE + PRUNED trials in a study database (0 when there is none)."""
    if not study_db.exists():
        return 0
    import optuna

    from recsys_ssl.tune import finished

    storage = f"sqlite:///{study_db}"
    names = optuna.study.get_all_study_names(storage)
    return max((finished(optuna.load_study(study_name=n, storage=storage)) for n in names), default=0)


@dataclasses.dataclass
class Grid:
    dataset: str
    run: Pieces
    results: Pieces
    methods: tuple[str, ...]
    regimes: tuple[str, ...]
    seeds: tuple[int, ...]
    trials: int
    max_epochs: int
    deadline: float  # time.monotonic() after which nothing new starts
    data_dir: str | None = None

    def cli(self, *args: str, timeout: float | None = None) -> int:
        """``recsys-ssl ...`` from this interpreter's venv, its output on ours; stopped at ``timeout``."""
        command = [str(pathlib.Path(sys.executable).with_name("recsys-ssl")), *args]
        print("$", " ".join(command), flush=True)
        process = subprocess.Popen(command)
        try:
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()  # the deadline: tune marks the cut trial failed on the next run
            process.wait()
            return -9

    def data_flag(self) -> list[str]:
        return ["--data-dir", self.data_dir] if self.data_dir else []

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def timeout(self, slack: float = 0.0) -> float | None:
        """Seconds a command may run before the deadline (None: no deadline)."""
        return None if self.deadline == float("inf") else max(1.0, self.left() + slack)

    def prepare(self) -> None:
        """The run dir's statistics and MI (the vocabularies, logQ frequencies and CFM groups)."""
        extra = self.data_flag()
        stages = [("data", "tfds", []), ("stats", "stats", []), ("mi", "mi", [])]
        if "10pct" in self.regimes:  # the 10% regime's own item frequencies (issue 15, item 3)
            stages.append(("stats", "stats_10pct", ["--split", "train_10pct"]))
        for stage, marker, flags in stages:
            if not (self.run.root / marker).exists():
                args = [stage, "--dataset", self.dataset, "--run-dir", str(self.run.root), *flags]
                if self.cli(*args, *extra) != 0:
                    raise SystemExit(f"equal_tuning: `recsys-ssl {' '.join(args)}` failed")

    def save(self, config: str, regime: str) -> None:
        saved = copy_pieces(self.run, self.results, config, regime, self.seeds)
        if saved:
            print(f"saved to {self.results.root}: {', '.join(saved)}", flush=True)

    def tune(self, config: str, regime: str) -> bool:
        """Runs or resumes the study; True once it has ``--trials`` finished trials."""
        db = self.run.study(config, regime) / "study.sqlite3"
        if finished_trials(db) >= self.trials and self.run.tuned(config, regime).exists():
            return True
        if self.left() < 60:
            return False
        self.cli(
            "tune", "--dataset", self.dataset, "--config", config, "--data-fraction", regime,
            "--trials", str(self.trials), "--max-epochs", str(self.max_epochs), "--run-dir", str(self.run.root),
            *([] if self.timeout() is None else ["--timeout", str(int(self.timeout()))]),
            *self.data_flag(),
            timeout=self.timeout(600),  # a trial started before tune's --timeout may finish
        )  # fmt: skip
        return finished_trials(db) >= self.trials

    def test(self, config: str, regime: str) -> bool:
        """Trains the tuned config on test for every seed; True once every cell has metrics."""
        missing = [s for s in self.seeds if not self.run.metrics(config, regime, s).exists()]
        if missing and self.left() > 60:
            self.cli(
                "experiment", "--run-dir", str(self.run.root), "--name", f"grid_{study_key(config, regime)}",
                "--configs", str(self.run.tuned(config, regime)), "--regimes", regime,
                "--seeds", *map(str, self.seeds), *self.data_flag(),
                timeout=self.timeout(),
            )  # fmt: skip
        return all(self.run.metrics(config, regime, s).exists() for s in self.seeds)

    def table(self, regime: str) -> None:
        """Every method's cells exist: the regime's table (experiment reads the cells back)."""
        name = f"grid_{regime}"
        configs = [str(self.run.tuned(m, regime)) for m in self.methods]
        args = ["experiment", "--run-dir", str(self.run.root), "--name", name, "--configs", *configs]
        if self.cli(*args, "--regimes", regime, "--seeds", *map(str, self.seeds), *self.data_flag()) == 0:
            out = self.results.root / name
            out.mkdir(parents=True, exist_ok=True)
            for path in (self.run.root / "experiments" / name).iterdir():
                if path.suffix in (".md", ".csv", ".json", ".png"):
                    shutil.copy2(path, out / path.name)
            print(f"wrote {out}", flush=True)

    def run_all(self) -> bool:
        """Everything the deadline allows, in order; True when the whole grid is done."""
        for config in self.methods:
            for regime in self.regimes:
                copy_pieces(self.results, self.run, config, regime, self.seeds)
        self.prepare()
        complete = True
        for regime in self.regimes:
            regime_done = True
            for config in self.methods:
                done = self.tune(config, regime) and self.test(config, regime)
                self.save(config, regime)  # also what an earlier, interrupted run left in the run dir
                regime_done = regime_done and done
                print(f"grid {self.dataset} {study_key(config, regime)}: {'done' if done else 'not done'}", flush=True)
            if regime_done:
                self.table(regime)
            complete = complete and regime_done
        return complete


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", required=True, help="as `recsys-ssl tune --dataset`")
    parser.add_argument("--results", required=True, type=pathlib.Path, help="the committed copy (see the layout)")
    parser.add_argument("--run-dir", required=True, type=pathlib.Path, help="the working run dir")
    parser.add_argument("--data-dir", default=None, help="raw data root (MovieLens, frappe)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--regimes", nargs="+", default=list(REGIMES), choices=REGIMES)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--trials", type=int, default=12, help="finished trials per study (every method the same)")
    parser.add_argument("--max-epochs", type=int, default=20, help="as `tune --max-epochs`")
    parser.add_argument("--minutes", type=float, default=None, help="start nothing new after this many minutes")
    args = parser.parse_args(argv)
    if args.trials < 1:
        parser.error(f"--trials {args.trials}: must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    deadline = time.monotonic() + (args.minutes * 60 if args.minutes else float("inf"))
    grid = Grid(
        args.dataset,
        Pieces(args.run_dir),
        Pieces(args.results),
        tuple(args.methods),
        tuple(args.regimes),
        tuple(args.seeds),
        args.trials,
        args.max_epochs,
        deadline,
        args.data_dir,
    )
    complete = grid.run_all()
    scope = f"{args.dataset}, {' and '.join(args.regimes)} data"
    print(f"equal_tuning {scope}: {'complete' if complete else 'stopped before the end; rerun to continue'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
