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


# Property-based checks of every prox, over hypothesis's regularizers,
# weight tensors and steps: step 0 is the identity, the operator is
# non-expansive, and its result is the argmin it claims, checked against a
# numeric minimiser of the proximal objective.


def _penalty64(regularizer, w):
    """The penalty in float64 numpy (inside ExpAbs's exact range)."""
    if isinstance(regularizer, ExpAbs):
        u = np.abs(w) / regularizer.scale
        return regularizer.strength * np.sum(np.expm1(u))
    if isinstance(regularizer, GroupLasso):
        axis = regularizer.axis % w.ndim
        reduce = tuple(i for i in range(w.ndim) if i != axis)
        size = int(np.prod([w.shape[i] for i in reduce]))
        norms = np.sqrt(np.sum(w**2, axis=reduce))
        return regularizer.strength * np.sqrt(size) * np.sum(norms)
    l1 = 0.0 if isinstance(regularizer, L2) else regularizer.l1
    l2 = getattr(regularizer, "l2", 0.0)
    return l1 * np.sum(np.abs(w)) + l2 * np.sum(w**2)


def _prox_cases():
    from hypothesis import strategies as st
    from hypothesis.extra import numpy as hnp

    strengths = st.floats(1e-3, 2.0)
    regularizer = st.one_of(
        st.builds(L1, strengths),
        st.builds(L2, strengths),
        st.builds(ElasticNet, strengths, strengths),
        st.builds(ExpAbs, strengths, st.floats(0.3, 3.0)),
        st.builds(GroupLasso, strengths, st.sampled_from([-1, 0])),
    )
    shapes = st.sampled_from([(1,), (3,), (2, 2)])
    values = st.floats(-5.0, 5.0, width=32)

    @st.composite
    def case(draw):
        shape = draw(shapes)
        a = draw(hnp.arrays("float32", shape, elements=values))
        b = draw(hnp.arrays("float32", shape, elements=values))
        return draw(regularizer), a, b, draw(st.floats(0.0, 2.0))

    return case()


def _prox_property(test):
    from hypothesis import HealthCheck, given, settings

    return settings(
        max_examples=60,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow],
    )(given(_prox_cases())(test))


@pytest.mark.slow
@_prox_property
def test_prox_with_step_zero_is_the_identity(case):
    regularizer, a, _, _ = case
    np.testing.assert_array_equal(_numpy(regularizer.prox(a, 0.0)), a)


@pytest.mark.slow
@_prox_property
def test_prox_is_non_expansive(case):
    regularizer, a, b, step = case
    distance = np.linalg.norm(a.astype("float64") - b)
    moved = _numpy(regularizer.prox(a, step)) - _numpy(
        regularizer.prox(b, step)
    )
    # float32 rounding of each result: a few units in the last place.
    slack = 4e-7 * (np.linalg.norm(a) + np.linalg.norm(b)) + 1e-30
    assert np.linalg.norm(moved) <= distance + slack


@pytest.mark.slow
@_prox_property
def test_prox_is_the_argmin_a_numeric_minimiser_finds(case):
    from scipy.optimize import minimize

    regularizer, v, _, step = case
    v64 = v.astype("float64")

    def objective(x):
        x = np.reshape(x, v.shape)
        return 0.5 * np.sum((x - v64) ** 2) + step * _penalty64(regularizer, x)

    ours = _numpy(regularizer.prox(v, step))
    best = min(
        (
            minimize(
                objective,
                start.ravel(),
                method="Powell",
                options={"xtol": 1e-10, "ftol": 1e-14, "maxfev": 20000},
            )
            for start in (v64, np.zeros_like(v64), ours)
        ),
        key=lambda result: result.fun,
    )
    # The objective is 1-strongly convex: no point beats the true minimiser,
    # and a point whose objective is within d of the minimum lies within
    # sqrt(2 d) of it.
    scale = 1.0 + abs(best.fun)
    assert objective(ours) <= best.fun + 1e-5 * scale
    np.testing.assert_allclose(
        ours.ravel(), best.x, atol=np.sqrt(2e-5 * scale) + 1e-4
    )
