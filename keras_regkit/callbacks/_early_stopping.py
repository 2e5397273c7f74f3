"""Early stopping: Keras's callback, and what its users keep asking for."""

import copy
import math
import warnings
from typing import Any

import keras

from keras_regkit import _console, _metrics, _validation, _weights
from keras_regkit.callbacks._copying import copy_without_run_state
from keras_regkit.callbacks._prechelt import PrecheltCriterion

_MODES = ("auto", "min", "max")
_DELTA_MODES = ("abs", "rel")
_CRITERIA = ("patience", "gl", "pq", "up")


def _criterion_alpha(criterion, alpha):
    """Checks `alpha`: unused by "patience", a positive threshold otherwise."""
    if criterion == "patience":
        if alpha is not None:
            raise ValueError(
                "Invalid value received for argument `alpha`. It applies to "
                "criterion 'gl', 'pq' or 'up', not 'patience'. Received: "
                f"alpha={alpha!r}"
            )
        return None
    if criterion == "up":
        return _validation.positive_int("alpha", alpha)
    return _validation.positive_float("alpha", alpha)


class EarlyStopping(keras.callbacks.Callback):
    """Stops training when a monitored quantity has stopped improving.

    A drop-in for `keras.callbacks.EarlyStopping` (Keras 3.15): the same
    arguments, defaults, attributes (`wait`, `stopped_epoch`, `best`,
    `best_epoch`, `best_weights`, `monitor_op`) and behaviour, written
    anew (Keras does not export its base class), plus:

    - `min_delta_mode="rel"`: an improvement must beat the best by a
      fraction `min_delta` of it, as in skorch.
    - `check_finite`: a NaN or infinite value stops training at once.
    - `stopping_threshold` / `divergence_threshold`: stop as soon as the
      value is at least this good / worse than this (PyTorch Lightning).
    - `strict`: a missing monitored key warns once naming the keys there
      are, or with `strict=True` raises.
    - `stop_reason`: why training stopped.

    One difference, on purpose: Keras's docstring promises that when no
    epoch improves on `baseline`, training runs for `patience` epochs; Keras
    3.15 keeps training while the value improves without reaching the
    baseline (keras-team/keras#13860). This callback does what the
    docstring says.

    Args:
        monitor: the quantity to watch, a key of `fit`'s logs.
        min_delta: the smallest change that counts as an improvement.
        patience: epochs without improvement before stopping.
        verbose: 0 or 1; 1 prints when the callback acts.
        mode: "auto", "min" or "max". "auto" minimises losses and reads the
            direction Keras records for compiled metrics.
        baseline: None, or a value the monitored quantity must beat.
        restore_best_weights: restore the weights of the best epoch at the
            end of training.
        start_from_epoch: epochs to wait before monitoring.
        min_delta_mode: "abs" or "rel", keyword-only.
        check_finite: stop on a NaN or infinite value, keyword-only.
        stopping_threshold: None or a number, keyword-only.
        divergence_threshold: None or a number, keyword-only.
        strict: raise instead of warning on a missing key, keyword-only.
        criterion: "patience" (Keras's rule), or one of Prechelt's "gl",
            "pq" and "up" ("Early Stopping - But When?", 1998), which
            replace the patience rule; keyword-only. "gl" and "pq" divide
            by the lowest error, so they need errors of at least 0: a
            negative monitored (or, for "pq", training) error raises a
            `ValueError` at the epoch it appears.
        alpha: the threshold of "gl" and "pq", the number of strips of
            "up"; keyword-only.
        strip_length: epochs per strip for "pq" and "up", keyword-only.
        training_key: the log key of the training error for "pq",
            keyword-only.

    With `restore_best_weights=True` the best weights are copied where they
    live (`keras.ops.copy`, on the accelerator if there is one) rather than
    to host numpy arrays, one weight at a time over the previous copy: at
    most one extra copy of the weights is held. Any other model, one that
    only offers `get_weights()` and `set_weights()` (as Keras's callback
    needs no more), has a copy of what `get_weights()` returns kept and
    handed back to `set_weights()`.

    Example:

    >>> import keras, numpy as np
    >>> from keras_regkit.callbacks import EarlyStopping
    >>> callback = EarlyStopping(monitor="loss", patience=3)
    >>> model = keras.Sequential([keras.layers.Dense(10)])
    >>> model.compile(keras.optimizers.SGD(), loss="mse")
    >>> history = model.fit(
    ...     np.arange(100).reshape(5, 20), np.zeros(5), epochs=10,
    ...     batch_size=1, callbacks=[callback], verbose=0,
    ... )
    >>> len(history.history["loss"]), callback.stop_reason
    (4, 'no improvement of loss in 3 epochs (patience 3)')
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        min_delta: float = 0,
        patience: int = 0,
        verbose: int = 0,
        mode: str = "auto",
        baseline: float | None = None,
        restore_best_weights: bool = False,
        start_from_epoch: int = 0,
        *,
        min_delta_mode: str = "abs",
        check_finite: bool = False,
        stopping_threshold: float | None = None,
        divergence_threshold: float | None = None,
        strict: bool = False,
        criterion: str = "patience",
        alpha: float | None = None,
        strip_length: int = 5,
        training_key: str = "loss",
    ) -> None:
        super().__init__()
        if not isinstance(monitor, str):
            raise TypeError(
                "Invalid value received for argument `monitor`. Expected a "
                f"string. Received: monitor={monitor!r}"
            )
        self.monitor = monitor
        # Keras takes the magnitude of a negative min_delta; so do we.
        self.min_delta = _validation.finite_magnitude("min_delta", min_delta)
        self.patience = _validation.non_negative_int("patience", patience)
        self.verbose = _validation.verbosity("verbose", verbose)
        self.mode = _validation.choice("mode", mode, _MODES)
        self.baseline = _validation.optional_float("baseline", baseline)
        self.restore_best_weights = _validation.flag(
            "restore_best_weights", restore_best_weights
        )
        self.start_from_epoch = _validation.non_negative_int(
            "start_from_epoch", start_from_epoch
        )
        self.min_delta_mode = _validation.choice(
            "min_delta_mode", min_delta_mode, _DELTA_MODES
        )
        self.check_finite = _validation.flag("check_finite", check_finite)
        self.stopping_threshold = _validation.optional_float(
            "stopping_threshold", stopping_threshold
        )
        self.divergence_threshold = _validation.optional_float(
            "divergence_threshold", divergence_threshold
        )
        self.strict = _validation.flag("strict", strict)
        self.criterion = _validation.choice("criterion", criterion, _CRITERIA)
        self.alpha = _criterion_alpha(self.criterion, alpha)
        self.strip_length = _validation.positive_int(
            "strip_length", strip_length
        )
        if not isinstance(training_key, str):
            raise TypeError(
                "Invalid value received for argument `training_key`. "
                f"Expected a string. Received: training_key={training_key!r}"
            )
        self.training_key = training_key
        self.monitor_op = None
        self._reset()

    def get_config(self) -> dict[str, Any]:
        keys = (
            "monitor",
            "min_delta",
            "patience",
            "verbose",
            "mode",
            "baseline",
            "restore_best_weights",
            "start_from_epoch",
            "min_delta_mode",
            "check_finite",
            "stopping_threshold",
            "divergence_threshold",
            "strict",
            "criterion",
            "alpha",
            "strip_length",
            "training_key",
        )
        return {key: getattr(self, key) for key in keys}

    def __deepcopy__(self, memo):
        # Not the model, nor the snapshot of its weights.
        return copy_without_run_state(self, memo, ("best_weights",))

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        # Allow instances to be re-used across `model.fit()` calls.
        self._reset()

    def _reset(self):
        """The state of a training run that has not begun."""
        self.wait = 0
        self.stopped_epoch = 0
        self.best = None
        self.best_epoch = 0
        self.best_weights = None
        self.stop_reason = None
        self._warned_missing = False
        self._prechelt = None
        if self.criterion != "patience":
            self._prechelt = PrecheltCriterion(
                self.criterion, self.alpha, self.strip_length
            )

    def _set_monitor_op(self):
        if self.mode == "min":
            self.monitor_op = keras.ops.less
            return
        if self.mode == "max":
            self.monitor_op = keras.ops.greater
            return
        direction = _metrics.direction(self.model, self.monitor)
        if direction is None:
            raise ValueError(
                f"EarlyStopping received monitor={self.monitor!r}, but cannot "
                "tell whether that metric should be maximized or minimized. "
                "Pass `mode='max'` or `mode='min'`."
            )
        self.monitor_op = (
            keras.ops.greater if direction == "up" else keras.ops.less
        )

    def _better(self, value, reference):
        """Whether `value` beats `reference` by more than `min_delta`."""
        if reference is None:
            return True
        delta = self.min_delta
        if self.min_delta_mode == "rel":
            delta = self.min_delta * abs(reference)
        if self.monitor_op is keras.ops.less:
            return bool(value + delta < reference)
        return bool(value - delta > reference)

    def _at_least(self, value, threshold):
        if self.monitor_op is keras.ops.less:
            return value <= threshold
        return value >= threshold

    def _stop(self, epoch, reason):
        self.stopped_epoch = epoch
        self.stop_reason = reason
        self.model.stop_training = True

    def on_epoch_end(
        self, epoch: int, logs: dict[str, Any] | None = None
    ) -> None:
        if self.monitor_op is None:
            self._set_monitor_op()
            if self._prechelt and self.monitor_op is keras.ops.greater:
                raise ValueError(
                    "Prechelt's criteria compare errors, which are "
                    f"minimized; `{self.monitor}` is maximized here."
                )
        current = self._monitor_value(logs)
        if current is None or epoch < self.start_from_epoch:
            return
        if self.check_finite and not math.isfinite(current):
            self._stop(epoch, f"{self.monitor} is {current}, not finite")
            return
        copied_now = False
        if self.restore_best_weights and self.best_weights is None:
            self.best_weights = _snapshot(self.model, self.best_weights)
            self.best_epoch = epoch
            copied_now = True
        self.wait += 1
        improved = self._better(current, self.best)
        if improved:
            self.best = current
            self.best_epoch = epoch
            if self.restore_best_weights and not copied_now:
                self.best_weights = _snapshot(self.model, self.best_weights)
            if self.baseline is None or self._better(current, self.baseline):
                self.wait = 0
        if self.stopping_threshold is not None and self._at_least(
            current, self.stopping_threshold
        ):
            self._stop(
                epoch,
                f"{self.monitor} = {current:.6g} reached the stopping "
                f"threshold {self.stopping_threshold:g}",
            )
            return
        if self.divergence_threshold is not None and not self._at_least(
            current, self.divergence_threshold
        ):
            self._stop(
                epoch,
                f"{self.monitor} = {current:.6g} is worse than the "
                f"divergence threshold {self.divergence_threshold:g}",
            )
            return
        if self._prechelt is not None:
            training_error = self._training_error(logs)
            self._check_prechelt_errors(epoch, current, training_error)
            reason = self._prechelt.update(current, training_error)
            if reason is not None:
                self._stop(epoch, reason)
            return
        if improved and self.wait == 0:
            return
        if self.wait >= self.patience and epoch > 0:
            self._stop(
                epoch,
                f"no improvement of {self.monitor} in {self.wait} epochs "
                f"(patience {self.patience})",
            )

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        if self.stop_reason is None and self.model.stop_training:
            self.stop_reason = "another callback stopped training"
        if self.stopped_epoch > 0 and self.verbose > 0:
            _console.write_line(
                f"Epoch {self.stopped_epoch + 1}: early stopping: "
                f"{self.stop_reason}."
            )
        if self.restore_best_weights and self.best_weights is not None:
            if self.verbose > 0:
                _console.write_line(
                    "Restoring model weights from the end of the best epoch: "
                    f"{self.best_epoch + 1}."
                )
            _restore(self.model, self.best_weights)

    def _check_prechelt_errors(self, epoch, validation, training):
        """Refuses negative errors for GL and PQ, which divide by them.

        `GL = 100 * (E_va / E_opt - 1)` reads a rise of a negative error (a
        cosine-similarity loss going from -0.9 to -0.5) as a negative loss
        of generality, and would never stop.
        """
        if self.criterion not in ("gl", "pq"):
            return
        for key, value in (
            (self.monitor, validation),
            (self.training_key, training),
        ):
            if value is not None and value < 0:
                raise ValueError(
                    f"EarlyStopping(criterion={self.criterion!r}) needs "
                    "errors of at least 0: Prechelt's GL and PQ divide by "
                    f"the lowest error, and `{key}` was {value:.6g} at epoch "
                    f"{epoch + 1}. Monitor a loss that is never negative, "
                    "or use criterion='up' or the patience rule, which "
                    "only compare errors."
                )

    def _training_error(self, logs):
        """`E_tr` for Prechelt's PQ: `logs[training_key]`."""
        if self.criterion != "pq":
            return None
        value = (logs or {}).get(self.training_key)
        if value is None:
            raise ValueError(
                f"criterion='pq' needs the training error `{self.training_key}`"
                f" in the logs. Available keys: {', '.join(logs or {})}"
            )
        return float(value)

    def _monitor_value(self, logs):
        logs = logs or {}
        value = logs.get(self.monitor)
        if value is not None:
            # Some metrics log arrays: F1Score gives shape (1,) by default.
            return _metrics.scalar(value, self.monitor, "EarlyStopping")
        message = (
            f"EarlyStopping is conditioned on `{self.monitor}`, which is not "
            f"in the logs. Available keys: {', '.join(logs) or '(none)'}"
        )
        if self.strict:
            raise ValueError(message)
        if not self._warned_missing:
            warnings.warn(message, stacklevel=2)
            self._warned_missing = True
        return None


