"""Averages a model's weights over training: SWA and EMA."""

import functools
import math
import warnings
from collections.abc import Callable
from typing import Any

import keras
import numpy as np

from keras_regkit import _console, _validation
from keras_regkit._batch_norm import batch_norm_layers, recompute_batch_norm
from keras_regkit._weights import assign_values, copy_values
from keras_regkit.callbacks._copying import copy_without_run_state

_RUN_STATE = ("_variables", "_averages", "_held", "_optimizer", "_lerp")
_MODES = ("swa", "ema")


class WeightAveraging(keras.callbacks.Callback):
    """Trains on, and ends with the average of the weights it went through.

    Stochastic Weight Averaging (`mode="swa"`, Izmailov et al. 2018) keeps
    the equal-weight mean of the trainable weights at the end of epochs
    `start_epoch`, `start_epoch + frequency`, ...; an exponential moving
    average (`mode="ema"`) updates `average = decay * average + (1 - decay)
    * weights` every `frequency` training steps from the start of epoch
    `start_epoch`, starting from the weights themselves. The averages are
    `keras.Variable`s on the weights' device, updated outside the train
    step, so any optimizer (and any `compile`) works unchanged.

    When `fit` ends, the averages replace the trainable weights and, with
    `update_batch_norm=True`, the statistics of every trainable
    `BatchNormalization` layer are recomputed for them with one pass over
    `batch_norm_data` in training mode (`recompute_batch_norm`, as
    `torch.optim.swa_utils.update_bn` does): the statistics the layers hold
    are running averages over other weights. A model with such layers and
    no `batch_norm_data` is refused when training begins, unless
    `update_batch_norm=False`. If training ends before any average was
    taken (early stopping before `start_epoch`), the model keeps its
    weights, with a warning.

    With `swa_lr`, the learning rate follows the SWA schedule of
    `torch.optim.swa_utils.SWALR`: from `start_epoch` on it anneals from
    the optimizer's rate to `swa_lr` along a cosine over `anneal_epochs`
    epochs (epoch `start_epoch + k` uses the fraction `min(1, (k + 1) /
    anneal_epochs)` of the way), then stays at `swa_lr`; with
    `anneal_epochs=0` it is `swa_lr` from `start_epoch` on. The epoch's
    rate is logged as `learning_rate`, and the optimizer's rate is put back
    when `fit` ends. It needs a plain learning rate, not a
    `LearningRateSchedule`.

    With `validate_averaged=True`, validation during averaging evaluates
    the averages: they go into the model when validation begins and stay
    until the next epoch begins, so `val_*` logs, `EarlyStopping` and
    `ModelCheckpoint` all see the averaged weights (with the BatchNorm
    statistics of training: those are recomputed only at the end). Then
    `EarlyStopping(restore_best_weights=True)`'s best weights are averages
    too. Which callback has the last word is Keras's order: it calls
    `on_train_end` in the order of `callbacks=`, so an `EarlyStopping`
    listed after this callback restores its best weights over the final
    average, and one listed before is overridden by it. List
    `EarlyStopping` after `WeightAveraging` (and use
    `validate_averaged=True`) to end with the average that validated best.

    If `fit` raises, Keras calls no `on_train_end`: the model keeps the
    weights it had (the training weights, or, when it raised during a
    validation of the averages, the averages: a whole set, never a mix)
    and the training weights and learning rate wait in this callback.
    `restore()` puts them back, and so does the next `fit` with it. Each
    `fit` starts new averages.

    Args:
        start_epoch: int >= 0, the epoch (counted from 0, as `fit` counts)
            from which weights are averaged.
        frequency: int >= 1: SWA averages every `frequency` epochs, EMA
            every `frequency` training steps (batches Keras reports: with
            `steps_per_execution=k`, every k steps).
        mode: `"swa"` (equal weights) or `"ema"` (exponential).
        decay: EMA's decay, in (0, 1).
        swa_lr: None, or the positive learning rate of the SWA phase.
        anneal_epochs: int >= 0, the epochs the learning rate takes to
            reach `swa_lr`; 0 without `swa_lr`.
        update_batch_norm: recompute BatchNorm statistics at the end.
        batch_norm_data: the training inputs, for that: arrays as the model
            takes them or an iterable of batches (see
            `recompute_batch_norm`). Shared, not copied, by `copy.deepcopy`.
        batch_size: rows per batch of `batch_norm_data` arrays.
        validate_averaged: validate the averages rather than the training
            weights, once averaging has begun.
        verbose: 0 or 1. With 1, says what replaced the weights.

    Example:

    >>> import keras, numpy as np
    >>> from keras_regkit.callbacks import WeightAveraging
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    >>> model.compile(keras.optimizers.SGD(0.1), "mse")
    >>> swa = WeightAveraging(start_epoch=2, swa_lr=0.05)
    >>> history = model.fit(
    ...     np.ones((8, 2)), np.ones((8, 1)), epochs=4, verbose=0,
    ...     callbacks=[swa],
    ... )
    >>> swa.count  # epochs 2 and 3
    2
    >>> [round(lr, 3) for lr in history.history["learning_rate"]]
    [0.1, 0.1, 0.05, 0.05]
    """

    def __init__(
        self,
        start_epoch: int,
        frequency: int = 1,
        mode: str = "swa",
        decay: float = 0.999,
        swa_lr: float | None = None,
        anneal_epochs: int = 0,
        update_batch_norm: bool = True,
        batch_norm_data: Any = None,
        batch_size: int = 128,
        validate_averaged: bool = False,
        verbose: int = 0,
    ) -> None:
        super().__init__()
        self.start_epoch = _validation.non_negative_int(
            "start_epoch", start_epoch
        )
        self.frequency = _validation.positive_int("frequency", frequency)
        self.mode = _validation.choice("mode", mode, _MODES)
        self.decay = _validation.open_unit_interval_float("decay", decay)
        self.swa_lr = (
            None
            if swa_lr is None
            else _validation.positive_float("swa_lr", swa_lr)
        )
        self.anneal_epochs = _validation.non_negative_int(
            "anneal_epochs", anneal_epochs
        )
        if self.anneal_epochs and self.swa_lr is None:
            raise ValueError(
                "Invalid value received for argument `anneal_epochs`. "
                "Expected 0 without `swa_lr` (there is no rate to anneal "
                f"to). Received: anneal_epochs={anneal_epochs!r}"
            )
        self.update_batch_norm = _validation.flag(
            "update_batch_norm", update_batch_norm
        )
        self.batch_norm_data = batch_norm_data
        self.batch_size = _validation.positive_int("batch_size", batch_size)
        self.validate_averaged = _validation.flag(
            "validate_averaged", validate_averaged
        )
        self.verbose = _validation.verbosity("verbose", verbose)
        self.count = 0
        self._variables: list[keras.Variable] | None = None
        self._averages: list[keras.Variable] | None = None
        self._held = None
        self._optimizer: Any = None  # the model's, during `fit`
        self._base_lr: float | None = None
        self._lerp: Callable[..., None] | None = None
        self._epoch = 0
        self._steps = 0
        self._averaged_epoch: int | None = None
        if self.mode == "ema":
            # Only EMA has a batch hook: Keras runs the train steps of a
            # `fit` whose callbacks have none asynchronously, and waits for
            # each step's logs otherwise.
            self.on_train_batch_end = self._ema_step

    recompute_batch_norm = staticmethod(recompute_batch_norm)

    def get_config(self) -> dict[str, Any]:
        return {
            "start_epoch": self.start_epoch,
            "frequency": self.frequency,
            "mode": self.mode,
            "decay": self.decay,
            "swa_lr": self.swa_lr,
            "anneal_epochs": self.anneal_epochs,
            "update_batch_norm": self.update_batch_norm,
            "batch_norm_data": self.batch_norm_data,
            "batch_size": self.batch_size,
            "validate_averaged": self.validate_averaged,
            "verbose": self.verbose,
        }

    def __deepcopy__(self, memo):
        return copy_without_run_state(
            self, memo, _RUN_STATE, shared=("batch_norm_data",)
        )

    def learning_rate(self, epoch: int, base: float) -> float:
        """The SWA schedule's learning rate at `epoch`, from rate `base`.

        `base` before `start_epoch` (and always without `swa_lr`).
        """
        if self.swa_lr is None or epoch < self.start_epoch:
            return base
        if self.anneal_epochs == 0:
            return self.swa_lr
        progress = min(1.0, (epoch - self.start_epoch + 1) / self.anneal_epochs)
        cosine = (1.0 + math.cos(math.pi * progress)) / 2.0
        return self.swa_lr + (base - self.swa_lr) * cosine

    @property
    def averaged_weights(self) -> list[np.ndarray] | None:
        """The current averages, as numpy arrays (None before the first)."""
        if self._averages is None:
            return None
        return [keras.ops.convert_to_numpy(a) for a in self._averages]

    def restore(self) -> bool:
        """Puts back what a `fit` that raised left: weights and rate.

        Returns True if there was anything to put back.
        """
        restored = self._swap_back()
        if self._optimizer is not None and self._base_lr is not None:
            self._optimizer.learning_rate = self._base_lr
            restored = True
        self._base_lr = None
        return restored

    # The training loop.

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self.restore()  # what an interrupted fit left
        model = self.model
        if (
            self.update_batch_norm
            and self.batch_norm_data is None
            and batch_norm_layers(model)
        ):
            names = [layer.name for layer in batch_norm_layers(model)]
            raise ValueError(
                "Invalid value received for argument `batch_norm_data`. The "
                f"model has BatchNormalization layers ({', '.join(names)}) "
                "whose statistics must be recomputed for the averaged "
                "weights: pass the training inputs as `batch_norm_data`, or "
                "`update_batch_norm=False` to keep the statistics of "
                "training. Received: batch_norm_data=None"
            )
        self._optimizer = model.optimizer
        if self.swa_lr is not None:
            rate = getattr(self._optimizer, "learning_rate", None)
            if not isinstance(rate, keras.Variable):
                raise ValueError(
                    "Invalid value received for argument `swa_lr`. It sets "
                    "the optimizer's learning rate, which must then be a "
                    "number, not a schedule. Received: swa_lr="
                    f"{self.swa_lr!r} with a learning rate of {rate!r}"
                )
            self._base_lr = float(keras.ops.convert_to_numpy(rate))
        self._variables = list(model.trainable_variables)
        self._averages = None
        self._lerp = _lerp_function(keras.backend.backend())
        self.count = 0
        self._steps = 0
        self._averaged_epoch = None

    def on_epoch_begin(
        self, epoch: int, logs: dict[str, Any] | None = None
    ) -> None:
        self._epoch = epoch
        self._swap_back()
        if self.swa_lr is not None:
            assert self._base_lr is not None  # set by on_train_begin
            self._optimizer.learning_rate = self.learning_rate(
                epoch, self._base_lr
            )

    def _ema_step(self, batch, logs=None):
        """`on_train_batch_end` in EMA mode (see `__init__`)."""
        if self._epoch < self.start_epoch:
            return
        self._steps += 1
        if self._steps % self.frequency == 0:
            self._sync()
            self._average()

    def on_test_begin(self, logs: dict[str, Any] | None = None) -> None:
        if self._variables is None or not self.validate_averaged:
            return  # not fitting, or validating the training weights
        self._average_epoch()
        if self._averages is not None:
            self._sync()
            self._swap_in()

    def on_epoch_end(
        self, epoch: int, logs: dict[str, Any] | None = None
    ) -> None:
        self._average_epoch()
        if logs is not None and self.swa_lr is not None:
            assert self._base_lr is not None  # set by on_train_begin
            logs["learning_rate"] = self.learning_rate(epoch, self._base_lr)

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        model = self.model
        self._swap_back()
        if self._averages is None:
            warnings.warn(
                f"WeightAveraging(start_epoch={self.start_epoch}) took no "
                f"average: training ended at epoch {self._epoch}. The model "
                "keeps the weights it trained.",
                stacklevel=2,
            )
        else:
            self._replace_with_averages(model)
        if self.swa_lr is not None:
            self._optimizer.learning_rate = self._base_lr
        self._base_lr = None
        self._variables = None

    def _replace_with_averages(self, model):
        """The averages into the model, then its BatchNorm statistics.

        If recomputing the statistics fails (`batch_norm_data` the model
        cannot take), the trained weights and the learning rate are put
        back before the error goes on.
        """
        trained = copy_values(self._variables)
        assign_values(self._variables, self._averages)
        recomputed = []
        try:
            if self.update_batch_norm and self.batch_norm_data is not None:
                recomputed = recompute_batch_norm(
                    model, self.batch_norm_data, self.batch_size
                )
        except BaseException:
            assign_values(self._variables, trained)
            self.restore()
            self._variables = None
            raise
        if self.verbose:
            layers = len(recomputed)
            _console.write_line(
                f"WeightAveraging: the weights are the {self.mode} average "
                f"of {self.count} snapshots"
                + (
                    f"; BatchNorm statistics recomputed in {layers} "
                    f"layer{'s' if layers > 1 else ''}."
                    if recomputed
                    else "."
                )
            )

    # Averaging.

    def _average_epoch(self):
        """SWA's average of this epoch's weights, if due and not yet taken."""
        epoch = self._epoch
        if (
            self.mode != "swa"
            or self._variables is None
            or epoch < self.start_epoch
            or (epoch - self.start_epoch) % self.frequency
            or self._averaged_epoch == epoch
            or self._held is not None
        ):
            return
        self._sync()
        self._average()
        self._averaged_epoch = epoch

    def _sync(self):
        # On JAX, reading `self.model` writes the training state (which
        # the compiled step holds apart) to the model's variables.
        return self.model

    def _average(self):
        assert self._variables is not None and self._lerp is not None
        if self._averages is None:
            self._averages = [
                keras.Variable(
                    keras.ops.copy(v.value),
                    trainable=False,
                    dtype=v.dtype,
                    name="average",
                )
                for v in self._variables
            ]
        else:
            weight = (
                1.0 / (self.count + 1)
                if self.mode == "swa"
                else 1.0 - self.decay
            )
            self._lerp(self._averages, self._variables, weight)
        self.count += 1

    def _swap_in(self):
        """Puts the averages in the model, keeping the training weights."""
        if self._held is None:
            self._held = copy_values(self._variables)
            assign_values(self._variables, self._averages)

    def _swap_back(self):
        """Puts the training weights back, if the averages are in."""
        if self._held is None:
            return False
        assign_values(self._variables, self._held)
        self._held = None
        return True


