"""Switching stochastic layers to sampling, for `mc_predict`.

`mc_predict` runs a model at inference (`training=False`, so batch
normalization uses its moving statistics) with its stochastic layers drawing
masks all the same. These layers count:

- ours, `keras_regkit.layers.Dropout` and `DropPath`;
- Keras's `Dropout` (its `noise_shape` included), `SpatialDropout1D`,
  `SpatialDropout2D`, `SpatialDropout3D`, `GaussianDropout` and
  `AlphaDropout`, wherever they are: the attention dropout inside
  `MultiHeadAttention` is a Keras `Dropout`, and so are the dropouts of
  `keras.applications` and KerasHub models. Those with rate 0 never draw.

`GaussianNoise` does not count, nor do the random augmentation layers
(`RandomFlip`, ...). Monte-Carlo dropout (Gal and Ghahramani, 2016) reads
dropout's random masks as samples of the weights from an approximate
posterior: the noise multiplies the units, with mean 1 (Bernoulli masks,
and the multiplicative Gaussian noise of `GaussianDropout`, Srivastava et
al. 2014, section 10). `GaussianNoise` adds noise of a fixed scale to its
inputs: a data augmentation, whose spread at inference says how much the
model moves under that perturbation, not how uncertain its weights are.

While sampling, a layer draws from the generator that `mc_predict` passes
in, never from its own (whose state is left as it was), and knows that its
batch holds `groups` copies of the same rows, one per sample: a mask shared
across rows (`noise_shape=(1, ...)`) is drawn once per copy.

Keras's layers are switched by giving the layer object a `call` of its
own: an instance attribute that shadows the class's method (Keras looks
`self.call` up at every call) and that `switched_on` deletes again on the
way out, so the layer is left exactly as it was.
"""

import contextlib
import math

import keras
from keras import ops

from keras_regkit.layers._stochastic import StochasticLayer, keep_mask, noise

# The constants of the SELU activation, as in keras.layers.AlphaDropout.
_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946


class Draw:
    """Where a sampling layer takes its masks from: `generator`, `groups`."""

    __slots__ = ("generator", "groups")

    def __init__(self, generator, groups):
        self.generator = generator
        self.groups = groups


def _dropout(inputs, rate, noise_shape, draw):
    if rate >= 1.0:  # Keras allows it: everything is dropped
        return ops.zeros_like(inputs)
    mask = noise(
        inputs,
        noise_shape,
        draw.groups,
        lambda shape: keep_mask(shape, rate, draw.generator, inputs.dtype),
    )
    return inputs * mask


def _sample_dropout(layer, inputs, draw):
    return _dropout(inputs, layer.rate, layer.noise_shape, draw)


def _sample_spatial_dropout(layer, inputs, draw):
    """One draw per row and channel, shared over the other dimensions."""
    ones = (1,) * (len(inputs.shape) - 2)
    if getattr(layer, "data_format", "channels_last") == "channels_first":
        noise_shape = (None, None, *ones)
    else:
        noise_shape = (None, *ones, None)
    return _dropout(inputs, layer.rate, noise_shape, draw)


def _sample_gaussian_dropout(layer, inputs, draw):
    if layer.rate >= 1.0:
        return inputs  # Keras's own GaussianDropout fails there
    stddev = math.sqrt(layer.rate / (1.0 - layer.rate))
    factor = keras.random.normal(
        ops.shape(inputs),
        mean=1.0,
        stddev=stddev,
        dtype=layer.compute_dtype,
        seed=draw.generator,
    )
    return inputs * factor


def _sample_alpha_dropout(layer, inputs, draw):
    """Keras's AlphaDropout: dropped units go to SELU's saturation value."""
    rate = layer.rate
    alpha_p = -_SELU_ALPHA * _SELU_SCALE
    kept = noise(
        inputs,
        layer.noise_shape,
        draw.groups,
        lambda shape: ops.cast(
            ops.greater_equal(
                keras.random.uniform(shape, seed=draw.generator), rate
            ),
            inputs.dtype,
        ),
    )
    a = ((1 - rate) * (1 + rate * alpha_p**2)) ** -0.5
    b = -a * alpha_p * rate
    return a * (inputs * kept + alpha_p * (1 - kept)) + b


# Keyed by the `call` a layer runs: a subclass with a `call` of its own is
# not one of these layers any more.
_KERAS_SAMPLERS = {
    keras.layers.Dropout.call: _sample_dropout,
    keras.layers.SpatialDropout1D.call: _sample_spatial_dropout,
    keras.layers.GaussianDropout.call: _sample_gaussian_dropout,
    keras.layers.AlphaDropout.call: _sample_alpha_dropout,
}
KERAS_CLASSES = (
    keras.layers.Dropout,
    keras.layers.GaussianDropout,
    keras.layers.AlphaDropout,
)


def _sample_ours(layer, inputs, draw):
    return layer._drop(inputs, draw.generator, draw.groups)


def sampler(layer):
    """How `layer` samples: a function `(layer, inputs, draw)`, or None.

    None for layers that are not stochastic, for Keras's layers at rate 0
    (they never draw), and for subclasses of Keras's layers that replace
    their `call` (see `unknown_subclasses`).
    """
    if isinstance(layer, StochasticLayer):
        return _sample_ours
    if isinstance(layer, KERAS_CLASSES) and layer.rate > 0:
        return _KERAS_SAMPLERS.get(type(layer).call)
    return None


def unknown_subclasses(layers):
    """The Keras dropout layers among `layers` whose `call` is their own."""
    return [
        layer
        for layer in layers
        if isinstance(layer, KERAS_CLASSES)
        and not isinstance(layer, StochasticLayer)
        and type(layer).call not in _KERAS_SAMPLERS
    ]


@contextlib.contextmanager
def switched_on(layers, draw, stacking_layer=None):
    """Within the block, `layers` sample with `draw`, training or not.

    `stacking_layer`, one of `layers`, first stacks `draw.groups` copies of
    the rows it receives, one after the other.
    """
    own_calls = [vars(layer).get("call", _NONE) for layer in layers]
    try:
        for layer in layers:
            stack = layer is stacking_layer
            _switch_on(layer, sampler(layer), draw, stack)
        yield
    finally:
        for layer, own_call in zip(layers, own_calls, strict=True):
            if own_call is _NONE:
                vars(layer).pop("call", None)
            else:
                object.__setattr__(layer, "call", own_call)


_NONE = object()


def _switch_on(layer, sample, draw, stack):
    def call(inputs, *args, **kwargs):
        if stack:
            inputs = ops.tile(
                inputs, (draw.groups,) + (1,) * (len(inputs.shape) - 1)
            )
        return sample(layer, inputs, draw)

    # object.__setattr__: Keras's attribute tracking must not see it.
    object.__setattr__(layer, "call", call)
