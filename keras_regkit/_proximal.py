"""Proximal operators of the penalties, written with `keras.ops`.

The proximal operator of a penalty `R` with step `t` maps `v` to

    prox(v) = argmin_x  1/2 * ||x - v||^2 + t * R(x)

It is the exact minimiser of the penalty's part of a proximal-gradient step,
so, unlike a (sub)gradient step, it lands weights exactly on zero where the
penalty has a kink. `step` may be a Python float or a scalar tensor (a
learning rate read inside a compiled train step).
"""

import math

from keras import ops

from keras_regkit import _kernels

_LAMBERT_W_ITERATIONS = 4
_SERIES_BELOW = -40.0


def soft_threshold(v, threshold):
    """`sign(v) * max(|v| - threshold, 0)`: the prox of `threshold * |x|`."""
    return ops.sign(v) * ops.relu(ops.abs(v) - threshold)


def elastic_net(v, l1_step, l2_step):
    """The prox of `l1 * |x| + l2 * x**2`, with `l1_step = t * l1`, etc."""
    return soft_threshold(v, l1_step) / (1.0 + 2.0 * l2_step)


def group_soft_threshold(v, threshold, reduction_axes):
    """Block soft-thresholding: `v_g * max(0, 1 - threshold / ||v_g||)`.

    The prox of `threshold * sum_g ||x_g||`, groups being the slices of `v`
    reduced over `reduction_axes`. A group whose norm is at most
    `threshold` becomes exactly zero.
    """
    norms, _ = _kernels.group_norms(v, reduction_axes)
    # t / ||v_g|| is +inf for a group of subnormal weights (zeroed, as its
    # norm is below any positive threshold) and 0 for a norm that overflows
    # (kept); a zero group stays zero.
    positive = norms > 0
    kept = ops.relu(1.0 - threshold / ops.where(positive, norms, 1.0))
    return v * ops.where(positive, kept, 0.0)


def _constant(value, like):
    """`value` (a Python float or a tensor) in `like`'s dtype.

    In Keras 3.15 a Python float given to `ops.cast` (TensorFlow) or mixed
    with float64 tensors in `ops.maximum` (PyTorch) passes through float32,
    which would cost a float64 result all but 7 of its digits.
    """
    if hasattr(value, "dtype"):
        return ops.cast(value, like.dtype)
    return ops.convert_to_tensor(value, dtype=like.dtype)


def _lambert_w_of_exp(xi):
    """`W(exp(xi))` for the principal branch, without forming `exp(xi)`.

    Iacono and Boyd's iteration `w <- w / (1 + w) * (1 + xi - log(w))`
    ("New approximations to the principal real-valued branch of the Lambert
    W-function", 2017) converges quadratically from `softplus(xi)`: four
    steps reach float64 precision for `xi` in [-80, 90]. Below
    `_SERIES_BELOW`, `W(x) = x - x**2 + ...` is `exp(xi)` to float64
    precision, and the iteration would take the logarithm of an underflow.
    """
    below = xi < _SERIES_BELOW
    iterated = ops.where(below, _constant(_SERIES_BELOW, xi), xi)
    w = ops.softplus(iterated)
    for _ in range(_LAMBERT_W_ITERATIONS):
        w = w / (1.0 + w) * (1.0 + iterated - ops.log(w))
    return ops.where(below, ops.exp(xi), w)


def exp_abs(v, step, strength, scale, limit, saturation):
    """The exact prox of `ExpAbs(strength, scale)`, tangent included.

    Per element, with `a = |v|`, `k = step * strength / scale` and `x =
    sign(v) * y`, the minimiser solves `y + k * f'(y / scale) = a` for
    `y > 0`, where `f' = exp` up to `limit`, then the constant `exp(limit)`
    (the penalty's tangent continuation):

    - `a <= k`: `y = 0`, exactly where L1 of strength `strength / scale`
      zeroes (its slope at 0 is the same);
    - in the exponential part, `y = a - scale * W(k / scale * exp(a /
      scale))` with `W` the Lambert W function, taken in log space so that
      nothing overflows, then one Newton step on `y` to machine precision;
    - past the limit, a shift: `y = a - k * exp(limit)`;
    - past the saturation, where the penalty is flat, `x = v`.
    """
    magnitude = ops.abs(v)
    k = _constant(step * (strength / scale), v)
    # Exponential part, in units of `scale`. Where `a <= k` the formula is
    # not used; `safe` keeps its logarithm finite there.
    positive = ops.logical_and(magnitude > k, k > 0)
    safe_k = ops.where(positive, k, _constant(1.0, v))
    xi = ops.log(safe_k / scale) + magnitude / scale
    y = magnitude - scale * _lambert_w_of_exp(xi)
    y = ops.clip(y, _constant(0.0, v), _constant(scale * limit, v))
    slope = (k / scale) * ops.exp(y / scale)
    y = y - (y + k * ops.exp(y / scale) - magnitude) / (1.0 + slope)
    # Tangent part: the solution lies past the limit.
    shifted = magnitude - k * math.exp(limit)
    y = ops.where(shifted >= scale * limit, shifted, y)
    y = ops.where(positive, ops.relu(y), _constant(0.0, v))
    x = ops.sign(v) * y
    unchanged = ops.logical_or(magnitude >= scale * saturation, k <= 0)
    return ops.where(unchanged, v, x)
