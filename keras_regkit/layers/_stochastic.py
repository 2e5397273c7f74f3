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


class MonteCarloDraw:
    """Switches a layer to Monte-Carlo sampling, for `mc_predict`.

    While a layer's `_monte_carlo` holds one of these, the layer drops units
    whatever `training` says, draws its masks from `generator` rather than
    from its own seed generator (whose state is left untouched), and knows
    that its batch holds `groups` stacked copies of the same rows, one per
    sample. With `tile=True` the layer makes those copies itself, from the
    rows it receives: everything before it runs once, not once per sample.
    """

    __slots__ = ("generator", "groups", "tile")

    def __init__(self, generator, groups, tile=False):
        self.generator = generator
        self.groups = groups
        self.tile = tile


class CannotTile(Exception):
    """Raised by a layer asked to tile rows that come with a padding mask.

    Keras hands a mask on to the layers after this one as it was, so the
    copies would not match it; `mc_predict` then tiles the inputs instead.
    """


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

    def __init__(self, rate, seed=None, *, mc=False, **kwargs):
        super().__init__(**kwargs)
        rate = _validation.rate("rate", rate)
        self.seed = _validation.seed("seed", seed)
        if not isinstance(mc, bool):
            raise TypeError(
                "Invalid value received for argument `mc`. Expected a bool. "
                f"Received: mc={mc!r}"
            )
        self.mc = mc
        self.seed_generator = keras.random.SeedGenerator(
            self.seed, name=f"{self.name}_seed_generator"
        )
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
        self._monte_carlo = None
        self.supports_masking = True

    @property
    def rate(self):
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
    def rate(self, value):
        value = _validation.rate("rate", value)
        self._rate_state.variable.assign(value)
        self._rate = value

    @property
    def variables(self):
        return [*super().variables, self._rate_state.variable]

    def _rate_tensor(self):
        """The current rate as a float32 scalar tensor."""
        return ops.convert_to_tensor(self._rate_state.variable.value)

    def _keep_mask(self, shape, seed, dtype):
        """A mask of `shape`: `1 / (1 - rate)` where kept, 0 where dropped.

        The uniform draw is float32 whatever `dtype` is, so that the rate is
        honoured to float32 precision for float16 and bfloat16 inputs too.
        """
        rate = self._rate_tensor()
        uniform = keras.random.uniform(shape, dtype="float32", seed=seed)
        scale = ops.cast(1.0 / (1.0 - rate), dtype)
        return ops.where(
            ops.greater_equal(uniform, rate), scale, ops.zeros_like(scale)
        )

    def call(self, inputs, training=False, mask=None):
        draw = self._monte_carlo
        if draw is not None:
            if draw.tile:
                if mask is not None:
                    raise CannotTile(self.name)
                inputs = _stack_copies(inputs, draw.groups)
            return self._drop(inputs, draw.generator, draw.groups)
        if training or self.mc:
            return self._drop(inputs, self.seed_generator, 1)
        return inputs

    def _drop(self, inputs, seed, groups):
        raise NotImplementedError

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "rate": self.rate,
            "seed": self.seed,
            "mc": self.mc,
        }


def _stack_copies(x, copies):
    """`copies` copies of the rows of `x`, one after the other."""
    if copies == 1:
        return x
    return ops.tile(x, (copies,) + (1,) * (len(x.shape) - 1))
