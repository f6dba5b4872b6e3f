"""Keras callbacks of training that read the validation carve-out.

:class:`ValidationRecall` is early stopping on exact full-corpus Recall@K: after every epoch it
embeds the corpus and the validation queries with the model being trained, scores them with
:func:`recsys_ssl.evaluate.evaluate_arrays` (the same metric code as ``recsys-ssl evaluate``:
the query's training items excluded, ties by item index), keeps the best epoch's weights,
stops after ``patience`` epochs without improvement and restores the best weights when
training ends. ``history`` holds (epoch, recall) pairs; ``report`` (e.g. an Optuna trial's
report-and-prune) is called with (epoch, recall) after each evaluation and may raise to stop
the run.

With weight averaging (``train.ema_momentum``: the optimizer's ``use_ema``) every evaluation
reads the averaged weights (:func:`averaged_weights`), the best epoch's weights kept are the
averages, and training goes on from the raw weights.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import types
from typing import Any, Callable, Iterator, Mapping

import numpy as np

from recsys_ssl.tf_setup import tf

log = logging.getLogger("recsys_ssl.callbacks")


@dataclasses.dataclass
class ValidationSet:
    """What one validation evaluation reads, in memory (read once per run).

    corpus: item feature -> [N] / [N, L] bytes; train_pairs: (query ids [P], item ids [P]) of the
    carve-out's train part (exclusions, head/tail); pairs: query features + item key -> [V] of
    the held-out pairs.
    """

    spec: Any
    corpus: Mapping[str, np.ndarray]
    train_pairs: tuple[np.ndarray, np.ndarray]
    pairs: Mapping[str, np.ndarray]

    @classmethod
    def from_dataset(cls, dataset) -> "ValidationSet":
        """From a validation view (``inputs.load_dataset("<name>-val")``): its train and test splits."""
        from recsys_ssl.datasets import inputs

        spec = dataset.spec
        corpus = inputs.collect_columns(
            inputs.batch(dataset.items(), spec, 4096, features=spec.item_feature_names), spec.item_feature_names
        )
        train = dataset.pair_columns("train", [spec.query_key, spec.item_key])
        pairs = dataset.pair_columns("test", list(dict.fromkeys(spec.query_feature_names + [spec.item_key])))
        return cls(spec, corpus, (train[spec.query_key], train[spec.item_key]), pairs)


@contextlib.contextmanager
def averaged_weights(model: tf.keras.Model) -> Iterator[bool]:
    """Within the block the model's trainable variables hold the optimizer's moving averages;
    the raw values come back on exit. Yields whether it swapped (False: no averages yet, or
    an optimizer without ``use_ema``: the block sees the weights as they are).

    Why here: tf_keras keeps the averages inside the optimizer and only writes them into the
    model when ``fit`` ends (``finalize_variable_values``), but early stopping has to judge,
    and keep, the averaged model every epoch while training continues on the raw trajectory.
    tf_keras internals used: ``_model_variables_moving_average`` is a list aligned with the
    variables the optimizer was built on, ``_index_dict`` maps ``_var_key(variable)`` (the
    distributed container's id under a tf.distribute strategy) to a position in it -- the
    lookup ``_overwrite_model_variables_with_average_value`` does.
    """
    optimizer = getattr(model, "optimizer", None)
    averages = getattr(optimizer, "_model_variables_moving_average", None)
    if not getattr(optimizer, "use_ema", False) or not averages:
        yield False
        return
    pairs = []
    for variable in model.trainable_variables:
        index = optimizer._index_dict.get(optimizer._var_key(variable))
        if index is not None:
            pairs.append((variable, averages[index]))
    raw = [variable.numpy() for variable, _ in pairs]  # host copies of the raw values
    for variable, average in pairs:
        variable.assign(average)  # under a strategy: every replica's copy (cross-replica context)
    try:
        yield True
    finally:
        for (variable, _), value in zip(pairs, raw):
            variable.assign(value)


class ValidationRecall(tf.keras.callbacks.Callback):
    """Early stopping on validation Recall@k (module docstring); restores the best epoch's weights."""

    def __init__(
        self,
        validation: ValidationSet,
        k: int = 50,
        patience: int = 3,
        report: Callable[[int, float], None] | None = None,
        head_fraction: float = 0.2,
    ):
        super().__init__()
        self.validation, self.k, self.patience, self.report = validation, int(k), int(patience), report
        self.head_fraction = head_fraction
        self.history: list[tuple[int, float]] = []
        self.best_epoch: int | None = None  # 1-based, as Keras prints epochs
        self.best_value = -np.inf
        self.best_metrics: dict[str, Any] | None = None
        self._best_weights = None
        self._waited = 0

    def evaluate(self) -> dict[str, Any]:
        from recsys_ssl import evaluate

        v = self.validation
        trained = types.SimpleNamespace(model=self.model)
        return evaluate.evaluate_arrays(
            trained,
            v.spec,
            v.corpus,
            v.train_pairs,
            v.pairs,
            ks=(self.k,),
            head_fraction=self.head_fraction,
            quiet=True,
        )

    def on_epoch_end(self, epoch, logs=None):
        # With weight averaging: judge (and keep) the averaged model; training goes on raw.
        with averaged_weights(self.model):
            metrics = self.evaluate()
            value = float(metrics[f"recall@{self.k}"])
            improved = value > self.best_value
            if improved:
                self._best_weights = self.model.get_weights()
        epoch_number = epoch + 1
        self.history.append((epoch_number, value))
        if logs is not None:
            logs[f"val_recall@{self.k}"] = value
        if improved:
            self.best_value, self.best_epoch, self._waited = value, epoch_number, 0
            self.best_metrics = metrics
        else:
            self._waited += 1
        log.info(
            "epoch %d: validation recall@%d %.4f (best %.4f at epoch %d)",
            epoch_number,
            self.k,
            value,
            self.best_value,
            self.best_epoch,
        )
        if self.report is not None:
            self.report(epoch_number, value)
        if self._waited >= self.patience:
            log.info("early stopping: %d epochs without improvement", self._waited)
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        # fit has already written the final averages (finalize_variable_values); the best
        # epoch's weights (averaged too, with weight averaging) replace them.
        if self._best_weights is not None:
            self.model.set_weights(self._best_weights)

    def summary(self) -> dict[str, Any]:
        """For the training manifest."""
        slices = (self.best_metrics or {}).get("slices", {})
        return {
            "k": self.k,
            "patience": self.patience,
            "best_epoch": self.best_epoch,
            "best_recall": None if self.best_epoch is None else self.best_value,
            "best_tail_recall": slices.get("tail", {}).get(f"recall@{self.k}"),
            "curve": [[e, v] for e, v in self.history],
        }
