"""`ProximalStep`: exact zeros from L1-type penalties during training."""

import keras
from keras import ops

from keras_regkit import _attach, regularizers, selectors


def _proximal_penalty(regularizer):
    """Our regularizer equal to `regularizer`, or `None` if it has no prox.

    Keras's own `L1`, `L2` and `L1L2` are the same penalties as our `L1`,
    `L2` and `ElasticNet`, so they are taken over too.
    """
    if hasattr(regularizer, "prox"):
        return regularizer
    keras_l1, keras_l2 = keras.regularizers.L1, keras.regularizers.L2
    if isinstance(regularizer, keras.regularizers.L1L2):
        return regularizers.ElasticNet(
            float(regularizer.l1), float(regularizer.l2)
        )
    if isinstance(regularizer, keras_l1):
        return regularizers.L1(float(regularizer.l1))
    if isinstance(regularizer, keras_l2):
        return regularizers.L2(float(regularizer.l2))
    return None


class _ProximalConstraint:
    """A variable constraint that takes the penalty's proximal step.

    Keras applies a variable's constraint right after each optimizer update,
    inside the compiled train step on every backend, before the optimizer's
    iteration counter moves: `optimizer.learning_rate` read there is the
    rate of the update just made. The variable's own constraint (if any) is
    applied after the prox, so the weights still satisfy it.

    The constraint also keeps what it replaced (the variable's regularizer
    and constraint), so that `ProximalStep.release` can put them back even
    after a `fit` that raised.
    """

    def __init__(self, penalty, optimizer, regularizer, constraint):
        self.penalty = penalty
        self.optimizer = optimizer
        self.regularizer = regularizer
        self.constraint = constraint

    def __call__(self, w):
        step = ops.convert_to_tensor(self.optimizer.learning_rate)
        w = self.penalty.prox(w, ops.cast(step, w.dtype))
        if self.constraint is not None:
            w = self.constraint(w)
        return w


def current_penalty(variable):
    """The penalty of `variable`, also while `ProximalStep` has taken it."""
    constraint = variable.constraint
    if isinstance(constraint, _ProximalConstraint):
        return constraint.regularizer
    return variable.regularizer


def set_penalty(variable, penalty):
    """Sets the penalty of `variable`, where it is in force.

    While `ProximalStep` trains the weight, that is the penalty of its
    proximal step (and the one it puts back when training ends), not a
    loss term; otherwise `variable.regularizer`. `PenaltyScheduler` uses it,
    so that the two callbacks work together. A change takes effect when the
    train step is traced again.
    """
    constraint = variable.constraint
    if isinstance(constraint, _ProximalConstraint):
        constraint.regularizer = penalty
        constraint.penalty = _proximal_penalty(penalty)
    else:
        variable.regularizer = penalty


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

    def __init__(self, layers=None):
        super().__init__()
        if layers is not None:
            selectors._check_selector(layers)
        self.layers = layers
        self._variables = []

    def on_train_begin(self, logs=None):
        self.release(self.model)
        self._variables = []
        targets = self._targets()
        for variable, penalty in targets:
            variable.constraint = _ProximalConstraint(
                penalty,
                self.model.optimizer,
                variable.regularizer,
                variable.constraint,
            )
            variable.regularizer = None
            self._variables.append(variable)
        # `fit` built its train function before this callback ran; the
        # constraints and losses are read when a step is traced.
        _attach.refresh_compiled_functions(self.model)

    def on_train_end(self, logs=None):
        self.release(self.model)
        self._variables = []

    @staticmethod
    def release(model):
        """Puts back the penalties and constraints `ProximalStep` replaced.

        `fit` does this by itself when it ends normally; call it after a
        `fit` that raised. Does nothing when nothing is replaced.

        Args:
            model: the model trained with `ProximalStep`.

        Returns:
            The number of weights restored.
        """
        restored = 0
        for variable in model.variables:
            constraint = variable.constraint
            if isinstance(constraint, _ProximalConstraint):
                variable.regularizer = constraint.regularizer
                variable.constraint = constraint.constraint
                restored += 1
        if restored:
            _attach.refresh_compiled_functions(model)
        return restored

    def _targets(self):
        """`(variable, penalty)` for each weight to take proximal steps on."""
        if self.layers is None:
            chosen = selectors.walk(self.model)
        else:
            chosen = selectors.select(self.model, self.layers)
            if not chosen:
                raise ValueError(
                    f"The selector {self.layers!r} (argument `layers`) "
                    "matches no layer of the model."
                )
        targets, seen, without_prox = [], set(), []
        for path, layer in chosen:
            for variable in layer.trainable_weights:
                if id(variable) in seen or variable.regularizer is None:
                    continue
                seen.add(id(variable))
                penalty = _proximal_penalty(variable.regularizer)
                if penalty is None:
                    without_prox.append(f"{path}/{variable.name}")
                else:
                    targets.append((variable, penalty))
        if not targets:
            detail = (
                f" The penalties of {', '.join(without_prox)} have no "
                "proximal operator."
                if without_prox
                else ""
            )
            raise ValueError(
                "ProximalStep found no trainable weight with a penalty that "
                "has a proximal operator (a keras_regkit regularizer, or "
                f"Keras's L1, L2 or L1L2).{detail}"
            )
        return targets
