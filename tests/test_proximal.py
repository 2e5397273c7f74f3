"""Tests for the proximal operators: `Regularizer.prox`, `_proximal`.

Each operator is checked three ways: against its closed form in numpy,
against the definition (nothing near the result has a lower proximal
objective), and for the exact zeros it must produce.
"""

import keras
import numpy as np
import pytest
from keras import ops
from scipy.special import lambertw

from keras_regkit.regularizers import L1, L2, ElasticNet, ExpAbs, GroupLasso


def _numpy(x):
    return np.asarray(ops.convert_to_numpy(x), dtype="float64")


def _soft_threshold(v, t):
    return np.sign(v) * np.maximum(np.abs(v) - t, 0.0)


def _exp_abs_prox(v, step, strength, scale):
    """The prox of `strength * sum(expm1(|x| / scale))`, in float64."""
    magnitude = np.abs(v)
    k = step * strength / scale
    with np.errstate(over="ignore", divide="ignore"):
        w = np.real(lambertw(k / scale * np.exp(magnitude / scale)))
    y = np.where(magnitude > k, magnitude - scale * w, 0.0)
    return np.sign(v) * np.maximum(y, 0.0)


def _group_prox(v, threshold, reduce):
    norms = np.sqrt(np.sum(v**2, axis=reduce, keepdims=True))
    with np.errstate(divide="ignore"):
        factor = np.maximum(0.0, 1.0 - threshold / norms)
    return v * np.where(norms > 0, factor, 0.0)


# (regularizer, numpy penalty, numpy prox(v, step))
CASES = [
    (
        L1(0.3),
        lambda w: 0.3 * np.sum(np.abs(w)),
        lambda v, t: _soft_threshold(v, 0.3 * t),
    ),
    (L2(0.2), lambda w: 0.2 * np.sum(w**2), lambda v, t: v / (1 + 0.4 * t)),
    (
        ElasticNet(0.1, 0.5),
        lambda w: 0.1 * np.sum(np.abs(w)) + 0.5 * np.sum(w**2),
        lambda v, t: _soft_threshold(v, 0.1 * t) / (1 + t),
    ),
    (
        ExpAbs(0.2),
        lambda w: 0.2 * np.sum(np.expm1(np.abs(w))),
        lambda v, t: _exp_abs_prox(v, t, 0.2, 1.0),
    ),
    (
        ExpAbs(0.05, scale=0.3),
        lambda w: 0.05 * np.sum(np.expm1(np.abs(w) / 0.3)),
        lambda v, t: _exp_abs_prox(v, t, 0.05, 0.3),
    ),
    (
        GroupLasso(0.1),
        lambda w: 0.1 * np.sqrt(w.shape[0]) * np.sum(np.linalg.norm(w, axis=0)),
        lambda v, t: _group_prox(v, 0.1 * t * np.sqrt(v.shape[0]), 0),
    ),
    (
        GroupLasso(0.1, axis=0),
        lambda w: 0.1 * np.sqrt(w.shape[1]) * np.sum(np.linalg.norm(w, axis=1)),
        lambda v, t: _group_prox(v, 0.1 * t * np.sqrt(v.shape[1]), 1),
    ),
]
IDS = [repr(regularizer) for regularizer, _, _ in CASES]


def _weights(shape=(8, 5), seed=0):
    return np.random.default_rng(seed).normal(0, 0.6, shape).astype("float32")


@pytest.mark.parametrize("regularizer, penalty, reference", CASES, ids=IDS)
@pytest.mark.parametrize("step", [0.0, 0.1, 1.0, 3.0])
def test_prox_matches_closed_form(regularizer, penalty, reference, step):
    v = _weights()
    result = regularizer.prox(v, step)
    assert keras.backend.standardize_dtype(result.dtype) == "float32"
    np.testing.assert_allclose(
        _numpy(result), reference(v.astype("float64"), step), atol=2e-6
    )


@pytest.mark.parametrize("regularizer, penalty, reference", CASES, ids=IDS)
def test_prox_minimises_its_objective(regularizer, penalty, reference):
    """No nearby point, nor 0, nor `v`, has a lower proximal objective."""
    v = _weights(seed=1).astype("float64")
    step = 0.7

    def objective(x):
        return 0.5 * np.sum((x - v) ** 2) + step * penalty(x)

    x = _numpy(regularizer.prox(v.astype("float32"), step))
    best = objective(x)
    assert best <= objective(np.zeros_like(v)) + 1e-6
    assert best <= objective(v) + 1e-6
    rng = np.random.default_rng(2)
    for _ in range(200):
        nudge = rng.normal(0, 1e-3, v.shape) * (rng.random(v.shape) < 0.3)
        assert best <= objective(x + nudge) + 1e-6


