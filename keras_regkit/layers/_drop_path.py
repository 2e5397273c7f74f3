"""Stochastic depth: drops whole residual branches, one sample at a time."""

import keras
from keras import ops

from keras_regkit import _config
from keras_regkit.layers._stochastic import StochasticLayer


@keras.saving.register_keras_serializable(package=_config.PACKAGE)
class DropPath(StochasticLayer):
    """Drops a residual branch for a random fraction `rate` of the samples.

    Stochastic depth (Huang et al., "Deep networks with stochastic depth",
    ECCV 2016): put it at the end of a residual branch, `x + DropPath(r)(
    branch(x))`. During training each sample's branch output is zeroed with
    probability `rate`, as if the block were the identity for that sample,
    and kept outputs are scaled by `1 / (1 - rate)` so the expected output
    is unchanged. At inference it is the identity. `training`, `mc`, `seed`
    and changing `rate` work exactly as in `keras_regkit.layers.Dropout`.

    Keras 3 has no public layer for this. Deep networks usually raise the
    rate linearly with depth, from 0 at the first block to the last block's
    rate.

    Args:
        rate: float in [0, 1), the probability of dropping a sample's branch.
        seed: None or a non-negative integer, the seed of the masks.
        mc: bool, keyword-only. Drop branches at inference too.
        **kwargs: base layer arguments, such as `name` and `dtype`.

    Call arguments:
        inputs: a tensor whose first dimension is the batch.
        training: bool. Drop branches when true; resolved by Keras from the
            outer call (`fit` passes True, `evaluate` and `predict` False).

    Example:

    >>> import keras, numpy as np
    >>> from keras_regkit.layers import DropPath
    >>> layer = DropPath(0.5, seed=3)
    >>> x = np.ones((64, 2), "float32")
    >>> out = keras.ops.convert_to_numpy(layer(x, training=True))
    >>> sorted(set(out.ravel().tolist()))  # whole rows are 0 or scaled
    [0.0, 2.0]
    >>> bool(np.all(out[:, 0] == out[:, 1]))
    True
    """

    def _check_input_shape(self, input_shape):
        if not input_shape:
            raise ValueError(
                "DropPath needs inputs with a batch dimension. Received "
                f"inputs of shape {tuple(input_shape)}"
            )

    def _drop(self, inputs, seed, groups):
        shape = (ops.shape(inputs)[0],) + (1,) * (len(inputs.shape) - 1)
        return inputs * self._keep_mask(shape, seed, inputs.dtype)
