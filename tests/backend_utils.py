"""Backend-specific plumbing for tests: gradients of a function of a tensor.

Each backend differentiates in its own way (`tf.GradientTape`, `jax.grad`,
torch autograd); tests call `gradient` and stay backend-neutral.
"""

import keras
import numpy as np
from keras import ops


def gradient(fn, x, dtype="float32"):
    """The gradient of scalar `fn(w)` with respect to `w`, at `w = x`.

    Args:
        fn: function of a tensor returning a scalar tensor.
        x: numpy array, the point.
        dtype: the dtype `fn` sees; the leaf is float32 and is cast to it, so
            the gradient passes through `dtype` on its way back (an overflow
            there shows up as inf).

    Returns:
        The gradient as a float32 numpy array.
    """
    x = np.asarray(x, dtype="float32")
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        leaf = tf.Variable(x)
        with tf.GradientTape() as tape:
            value = fn(ops.cast(leaf, dtype))
        result = tape.gradient(value, leaf)
    elif backend == "jax":
        import jax

        result = jax.grad(lambda leaf: fn(ops.cast(leaf, dtype)))(x)
    elif backend == "torch":
        import torch

        leaf = torch.tensor(x, requires_grad=True)
        fn(ops.cast(leaf, dtype)).backward()
        result = leaf.grad
    else:
        raise NotImplementedError(backend)
    return np.asarray(ops.convert_to_numpy(result), dtype="float32")


def value(fn, x, dtype="float32"):
    """`fn(x)` as a Python float, with `x` cast to `dtype` first."""
    return float(ops.convert_to_numpy(fn(ops.cast(x, dtype))))
