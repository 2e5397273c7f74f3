"""What `Dropout` and `DropPath` share: a rate that can change, a seed, MC.

The rate lives in two places: a Python float (what `layer.rate` returns and
`get_config()` saves) and a float32 variable that the compiled train step
reads. Assigning `layer.rate` updates both, so a new rate takes effect in
the next call of an already compiled `fit`, `evaluate` or `predict`,
without tracing anything again.

The variable is layer *state*, not a weight, exactly like the state of the
layer's `keras.random.SeedGenerator`: it is listed in `layer.variables` (so
TensorFlow graphs capture it and JAX's stateless steps pass it in), but not
in `layer.weights`, `get_weights()` or the saved weights file, because the
rate is already in the config.
"""

from collections.abc import Sequence
from typing import Any

import keras
from keras import ops

from keras_regkit import _validation


class _Hidden:
    """Holds a variable where Keras's attribute tracking does not look.

    Keras tracks every variable assigned to a layer attribute as a weight;
    one wrapped in a plain object is left alone.
    """

    __slots__ = ("variable",)

    def __init__(self, variable):
        self.variable = variable


class StochasticLayer(keras.layers.Layer):
    """Base class of the layers that drop units at random during training.

    Subclasses implement `_drop(inputs, seed, groups)`, which returns
    `inputs` with units dropped at the current rate (read with
    `_rate_tensor()`), the kept ones scaled by `1 / (1 - rate)`.

    Args:
        rate: float in [0, 1), the fraction of units to drop.
        seed: None or a non-negative integer, the seed of the masks.
        mc: bool, whether to drop units at inference too (Monte-Carlo
            dropout), in `predict` and `evaluate` included.
        **kwargs: base layer arguments such as `name` and `dtype`.
    """

    def __init__(
        self,
        rate: float,
        seed: int | None = None,
        *,
        mc: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        rate = _validation.rate("rate", rate)
        self.seed = _validation.seed("seed", seed)
        self.seed_generator = keras.random.SeedGenerator(
            self.seed, name=f"{self.name}_seed_generator"
        )
        self._init_state(rate, mc)
        self.supports_masking = True
        # Built at instantiation, like `keras.layers.Dropout`: all the state
        # (seed generator, rate) exists by now and none depends on the input
        # shape. So Keras never calls `build`, and the input checks run in
        # `call` and `compute_output_shape` instead (`_check_input_shape`).
        # A subclass that defines its own `build` is left unbuilt, for
        # Keras to build it.
        if type(self).build is keras.layers.Layer.build:
            self.built = True

    def _init_state(self, rate, mc):
        """Sets `mc` and the rate, in the Python float and the variable.

        Also used by `keras_regkit.layers.convert_dropout`, on a Keras
        layer that becomes one of ours and already has its seed generator.
        """
        if not isinstance(mc, bool):
            raise TypeError(
                "Invalid value received for argument `mc`. Expected a bool. "
                f"Received: mc={mc!r}"
            )
        self.mc = mc
        self._rate_state = _Hidden(
            keras.Variable(
                rate,
                dtype="float32",
                trainable=False,
                autocast=False,
                name="rate",
            )
        )
        self._rate = rate

    @property
    def rate(self) -> float:
        """The fraction of units dropped; assign a float in [0, 1) to change it.

        The next step of a compiled `fit`, `evaluate` or `predict` uses the
        new rate. Change it between epochs (in a callback's `on_epoch_begin`
        or `on_epoch_end`, as `DropoutScheduler` does) or between calls: on
        JAX, `fit` holds every variable in its own state during an epoch and
        writes that state back at the epoch's end, over a rate set
        mid-epoch.
        """
        return self._rate

    @rate.setter
    def rate(self, value: float) -> None:
        value = _validation.rate("rate", value)
        self._rate_state.variable.assign(value)
        self._rate = value

    @property
    def variables(self) -> list[keras.Variable]:
        return [*super().variables, self._rate_state.variable]

    def _rate_tensor(self):
        """The current rate as a float32 scalar tensor."""
        return ops.convert_to_tensor(self._rate_state.variable.value)

    def _keep_mask(self, shape, seed, dtype):
        """`keep_mask` at the layer's current rate."""
        return keep_mask(shape, self._rate_tensor(), seed, dtype)

    def call(self, inputs: Any, training: bool | None = False) -> Any:
        shape = _static_shape(inputs)
        if shape is not None:
            self._check_input_shape(shape)
        if training or self.mc:
            return self._drop(inputs, self.seed_generator, 1)
        return inputs

    def _drop(self, inputs, seed, groups):
        raise NotImplementedError

    def _check_input_shape(self, input_shape):
        """Raises a `ValueError` if the layer cannot take such inputs.

        Runs in Python on the static shape (a tuple of ints and None), at
        every eager call and whenever Keras traces `call` or asks for the
        output shape (a Functional model's construction), so subclasses
        should keep it cheap, e.g. with a cache keyed by the shape. The
        base class takes every shape.
        """

    def compute_output_shape(
        self, input_shape: Sequence[int | None]
    ) -> Sequence[int | None]:
        self._check_input_shape(tuple(input_shape))
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "rate": self.rate,
            "seed": self.seed,
            "mc": self.mc,
        }


def _static_shape(x):
    """The static shape of `x`, a tuple of ints and None.

    None when not even the rank is known (a TensorFlow graph can hold such
    tensors): there is then nothing to check.
    """
    shape = x.shape
    if getattr(shape, "rank", 0) is None:
        return None
    return tuple(shape)


def keep_mask(shape, rate, seed, dtype):
    """A mask of `shape`: `1 / (1 - rate)` where kept, 0 where dropped.

    `rate` is a float or a float32 scalar tensor below 1. The uniform draw
    is float32 whatever `dtype` is, so that the rate is honoured to float32
    precision for float16 and bfloat16 inputs too.
    """
    uniform = keras.random.uniform(shape, dtype="float32", seed=seed)
    scale = ops.cast(1.0 / (1.0 - rate), dtype)
    return ops.where(
        ops.greater_equal(uniform, rate), scale, ops.zeros_like(scale)
    )


def noise(inputs, noise_shape, groups, draw):
    """Noise broadcastable to `inputs`, from `draw(shape)`, one per copy.

    Args:
        inputs: the tensor the noise applies to; its batch holds `groups`
            stacked copies of the same rows (Monte-Carlo sampling, see
            `keras_regkit.mc_predict`), 1 otherwise.
        noise_shape: None, or a tuple with one entry per input dimension:
            the shape of the noise, `None` entries taking the input's size.
            A noise shared across rows (`noise_shape[0] == 1`) is drawn
            once per copy.
        groups: the number of copies.
        draw: a function from a shape to a tensor of that shape.
    """
    shape = ops.shape(inputs)
    if noise_shape is None:
        return draw(shape)
    concrete = tuple(
        size if entry is None else entry
        for entry, size in zip(noise_shape, shape, strict=True)
    )
    if groups == 1 or noise_shape[0] is None:
        return draw(concrete)
    rows = shape[0] // groups
    per_copy = draw((groups, 1, *concrete[1:]))
    per_row = ops.repeat(per_copy, rows, axis=1)
    return ops.reshape(per_row, (groups * rows, *concrete[1:]))