def _variables(model):
    """The `keras.Variable`s of `model`'s weights, or None if it has none.

    A Keras model or layer has them (`model.weights`); so may any object
    whose `weights` is a non-empty list of variables. Anything else, such
    as an object that only offers `get_weights()` and `set_weights()`,
    gives None.
    """
    if isinstance(model, keras.layers.Layer):
        return model.weights
    weights = getattr(model, "weights", None)
    if (
        isinstance(weights, (list, tuple))
        and weights
        and all(isinstance(weight, keras.Variable) for weight in weights)
    ):
        return list(weights)
    return None


def _snapshot(model, previous):
    """A copy of `model`'s weights, reusing `previous` where possible.

    The variables' values are copied on their device; a model without
    variables has a copy of what its `get_weights()` returns taken.
    """
    variables = _variables(model)
    if variables is None:
        return copy.deepcopy(model.get_weights())
    if not isinstance(previous, list):
        previous = None
    return _weights.copy_values(variables, previous)


def _restore(model, snapshot):
    """Puts weights from `_snapshot` back into `model`.

    A copy goes back, so `snapshot` stays as it was (`best_weights` is
    still readable after the model changes again).
    """
    variables = _variables(model)
    if variables is None:
        model.set_weights(copy.deepcopy(snapshot))
        return
    _weights.assign_values(variables, snapshot)
