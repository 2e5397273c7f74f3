"""Dropout that follows Keras's `training` flag, with MC and rate changes."""

import functools
from collections.abc import Iterable
from typing import Any

import keras

from keras_regkit import _config, _validation
from keras_regkit.layers._stochastic import StochasticLayer, noise


@keras.saving.register_keras_serializable(package=_config.PACKAGE)
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
    - A `noise_shape` is checked against the input's shape: a mismatch is
      a `ValueError` at the first call (or the Functional model's
      construction), not a failure deep in the backend.

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
        self,
        rate: float,
        noise_shape: Iterable[int | None] | None = None,
        seed: int | None = None,
        *,
        mc: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(rate, seed, mc=mc, **kwargs)
        self.noise_shape = _validation.noise_shape("noise_shape", noise_shape)

    def _check_input_shape(self, input_shape):
        if self.noise_shape is not None:
            _check_noise_shape(self.noise_shape, input_shape)

    def _drop(self, inputs, seed, groups):
        mask = noise(
            inputs,
            self.noise_shape,
            groups,
            lambda shape: self._keep_mask(shape, seed, inputs.dtype),
        )
        return inputs * mask

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["noise_shape"] = self.noise_shape
        return config


@functools.lru_cache(maxsize=256)
def _check_noise_shape(noise_shape, input_shape):
    """Raises unless `noise_shape` broadcasts against `input_shape`.

    Both are tuples of ints and None. Cached: a pair that passed once is
    not checked again (a failure raises, so is never cached).
    """
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
