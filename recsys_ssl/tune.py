"""``recsys-ssl tune``: a resumable hyper-parameter search on the validation carve-out.

    recsys-ssl tune --dataset frappe --config baseline --trials 40 [--data-fraction 10pct]
        [--run-dir R] [--timeout S] [--max-epochs 30] [--set k=v] [--space main.temperature=0.05:0.5]

One Optuna study per (dataset, config, data regime). Every trial trains on ``<dataset>-val``
(the train split minus the validation carve-out, see ``recsys_ssl.datasets.inputs``) with early
stopping on exact validation Recall@50 (``recsys_ssl.callbacks.ValidationRecall``); the test
split is never read. Sampler: TPE (seeded); pruner: median over the per-epoch validation
recall (a trial below the median of earlier trials at the same epoch stops early). The
search space is one table, :data:`SPACE`: the baseline's knobs for every method, plus each
method's own (alpha, d_r, SSL temperature and batch, CFM group size, masked embedding, FD
rates); every method gets the same ``--trials`` budget.

Layout (under ``--run-dir``)::

    tune/<config>[-10pct]/study.sqlite3   the Optuna study (a killed study resumes from it)
    tune/<config>[-10pct]/tune_report.md  best trial, parameter importances, validation curve, all trials
    tune/<config>[-10pct]/validation_curves.png  every trial's per-epoch validation recall, the best bold
    tuned/<config>[-10pct].yaml           the best trial as a complete config on the base dataset,
                                          train.epochs = the best trial's best epoch: what
                                          ``train --config`` and ``experiment --configs`` take as is

Resuming: the same command continues until ``--trials`` trials have finished (complete or
pruned). A trial that was running when its process died is marked FAIL (never counted); a
study database that belongs to another dataset / config / regime is refused.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import pathlib
import shutil
import sys
from typing import Any, Callable

import numpy as np

from recsys_ssl import config as cfg
from recsys_ssl.paths import DEFAULT_RUN_DIR, RunLayout

log = logging.getLogger("recsys_ssl.tune")

METRIC_K = 50
DEFAULT_MAX_EPOCHS = 30


@dataclasses.dataclass(frozen=True)
class Knob:
    """One searchable knob: ``kind`` log (log-uniform), float, int, or choice.

    limits: the values the knob may ever take (a ``--space`` override must stay inside).
    applies: which configs read it (None: all). ``field`` is a config field, or one of the
    tower-shape knobs ``model.hidden_width`` / ``model.embedding_dim`` (both towers' first /
    last widths).
    """

    field: str
    kind: str
    low: float | None = None
    high: float | None = None
    choices: tuple = ()
    limits: tuple[float, float] | None = None
    applies: Callable[[cfg.ExperimentConfig], bool] | None = None

    def reads(self, config: cfg.ExperimentConfig) -> bool:
        return self.applies is None or self.applies(config)


# Which methods read a knob: from the method's and augmentation's registry entries.
def _ssl_or_so(c):
    return c.uses_ssl_batch


def _masking(c):
    return c.masks_item_features


def _dropout(c):
    return c.ssl_drops_values


def _cfm(c):
    return c.needs_cfm_groups


def _fd(c):
    return c.method_entry.main_feature_dropout


# The search space: the baseline's knobs (every method), then the methods' own.
# main.mixed_negatives is not searched: with it in the space a 40-trial Frappe study's best
# validation Recall@50 fell from .4808 to .463 (docs/tuning.md); fix it with --set instead.
SPACE: tuple[Knob, ...] = (
    Knob("train.learning_rate", "log", 0.01, 0.5, limits=(1e-5, 10.0)),
    Knob("train.optimizer", "choice", choices=("adagrad", "adam")),
    Knob("train.batch_size", "choice", choices=(32, 64, 128, 256, 512)),
    Knob("main.temperature", "log", 0.03, 1.0, limits=(1e-3, 10.0)),
    Knob("main.logq_weight", "float", 0.0, 1.0, limits=(0.0, 10.0)),
    Knob("model.hidden_width", "choice", choices=(128, 256, 512)),
    Knob("model.embedding_dim", "choice", choices=(32, 64, 128)),
    Knob("model.embedding_scale", "choice", choices=(0.5, 1.0, 2.0)),  # the spec's feature embedding widths
    Knob("train.ema_momentum", "choice", choices=(0.0, 0.98, 0.99, 0.999)),  # weight averaging; 0: off (None)
    Knob("ssl.alpha", "log", 0.01, 3.0, limits=(1e-4, 100.0), applies=_ssl_or_so),
    Knob("ssl.temperature", "log", 0.03, 1.0, limits=(1e-3, 10.0), applies=_ssl_or_so),
    Knob("ssl.batch_size", "choice", choices=(64, 128, 256, 512), applies=_ssl_or_so),
    Knob("ssl.dropout_rate", "float", 0.0, 0.6, limits=(0.0, 0.95), applies=_dropout),
    Knob("ssl.cfm_group_size", "int", 1, None, limits=(1, 1000), applies=_cfm),  # high: k - 1
    Knob("ssl.cfm_grouping", "choice", choices=("plugin", "adjusted", "normalized"), applies=_cfm),
    Knob(
        "ssl.id_views", "choice", choices=("split", "both", "none"), applies=lambda c: c.augmentation_entry is not None
    ),
    Knob("model.masked_embedding", "choice", choices=("learned", "zeros"), applies=_masking),
    Knob("fd.mask_rate", "float", 0.0, 0.6, limits=(0.0, 0.95), applies=_fd),
    Knob("fd.dropout_rate", "float", 0.0, 0.6, limits=(0.0, 0.95), applies=_fd),
)


class TuneError(ValueError):
    """Bad tuning input (a space entry, a foreign study database); one line for the CLI."""


def parse_space_override(text: str) -> tuple[str, float, float]:
    """``FIELD=LOW:HIGH`` -> (field, low, high) for a numeric knob of :data:`SPACE`."""
    field, sep, bounds = text.partition("=")
    low, colon, high = bounds.partition(":")
    try:
        if not sep or not colon:
            raise ValueError
        return field, float(low), float(high)
    except ValueError:
        raise TuneError(f"--space {text!r}: expected FIELD=LOW:HIGH, e.g. main.temperature=0.05:0.5") from None


def search_space(
    config: cfg.ExperimentConfig,
    num_pairs: int,
    num_items: int,
    num_item_features: int,
    overrides: list[tuple[str, float, float]] = (),
) -> list[Knob]:
    """The knobs ``config``'s method reads, with choices that fit the catalog and ``--space`` bounds."""
    knobs = {k.field: k for k in SPACE if k.reads(config)}
    for field, low, high in overrides:
        knob = knobs.get(field) or next((k for k in SPACE if k.field == field), None)
        if knob is None:
            raise TuneError(f"--space {field}: unknown knob; searchable: {[k.field for k in SPACE]}")
        if field not in knobs:
            raise TuneError(f"--space {field}: config {config.name!r} ({config.method}) does not read it")
        if knob.kind == "choice":
            raise TuneError(f"--space {field}: a choice knob ({list(knob.choices)}); fix it with --set instead")
        lo_limit, hi_limit = knob.limits
        if not (lo_limit <= low < high <= hi_limit) or (knob.kind == "log" and low <= 0):
            raise TuneError(
                f"--space {field}={low}:{high}: outside its range [{lo_limit}, {hi_limit}] (or low >= high)"
            )
        knobs[field] = dataclasses.replace(knob, low=low, high=high)
    out = []
    for knob in knobs.values():
        if knob.field == "train.batch_size":  # at least ~10 steps per epoch
            fit = tuple(c for c in knob.choices if c <= max(16, num_pairs // 10)) or (16,)
            knob = dataclasses.replace(knob, choices=fit)
        elif knob.field == "ssl.batch_size":  # a uniform item batch must fit in the corpus
            fit = tuple(c for c in knob.choices if c <= num_items // 2) or (max(2, num_items // 2),)
            knob = dataclasses.replace(knob, choices=fit)
        elif knob.field == "ssl.cfm_group_size":
            if num_item_features < 3:
                continue  # one group size only: nothing to search
            knob = dataclasses.replace(knob, high=num_item_features - 1 if knob.high is None else knob.high)
        out.append(knob)
    return out


def sample(trial, knobs: list[Knob]) -> dict[str, Any]:
    """One point of the space from an Optuna trial: {field: value}."""
    params = {}
    for knob in knobs:
        if knob.kind == "choice":
            params[knob.field] = trial.suggest_categorical(knob.field, list(knob.choices))
        elif knob.kind == "int":
            params[knob.field] = trial.suggest_int(knob.field, int(knob.low), int(knob.high))
        else:
            params[knob.field] = trial.suggest_float(knob.field, knob.low, knob.high, log=knob.kind == "log")
    return params


# Knobs whose "off" is None in the config and 0 in the search space (Optuna's choices stay numbers).
OFF_IS_ZERO = ("train.ema_momentum",)


def warm_start_params(
    knobs: list[Knob], warm: cfg.ExperimentConfig, base: cfg.ExperimentConfig, overrides: dict[str, Any]
) -> dict[str, Any]:
    """A first trial's params from a known-good config (e.g. the tuned baseline for an SSL study).

    Each knob takes ``warm``'s value when ``warm``'s method reads it, else ``base``'s (the
    study's config), then ``overrides`` (e.g. a small ``ssl.alpha``); values outside a knob's
    range or choices are left to the sampler.
    """
    params = {}
    for knob in knobs:
        source = warm if knob.reads(warm) else base
        value = overrides.get(knob.field, _field_value(source, knob.field))
        if knob.field in OFF_IS_ZERO and value is None:
            value = 0.0
        if value is None:
            continue
        if knob.kind == "choice":
            if value in knob.choices:
                params[knob.field] = value
        elif knob.low <= float(value) <= knob.high:
            params[knob.field] = int(value) if knob.kind == "int" else float(value)
    return params


def _field_value(config: cfg.ExperimentConfig, field: str) -> Any:
    if field == "model.hidden_width":
        return config.model.item_hidden[0]
    if field == "model.embedding_dim":
        return config.model.item_hidden[-1]
    section, _, name = field.partition(".")
    return getattr(getattr(config, section), name)


def apply_params(config: cfg.ExperimentConfig, params: dict[str, Any]) -> cfg.ExperimentConfig:
    """``config`` with sampled params; the tower-shape knobs set both towers' [hidden, embedding] widths,
    an :data:`OFF_IS_ZERO` knob's 0 is None (off)."""
    fields = {k: v for k, v in params.items() if k not in ("model.hidden_width", "model.embedding_dim")}
    fields.update({k: None for k in OFF_IS_ZERO if k in fields and not fields[k]})
    if "model.hidden_width" in params or "model.embedding_dim" in params:
        hidden = params.get("model.hidden_width", config.model.item_hidden[0])
        embedding = params.get("model.embedding_dim", config.model.item_hidden[-1])
        fields["model.query_hidden"] = fields["model.item_hidden"] = [int(hidden), int(embedding)]
    return cfg.with_overrides(config, fields, source="tune")


# -- the study ------------------------------------------------------------------------------------


def study_dir(run_dir, config_name: str, regime: str) -> pathlib.Path:
    return RunLayout(run_dir).root / "tune" / (config_name + ("-10pct" if regime == "10pct" else ""))


def tuned_path(run_dir, config_name: str, regime: str) -> pathlib.Path:
    return RunLayout(run_dir).root / "tuned" / (config_name + ("-10pct" if regime == "10pct" else "") + ".yaml")


def open_study(path: pathlib.Path, study_name: str, seed: int):
    """The study at ``path`` (created if new); refuses a database holding another study."""
    import optuna

    path.parent.mkdir(parents=True, exist_ok=True)
    storage = f"sqlite:///{path}"
    if path.exists():
        names = optuna.study.get_all_study_names(storage)
        family = study_name.split(":")[:3]  # dataset, config, regime (a ":Nseeds" study shares the file)
        if names and not any(name.split(":")[:3] == family for name in names):
            raise TuneError(
                f"{path} holds study {names[0]!r}, not {study_name!r}: it belongs to another "
                "dataset/config/regime; pass another --run-dir or delete it"
            )
    return optuna.create_study(
        storage=storage,
        study_name=study_name,
        direction="maximize",
        load_if_exists=True,
        sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=8),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=2),
    )


def fail_interrupted(study) -> int:
    """Marks trials left RUNNING by a killed process as FAIL (never counted); returns how many."""
    from optuna.trial import TrialState

    stale = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.RUNNING]
    for trial in stale:
        study._storage.set_trial_user_attr(trial._trial_id, "fail_reason", "interrupted: its process died")
        study.tell(trial.number, state=TrialState.FAIL)
    return len(stale)


