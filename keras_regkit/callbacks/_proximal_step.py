"""`ProximalStep`: exact zeros from L1-type penalties during training."""

from typing import Any

import keras

from keras_regkit import _penalty_state, selectors
from keras_regkit.callbacks._copying import copy_without_run_state
from keras_regkit.selectors import LayerSelector


class ProximalStep(keras.callbacks.Callback):
    """Proximal gradient training: penalties that set weights exactly to 0.

    Gradient descent on `loss + L1` moves every weight by `lr * l1 *
    sign(w)` per step, so weights oscillate around zero but never land on it
    (keras-team/keras#18388). The proximal gradient method (ISTA) splits the
    step instead: a gradient step on the data loss alone, then the penalty's
    proximal operator `w <- penalty.prox(w, lr)`, which for L1 is
    soft-thresholding `sign(w) * max(|w| - lr * l1, 0)` and leaves weights
    exactly at 0.0 when the data cannot justify them.

    During `fit` this callback, for every trainable weight whose penalty has
    a proximal operator (all keras_regkit regularizers, and Keras's `L1`,
    `L2`, `L1L2`):

    - takes the penalty out of the loss (`variable.regularizer = None`), so
      its subgradient is not applied a second time; the loss that `fit`
      logs is then the data loss without that penalty;
    - applies `penalty.prox(w, learning_rate)` right after each optimizer
      update, inside the compiled train step, through the variable's
      `constraint` (composed with the weight's own constraint, applied
      after);
    - puts the penalties and constraints back when training ends. The layer
      attributes (`layer.kernel_regularizer`) are never touched, so a model
      saved during training keeps its configuration.

    Optimizers. With plain SGD this is exactly the proximal gradient method:
    it converges to the minimiser of `loss + penalty` (for a convex loss,
    with a small enough learning rate), with exact zeros. With momentum or
    an adaptive optimizer (Adam, RMSprop), each weight's actual step is not
    `learning_rate`, so the prox uses a step that does not match the update:
    weights still become exactly zero (the threshold per step is
    `learning_rate * l1`), but the result is no longer the minimiser of
    `loss + penalty`, and the penalty's effective strength differs from the
    one a gradient step would give. A learning-rate schedule is followed
    step by step (the rate of the update just made is used).

    Limits. Keras calls no callback when `fit` raises: the penalties then
    stay detached until the next `fit` with this callback (whose
    `on_train_begin` repairs them) or a call to `ProximalStep.release`.
    On the JAX backend the callback needs nothing special: the prox runs
    inside the jitted step.

    Args:
        layers: which layers' penalties to turn into proximal steps, as a
            selector (see `keras_regkit.selectors`); `None` means all.

    Example:

    >>> import numpy as np
    >>> import keras
    >>> from keras_regkit import L1
    >>> keras.utils.set_random_seed(0)
    >>> x = np.random.default_rng(0).normal(size=(256, 20))
    >>> y = x[:, :2].sum(axis=1, keepdims=True)
    >>> model = keras.Sequential([
    ...     keras.Input((20,)),
    ...     keras.layers.Dense(1, kernel_regularizer=L1(0.05)),
    ... ])
    >>> model.compile(keras.optimizers.SGD(0.05), "mse")
    >>> _ = model.fit(x, y, epochs=20, verbose=0, callbacks=[ProximalStep()])
    >>> kernel = keras.ops.convert_to_numpy(model.layers[0].kernel)
    >>> int((kernel[2:] == 0.0).sum()) >= 15  # irrelevant inputs: exactly 0
    True
    >>> len(model.losses)  # the penalty is back after training
    1
    """

    def __init__(self, layers: LayerSelector | None = None) -> None:
        super().__init__()
        if layers is not None:
            selectors._check_selector(layers)
        self.layers = layers

    def get_config(self) -> dict[str, Any]:
        return {"layers": self.layers}

    def __deepcopy__(self, memo):
        return copy_without_run_state(self, memo, ())

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self.release(self.model)
        targets = _penalty_state.proximal_targets(self.model, self.layers)
        # `fit` built its train function before this callback ran; the
        # constraints and losses are read when a step is traced, and
        # `start_proximal_steps` has it traced anew.
        _penalty_state.start_proximal_steps(self.model, targets)

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        self.release(self.model)

    @staticmethod
    def release(model: keras.Model) -> int:
        """Puts back the penalties and constraints `ProximalStep` replaced.

        `fit` does this by itself when it ends normally; call it after a
        `fit` that raised. Does nothing when nothing is replaced.

        Args:
            model: the model trained with `ProximalStep`.

        Returns:
            The number of weights restored.
        """
        return _penalty_state.release_proximal_steps(model)
