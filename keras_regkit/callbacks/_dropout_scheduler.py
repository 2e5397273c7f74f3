"""Changes the rates of Dropout and DropPath layers from epoch to epoch."""

from typing import Any

import keras

from keras_regkit import _console, selectors
from keras_regkit.callbacks._copying import copy_without_run_state
from keras_regkit.callbacks._scheduling import EpochScheduler
from keras_regkit.layers import Dropout
from keras_regkit.layers._stochastic import StochasticLayer


class DropoutScheduler(EpochScheduler):
    """Sets dropout rates at the start of every epoch from a schedule.

    At the beginning of each epoch `schedule(epoch)` gives the new rate,
    and the chosen layers take it at once: their compiled train step reads
    the rate from a variable, so nothing is traced again and no step costs
    more. `keras_regkit.schedules` has ready-made schedules (`Constant`,
    `LinearRamp`, `Curriculum`); any function of the epoch works.

    When training begins, the schedule is evaluated for every epoch of the
    `fit` call, so a schedule that would return a bad rate at epoch 40
    fails before the first step rather than after 39 epochs. The schedule
    must therefore be a function of the epoch alone. Rates stay at their
    last value after training.

    Only keras_regkit layers can be scheduled: Keras's own `Dropout` bakes
    its rate into the compiled step.

    Args:
        schedule: callable, `schedule(epoch) -> rate`, `epoch` counted from
            0. It returns a float in [0, 1) for every chosen layer, or a
            dict mapping selectors (layer names, paths, glob patterns,
            classes, predicates) to rates: the first key that matches a
            layer, or a layer enclosing it, decides its rate, as in
            `regularize(rules=...)`; layers no key matches keep their
            current rate, and a key that matches no scheduled layer is an
            error. `PenaltyScheduler` reads its dicts the same way.
        layers: which layers to schedule: None (the default) for every
            keras_regkit `Dropout` in the model, or a selector (a name, glob,
            path, class, predicate or list; see `keras_regkit.selectors`)
            among the model's keras_regkit `Dropout` and `DropPath` layers.
        verbose: 0 or 1. With 1, prints the rates set at each epoch.

    Example:

    >>> import keras, numpy as np
    >>> from keras_regkit import schedules
    >>> from keras_regkit.callbacks import DropoutScheduler
    >>> from keras_regkit.layers import Dropout
    >>> model = keras.Sequential([
    ...     keras.Input((4,)), Dropout(0.0, name="drop"), keras.layers.Dense(1)
    ... ])
    >>> model.compile("sgd", "mse")
    >>> scheduler = DropoutScheduler(schedules.LinearRamp(0.0, 0.3, epochs=3))
    >>> history = model.fit(
    ...     np.ones((8, 4)), np.ones((8, 1)), epochs=4, verbose=0,
    ...     callbacks=[scheduler],
    ... )
    >>> [round(rate, 2) for rate in history.history["dropout_rate"]]
    [0.0, 0.1, 0.2, 0.3]
    """

    _value_name = "rate"
    _expected = "a float in [0, 1)"

    @staticmethod
    def _accept(rate):
        return 0.0 <= rate < 1.0

    # Run state: the scheduled layers, while `fit` runs.
    _targets: list[tuple[str, StochasticLayer]] | None = None

    def __deepcopy__(self, memo):
        return copy_without_run_state(self, memo, ("_targets",))

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._targets = self._find_targets()
        for epoch in range(self.params.get("epochs") or 0):
            self._rates(epoch)

    def on_epoch_begin(
        self, epoch: int, logs: dict[str, Any] | None = None
    ) -> None:
        rates = self._rates(epoch)
        for layer, rate in rates.items():
            layer.rate = rate
        if self.verbose:
            described = ", ".join(
                f"{layer.name}={rate:.4g}" for layer, rate in rates.items()
            )
            _console.write_line(
                f"\nEpoch {epoch + 1}: DropoutScheduler set {described}."
            )

    def on_epoch_end(
        self, epoch: int, logs: dict[str, Any] | None = None
    ) -> None:
        if logs is None:
            return
        assert self._targets is not None  # set by on_train_begin
        rates = {layer.rate for _, layer in self._targets}
        if len(rates) == 1:
            logs["dropout_rate"] = rates.pop()

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        self._targets = None  # hold no reference to the model's layers

    def _find_targets(self):
        """The `(path, layer)` pairs this callback schedules."""
        if self.layers is None:
            chosen = [
                (path, layer)
                for path, layer in selectors.walk(self.model)
                if isinstance(layer, Dropout)
            ]
            wanted = "keras_regkit Dropout layers"
        else:
            chosen = [
                (path, layer)
                for path, layer in selectors.select(self.model, self.layers)
                if isinstance(layer, StochasticLayer)
            ]
            wanted = f"keras_regkit Dropout or DropPath layers {self.layers!r}"
        if not chosen:
            keras_dropout = [
                path
                for path, layer in selectors.walk(self.model)
                if type(layer) is keras.layers.Dropout
            ]
            hint = (
                f" Keras's own Dropout layers ({', '.join(keras_dropout)}) "
                "cannot change rate in a compiled model; use "
                "keras_regkit.layers.Dropout."
                if keras_dropout
                else ""
            )
            raise ValueError(
                f"DropoutScheduler found no {wanted} in model "
                f"{self.model.name!r}.{hint}"
            )
        return chosen

    def _rates(self, epoch):
        """`{layer: rate}` for `epoch`; raises on a bad schedule value."""
        assert self._targets is not None  # set by on_train_begin
        rates = self._scheduled(epoch, [path for path, _ in self._targets])
        return {
            layer: rates[path] for path, layer in self._targets if path in rates
        }