def finished(study) -> int:
    from optuna.trial import TrialState

    return sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.get_trials(deepcopy=False))


@dataclasses.dataclass
class Tuning:
    """One tuning job: the base config (regime applied), the validation data, the space."""

    config: cfg.ExperimentConfig
    run_dir: str
    max_epochs: int
    knobs: list[Knob]
    data: Any  # train.TrainingData of <dataset>-val, loaded once for all trials
    verbose: int = 0
    seeds_per_trial: int = 1

    def objective(self, trial) -> float:
        """The mean over ``seeds_per_trial`` training seeds of the best validation recall.

        One seed's recall on a small carve-out is partly noise, which a single-seed study
        then selects for; the pruner watches the first seed's curve only.
        """
        params = sample(trial, self.knobs)
        config = apply_params(self.config, params)
        config = cfg.replace(config, train={"epochs": self.max_epochs, "steps": None, "early_stopping": True})
        summaries = []
        for offset in range(self.seeds_per_trial):
            seeded = cfg.replace(config, top={"seed": self.config.seed + offset})
            summaries.append(self._train_one(trial, seeded, offset, prune=offset == 0))
        values = [s["best_recall"] for s in summaries]
        trial.set_user_attr("best_epoch", int(round(float(np.median([s["best_epoch"] for s in summaries])))))
        trial.set_user_attr("tail_recall", float(np.mean([s["best_tail_recall"] for s in summaries])))
        trial.set_user_attr("curve", summaries[0]["curve"])
        trial.set_user_attr("batch_size", summaries[0]["batch_size"])
        if self.seeds_per_trial > 1:
            trial.set_user_attr("seed_values", values)
        return float(np.mean(values))

    def _train_one(self, trial, config: cfg.ExperimentConfig, offset: int, prune: bool) -> dict:
        import optuna

        from recsys_ssl import train
        from recsys_ssl.tf_setup import tf

        name = f"tune-{self.config.name}-{self.config.train.data_fraction}-{trial.number:04d}-{offset}"

        def report(epoch: int, value: float) -> None:
            if not prune:
                return
            trial.report(value, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"validation recall@{METRIC_K} {value:.4f} below the median at epoch {epoch}")

        tf.keras.backend.clear_session()
        try:
            # A trial is deleted when it ends and never resumed (a killed trial is marked failed):
            # it skips backups, checkpoints and TensorBoard logs.
            manifest = train.run(
                config, self.run_dir, self.data, name=name, verbose=self.verbose, report=report, durable=False
            )
        finally:
            shutil.rmtree(RunLayout(self.run_dir).train(name), ignore_errors=True)
        return {**manifest["early_stopping"], "batch_size": manifest["config"]["train"]["batch_size"]}


