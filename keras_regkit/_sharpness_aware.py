"""Sharpness-Aware Minimization: a model whose `fit` takes SAM steps."""

import os
from collections.abc import Callable
from typing import Any

import keras
from keras import ops

from keras_regkit import _validation, selectors

# Added to the gradient's norm, so that a zero gradient gives a zero
# perturbation rather than 0 / 0 (the reference implementations' choice).
_EPSILON = 1e-12


def perturbation(gradients, weights, rho, adaptive=False):
    """SAM's (or ASAM's) step to the worst nearby weights, `e(w)`.

    `e = rho * g / ||g||` over all weights together (Foret et al. 2021);
    with `adaptive=True`, ASAM's element-wise scaling by `|w|` (Kwon et
    al. 2021): `e = rho * w**2 * g / || |w| * g ||`. A weight without a
    gradient (None) gets None.

    Args:
        gradients: a list of tensors or None, one per weight.
        weights: the weights' values, a list of tensors.
        rho: the radius of the neighbourhood, a float >= 0.
        adaptive: ASAM's scaling.

    Returns:
        A list of tensors (or None), one per weight.

    Example:

    >>> from keras import ops
    >>> e = perturbation([ops.array([3.0, 4.0])], [ops.array([1.0, 1.0])], 0.5)
    >>> ops.convert_to_numpy(e[0]).round(6).tolist()
    [0.3, 0.4]
    """
    scaled = [
        None if g is None else (ops.multiply(ops.abs(w), g) if adaptive else g)
        for g, w in zip(gradients, weights, strict=True)
    ]
    # One fused norm per tensor (no squared copy of the gradients), then
    # the norm of those norms.
    norms = [ops.norm(ops.reshape(s, (-1,))) for s in scaled if s is not None]
    if not norms:
        return [None] * len(gradients)
    norm = norms[0] if len(norms) == 1 else ops.norm(ops.stack(norms))
    scale = rho / (norm + _EPSILON)
    return [
        None
        if g is None
        else ops.multiply(
            ops.multiply(ops.square(w), g) if adaptive else g, scale
        )
        for g, w in zip(gradients, weights, strict=True)
    ]