@functools.cache
def _lerp_function(backend):
    """`lerp(averages, weights, t)`: `a += (w - a) * t` for each pair.

    One compiled call on TensorFlow and JAX rather than an eager operation
    per variable, which would cost more than a small model's step when
    EMA updates after every step. One function per backend, so that it
    compiles once for weights of the same shapes, not at every `fit`.
    """
    if backend == "tensorflow":
        import tensorflow as tf

        # XLA fuses each update into one pass over the weights.
        @tf.function(autograph=False, jit_compile=True)
        def lerp_tf(averages, weights, t):
            for a, w in zip(averages, weights, strict=True):
                a.assign(a + (tf.cast(w, a.dtype) - a) * tf.cast(t, a.dtype))

        def call_tf(averages, weights, t):
            lerp_tf(
                [a.value for a in averages],
                [w.value for w in weights],
                tf.constant(t, "float32"),
            )

        return call_tf
    if backend == "jax":
        import jax

        @jax.jit
        def lerp_jax(averages, weights, t):
            return [
                a + (w.astype(a.dtype) - a) * t.astype(a.dtype)
                for a, w in zip(averages, weights, strict=True)
            ]

        def call_jax(averages, weights, t):
            values = lerp_jax(
                [a.value for a in averages],
                [w.value for w in weights],
                jax.numpy.float32(t),
            )
            for average, value in zip(averages, values, strict=True):
                average.assign(value)

        return call_jax

    def call_eager(averages, weights, t):
        for average, weight in zip(averages, weights, strict=True):
            a = average.value
            w = keras.ops.stop_gradient(weight.value)
            average.assign(a + (keras.ops.cast(w, a.dtype) - a) * t)

    return call_eager