def tuned_config(tuning: Tuning, best, dataset: str) -> cfg.ExperimentConfig:
    """The best trial as a complete config on the base dataset (epochs = its best epoch)."""
    config = apply_params(tuning.config, best.params)
    train = {"epochs": int(best.user_attrs.get("best_epoch") or tuning.max_epochs), "steps": None}
    if config.train.batch_size is None:
        train["batch_size"] = int(best.user_attrs["batch_size"])
    return cfg.replace(config, top={"dataset": dataset}, train=train)


def report_markdown(study, tuning: Tuning, tuned: cfg.ExperimentConfig, yaml_path: pathlib.Path) -> str:
    """tune_report.md: the best trial, parameter importances, its validation curve, every trial."""
    import optuna
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    best = study.best_trial
    states = {
        s.name: sum(t.state == s for t in trials) for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    }
    tail = best.user_attrs.get("tail_recall")
    lines = [
        f"# Tuning report: {study.study_name}",
        "",
        f"Trials: {len(trials)} ({', '.join(f'{v} {k.lower()}' for k, v in states.items())}); objective: "
        f"validation Recall@{METRIC_K} (exact, full corpus), early stopping patience "
        f"{tuning.config.train.early_stopping_patience}, at most {tuning.max_epochs} epochs.",
        "",
        f"## Best trial: #{best.number}",
        "",
        f"validation Recall@{METRIC_K} **{best.value:.4f}**, tail {'-' if tail is None else f'{tail:.4f}'}, "
        f"best epoch {best.user_attrs.get('best_epoch')}; tuned config: `{yaml_path}`",
        "",
        "| knob | value |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in best.params.items()]
    lines += ["", "## Parameter importances (PED-ANOVA over the finished trials)", ""]
    try:
        importances = optuna.importance.get_param_importances(study)
        lines += ["| knob | importance |", "|---|---|"] + [f"| {k} | {v:.3f} |" for k, v in importances.items()]
    except (RuntimeError, ValueError, ZeroDivisionError) as error:  # too few finished trials
        lines.append(f"(not available: {error})")
    lines += ["", f"## Validation curve of trial #{best.number}", "", "| epoch | Recall@50 |", "|---|---|"]
    lines += [f"| {e} | {v:.4f} |" for e, v in best.user_attrs.get("curve", [])]
    lines += ["", "## All trials", "", "| # | state | value | best epoch | params |", "|---|---|---|---|---|"]
    for t in trials:
        value = f"{t.value:.4f}" if t.value is not None else "-"
        params = ", ".join(
            f"{k.split('.')[-1]}={v:.3g}" if isinstance(v, float) else f"{k.split('.')[-1]}={v}"
            for k, v in t.params.items()
        )
        lines.append(
            f"| {t.number} | {t.state.name.lower()} | {value} | {t.user_attrs.get('best_epoch', '-')} | {params} |"
        )
    return "\n".join(lines) + "\n"


# -- CLI ------------------------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="recsys-ssl tune",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 2)[2],
    )
    parser.add_argument("--dataset", required=True, help="the dataset to tune for (trials read <dataset>-val)")
    parser.add_argument("--config", required=True, help="the method's config (data/configs/<name>.yaml, or a file)")
    parser.add_argument(
        "--data-fraction", choices=cfg.DATA_FRACTIONS, default="full", help="data regime (default full)"
    )
    parser.add_argument("--trials", type=int, default=40, help="finished trials the study should reach (default 40)")
    parser.add_argument("--timeout", type=float, help="stop starting new trials after this many seconds")
    parser.add_argument(
        "--max-epochs",
        type=int,
        default=DEFAULT_MAX_EPOCHS,
        help=f"epochs per trial at most; early stopping usually ends sooner (default {DEFAULT_MAX_EPOCHS})",
    )
    parser.add_argument(
        "--run-dir",
        default=DEFAULT_RUN_DIR,
        help=f"the run's folder (default {DEFAULT_RUN_DIR}); its stats/ (and mi/ for CFM) must be of --dataset",
    )
    parser.add_argument("--data-dir", help="raw data root (MovieLens, frappe)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="fixed config override for every trial (as train --set)",
    )
    parser.add_argument(
        "--space",
        action="append",
        default=[],
        metavar="FIELD=LOW:HIGH",
        help="narrow or widen a numeric knob's range (inside its limits)",
    )
    _add_study_arguments(parser)
    return parser.parse_args(argv)