@keras.saving.register_keras_serializable(package="keras_regkit")
class SharpnessAware(keras.Model):
    """Wraps a model so that `fit` trains it with SAM (or ASAM) steps.

    Each training step computes the gradient `g` of the loss at the
    weights `w`, moves to `w + e(w)` with `e = rho * g / ||g||` (or ASAM's
    `rho * w**2 * g / || |w| * g ||` with `adaptive=True`), computes the
    gradient there, and lets the optimizer apply that second gradient at
    `w` (Foret et al. 2021; Kwon et al. 2021). The wrapper is compiled and
    fitted like any model, with the user's optimizer, losses, metrics and
    callbacks, on TensorFlow, JAX and PyTorch; its weights are the inner
    model's, which it trains in place.

    - Both gradients include the model's penalties (`kernel_regularizer=`
      and every other `model.losses`), at the weights of each pass.
    - BatchNormalization statistics are updated once per step, by the first
      pass (at `w`), as the reference implementations do; the second
      pass's updates are discarded. Other state (dropout's random seeds)
      advances in both passes, so the two passes draw different dropout
      masks.
    - The loss and metrics logged are those of the first pass, at the
      weights being trained, as a plain step logs them.
    - A step costs two forward and backward passes.
    - `save`, `save_weights` and `load_weights` act on the inner model: the
      file loads as that model, without keras_regkit.
    - Under `tf.distribute.MirroredStrategy`, each replica computes its
      `e(w)` from its own share of the batch (the paper's m-sharpness, as
      its TPU implementation does), and the optimizer applies the mean of
      the replicas' second gradients. Under `keras.distribution` (JAX),
      the step sees the whole batch: one `e(w)`.
    - `rho=0` takes plain gradient steps (at twice the cost): the control
      of an ablation. A negative `rho` is refused.

    Args:
        model: the `keras.Model` to train.
        rho: the neighbourhood's radius, a finite float >= 0. 0.05 is the
            paper's default for SAM; ASAM uses larger ones (0.5 to 2).
        adaptive: ASAM's scale-invariant neighbourhood.
        **kwargs: `keras.Model` arguments (`name`).

    Example:

    >>> import keras, numpy as np
    >>> import keras_regkit
    >>> inner = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    >>> model = keras_regkit.SharpnessAware(inner, rho=0.05)
    >>> model.compile(keras.optimizers.SGD(0.1), "mse", metrics=["mae"])
    >>> history = model.fit(np.ones((8, 3)), np.ones((8, 1)), verbose=0)
    >>> sorted(history.history)
    ['loss', 'mae']
    >>> model.predict(np.ones((1, 3)), verbose=0).shape
    (1, 1)
    """

    def __init__(
        self,
        model: keras.Model,
        rho: float = 0.05,
        adaptive: bool = False,
        **kwargs: Any,
    ) -> None:
        if not isinstance(model, keras.Model):
            raise TypeError(
                "Invalid value received for argument `model`. Expected a "
                f"keras.Model. Received: model of type {type(model).__name__}"
            )
        if isinstance(model, SharpnessAware):
            raise ValueError(
                "Invalid value received for argument `model`. Expected a "
                "model that is not already SharpnessAware. Received: "
                f"model={model.name!r}"
            )
        super().__init__(**kwargs)
        self.inner_model = model
        self.rho = _validation.non_negative_float("rho", rho)
        self.adaptive = _validation.flag("adaptive", adaptive)
        if model.built:
            self.built = True

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        return self.inner_model(inputs, training=training)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "model": keras.saving.serialize_keras_object(self.inner_model),
            "rho": self.rho,
            "adaptive": self.adaptive,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "SharpnessAware":
        config = dict(config)
        model = keras.saving.deserialize_keras_object(config.pop("model"))
        return cls(model, **config)

    def save(
        self, filepath: str | os.PathLike[str], *args: Any, **kwargs: Any
    ) -> None:
        """Saves the inner model (see `keras.Model.save`)."""
        return self.inner_model.save(filepath, *args, **kwargs)

    def save_weights(
        self, filepath: str | os.PathLike[str], *args: Any, **kwargs: Any
    ) -> None:
        """Saves the inner model's weights (see `keras.Model.save_weights`)."""
        return self.inner_model.save_weights(filepath, *args, **kwargs)

    def load_weights(
        self, filepath: str | os.PathLike[str], *args: Any, **kwargs: Any
    ) -> None:
        """Loads the inner model's weights (see `keras.Model.load_weights`)."""
        return self.inner_model.load_weights(filepath, *args, **kwargs)

    def train_step(self, *args: Any) -> Any:
        """One SAM step; `(data)`, or `(state, data)` on JAX."""
        steps: dict[str, Callable[..., Any]] = {
            "tensorflow": _tensorflow_step,
            "jax": _jax_step,
            "torch": _torch_step,
        }
        step = steps.get(keras.backend.backend())
        if step is None:
            raise NotImplementedError(
                "SharpnessAware trains on the TensorFlow, JAX and PyTorch "
                f"backends, not {keras.backend.backend()!r}"
            )
        return step(self, *args)

    def _statistics(self):
        """The BatchNormalization statistics, which only the first pass sets."""
        return [
            variable
            for _, layer in selectors.walk(self.inner_model)
            if isinstance(layer, keras.layers.BatchNormalization)
            for variable in (layer.moving_mean, layer.moving_variance)
        ]

    def _update_loss_tracker(self, loss, x):
        # Keras's own train steps report the loss through this tracker.
        rows = ops.shape(
            next(i for i in keras.tree.flatten(x) if i is not None)
        )[0]
        self._loss_tracker.update_state(loss, sample_weight=rows)


