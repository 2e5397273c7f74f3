"""Dropout that follows Keras's `training` flag, with MC and rate changes."""

import keras
from keras import ops

from keras_regkit import _validation
from keras_regkit.layers._stochastic import StochasticLayer


@keras.saving.register_keras_serializable(package="keras_regkit")
class Dropout(StochasticLayer):
    """Sets a random fraction `rate` of its inputs to 0 during training.

    A drop-in for `keras.layers.Dropout` (same arguments, same behaviour,
    same config keys) with three additions:

    - `mc=True` keeps dropout on at inference, in `predict()` and
      `evaluate()` too: Monte-Carlo dropout (Gal and Ghahramani, 2016). The
      usual Keras recipe, `keras.layers.Dropout(rate)(x, training=True)`, is
      silently off inside a Functional model's `predict()`, because the
      outer call's `training=False` wins. See also
      `keras_regkit.mc_predict`, which samples any model with these layers.
    - `layer.rate = 0.3` changes the rate of a compiled model: the next
      train step uses it, with nothing traced again. See
      `keras_regkit.callbacks.DropoutScheduler`.
    - A `noise_shape` is checked against the input when the layer is built.

    Each unit is kept with probability `1 - rate` (a Bernoulli mask drawn
    with `keras.random` from the layer's own `keras.random.SeedGenerator`)
    and kept units are scaled by `1 / (1 - rate)`, so the expected output
    equals the input. At inference the layer is the identity. Gradients
    flow through kept units only, scaled the same way.

    Reference: Srivastava et al., "Dropout: a simple way to prevent neural
    networks from overfitting", JMLR 15 (2014).

    Args:
        rate: float in [0, 1), the fraction of the input units to drop.
            Unlike Keras, 1 is refused: it would leave nothing to scale.
        noise_shape: None, or a tuple with one entry per input dimension:
            the shape of the mask, broadcast over the input. `None` entries
            take the input's size. `(None, 1, None)` on inputs of shape
            `(batch, timesteps, features)` drops the same features at every
            timestep.
        seed: None or a non-negative integer. The same seed gives the same
            sequence of masks in every process; `None` draws a seed (from
            Python's `random`, so `keras.utils.set_random_seed` fixes it).
        mc: bool, keyword-only. Drop units at inference too.
        **kwargs: base layer arguments, such as `name` and `dtype`.

    Call arguments:
        inputs: a tensor of any rank.
        training: bool. Drop units when true; resolved by Keras from the
            outer call (`fit` passes True, `evaluate` and `predict` False).

    Example:

    >>> import keras, numpy as np
    >>> from keras_regkit.layers import Dropout
    >>> layer = Dropout(0.5, seed=1)
    >>> x = np.ones((2, 32), "float32")
    >>> float(keras.ops.convert_to_numpy(layer(x)).min())  # inference
    1.0
    >>> out = keras.ops.convert_to_numpy(layer(x, training=True))
    >>> sorted(set(out.ravel().tolist()))  # dropped, or scaled by 1/(1-rate)
    [0.0, 2.0]
    >>> layer.rate = 0.25  # takes effect at the next call, compiled or not
    """

    def __init__(
        self, rate, noise_shape=None, seed=None, *, mc=False, **kwargs
    ):
        super().__init__(rate, seed, mc=mc, **kwargs)
        self.noise_shape = _validation.noise_shape("noise_shape", noise_shape)

    def build(self, input_shape):
        if self.noise_shape is not None:
            _check_noise_shape(self.noise_shape, input_shape)
        self.built = True

    def _drop(self, inputs, seed, groups):
        if self.noise_shape is None:
            mask = self._keep_mask(ops.shape(inputs), seed, inputs.dtype)
            return inputs * mask
        if groups == 1 or self.noise_shape[0] is None:
            shape = _concrete(self.noise_shape, ops.shape(inputs))
            return inputs * self._keep_mask(shape, seed, inputs.dtype)
        # Monte-Carlo sampling with a mask shared across rows: the batch
        # holds `groups` copies of the rows, each copy needs its own mask.
        input_shape = ops.shape(inputs)
        grouped = ops.reshape(inputs, (groups, -1, *input_shape[1:]))
        shape = _concrete(self.noise_shape, ops.shape(grouped)[1:])
        mask = self._keep_mask((groups, *shape), seed, inputs.dtype)
        return ops.reshape(grouped * mask, input_shape)

    def get_config(self):
        config = super().get_config()
        config["noise_shape"] = self.noise_shape
        return config


def _concrete(noise_shape, input_shape):
    """`noise_shape` with its `None` entries taken from `input_shape`."""
    return tuple(
        size if entry is None else entry
        for entry, size in zip(noise_shape, input_shape, strict=True)
    )


def _check_noise_shape(noise_shape, input_shape):
    """Raises unless `noise_shape` broadcasts against `input_shape`."""
    if len(noise_shape) != len(input_shape):
        raise ValueError(
            f"Invalid value received for argument `noise_shape`. Expected "
            f"one entry per input dimension ({len(input_shape)} for inputs "
            f"of shape {tuple(input_shape)}). Received: "
            f"noise_shape={noise_shape}"
        )
    for entry, size in zip(noise_shape, input_shape, strict=True):
        if entry not in (None, 1) and size is not None and entry != size:
            raise ValueError(
                f"Invalid value received for argument `noise_shape`. Each "
                f"entry must be None, 1 or the input's size (inputs of shape "
                f"{tuple(input_shape)}). Received: noise_shape={noise_shape}"
            )