def _add_study_arguments(parser: argparse.ArgumentParser) -> None:
    """Seeds, multi-seed scoring and warm starts, verbosity."""
    parser.add_argument("--seed", type=int, default=0, help="the sampler's seed and every trial's first training seed")
    parser.add_argument(
        "--seeds-per-trial",
        type=int,
        default=1,
        help="score each trial as the mean over this many training seeds (default 1; a separate study)",
    )
    parser.add_argument(
        "--warm-start",
        default=None,
        metavar="CONFIG",
        help="enqueue a first trial at this config's values (e.g. tuned/baseline.yaml for an SSL study)",
    )
    parser.add_argument(
        "--warm-start-set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override a value of the warm-start trial (e.g. ssl.alpha=0.05)",
    )
    parser.add_argument(
        "--verbose", action="store_true", help="Keras progress per trial (default: the study's bar only)"
    )


def _base_config(args: argparse.Namespace) -> tuple[cfg.ExperimentConfig, list]:
    """The study's config (the method's, regime and ``--set`` applied) and the ``--space`` overrides;
    bad flags raise :class:`TuneError` / ``ValueError`` in one line."""
    if args.trials < 1:
        raise TuneError(f"--trials must be at least 1, got {args.trials}")
    if args.max_epochs < 1 or args.seeds_per_trial < 1:
        raise TuneError(
            f"--max-epochs and --seeds-per-trial must be at least 1, got {args.max_epochs} and {args.seeds_per_trial}"
        )
    space_overrides = [parse_space_override(text) for text in args.space]
    fixed = [cfg.parse_override(text) for text in args.overrides]
    base = cfg.load_config(args.config)
    base = cfg.with_overrides(
        base, [("dataset", args.dataset), ("seed", args.seed), ("train.data_fraction", args.data_fraction)] + fixed
    )
    searched = {f for f, _, _ in space_overrides}
    clash = sorted({f for f, _ in fixed} & ({k.field for k in SPACE} | searched))
    if clash:
        log.warning("--set %s: fixed knobs are searched anyway unless removed from the space", clash)
    return base, space_overrides