def _tensorflow_step(model, data):
    import tensorflow as tf

    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    variables = model.trainable_variables

    def loss_and_gradients():
        with tf.GradientTape() as tape:
            y_pred = model(x, training=True)
            loss = model.compute_loss(
                x, y, y_pred, sample_weight, training=True
            )
            scaled = model.optimizer.scale_loss(loss)
        return y_pred, loss, tape.gradient(scaled, variables)

    y_pred, loss, gradients = loss_and_gradients()
    # An Embedding's gradient comes as IndexedSlices: e(w) needs it dense.
    gradients = [
        tf.convert_to_tensor(g) if isinstance(g, tf.IndexedSlices) else g
        for g in gradients
    ]
    statistics = model._statistics()
    kept = [tf.identity(v.value) for v in statistics]
    weights = [tf.identity(v.value) for v in variables]
    for variable, weight, step in zip(
        variables,
        weights,
        perturbation(gradients, weights, model.rho, model.adaptive),
        strict=True,
    ):
        if step is not None:
            variable.assign(weight + step)
    _, _, gradients = loss_and_gradients()
    for variable, value in zip(
        variables + statistics, weights + kept, strict=True
    ):
        variable.assign(value)
    model.optimizer.apply(gradients, variables)
    # compute_loss divides by the replicas under tf.distribute; the tracker
    # averages the whole batch's loss, as Keras's step does.
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    model._update_loss_tracker(loss * replicas, x)
    return model.compute_metrics(x, y, y_pred, sample_weight=sample_weight)


def _torch_step(model, data):
    import torch

    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    variables = model.trainable_variables
    parameters = [v.value for v in variables]

    def loss_and_gradients():
        y_pred = model(x, training=True)
        loss = model.compute_loss(x, y, y_pred, sample_weight, training=True)
        scaled = model.optimizer.scale_loss(loss)
        gradients = torch.autograd.grad(scaled, parameters, allow_unused=True)
        return y_pred, loss, list(gradients)

    y_pred, loss, gradients = loss_and_gradients()
    statistics = model._statistics()
    with torch.no_grad():
        kept = [v.value.detach().clone() for v in statistics]
        weights = [p.detach().clone() for p in parameters]
        steps = perturbation(gradients, weights, model.rho, model.adaptive)
        for parameter, step in zip(parameters, steps, strict=True):
            if step is not None:
                parameter.add_(step)  # in place: one pass over the weights
    _, _, gradients = loss_and_gradients()
    with torch.no_grad():
        for parameter, weight in zip(parameters, weights, strict=True):
            parameter.copy_(weight)
        for variable, value in zip(statistics, kept, strict=True):
            variable.value.copy_(value)
        model.optimizer.apply(gradients, variables)
    model._update_loss_tracker(loss.detach(), x)
    return model.compute_metrics(
        x, y, y_pred.detach(), sample_weight=sample_weight
    )


def _jax_step(model, state, data):
    import jax

    trainable, non_trainable, optimizer_variables, metrics_variables = state
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    gradient_of = jax.value_and_grad(
        model.compute_loss_and_updates, has_aux=True
    )

    def loss_and_gradients(weights, non_trainable, metrics_variables):
        return gradient_of(
            weights,
            non_trainable,
            metrics_variables,
            x,
            y,
            sample_weight,
            training=True,
            optimizer_variables=optimizer_variables,
        )

    (_, first), gradients = loss_and_gradients(
        trainable, non_trainable, metrics_variables
    )
    loss, y_pred, after_first, metrics_variables = first
    steps = perturbation(gradients, trainable, model.rho, model.adaptive)
    perturbed = [w + e for w, e in zip(trainable, steps, strict=True)]
    (_, second), gradients = loss_and_gradients(
        perturbed, after_first, metrics_variables
    )
    after_second = second[2]
    statistics = {id(v) for v in model._statistics()}
    non_trainable = [
        first_value if id(variable) in statistics else second_value
        for variable, first_value, second_value in zip(
            model.non_trainable_variables,
            after_first,
            after_second,
            strict=True,
        )
    ]
    trainable, optimizer_variables = model.optimizer.stateless_apply(
        optimizer_variables, gradients, trainable
    )
    mapping = list(zip(model.metrics_variables, metrics_variables, strict=True))
    with keras.StatelessScope(state_mapping=mapping) as scope:
        model._update_loss_tracker(loss, x)
        logs = model.compute_metrics(x, y, y_pred, sample_weight)
    metrics_variables = [
        value if value is not None else variable.value
        for variable in model.metrics_variables
        for value in [scope.get_current_value(variable)]
    ]
    return logs, (
        trainable,
        non_trainable,
        optimizer_variables,
        metrics_variables,
    )
