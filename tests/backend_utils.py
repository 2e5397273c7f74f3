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


def value_and_gradient_in(fn, x, dtype):
    """`fn(w)` and its gradient with respect to `w`, `w` being `x` in `dtype`.

    Unlike `gradient`, the leaf itself has `dtype` (float16, bfloat16,
    float32 or float64), so the gradient comes back in the weight's dtype,
    as an optimizer would see it.

    Returns:
        `(w, value, gradient)` as float64 numpy arrays: the weights as the
        backend holds them (after rounding to `dtype`), the value and the
        gradient.
    """
    backend = keras.backend.backend()
    leaf = ops.cast(np.asarray(x), dtype)
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            tape.watch(leaf)
            result = fn(leaf)
        grad = tape.gradient(result, leaf)
    elif backend == "jax":
        import jax

        result, grad = jax.value_and_grad(fn)(leaf)
    elif backend == "torch":
        leaf = leaf.detach().requires_grad_(True)
        result = fn(leaf)
        result.backward()
        grad = leaf.grad
    else:
        raise NotImplementedError(backend)

    def as_float64(tensor):
        return np.asarray(ops.convert_to_numpy(tensor)).astype("float64")

    return as_float64(leaf), as_float64(result), as_float64(grad)