def main(argv: list[str] | None = None) -> int:
    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    base, space_overrides = _base_config(args)

    import optuna

    from recsys_ssl import train
    from recsys_ssl.datasets import inputs

    dataset = inputs.base_name(args.dataset)
    val_config = cfg.replace(base, top={"dataset": dataset + inputs.VALIDATION_SUFFIX})
    data = train.load_training_data(val_config, args.run_dir, raw_data_dir=args.data_dir)
    if data.validation is None:
        raise TuneError(f"{val_config.dataset}: no validation carve-out to tune on (is train.early_stopping off?)")
    knobs = search_space(base, data.num_pairs, data.num_items, len(data.spec.item_features), space_overrides)
    tuning = Tuning(
        val_config,
        args.run_dir,
        args.max_epochs,
        knobs,
        data,
        verbose=2 if args.verbose else 0,
        seeds_per_trial=args.seeds_per_trial,
    )

    directory = study_dir(args.run_dir, base.name, args.data_fraction)
    seeds = f":{args.seeds_per_trial}seeds" if args.seeds_per_trial > 1 else ""  # another objective: another study
    study = open_study(directory / "study.sqlite3", f"{dataset}:{base.name}:{args.data_fraction}{seeds}", args.seed)
    study.set_user_attr("space", [k.field for k in knobs])
    _enqueue_warm_start(study, knobs, base, args)
    interrupted = fail_interrupted(study)
    done = finished(study)
    print(
        f"tune {study.study_name}: {done} of {args.trials} trials finished"
        + (f", {interrupted} interrupted trial(s) marked failed" if interrupted else "")
        + f"; space: {', '.join(k.field for k in knobs)}"
    )
    if done < args.trials:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study.optimize(
            tuning.objective,
            n_trials=args.trials - done,
            timeout=args.timeout,
            show_progress_bar=True,
            catch=(ValueError,),
            gc_after_trial=True,
        )
    if not any(t.value is not None for t in study.get_trials(deepcopy=False)):
        raise TuneError(f"study {study.study_name}: no finished trial yet (see {directory})")
    _write_results(study, tuning, base, dataset, args, directory)
    return 0


