"""`WeightShrinkage`: `keras_regkit.shrink` at the end of `fit`."""

import dataclasses
from typing import Any

import keras

from keras_regkit import _shrinkage
from keras_regkit._shrink_options import ShrinkOptions, data_arguments
from keras_regkit.callbacks._copying import copy_without_run_state


def _fit_validation(model):
    """The validation data iterator of the `fit` call in progress, or None.

    Keras 3 gives callbacks no public access to `fit`'s validation data
    (`validation_data=` or `validation_split=`). `fit` keeps it on the
    model, as `_eval_epoch_iterator`, from the first validation until just
    before `on_train_end`; `evaluate(_use_cached_eval_dataset=True)` reads
    it back. This is the one place keras_regkit relies on that; a test
    fails if a Keras release changes it.
    """
    return getattr(model, "_eval_epoch_iterator", None)


class _FitValidation:
    """Lends `fit`'s validation iterator back to the model for `evaluate`.

    Calling it lends the iterator and returns the keyword arguments that
    make `evaluate` read it. It is lent again before every evaluation:
    a nested `fit` (fine-tuning in `shrink`) takes it away when it ends.
    """

    def __init__(self, model, iterator):
        self.model = model
        self.iterator = iterator

    def __call__(self):
        self.model._eval_epoch_iterator = self.iterator
        return {"_use_cached_eval_dataset": True}

    def release(self):
        if getattr(self.model, "_eval_epoch_iterator", None) is not None:
            del self.model._eval_epoch_iterator


class WeightShrinkage(keras.callbacks.Callback):
    """Shrinks the trained model's weights when `fit` ends, validated.

    At the end of training it runs `keras_regkit.shrink` on the model with
    `shrink_options`, judged on `validation_data`, or, when that is `None`,
    on the validation data of the `fit` call (`validation_data=` or
    `validation_split=`). List it after `EarlyStopping(...,
    restore_best_weights=True)`: callbacks end in order, so the best
    weights are restored first, then shrunk.

    History. The shrunk model is evaluated once more on the validation data
    and one entry is appended to every list of `model.history.history`:
    the post-shrink `val_*` figures (the loss as `evaluate` reports it,
    penalties included, as in the entries before it), and the last value of
    every other key repeated; `model.history.epoch` gains the next epoch
    number. A keras-tuner search, which scores a trial by the best entry of
    its objective, thereby scores the shrunk model (never worse than the
    trained one on that data).

    `shrink`'s guarantees hold: the model is never left worse on the
    validation data, and an error midway restores it. The report is stored
    on `report` (`None` until a `fit` ends). The callback survives
    `copy.deepcopy` (keras-tuner copies callbacks for every trial); the
    copies share `validation_data` rather than duplicate it.

    Args:
        validation_data: `(x, y)`, `(x, y, sample_weight)` or a dataset, or
            `None` to use `fit`'s.
        **shrink_options: keyword arguments of `keras_regkit.shrink`
            (`method` is required), checked now.

    Example:

    >>> import numpy as np
    >>> import keras
    >>> keras.utils.set_random_seed(0)
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(200, 10))
    >>> y = x[:, :1] + 0.1 * rng.normal(size=(200, 1))
    >>> model = keras.Sequential([keras.Input((10,)), keras.layers.Dense(1)])
    >>> model.compile(keras.optimizers.SGD(0.1), "mse")
    >>> callback = WeightShrinkage(method="prune", levels=[0.5, 0.8])
    >>> history = model.fit(x, y, validation_split=0.5, epochs=20,
    ...                     verbose=0, callbacks=[callback])
    >>> callback.report.after.metric <= callback.report.before.metric
    True
    >>> len(history.history["val_loss"])  # 20 epochs, then the shrunk model
    21
    """

    def __init__(
        self, validation_data: Any = None, **shrink_options: Any
    ) -> None:
        super().__init__()
        self.options = ShrinkOptions(**shrink_options)
        self.shrink_options = shrink_options
        self.validation_arguments = None
        if validation_data is not None:
            self.validation_arguments = data_arguments(
                validation_data, "validation_data"
            )
        self.validation_data = validation_data
        self.report = None
        self._fit_iterator = None

    def __deepcopy__(self, memo):
        return copy_without_run_state(
            self,
            memo,
            run_state=("_fit_iterator",),
            shared=("validation_data", "validation_arguments", "options"),
        )

    def get_config(self) -> dict[str, Any]:
        """`validation_data` and every option of `shrink`, checked."""
        options = {
            field.name: getattr(self.options, field.name)
            for field in dataclasses.fields(self.options)
        }
        return {"validation_data": self.validation_data, **options}

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self.report = None
        self._fit_iterator = None

    def on_epoch_end(
        self, epoch: int, logs: dict[str, Any] | None = None
    ) -> None:
        if self.validation_arguments is None:
            iterator = _fit_validation(self.model)
            if iterator is not None:
                self._fit_iterator = iterator

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        # The History that the user's `fit` returns: fine-tuning runs a
        # nested `fit`, which replaces `model.history` with its own.
        history = getattr(self.model, "history", None)
        lent = None
        try:
            if self.validation_arguments is not None:
                self._shrink(self.validation_arguments, history)
            elif self._fit_iterator is not None:
                lent = _FitValidation(self.model, self._fit_iterator)
                self._shrink(lent, history)
            else:
                raise ValueError(
                    "WeightShrinkage has no validation data: pass "
                    "`validation_data` to it, or `validation_data` or "
                    "`validation_split` to `fit`."
                )
        finally:
            if lent is not None:
                lent.release()
            self._fit_iterator = None
            if history is not None:
                self.model.history = history

    def _shrink(self, validation_arguments, history):
        self.report = _shrinkage.run(
            self.model, validation_arguments, self.options
        )
        if callable(validation_arguments):
            validation_arguments = validation_arguments()
        results = self.model.evaluate(
            **validation_arguments,
            batch_size=self.options.batch_size,
            verbose=0,
            return_dict=True,
        )
        if history is None or not history.history:
            return
        for key, values in history.history.items():
            name = key.removeprefix("val_")
            if key.startswith("val_") and name in results:
                values.append(float(results[name]))
            elif values:
                values.append(values[-1])
        if history.epoch:
            history.epoch.append(history.epoch[-1] + 1)
