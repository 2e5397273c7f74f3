"""Weight penalties that plug into any Keras 3 `*_regularizer=` argument.

Every class here subclasses `keras.regularizers.Regularizer`, is registered
for saving under the package name `keras_regkit`, and is written with
`keras.ops` so it runs on TensorFlow, JAX and PyTorch alike.

Conventions shared by all of them:

- The penalty of a weight tensor `w` is a scalar. For float32 and float64
  weights it has the weight's dtype; float16 and bfloat16 weights are
  penalised in float32 (and the result is float32), so that a sum over a
  large kernel neither overflows nor loses its small terms.
- Gradients are written in closed form (`keras.ops.custom_gradient`): they
  cost one pass over the weights, and stay finite where the textbook formula
  is undefined (the kink of `|w|` at 0, the norm of an all-zero group).
- `get_config()` returns exactly the constructor arguments as plain Python
  numbers, instances compare equal when their configs do, and every argument
  is validated when the object is built.
"""

import math
from typing import Any, TypeAlias, TypeVar

import keras
import numpy as np
from keras import ops

from keras_regkit import _config, _kernels, _proximal, _validation
from keras_regkit._config import ConfigByKeys

__all__ = [
    "ElasticNet",
    "ExpAbs",
    "GroupLasso",
    "L1",
    "L2",
    "NAMES",
    "get",
    "serialize",
    "with_strength",
]

# What `get` resolves: a regularizer, a name, a config dict, or None.
_Identifier: TypeAlias = (
    keras.regularizers.Regularizer | str | dict[str, Any] | None
)
_PenaltyT = TypeVar("_PenaltyT", bound="_Penalty")

_HALF_PRECISION = ("float16", "bfloat16")
_FLOAT32_TINY = 1.1754943508222875e-38
_FLOAT32_MAX = 3.4028234663852886e38
# `expm1(u)` continued along its tangent at `u = 40`, at the saturation
# point: the largest penalty of one weight, per unit of strength.
_EXP_ABS_CEILING = math.expm1(40.0) + math.exp(40.0) * (
    _kernels.EXP_ABS_SATURATION - 40.0
)