def _enqueue_warm_start(study, knobs: list[Knob], base: cfg.ExperimentConfig, args: argparse.Namespace) -> None:
    """``--warm-start``: the study's first trial at a known-good config (once per study)."""
    if not args.warm_start:
        if args.warm_start_set:
            raise TuneError("--warm-start-set needs --warm-start")
        return
    overrides = dict(cfg.parse_override(text) for text in args.warm_start_set)
    params = warm_start_params(knobs, cfg.load_config(args.warm_start), base, overrides)
    study.enqueue_trial(params, skip_if_exists=True)
    print(f"tune: warm start from {args.warm_start}: {params}")


def _write_results(
    study, tuning: Tuning, base: cfg.ExperimentConfig, dataset: str, args: argparse.Namespace, directory: pathlib.Path
) -> None:
    """The best trial's complete config (YAML), the report and the validation curves; says where."""
    best = study.best_trial
    tuned = tuned_config(tuning, best, dataset)
    yaml_path = tuned_path(args.run_dir, base.name, args.data_fraction)
    yaml_path.parent.mkdir(parents=True, exist_ok=True)
    yaml_path.write_text(
        f"# Tuned by `recsys-ssl tune` (study {study.study_name}, trial #{best.number}, validation "
        f"Recall@{METRIC_K} {best.value:.4f}); a complete config.\n" + cfg.to_yaml(tuned)
    )
    report_path = directory / "tune_report.md"
    report_path.write_text(report_markdown(study, tuning, tuned, yaml_path))
    from recsys_ssl import plots

    # Optuna keeps every reported epoch, of pruned trials too.
    curves = {t.number: sorted(t.intermediate_values.items()) for t in study.get_trials(deepcopy=False)}
    plots.plot_validation_curves(curves, best.number, directory / "validation_curves.png", title=study.study_name)
    tail = best.user_attrs.get("tail_recall")
    print(
        f"best trial #{best.number}: validation recall@{METRIC_K} {best.value:.4f} "
        f"(tail {'-' if tail is None else f'{tail:.4f}'}, epoch {best.user_attrs.get('best_epoch')}) "
        f"{json.dumps(best.params, default=str)}"
    )
    print(f"wrote {yaml_path}\nwrote {report_path}")


if __name__ == "__main__":
    sys.exit(main())
