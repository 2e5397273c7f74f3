"""The arithmetic of the penalties: sums and gradients over weight tensors.

Written with `keras.ops`, so the same code runs on every backend. Functions
decorated with `_fused` are compiled with XLA on TensorFlow: TensorFlow runs
each op of a graph as its own CPU kernel that reads and writes a whole tensor,
so a formula of five elementwise ops costs five passes over the weights
(measured: `ExpAbs` forward and backward 3.4 ms on a 1024x1024 kernel, 0.9 ms
fused). JAX already compiles whole train steps with XLA, and PyTorch runs
eagerly, so there the functions are called as they are.
"""

import math

import keras
from keras import ops

FLOAT32_MAX = 3.4028234663852886e38


def _fused(fn):
    """`fn`, compiled into one fused kernel on TensorFlow."""
    if keras.backend.backend() != "tensorflow":
        return fn
    import tensorflow as tf

    return tf.function(fn, jit_compile=True, reduce_retracing=True)


def sum_of_squares(x):
    """`sum(x**2)` in one pass."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        # l2_loss is sum(x**2) / 2 in one multi-threaded reduction, faster
        # than XLA's on CPU; the factor 2 is exact in floating point.
        return 2.0 * tf.nn.l2_loss(x)
    return ops.sum(ops.square(x))


@_fused
def sum_of_magnitudes(x):
    """`sum(|x|)` in one pass."""
    return ops.sum(ops.abs(x))


@_fused
def sign_times(x, factor):
    """`sign(x) * factor`: the gradient of `factor * sum(|x|)`."""
    return ops.sign(x) * factor


@_fused
def elastic_net_gradient(x, l1_factor, l2_factor):
    """`sign(x) * l1_factor + x * l2_factor` in one pass."""
    return ops.sign(x) * l1_factor + x * l2_factor


def _units(x, inverse_scale):
    """`|x| / scale`, saturating at float32's largest value."""
    magnitude = ops.abs(x)
    if inverse_scale == 1.0:
        return magnitude
    return ops.minimum(magnitude * inverse_scale, FLOAT32_MAX)


@_fused
def exp_abs_sum(x, inverse_scale, limit):
    """`sum(exp(|x|/scale) - 1)`, continued logarithmically past `limit`.

    Each term is `expm1(u)` for `u = |x|/scale <= limit`, and
    `exp(limit) * (1 + log1p(u - limit)) - 1` beyond: the same value and
    slope at `limit`, finite for every finite `x`.
    """
    u = _units(x, inverse_scale)
    # min(u, limit), not `u - relu(u - limit)`: for huge u that rounds to 0.
    return ops.sum(ops.expm1(ops.minimum(u, limit))) + math.exp(
        limit
    ) * ops.sum(ops.log1p(ops.relu(u - limit)))


@_fused
def exp_abs_gradient(x, inverse_scale, limit, factor):
    """`sign(x) * f'(|x|/scale) * factor`, `f` being one term of the sum.

    With `factor = strength / scale * upstream` this is the gradient of
    `strength * exp_abs_sum(x, ...)`.
    """
    u = _units(x, inverse_scale)
    slope = ops.exp(ops.minimum(u, limit)) / (1.0 + ops.relu(u - limit))
    return ops.sign(x) * slope * factor


@_fused
def group_sums_of_squares(x, axes):
    """`sum(x**2)` over `axes`, keeping them as size-1 dimensions."""
    return ops.sum(ops.square(x), axis=axes, keepdims=True)