def _read(x):
    """Returns the value of a tensor, array or variable as a backend tensor."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        # keras.ops hands TensorFlow variables back as they are; the penalty
        # must see a plain tensor so that its custom gradient flows to the
        # variable through the read.
        return tf.convert_to_tensor(x)
    return ops.convert_to_tensor(x)


def _penalty_input(x):
    """Returns `x` as a tensor in the dtype its penalty is computed in."""
    x = _read(x)
    dtype = keras.backend.standardize_dtype(x.dtype)
    if dtype in _HALF_PRECISION or not keras.backend.is_float_dtype(dtype):
        x = ops.cast(x, "float32")
    return x


def _with_gradient(value_and_gradient, x):
    """Evaluates a penalty whose gradient is given in closed form.

    Args:
        value_and_gradient: function of the weight tensor returning the
            penalty and a function that maps the upstream gradient (a
            scalar) to the gradient with respect to the weights.
        x: the weight tensor.
    """

    @ops.custom_gradient
    def penalty(x):
        value, gradient = value_and_gradient(x)

        def gradient_fn(*args, upstream=None):
            # TensorFlow and JAX pass the upstream gradient positionally,
            # PyTorch by keyword after the forward inputs.
            if upstream is None:
                (upstream,) = args
            return gradient(upstream)

        return value, gradient_fn

    return penalty(x)


def _checked_step(step):
    """`step` checked: numbers and numpy scalars here, tensors by the caller.

    A numpy scalar or array has a `shape` as tensors do, but is the user's
    number: it is checked like a Python one (and comes back as a float).
    """
    if isinstance(step, (np.generic, np.ndarray)) or not hasattr(step, "shape"):
        return _validation.non_negative_float("step", step)
    return step


def _prox_input(w):
    """`w` as a tensor to take a proximal step on, and its original dtype."""
    w = _read(w)
    return _penalty_input(w), w.dtype


def _is_zero_step(step):
    """Whether `step` is the number 0, for which every prox is the identity.

    Returning the weights as they are keeps that exact, subnormals
    included, which kernels that flush them to zero would not.
    """
    return not hasattr(step, "shape") and step == 0


class _Penalty(ConfigByKeys, keras.regularizers.Regularizer):
    """Base of the keras_regkit regularizers.

    Subclasses name their constructor arguments in `_config_keys` and, among
    them, the ones that scale the whole penalty linearly in
    `_strength_keys`.
    """

    _strength_keys: tuple[str, ...] = ()

    def scaled(self: _PenaltyT, factor: float) -> _PenaltyT:
        """The same penalty with every strength multiplied by `factor`.

        Args:
            factor: non-negative float.

        Returns:
            A new regularizer of the same class; `penalty.scaled(f)(w)`
            equals `f * penalty(w)`.

        Example:

        >>> ElasticNet(l1=0.01, l2=0.02).scaled(0.5)
        ElasticNet(l1=0.005, l2=0.01)
        """
        factor = _validation.non_negative_float("factor", factor)
        config = self.get_config()
        for key in self._strength_keys:
            config[key] = config[key] * factor
        return type(self).from_config(config)

    def prox(self, w: Any, step: Any) -> Any:
        """The proximal operator: `argmin_x 1/2 ||x - w||^2 + step * R(x)`.

        One proximal-gradient step on a loss plus this penalty `R` is a
        gradient step on the loss alone, then `prox` with `step` equal to
        the learning rate. Where the penalty has a kink at zero (L1, elastic
        net, group lasso, `ExpAbs`) it sets weights exactly to zero, which a
        gradient step never does.

        Args:
            w: weight tensor, array or variable.
            step: non-negative float or scalar tensor, the step size.

        Returns:
            A tensor of `w`'s shape and dtype (half-precision weights are
            computed in float32 and cast back).
        """
        step = _checked_step(step)
        x, dtype = _prox_input(w)
        if _is_zero_step(step):
            return _read(w)
        return ops.cast(self._prox(x, step), dtype)

    def _prox(self, x, step):
        raise NotImplementedError


@keras.saving.register_keras_serializable(package=_config.PACKAGE)
class L1(_Penalty):
    """Lasso penalty: `l1 * sum(|w|)`.

    The same penalty as `keras.regularizers.L1`, so swapping one for the other
    changes nothing but speed and the config (which here stores `0.01`, not
    its float32 rounding). Its gradient is `l1 * sign(w)`, with 0 at
    `w = 0`. Plain gradient descent on it shrinks weights towards zero but
    never makes them exactly zero.

    Args:
        l1: non-negative float, the strength of the penalty.

    Example:

    >>> import numpy as np
    >>> penalty = L1(l1=0.1)
    >>> float(penalty(np.array([[1.0, -2.0], [0.5, 0.0]])))
    0.35
    >>> layer = keras.layers.Dense(4, kernel_regularizer=L1(0.01))
    """

    _config_keys = ("l1",)
    _strength_keys = ("l1",)

    def __init__(self, l1: float = 0.01) -> None:
        self.l1 = _validation.non_negative_float("l1", l1)

    def _prox(self, x, step):
        # Soft-thresholding: sign(w) * max(|w| - step * l1, 0).
        return _proximal.soft_threshold(x, step * self.l1)

    def __call__(self, x: Any) -> Any:
        x = _penalty_input(x)
        l1 = self.l1

        def value_and_gradient(x):
            value = _kernels.scaled_sum_of_magnitudes(x, l1)
            return value, lambda upstream: _kernels.sign_times(x, l1 * upstream)

        return _with_gradient(value_and_gradient, x)


@keras.saving.register_keras_serializable(package=_config.PACKAGE)
class L2(_Penalty):
    """Ridge penalty in Keras's convention: `l2 * sum(w**2)`.

    There is no factor 1/2, so the gradient is `2 * l2 * w`, exactly as with
    `keras.regularizers.L2`, for which this is a drop-in swap. Other
    conventions convert with `L2.from_weight_decay` and
    `L2.from_course_lambda`.

    Args:
        l2: non-negative float, the strength of the penalty.

    Example:

    >>> import numpy as np
    >>> float(L2(l2=0.1)(np.array([1.0, -2.0, 0.5])))
    0.525
    >>> L2.from_weight_decay(1e-4)
    L2(l2=5e-05)
    """

    _config_keys = ("l2",)
    _strength_keys = ("l2",)

    def __init__(self, l2: float = 0.01) -> None:
        self.l2 = _validation.non_negative_float("l2", l2)

    def _prox(self, x, step):
        # Shrinkage towards zero: w / (1 + 2 * step * l2); never exactly 0.
        return x / (1.0 + 2.0 * step * self.l2)

    @classmethod
    def from_weight_decay(cls, weight_decay: float) -> "L2":
        """The `L2` that matches decoupled weight decay under plain SGD.

        Decoupled weight decay (`keras.optimizers.SGD(weight_decay=wd)`,
        PyTorch's `SGD(weight_decay=wd)`, Optax's `add_decayed_weights`)
        moves each weight by `-lr * wd * w` per step; `L2(l2)` moves it by
        `-lr * 2 * l2 * w`. With plain SGD (momentum included, as long as
        the decay enters the gradient) the two are the same for
        `l2 = wd / 2`. With Adam and other adaptive optimizers they differ:
        there the penalty's gradient is rescaled, the decay is not
        (Loshchilov and Hutter, "Decoupled Weight Decay Regularization").

        Args:
            weight_decay: non-negative float, the decay coefficient `wd`.

        Returns:
            `L2(weight_decay / 2)`.
        """
        weight_decay = _validation.non_negative_float(
            "weight_decay", weight_decay
        )
        return cls(l2=weight_decay / 2.0)

    @classmethod
    def from_course_lambda(cls, lambda_: float, num_examples: int) -> "L2":
        """The `L2` for the course cost `J = L + lambda/(2m) * sum ||W||^2`.

        `L` is the mean loss over the `m` training examples, as Keras's
        compiled losses are, so the penalty is `L2(lambda / (2 * m))`.

        Args:
            lambda_: non-negative float, the course's `lambda`.
            num_examples: positive int, `m`, the number of training examples.

        Returns:
            `L2(lambda_ / (2 * num_examples))`.

        Example:

        >>> L2.from_course_lambda(0.7, num_examples=350)
        L2(l2=0.001)
        """
        lambda_ = _validation.non_negative_float("lambda_", lambda_)
        num_examples = _validation.positive_int("num_examples", num_examples)
        return cls(l2=lambda_ / (2.0 * num_examples))

    def __call__(self, x: Any) -> Any:
        x = _penalty_input(x)
        l2 = self.l2

        def value_and_gradient(x):
            value = _kernels.scaled_sum_of_squares(x, l2)
            return value, lambda upstream: x * ((2.0 * l2) * upstream)

        return _with_gradient(value_and_gradient, x)


@keras.saving.register_keras_serializable(package=_config.PACKAGE)
class ElasticNet(_Penalty):
    """Elastic-net penalty: `l1 * sum(|w|) + l2 * sum(w**2)`.

    The same penalty as `keras.regularizers.L1L2`. `ElasticNet.from_ratio`
    takes scikit-learn's `(alpha, l1_ratio)` instead.

    Args:
        l1: non-negative float, strength of the L1 term.
        l2: non-negative float, strength of the squared-L2 term.

    Example:

    >>> import numpy as np
    >>> float(ElasticNet(l1=0.1, l2=0.1)(np.array([1.0, -2.0])))
    0.8
    >>> ElasticNet.from_ratio(alpha=0.02, l1_ratio=0.5)
    ElasticNet(l1=0.01, l2=0.005)
    """

    _config_keys = ("l1", "l2")
    _strength_keys = ("l1", "l2")

    def __init__(self, l1: float = 0.01, l2: float = 0.01) -> None:
        self.l1 = _validation.non_negative_float("l1", l1)
        self.l2 = _validation.non_negative_float("l2", l2)

    def _prox(self, x, step):
        # sign(w) * max(|w| - step * l1, 0) / (1 + 2 * step * l2).
        return _proximal.elastic_net(x, step * self.l1, step * self.l2)

    @classmethod
    def from_ratio(cls, alpha: float, l1_ratio: float) -> "ElasticNet":
        """Builds the penalty from scikit-learn's parametrization.

        scikit-learn's `ElasticNet` penalises
        `alpha * l1_ratio * ||w||_1 + 0.5 * alpha * (1 - l1_ratio) * ||w||_2^2`,
        so `l1 = alpha * l1_ratio` and `l2 = alpha * (1 - l1_ratio) / 2`.
        Mind the data term too: scikit-learn's is `||y - Xw||^2 / (2n)`, half
        of Keras's `"mse"`. To reproduce its solution with `loss="mse"`, pass
        `2 * alpha`.

        Args:
            alpha: non-negative float, the overall strength.
            l1_ratio: float in [0, 1], the share of the L1 term.

        Returns:
            The equivalent `ElasticNet`.
        """
        alpha = _validation.non_negative_float("alpha", alpha)
        l1_ratio = _validation.unit_interval_float("l1_ratio", l1_ratio)
        return cls(l1=alpha * l1_ratio, l2=alpha * (1.0 - l1_ratio) / 2.0)

    def __call__(self, x: Any) -> Any:
        x = _penalty_input(x)
        l1, l2 = self.l1, self.l2

        def value_and_gradient(x):
            value = _kernels.scaled_sum_of_magnitudes(
                x, l1
            ) + _kernels.scaled_sum_of_squares(x, l2)

            def gradient(upstream):
                return _kernels.elastic_net_gradient(
                    x, l1 * upstream, (2.0 * l2) * upstream
                )

            return value, gradient

        return _with_gradient(value_and_gradient, x)


def _check_exp_abs_bounds(strength, scale):
    """Refuses an `ExpAbs` whose slope or value per weight overflows float32.

    Penalties of float32 and half-precision weights are computed in
    float32. The gradient of one weight is at most `strength * exp(40) /
    scale` (the tangent's slope) and its penalty at most `strength *
    _EXP_ABS_CEILING` (the value at the saturation point); both must be
    finite there, or the promise of a finite penalty and gradient for every
    finite weight cannot hold.
    """
    slope = strength * math.exp(40.0) / scale
    if slope > _FLOAT32_MAX:
        raise ValueError(
            "Invalid arguments received for `ExpAbs`: the penalty's largest "
            f"slope, strength * exp(40) / scale = {slope:.3g}, overflows "
            "float32 (largest 3.4e38), so weights past the exact range "
            "would get infinite gradients. Expected strength / scale <= "
            f"{_FLOAT32_MAX / math.exp(40.0):.3g}. Received: "
            f"strength={strength!r}, scale={scale!r}"
        )
    ceiling = strength * _EXP_ABS_CEILING
    if ceiling > _FLOAT32_MAX:
        raise ValueError(
            "Invalid value received for argument `strength`. The penalty of "
            "one weight at the saturation point, strength * "
            f"{_EXP_ABS_CEILING:.3g} = {ceiling:.3g}, overflows float32 "
            "(largest 3.4e38). Expected strength <= "
            f"{_FLOAT32_MAX / _EXP_ABS_CEILING:.3g}. Received: "
            f"strength={strength!r}"
        )


@keras.saving.register_keras_serializable(package=_config.PACKAGE)
class ExpAbs(_Penalty):
    """Exponential penalty: `strength * sum(exp(|w| / scale) - 1)`.

    Near zero it behaves like `|w| + w**2 / 2` (in units of `scale`): the same
    kink as L1, so it also favours zeros, but less strongly than L1 of the same
    strength relative to the rest; far from zero it grows faster than any
    polynomial, so a large weight is punished much harder than under L2.

    Safe range. The formula is applied exactly while `u = |w| / scale <= c`,
    with `c = 40` (`c = 10` for float16 weights, whose largest value is
    65504). Beyond it the penalty of a weight continues along its tangent,
    `expm1(c) + exp(c) * (u - c)`, with the constant gradient
    `strength * exp(c) / scale` (like the Huber loss past its threshold),
    up to `u = 1e12`, where it stops growing and its gradient is 0. A naive
    `exp` would overflow at `|w|` of about 88.7 in float32 and 11.1 in
    float16, turning the loss into `inf` and the gradient into `nan`.
    Half-precision weights are penalised in float32.

    Bounds. One weight's gradient is at most `strength * exp(40) / scale`
    and its penalty at most `strength * 2.35e29`; arguments for which
    either overflows float32 (`strength / scale > 1.4e21`, or `strength >
    1.4e9`) are refused when the penalty is built, with a message that says
    so. For every accepted argument the gradient is therefore finite for
    every finite weight in bfloat16, float32 and float64 (in float16, whose
    largest value is 65504, while `strength / scale * exp(10)` fits it),
    and so is the penalty, unless the sum over a whole tensor exceeds the
    largest float32 (`strength * 2.35e29` per weight at the ceiling: with
    `strength = 0.01`, 1e11 weights of `|w| >= 1e12 * scale`).

    Args:
        strength: non-negative float, the factor in front of the sum, at
            most 1.4e9.
        scale: positive float (at least 1.2e-38, float32's smallest normal
            number, and at least `strength / 1.4e21`), the weight magnitude
            that counts as one unit.

    Example:

    >>> import numpy as np
    >>> penalty = ExpAbs(strength=1.0)(np.array([0.0, 1.0, -1.0]))
    >>> float(penalty)  # 2 * (e - 1)
    3.43656
    >>> value = ExpAbs(strength=1.0)(np.array([1000.0], dtype="float32"))
    >>> bool(np.isfinite(keras.ops.convert_to_numpy(value)))
    True
    """

    _config_keys = ("strength", "scale")
    _strength_keys = ("strength",)

    def __init__(self, strength: float = 0.01, scale: float = 1.0) -> None:
        self.strength = _validation.non_negative_float("strength", strength)
        self.scale = _validation.positive_float("scale", scale)
        if self.scale < _FLOAT32_TINY:
            raise ValueError(
                "Invalid value received for argument `scale`. Expected a "
                "positive float of at least 1.2e-38 (float32's smallest "
                f"normal number). Received: scale={scale!r}"
            )
        _check_exp_abs_bounds(self.strength, self.scale)

    @staticmethod
    def exact_limit(dtype: Any) -> float:
        """The `|w| / scale` up to which the formula is applied exactly.

        Args:
            dtype: the weights' dtype, as a string or a backend dtype.

        Returns:
            10.0 for float16 weights, 40.0 otherwise.
        """
        if keras.backend.standardize_dtype(dtype) == "float16":
            return 10.0
        return 40.0

    def prox(self, w: Any, step: Any) -> Any:
        """The exact proximal operator of this penalty (see `Regularizer`).

        Weights with `|w| <= step * strength / scale` become exactly zero,
        the same ones that `L1(strength / scale).prox` zeroes; the others
        move towards zero by `scale * W(k / scale * exp(|w| / scale))`, with
        `k = step * strength / scale` and `W` the Lambert W function
        (computed in log space, then refined by a Newton step to machine
        precision). Past the exact limit, where the penalty continues along
        its tangent, the step is a plain shift by `k * exp(limit)`.

        Example:

        >>> import numpy as np
        >>> w = np.array([0.05, -0.5, 2.0], dtype="float32")
        >>> shrunk = ExpAbs(strength=0.1).prox(w, step=1.0)
        >>> np.round(keras.ops.convert_to_numpy(shrunk), 4)
        array([ 0.    , -0.3571,  1.5356], dtype=float32)
        """
        step = _checked_step(step)
        x, dtype = _prox_input(w)
        if _is_zero_step(step):
            return _read(w)
        limit = self.exact_limit(dtype)
        shrunk = _proximal.exp_abs(
            x,
            step,
            self.strength,
            self.scale,
            limit,
            _kernels.EXP_ABS_SATURATION,
        )
        return ops.cast(shrunk, dtype)

    def __call__(self, x: Any) -> Any:
        x = _read(x)
        limit = self.exact_limit(x.dtype)
        x = _penalty_input(x)
        strength, inverse_scale = self.strength, 1.0 / self.scale

        def value_and_gradient(x):
            total, gradient = _kernels.exp_abs(x, inverse_scale, limit)
            return strength * total, lambda upstream: gradient(
                (strength * inverse_scale) * upstream
            )

        return _with_gradient(value_and_gradient, x)


@keras.saving.register_keras_serializable(package=_config.PACKAGE)
class GroupLasso(_Penalty):
    """Group lasso: `strength * sum_g sqrt(|g|) * ||w_g||_2`.

    The weights are cut into groups along `axis`: group `g` is the slice
    `w[..., g, ...]` at one index of that axis, and `|g|` its number of
    elements (Yuan and Lin, 2006). With the default `axis=-1` the groups are a
    Dense kernel's output units and a convolution kernel's filters, so the
    penalty switches off whole neurons and filters; `axis=0` on a Dense kernel
    groups its input features instead (feature selection). `axis` may also be
    a tuple: then each group is one index of all those axes. The gradient is
    `strength * sqrt(|g|) * w_g / ||w_g||`, and 0 for an all-zero group.

    With `heads=h` the groups are the attention heads of a
    `keras.layers.MultiHeadAttention` with `h` heads: each head's slice of
    the query, key and value kernels (shaped `(hidden, heads, head_dim)`,
    grouped along axis 1) and of the output projection's kernel (`(heads,
    head_dim, hidden)`, along axis 0). One penalty serves all four, so
    `regularize(model, kernel=GroupLasso(s, heads=h), layers="attention")`
    is saved in the layer's config; trained with
    `keras_regkit.callbacks.ProximalStep`, it switches off whole heads,
    and `RegularizationMonitor` logs each head's norm.

    Args:
        strength: non-negative float, the factor in front of the sum.
        axis: int or tuple of ints, the axis (or axes) that index the groups.
        heads: None, or the number of attention heads (an int >= 1) when the
            groups are heads; `axis` must then be left at its default.

    Example:

    >>> import numpy as np
    >>> kernel = np.array([[3.0, 0.0], [4.0, 0.0]])  # unit 0: norm 5, size 2
    >>> float(GroupLasso(strength=1.0, axis=-1)(kernel))  # sqrt(2) * 5
    7.07107
    >>> query = np.zeros((8, 2, 4))  # hidden 8, 2 heads of size 4
    >>> query[:, 1, :] = 0.5  # head 1 only: norm sqrt(32 * 0.25)
    >>> float(GroupLasso(strength=1.0, heads=2)(query))  # sqrt(32) * sqrt(8)
    16.0
    >>> GroupLasso(heads=2).group_norms(query).tolist()
    [0.0, 2.82843]
    """

    _config_keys = ("strength", "axis", "heads")
    _strength_keys = ("strength",)

    def __init__(
        self,
        strength: float = 0.01,
        axis: int | tuple[int, ...] | list[int] = -1,
        heads: int | None = None,
    ) -> None:
        self.strength = _validation.non_negative_float("strength", strength)
        self.axis = _validation.axis("axis", axis)
        if heads is not None:
            heads = _validation.positive_int("heads", heads)
            if self.axis != -1:
                raise ValueError(
                    "Pass `axis` or `heads`, not both: the heads decide the "
                    f"groups. Received: axis={axis!r}, heads={heads!r}"
                )
        self.heads = heads

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        if self.heads is None:
            del config["heads"]  # the configs saved before `heads` existed
        return config

    def _group_axes(self, shape):
        """The axes that index the groups of a weight of `shape`."""
        if self.heads is not None:
            return (self._head_axis(shape),)
        return self.axis if isinstance(self.axis, tuple) else (self.axis,)

    def _head_axis(self, shape):
        heads = self.heads
        if len(shape) == 3 and shape[0] != shape[1]:
            if shape[1] == heads:
                return 1  # query, key, value: (hidden, heads, head_dim)
            if shape[0] == heads:
                return 0  # output: (heads, head_dim, hidden)
        raise ValueError(
            f"GroupLasso(heads={heads}) groups the kernels of attention "
            f"projections, shaped (hidden, {heads}, head_dim) or ({heads}, "
            "head_dim, hidden) with hidden != heads. Received a weight of "
            f"shape {tuple(shape)}."
        )

    def _reduction_axes(self, shape):
        ndim = len(shape)
        group_axes = self._group_axes(shape)
        normalized = []
        for axis in group_axes:
            if not -ndim <= axis < ndim:
                raise ValueError(
                    f"GroupLasso(axis={self.axis!r}) cannot group a weight of "
                    f"rank {ndim}: axis {axis} is out of range."
                )
            normalized.append(axis % ndim)
        if len(set(normalized)) != len(normalized):
            raise ValueError(
                f"GroupLasso(axis={self.axis!r}) names the same axis twice "
                f"for a weight of rank {ndim}."
            )
        return tuple(i for i in range(ndim) if i not in normalized)

    def _check_shape(self, shape):
        """Raises a `ValueError` unless a weight of `shape` can be grouped."""
        self._reduction_axes(shape)

    def group_norms(self, x: Any) -> np.ndarray:
        """The L2 norm of each group of `x`, as a flat numpy array.

        Groups come in the order of their index along the group axes (head
        0 first, for `heads`).
        """
        x = _penalty_input(x)
        norms, _ = _kernels.group_norms(x, self._reduction_axes(x.shape))
        return ops.convert_to_numpy(ops.reshape(norms, (-1,)))

    def _prox(self, x, step):
        # Block soft-thresholding: a group whose norm is at most
        # step * strength * sqrt(|g|) becomes exactly zero.
        reduction_axes = self._reduction_axes(x.shape)
        group_size = math.prod(x.shape[i] for i in reduction_axes)
        threshold = step * self.strength * math.sqrt(group_size)
        return _proximal.group_soft_threshold(x, threshold, reduction_axes)

    def __call__(self, x: Any) -> Any:
        x = _penalty_input(x)
        reduction_axes = self._reduction_axes(x.shape)
        group_size = math.prod(x.shape[i] for i in reduction_axes)
        weight = self.strength * math.sqrt(group_size)

        def value_and_gradient(x):
            # The weight goes inside the norms: a norm may overflow where
            # the weighted one (weight < 1) does not.
            norms, directions = _kernels.group_norms(x, reduction_axes, weight)
            value = ops.sum(norms)

            def gradient(upstream):
                return directions * (weight * upstream)

            return value, gradient

        return _with_gradient(value_and_gradient, x)


_BY_NAME = {
    "l1": L1,
    "l2": L2,
    "elastic_net": ElasticNet,
    "exp_abs": ExpAbs,
    "group_lasso": GroupLasso,
}


NAMES = tuple(_BY_NAME)
"""The names `get` and `with_strength` understand."""


def serialize(regularizer: keras.regularizers.Regularizer) -> dict[str, Any]:
    """Returns the config dict Keras saves for `regularizer`."""
    return keras.saving.serialize_keras_object(regularizer)


def get(identifier: _Identifier) -> keras.regularizers.Regularizer | None:
    """Resolves a regularizer from a name, a config dict or an instance.

    Args:
        identifier: one of

            - `None` (no penalty), returned as is;
            - a `keras.regularizers.Regularizer` instance (ours or not),
              returned as is;
            - a name: `"l1"`, `"l2"`, `"elastic_net"`, `"exp_abs"` or
              `"group_lasso"`, giving that class with its default arguments;
            - a config dict, as written by `serialize` or saved by Keras, or
              `{"class_name": <one of the names above>, "config": {...}}`.

    Returns:
        A `keras.regularizers.Regularizer`, or `None`.

    Raises:
        ValueError: for an unknown name (the message lists the valid ones).
        TypeError: for anything else.

    Example:

    >>> get("elastic_net")
    ElasticNet(l1=0.01, l2=0.01)
    >>> get({"class_name": "l2", "config": {"l2": 0.001}})
    L2(l2=0.001)
    >>> get(serialize(ExpAbs(0.5)))
    ExpAbs(strength=0.5, scale=1.0)
    """
    return _resolve(identifier, "identifier")


def with_strength(name: str, strength: float) -> keras.regularizers.Regularizer:
    """The regularizer called `name`, every strength set to `strength`.

    Args:
        name: `"l1"`, `"l2"`, `"elastic_net"`, `"exp_abs"` or
            `"group_lasso"`.
        strength: non-negative float.

    Returns:
        The regularizer, its other arguments at their defaults.

    Example:

    >>> with_strength("elastic_net", 0.001)
    ElasticNet(l1=0.001, l2=0.001)
    >>> with_strength("exp_abs", 0.5)
    ExpAbs(strength=0.5, scale=1.0)
    """
    if not isinstance(name, str):
        raise TypeError(
            "Invalid value received for argument `name`. Expected one of "
            f"{', '.join(repr(n) for n in _BY_NAME)}. Received: name={name!r}"
        )
    strength = _validation.non_negative_float("strength", strength)
    cls = type(_resolve(name, "name"))
    return cls(**{key: strength for key in cls._strength_keys})


def _resolve(identifier, argument):
    """`get(identifier)`, with errors naming `argument` as the culprit.

    For functions that take a regularizer identifier under another name.
    """
    if identifier is None or isinstance(
        identifier, keras.regularizers.Regularizer
    ):
        return identifier
    prefix = f"Invalid value received for argument `{argument}`."
    if isinstance(identifier, str):
        if identifier not in _BY_NAME:
            raise ValueError(
                f"{prefix} Unknown regularizer name: {identifier!r}. Valid "
                f"names: {', '.join(repr(name) for name in _BY_NAME)}."
            )
        return _BY_NAME[identifier]()
    expected = "None, a regularizer instance, a name or a config dict"
    if isinstance(identifier, dict):
        class_name = identifier.get("class_name")
        if class_name in _BY_NAME:
            return _BY_NAME[class_name].from_config(
                identifier.get("config", {})
            )
        # Keras's own names ("L2", "L1L2", ...) as `keras.regularizers.get`
        # reads them, and registered classes ("keras_regkit>L2").
        try:
            regularizer = keras.regularizers.deserialize(identifier)
        except (TypeError, ValueError) as error:
            raise TypeError(
                f"{prefix} Expected the config of a regularizer. Received: "
                f"{argument}={identifier!r} ({error})"
            ) from None
        if isinstance(regularizer, keras.regularizers.Regularizer):
            return regularizer
        expected = "the config of a regularizer"
    raise TypeError(
        f"{prefix} Expected {expected}. Received: {argument}={identifier!r}"
    )