@pytest.mark.parametrize(
    "regularizer, threshold",
    [(L1(0.5), 0.5), (ElasticNet(0.5, 2.0), 0.5), (ExpAbs(0.5), 0.5)],
    ids=repr,
)
def test_weights_within_the_threshold_become_exactly_zero(
    regularizer, threshold
):
    step = 0.4
    v = np.array([-0.3, -0.2, 0.0, 0.1, 0.2, 0.21, -0.25], dtype="float32")
    result = _numpy(regularizer.prox(v, step))
    inside = np.abs(v) <= step * threshold
    assert np.all(result[inside] == 0.0)
    assert np.all(result[~inside] != 0.0)
    assert np.all(np.sign(result[~inside]) == np.sign(v[~inside]))


def test_exp_abs_zeroes_exactly_where_l1_does():
    v = _weights((50, 20), seed=3)
    for strength, scale, step in [(0.1, 1.0, 1.0), (0.02, 0.25, 2.0)]:
        exp_zeros = _numpy(ExpAbs(strength, scale).prox(v, step)) == 0
        l1_zeros = _numpy(L1(strength / scale).prox(v, step)) == 0
        np.testing.assert_array_equal(exp_zeros, l1_zeros)
        assert 0 < exp_zeros.mean() < 1


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_exp_abs_prox_is_accurate_to_machine_precision(dtype):
    if keras.backend.backend() == "jax" and dtype == "float64":
        pytest.skip("JAX computes in float32 unless x64 is enabled.")
    v = np.concatenate(
        [np.linspace(-30, 30, 2001), np.geomspace(1e-6, 30, 500)]
    ).astype(dtype)
    for strength, step in [(1e-4, 1.0), (0.3, 0.5), (5.0, 2.0)]:
        result = ExpAbs(strength).prox(ops.convert_to_tensor(v), step)
        assert keras.backend.standardize_dtype(result.dtype) == dtype
        result = _numpy(result)
        expected = _exp_abs_prox(v.astype("float64"), step, strength, 1.0)
        eps = np.finfo(dtype).eps
        # A few ulps of the input magnitude: y = |v| - W(...) cancels.
        error = np.abs(result - expected) / np.maximum(np.abs(v), 1.0)
        assert error.max() <= 8 * eps, (strength, step, error.max() / eps)


def test_exp_abs_prox_past_the_exact_limit_is_a_shift():
    """Past `|w| = 40 * scale` the penalty is linear; its prox a shift."""
    penalty = ExpAbs(1e-20)
    k = 1e-20 * np.exp(40.0)
    v = np.array([1e3, -1e5, 1e30], dtype="float32")
    result = _numpy(penalty.prox(v, 1.0))
    np.testing.assert_allclose(result[:2], np.sign(v[:2]) * (np.abs(v[:2]) - k))
    assert result[2] == v[2]  # past the saturation the penalty is flat
    assert np.all(np.isfinite(result))


def test_prox_keeps_half_precision_dtypes_and_values():
    v = _weights()
    for dtype in ["float16", "bfloat16"]:
        half = ops.cast(v, dtype)
        result = L1(0.3).prox(half, 0.5)
        assert keras.backend.standardize_dtype(result.dtype) == dtype
        expected = _soft_threshold(_numpy(ops.cast(half, "float32")), 0.15)
        np.testing.assert_allclose(_numpy(result), expected, rtol=1e-2)


def test_prox_accepts_a_variable_and_a_tensor_step():
    variable = keras.Variable(_weights())
    step = ops.convert_to_tensor(0.5)
    result = ElasticNet(0.1, 0.2).prox(variable, step)
    expected = _soft_threshold(_weights().astype("float64"), 0.05) / 1.2
    np.testing.assert_allclose(_numpy(result), expected, atol=1e-6)


@pytest.mark.parametrize("step", [-0.1, float("nan"), "1", True])
def test_bad_step_is_refused(step):
    error = TypeError if isinstance(step, (str, bool)) else ValueError
    with pytest.raises(error, match="argument `step`"):
        L1(0.1).prox(_weights(), step)


@pytest.mark.parametrize("regularizer, penalty, reference", CASES, ids=IDS)
def test_scaled_multiplies_the_penalty(regularizer, penalty, reference):
    w = _weights()
    scaled = regularizer.scaled(2.5)
    assert type(scaled) is type(regularizer)
    np.testing.assert_allclose(
        float(_numpy(scaled(w))), 2.5 * float(_numpy(regularizer(w))), rtol=1e-6
    )
    assert regularizer.scaled(1.0) == regularizer
    with pytest.raises(ValueError, match="argument `factor`"):
        regularizer.scaled(-1.0)
