"""Tests for keras_regkit.regularizers.

`CASES` drives one conformance suite over every regularizer: adding a class
means adding one line there.
"""

import copy
import json
import math
import os

import keras
import numpy as np
import pytest
from backend_utils import (
    gradient,
    value,
    value_and_gradient_in,
)
from keras import ops
from serialization import (
    assert_config_round_trip,
    assert_loads_in_fresh_process,
)

from keras_regkit import regularizers
from keras_regkit.regularizers import L1, L2, ElasticNet, ExpAbs, GroupLasso


def _group_lasso_reference(w, strength, axis):
    group_axes = axis if isinstance(axis, tuple) else (axis,)
    group_axes = tuple(a % w.ndim for a in group_axes)
    reduce = tuple(i for i in range(w.ndim) if i not in group_axes)
    size = math.prod(w.shape[i] for i in reduce)
    norms = np.sqrt(np.sum(w**2, axis=reduce))
    return strength * math.sqrt(size) * np.sum(norms)


# (regularizer, numpy reference of its penalty)
CASES = [
    (L1(0.03), lambda w: 0.03 * np.sum(np.abs(w))),
    (L2(0.02), lambda w: 0.02 * np.sum(w**2)),
    (
        ElasticNet(0.01, 0.05),
        lambda w: 0.01 * np.sum(np.abs(w)) + 0.05 * np.sum(w**2),
    ),
    (ExpAbs(0.02), lambda w: 0.02 * np.sum(np.expm1(np.abs(w)))),
    (
        ExpAbs(0.02, scale=0.25),
        lambda w: 0.02 * np.sum(np.expm1(np.abs(w) / 0.25)),
    ),
    (GroupLasso(0.04), lambda w: _group_lasso_reference(w, 0.04, -1)),
    (GroupLasso(0.04, axis=0), lambda w: _group_lasso_reference(w, 0.04, 0)),
    (
        GroupLasso(0.04, axis=(0, 1)),
        lambda w: _group_lasso_reference(w, 0.04, (0, 1)),
    ),
]
IDS = [repr(regularizer) for regularizer, _ in CASES]
SHAPES = [(6, 5), (3, 3, 2, 4)]  # a Dense kernel and a Conv2D kernel


def _weights(shape, seed=0):
    return np.random.default_rng(seed).normal(0, 0.5, shape).astype("float32")


@pytest.mark.parametrize("regularizer, reference", CASES, ids=IDS)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_value_matches_numpy(regularizer, reference, shape):
    w = _weights(shape)
    expected = reference(w.astype("float64"))
    assert value(regularizer, w) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("regularizer, reference", CASES, ids=IDS)
def test_gradient_matches_finite_differences(regularizer, reference):
    w = _weights((4, 3), seed=1)
    analytic = gradient(regularizer, w)
    numeric = np.zeros_like(w, dtype="float64")
    w64 = w.astype("float64")
    step = 1e-6
    for index in np.ndindex(w.shape):
        plus, minus = w64.copy(), w64.copy()
        plus[index] += step
        minus[index] -= step
        numeric[index] = (reference(plus) - reference(minus)) / (2 * step)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("regularizer, reference", CASES, ids=IDS)
def test_zero_weights_have_zero_penalty_and_finite_gradient(
    regularizer, reference
):
    zeros = np.zeros((4, 3), dtype="float32")
    assert value(regularizer, zeros) == 0.0
    grad = gradient(regularizer, zeros)
    assert np.all(np.isfinite(grad))
    np.testing.assert_array_equal(grad, 0.0)


@pytest.mark.parametrize("regularizer, reference", CASES, ids=IDS)
def test_sign_symmetry(regularizer, reference):
    w = _weights((5, 4), seed=2)
    assert value(regularizer, w) == pytest.approx(value(regularizer, -w))
    np.testing.assert_allclose(
        gradient(regularizer, -w), -gradient(regularizer, w), rtol=1e-6
    )


@pytest.mark.parametrize("regularizer, reference", CASES, ids=IDS)
@pytest.mark.parametrize(
    "dtype, expected",
    [("float32", "float32"), ("float16", "float32"), ("bfloat16", "float32")],
)
def test_result_dtype(regularizer, reference, dtype, expected):
    w = ops.cast(_weights((4, 3)), dtype)
    result = regularizer(w)
    assert keras.backend.standardize_dtype(result.dtype) == expected
    assert tuple(result.shape) == ()


@pytest.mark.parametrize("regularizer, reference", CASES, ids=IDS)
def test_half_precision_value_is_close_to_float32(regularizer, reference):
    w = _weights((8, 8), seed=3)
    exact = value(regularizer, w)
    assert value(regularizer, w, "float16") == pytest.approx(exact, rel=2e-3)
    assert value(regularizer, w, "bfloat16") == pytest.approx(exact, rel=2e-2)


@pytest.mark.parametrize("regularizer, reference", CASES, ids=IDS)
def test_config_round_trips_as_json(regularizer, reference):
    rebuilt = assert_config_round_trip(regularizer)
    assert rebuilt == regularizer
    assert type(regularizer).from_config(
        json.loads(json.dumps(regularizer.get_config()))
    ) == (regularizer)


@pytest.mark.parametrize("regularizer, reference", CASES, ids=IDS)
def test_registered_under_package_name(regularizer, reference):
    name = keras.saving.get_registered_name(type(regularizer))
    assert name == f"keras_regkit>{type(regularizer).__name__}"


@pytest.mark.parametrize("regularizer, reference", CASES, ids=IDS)
def test_deepcopy_is_equal_and_independent(regularizer, reference):
    copied = copy.deepcopy(regularizer)
    assert copied == regularizer and copied is not regularizer
    assert hash(copied) == hash(regularizer)
    w = _weights((3, 3))
    assert value(copied, w) == value(regularizer, w)


@pytest.mark.parametrize("regularizer, reference", CASES, ids=IDS)
def test_works_through_every_keras_argument(regularizer, reference):
    # A group lasso over two axes has no groups in a vector: bias gets L1.
    takes_vectors = not isinstance(getattr(regularizer, "axis", 0), tuple)
    bias_regularizer = regularizer if takes_vectors else L1(0.03)
    bias_reference = reference if takes_vectors else CASES[0][1]
    inputs = keras.Input((7, 3))
    sequence = keras.layers.LSTM(
        4,
        kernel_regularizer=regularizer,
        recurrent_regularizer=regularizer,
        bias_regularizer=bias_regularizer,
    )(inputs)
    outputs = keras.layers.Dense(2, kernel_regularizer=regularizer)(sequence)
    model = keras.Model(inputs, outputs)
    # kernel, recurrent kernel and bias of the LSTM, kernel of the Dense.
    assert len(model.losses) == 4
    total = sum(float(ops.convert_to_numpy(loss)) for loss in model.losses)
    weights = model.get_weights()  # lstm kernel, recurrent, bias; dense k, b
    expected = sum(reference(weights[i].astype("float64")) for i in (0, 1, 3))
    expected += bias_reference(weights[2].astype("float64"))
    assert total == pytest.approx(expected, rel=1e-5)

    class Scaled(keras.layers.Layer):
        def build(self, input_shape):
            self.w = self.add_weight(
                shape=(input_shape[-1], 2), regularizer=regularizer
            )

        def call(self, x):
            return ops.matmul(x, self.w)

    layer = Scaled()
    layer(np.ones((1, 3), dtype="float32"))
    assert float(ops.convert_to_numpy(layer.losses[0])) == pytest.approx(
        reference(ops.convert_to_numpy(layer.w).astype("float64")), rel=1e-5
    )


@pytest.mark.slow
@pytest.mark.parametrize("regularizer, reference", CASES, ids=IDS)
def test_saved_model_loads_in_fresh_process(regularizer, reference, tmp_path):
    model = keras.Sequential(
        [
            keras.Input((3, 3, 2)),
            keras.layers.Conv2D(4, 2, kernel_regularizer=regularizer),
            keras.layers.Flatten(),
            keras.layers.Dense(
                3, kernel_regularizer=regularizer, bias_regularizer=L1(0.1)
            ),
        ]
    )
    x = np.random.default_rng(0).normal(size=(2, 3, 3, 2)).astype("float32")
    assert_loads_in_fresh_process(model, x, tmp_path)


def test_repr_shows_constructor_arguments():
    assert repr(L1(0.01)) == "L1(l1=0.01)"
    assert repr(GroupLasso(0.5, axis=(0, 1))) == (
        "GroupLasso(strength=0.5, axis=(0, 1))"
    )


@pytest.mark.parametrize(
    "regularizer, config",
    [
        (L1(0.01), {"l1": 0.01}),
        (L2(0.001), {"l2": 0.001}),
        (ElasticNet(0.01, 0.02), {"l1": 0.01, "l2": 0.02}),
        (ExpAbs(0.3, 2.0), {"strength": 0.3, "scale": 2.0}),
        (GroupLasso(0.1, axis=0), {"strength": 0.1, "axis": 0}),
    ],
)
def test_config_is_exactly_the_constructor_arguments(regularizer, config):
    assert regularizer.get_config() == config
    for key, expected in config.items():
        stored = regularizer.get_config()[key]
        assert type(stored) is type(expected)


def test_numpy_float32_arguments_keep_their_decimal_value():
    assert L1(np.float32(0.01)).get_config() == {"l1": 0.01}
    assert L2(np.float64(0.02)).l2 == 0.02
    assert ExpAbs(np.int64(2)).get_config()["strength"] == 2.0


def test_equality_is_by_type_and_config():
    assert L1(0.01) == L1(0.01)
    assert L1(0.01) != L1(0.02)
    assert L1(0.01) != L2(0.01)
    assert ElasticNet(0.01, 0.0) != L1(0.01)
    assert len({L2(0.1), L2(0.1), L2(0.2)}) == 2


@pytest.mark.parametrize(
    "ours, theirs",
    [
        (L1(0.03), keras.regularizers.L1(0.03)),
        (L2(0.03), keras.regularizers.L2(0.03)),
        (ElasticNet(0.03, 0.02), keras.regularizers.L1L2(0.03, 0.02)),
    ],
    ids=["L1", "L2", "ElasticNet"],
)
def test_same_penalty_and_gradient_as_the_keras_twin(ours, theirs):
    w = _weights((6, 4), seed=4)
    assert value(ours, w) == pytest.approx(value(theirs, w), rel=1e-6)
    np.testing.assert_allclose(
        gradient(ours, w), gradient(theirs, w), rtol=1e-6
    )


def test_l2_gradient_is_twice_l2_times_w():
    w = _weights((5, 5), seed=5)
    np.testing.assert_allclose(gradient(L2(0.1), w), 0.2 * w, rtol=1e-6)


# ExpAbs: the safe range.


@pytest.mark.parametrize(
    "dtype, largest", [("float16", 65504.0), ("bfloat16", 3.38e38)]
)
def test_exp_abs_is_finite_up_to_the_largest_half_precision_weight(
    dtype, largest
):
    w = np.array([0.0, 1.0, -12.0, 100.0, -largest, largest], dtype="float64")
    for regularizer in (ExpAbs(0.01), ExpAbs(1.0), ExpAbs(0.01, scale=0.5)):
        total = regularizer(ops.cast(w, dtype))
        assert np.isfinite(ops.convert_to_numpy(total))
        grad = gradient(regularizer, np.float32(w), dtype=dtype)
        assert np.all(np.isfinite(grad)), grad
        # Pulled towards 0 below the saturation point, left alone beyond.
        pulled = np.abs(w) / regularizer.scale < 1e12
        expected_sign = np.where(pulled, np.sign(w), 0.0)
        np.testing.assert_array_equal(np.sign(grad), expected_sign)


def test_exp_abs_is_finite_for_every_float32_magnitude():
    largest = np.finfo("float32").max
    magnitudes = [0.0, 1e-30, 1.0, 39.0, 40.0, 88.0, 89.0, 1e10, largest]
    w = np.array(magnitudes + [-m for m in magnitudes], dtype="float32")
    for regularizer in (ExpAbs(0.01), ExpAbs(1.0, scale=1e-3)):
        assert np.isfinite(value(regularizer, w))
        assert np.all(np.isfinite(gradient(regularizer, w)))


@pytest.mark.parametrize(
    "strength, scale",
    [(0.01, 7e-24), (1.0, 7e-22), (1.4e9, 1.0), (1e-6, 7e-28)],
)
def test_exp_abs_at_its_most_extreme_accepted_arguments_stays_finite(
    strength, scale
):
    # strength / scale up to 1.45e21 and strength up to 1.45e9 are accepted:
    # the tangent's slope strength * exp(40) / scale and one weight's
    # penalty at the saturation point then still fit in float32.
    largest = np.finfo("float32").max
    magnitudes = [0.0, 1e-30, 1e-20, 1.0, 1e10, largest]
    w = np.array(magnitudes + [-m for m in magnitudes], dtype="float32")
    regularizer = ExpAbs(strength, scale)
    assert np.isfinite(value(regularizer, w[:1]))
    grad = gradient(regularizer, w)
    assert np.all(np.isfinite(grad))
    # The slope past the exact range is the bound, reached, not exceeded.
    assert np.max(np.abs(grad)) <= strength * math.exp(40.0) / scale * 1.0001


def test_exp_abs_refuses_arguments_whose_slope_or_value_overflows():
    with pytest.raises(
        ValueError, match=r"slope, strength \* exp\(40\) / scale"
    ):
        ExpAbs(0.01, scale=1e-30)
    with pytest.raises(ValueError, match=r"`strength`.*saturation point"):
        ExpAbs(1e10)


def test_group_lasso_norms_neither_overflow_nor_underflow():
    # Norms of 5e20 (squares overflow float32) and 5e-30 (squares
    # underflow) are exact; the gradient is the unit direction.
    for size in (5e20, 5e-30):
        kernel = np.array([[0.6 * size], [0.8 * size]], dtype="float32")
        regularizer = GroupLasso(1.0)
        assert value(regularizer, kernel) == pytest.approx(
            math.sqrt(2) * size, rel=1e-6
        )
        np.testing.assert_allclose(
            gradient(regularizer, kernel),
            math.sqrt(2) * np.array([[0.6], [0.8]]),
            rtol=1e-6,
        )


def test_group_lasso_weighted_norm_fits_where_the_norm_does_not():
    # The norm, sqrt(3) * 3e38, exceeds float32; its weighted value does not.
    kernel = np.full((3, 1), 3e38, dtype="float32")
    regularizer = GroupLasso(0.01)
    expected = 0.01 * math.sqrt(3) * math.sqrt(3) * 3e38
    assert value(regularizer, kernel) == pytest.approx(expected, rel=1e-6)


def test_l1_and_l2_with_small_strengths_do_not_overflow_inside_the_sum():
    w = np.array([3e38, 3e38], dtype="float32")
    assert value(L1(0.01), w) == pytest.approx(6e36, rel=1e-6)
    w = np.array([2e19, 2e19], dtype="float32")  # squares overflow float32
    assert value(L2(0.01), w) == pytest.approx(8e36, rel=1e-6)
    assert value(ElasticNet(0.01, 0.01), w) == pytest.approx(
        8e36 + 4e17, rel=1e-6
    )


@pytest.mark.parametrize("dtype, limit", [("float32", 40.0), ("float16", 10.0)])
def test_exp_abs_continues_along_its_tangent_past_the_limit(dtype, limit):
    assert ExpAbs.exact_limit(dtype) == limit
    regularizer = ExpAbs(1.0, scale=2.0)
    w = np.array([2.0 * limit], dtype="float32")
    slope_below = gradient(regularizer, w * (1 - 1e-3), dtype)[0]
    slope_above = gradient(regularizer, w * (1 + 1e-3), dtype)[0]
    expected_slope = math.exp(limit) / 2.0
    assert slope_below == pytest.approx(expected_slope, rel=0.05)
    assert slope_above == pytest.approx(expected_slope, rel=1e-3)
    # Beyond the limit: expm1(c) + exp(c) * (u - c), u = |w| / scale.
    for u in (3.0 * limit, 2e4 if dtype == "float16" else 1e10):
        expected = math.expm1(limit) + math.exp(limit) * (u - limit)
        assert value(regularizer, np.float32([2.0 * u]), dtype) == (
            pytest.approx(expected, rel=1e-3)
        )


def test_exp_abs_saturates_far_beyond_the_limit():
    regularizer = ExpAbs(1.0)
    ceiling = math.expm1(40.0) + math.exp(40.0) * (1e12 - 40.0)
    for u in (2e12, 1e30, float(np.finfo("float32").max)):
        w = np.float32([u])
        assert value(regularizer, w) == pytest.approx(ceiling, rel=1e-5)
        assert gradient(regularizer, w)[0] == 0.0


def test_exp_abs_is_exact_inside_the_safe_range():
    w = np.array([0.5, -3.0, 20.0, -39.0], dtype="float32")
    expected = 0.5 * np.sum(np.expm1(np.abs(w.astype("float64"))))
    assert value(ExpAbs(0.5), w) == pytest.approx(expected, rel=1e-6)


def test_exp_abs_keeps_precision_for_tiny_weights():
    w = np.full((1000,), 1e-7, dtype="float32")
    expected = 1000 * np.expm1(np.float64(np.float32(1e-7)))
    assert value(ExpAbs(1.0), w) == pytest.approx(expected, rel=1e-4)


# GroupLasso: groups.


def test_group_lasso_groups_are_dense_units_by_default():
    kernel = np.zeros((3, 2), dtype="float32")
    kernel[:, 0] = [1.0, 2.0, 2.0]  # unit 0 has norm 3, unit 1 is off
    assert value(GroupLasso(1.0), kernel) == pytest.approx(math.sqrt(3) * 3)
    grad = gradient(GroupLasso(1.0), kernel)
    np.testing.assert_allclose(grad[:, 0], math.sqrt(3) * kernel[:, 0] / 3)
    np.testing.assert_array_equal(grad[:, 1], 0.0)


def test_group_lasso_on_a_conv_kernel_groups_filters():
    kernel = np.zeros((3, 3, 2, 4), dtype="float32")
    kernel[..., 1] = 1.0  # one filter of 18 ones: norm sqrt(18)
    assert value(GroupLasso(0.5), kernel) == pytest.approx(0.5 * 18.0)


def test_group_lasso_rejects_an_axis_the_weight_lacks():
    with pytest.raises(ValueError, match="axis 2 is out of range"):
        GroupLasso(axis=2)(np.ones((3, 3), dtype="float32"))
    with pytest.raises(ValueError, match="names the same axis twice"):
        GroupLasso(axis=(0, -2))(np.ones((3, 3), dtype="float32"))


def test_group_lasso_on_a_vector_is_l1():
    bias = np.array([1.0, -2.0, 0.0], dtype="float32")
    assert value(GroupLasso(0.1), bias) == pytest.approx(0.3)


# Conventions.


def test_from_ratio_matches_scikit_learns_penalty():
    alpha, l1_ratio = 0.3, 0.7
    w = _weights((10,), seed=6)
    sklearn_penalty = alpha * l1_ratio * np.sum(np.abs(w)) + 0.5 * alpha * (
        1 - l1_ratio
    ) * np.sum(w.astype("float64") ** 2)
    regularizer = ElasticNet.from_ratio(alpha, l1_ratio)
    assert value(regularizer, w) == pytest.approx(sklearn_penalty, rel=1e-6)


def test_from_ratio_with_twice_alpha_reproduces_scikit_learns_solution():
    linear_model = pytest.importorskip("sklearn.linear_model")
    rng = np.random.default_rng(7)
    x = rng.normal(size=(200, 6))
    y = x @ np.array([2.0, -1.0, 0.0, 0.0, 0.5, 0.0]) + 0.1 * rng.normal(
        size=200
    )
    alpha, l1_ratio = 0.05, 0.6
    fitted = linear_model.ElasticNet(
        alpha=alpha, l1_ratio=l1_ratio, tol=1e-10, max_iter=100_000
    ).fit(x, y)
    w, b = fitted.coef_, fitted.intercept_
    # The sklearn solution is a stationary point of Keras's objective
    # mean((Xw + b - y)**2) + penalty(w) when the penalty uses 2 * alpha.
    regularizer = ElasticNet.from_ratio(2 * alpha, l1_ratio)
    data_gradient = 2.0 / len(y) * x.T @ (x @ w + b - y)
    penalty_gradient = gradient(regularizer, w)
    active = w != 0
    assert active.sum() >= 3 and (~active).sum() >= 1
    np.testing.assert_allclose(
        data_gradient[active] + penalty_gradient[active], 0.0, atol=1e-4
    )
    # Inactive weights: the data gradient lies inside the L1 subgradient.
    assert np.all(np.abs(data_gradient[~active]) <= regularizer.l1 + 1e-6)


def _one_sgd_step(kernel_regularizer, bias_regularizer, optimizer, x, y):
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((x.shape[1],)),
            keras.layers.Dense(
                1,
                kernel_initializer="glorot_uniform",
                bias_initializer="ones",
                kernel_regularizer=kernel_regularizer,
                bias_regularizer=bias_regularizer,
            ),
        ]
    )
    model.compile(optimizer, "mse")
    before = [w.copy() for w in model.get_weights()]
    model.fit(x, y, batch_size=len(x), epochs=1, shuffle=False, verbose=0)
    return before, model.get_weights()


def test_from_weight_decay_gives_the_same_sgd_step_as_decoupled_decay():
    rng = np.random.default_rng(8)
    x = rng.normal(size=(16, 5)).astype("float32")
    y = rng.normal(size=(16, 1)).astype("float32")
    decay, lr = 0.1, 0.05
    penalty = L2.from_weight_decay(decay)
    assert penalty == L2(0.05)
    _, with_penalty = _one_sgd_step(
        penalty, penalty, keras.optimizers.SGD(lr), x, y
    )
    _, with_decay = _one_sgd_step(
        None, None, keras.optimizers.SGD(lr, weight_decay=decay), x, y
    )
    for ours, theirs in zip(with_penalty, with_decay, strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-7)


def test_from_course_lambda_gives_the_course_formula_sgd_step():
    rng = np.random.default_rng(9)
    m, lam, lr = 20, 3.0, 0.1
    x = rng.normal(size=(m, 4)).astype("float32")
    y = rng.normal(size=(m, 1)).astype("float32")
    penalty = L2.from_course_lambda(lam, num_examples=m)
    before, after = _one_sgd_step(penalty, None, keras.optimizers.SGD(lr), x, y)
    w, b = (v.astype("float64") for v in before)
    # J = mean((Xw + b - y)**2) + lambda / (2m) * ||w||^2, by hand.
    residual = x @ w + b - y
    grad_w = 2.0 / m * x.T @ residual + lam / m * w
    grad_b = 2.0 / m * residual.sum(axis=0)
    np.testing.assert_allclose(after[0], w - lr * grad_w, rtol=1e-5)
    np.testing.assert_allclose(after[1], b - lr * grad_b, rtol=1e-5)


# get()


@pytest.mark.parametrize(
    "name, expected",
    [
        ("l1", L1()),
        ("l2", L2()),
        ("elastic_net", ElasticNet()),
        ("exp_abs", ExpAbs()),
        ("group_lasso", GroupLasso()),
    ],
)
def test_get_by_name(name, expected):
    assert regularizers.get(name) == expected


def test_get_passes_instances_and_none_through():
    penalty = L2(0.3)
    assert regularizers.get(penalty) is penalty
    keras_penalty = keras.regularizers.L1(0.1)
    assert regularizers.get(keras_penalty) is keras_penalty
    assert regularizers.get(None) is None


def test_get_reads_config_dicts():
    assert regularizers.get({"class_name": "exp_abs", "config": {}}) == (
        ExpAbs()
    )
    saved = json.loads(json.dumps(regularizers.serialize(GroupLasso(0.2, 0))))
    assert regularizers.get(saved) == GroupLasso(0.2, axis=0)


def test_get_rejects_unknown_names_listing_the_valid_ones():
    with pytest.raises(ValueError, match="Unknown regularizer name: 'l3'"):
        regularizers.get("l3")
    with pytest.raises(ValueError, match="'elastic_net', 'exp_abs'"):
        regularizers.get("lasso")


# Mixed precision.


@pytest.fixture
def restore_dtype_policy():
    policy = keras.config.dtype_policy()
    yield
    keras.config.set_dtype_policy(policy)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
@pytest.mark.parametrize("regularizer, reference", CASES[::2], ids=IDS[::2])
def test_mixed_precision_penalties_are_finite_float32(
    policy, regularizer, reference, restore_dtype_policy
):
    keras.config.set_dtype_policy(policy)
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(8, kernel_regularizer=regularizer),
            keras.layers.Dense(1, kernel_regularizer=regularizer),
        ]
    )
    model.compile(keras.optimizers.SGD(0.01), "mse")
    x = np.random.default_rng(0).normal(size=(16, 4)).astype("float32")
    history = model.fit(x, x[:, :1], epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    for loss in model.losses:
        assert keras.backend.standardize_dtype(loss.dtype) == "float32"
        assert np.isfinite(ops.convert_to_numpy(loss))
    expected = sum(
        reference(ops.convert_to_numpy(layer.kernel).astype("float64"))
        for layer in model.layers
    )
    total = sum(float(ops.convert_to_numpy(loss)) for loss in model.losses)
    assert total == pytest.approx(expected, rel=1e-5)


# Property-based checks: for every regularizer and every finite weight
# tensor in every float dtype (subnormals and values near the dtype's
# largest included), the penalty and its gradient are finite, and they
# match a float64 numpy reference wherever that reference fits the result's
# dtype (the penalty's: float32, or float64 for float64 weights; the
# gradient's: the weight's).

_DTYPES = ["float16", "bfloat16", "float32", "float64"]
_EXP_ABS_SATURATION = 1e12


def _largest(dtype):
    if dtype == "bfloat16":
        return 3.3895313892515355e38
    return float(np.finfo(dtype).max)


def _smallest_normal(dtype):
    if dtype == "bfloat16":
        return 1.1754943508222875e-38
    return float(np.finfo(dtype).tiny)


def _norms64(w, reduce):
    """Group norms in float64, scaled by the largest entry: no overflow."""
    largest = (
        np.max(np.abs(w), axis=reduce, keepdims=True) if reduce else (np.abs(w))
    )
    safe = np.where(largest > 0, largest, 1.0)
    root = np.sqrt(np.sum((w / safe) ** 2, axis=reduce, keepdims=True))
    return np.where(largest > 0, safe * root, 0.0), np.where(
        largest > 0, (w / safe) / np.where(root > 0, root, 1.0), 0.0
    )


def _reference(regularizer, w, dtype):
    """`(value, gradient)` of `regularizer` at `w`, in float64 numpy."""
    with np.errstate(over="ignore", invalid="ignore"):
        if isinstance(regularizer, (L1, L2, ElasticNet)):
            l1 = (
                getattr(regularizer, "l1", 0.0)
                if not isinstance(regularizer, L2)
                else 0.0
            )
            l2 = getattr(regularizer, "l2", 0.0)
            value = l1 * np.sum(np.abs(w)) + l2 * np.sum(w**2)
            return value, l1 * np.sign(w) + 2.0 * l2 * w
        if isinstance(regularizer, ExpAbs):
            limit = 10.0 if dtype == "float16" else 40.0
            u = np.abs(w) / regularizer.scale
            saturated = np.minimum(u, _EXP_ABS_SATURATION)
            exact = np.minimum(saturated, limit)
            terms = np.expm1(exact) + math.exp(limit) * (saturated - exact)
            slope = np.where(u < _EXP_ABS_SATURATION, np.exp(exact), 0.0)
            strength = regularizer.strength
            return strength * np.sum(terms), (
                strength / regularizer.scale * np.sign(w) * slope
            )
        axis = regularizer.axis
        group_axes = axis if isinstance(axis, tuple) else (axis,)
        group_axes = {a % w.ndim for a in group_axes}
        reduce = tuple(i for i in range(w.ndim) if i not in group_axes)
        size = math.prod(w.shape[i] for i in reduce)
        weight = regularizer.strength * math.sqrt(size)
        norms, directions = _norms64(w, reduce)
        return weight * np.sum(norms), weight * directions


_TOLERANCE = {"float16": 4e-3, "bfloat16": 3e-2, "float32": 2e-5}


def _assert_matches(actual, expected, dtype, floor, what):
    """`actual` is finite and close to `expected` where `expected` fits."""
    expected = np.asarray(expected, dtype="float64")
    actual = np.asarray(actual, dtype="float64")
    fits = np.abs(expected) <= _largest(dtype) / 2
    assert np.all(np.isfinite(actual[fits])), what
    np.testing.assert_allclose(
        actual[fits],
        expected[fits],
        rtol=_TOLERANCE.get(dtype, 1e-9),
        atol=floor,
        err_msg=what,
    )


def _regularizers():
    from hypothesis import strategies as st

    strengths = st.floats(1e-6, 1e2)
    return st.one_of(
        st.builds(L1, strengths),
        st.builds(L2, strengths),
        st.builds(ElasticNet, strengths, strengths),
        st.builds(ExpAbs, strengths, st.floats(1e-3, 1e3)),
        st.builds(GroupLasso, strengths, st.sampled_from([-1, 0])),
    )


def _weight_tensors():
    from hypothesis import strategies as st
    from hypothesis.extra import numpy as hnp

    @st.composite
    def tensors(draw):
        dtype = draw(st.sampled_from(_DTYPES))
        shape = draw(st.sampled_from([(5,), (3, 4), (2, 3, 2)]))
        storage = "float64" if dtype == "float64" else "float32"
        width = {"float16": 16, "float64": 64}.get(dtype, 32)
        largest = _largest(dtype)
        special = st.sampled_from(
            [0.0, largest, -largest, _smallest_normal(dtype) / 8, 1e-30, 1.0]
        )
        ordinary = st.floats(
            -largest, largest, width=width, allow_subnormal=True
        )
        values = draw(
            hnp.arrays(storage, shape, elements=st.one_of(ordinary, special))
        )
        return dtype, values

    return tensors()


def _property_test(test):
    """`test` over 60 fixed (derandomized) examples.

    `REGKIT_EXAMPLES=N` in the environment runs N random ones instead, to
    search harder by hand.
    """
    from hypothesis import HealthCheck, given, settings

    return settings(
        max_examples=int(os.environ.get("REGKIT_EXAMPLES", 60)),
        deadline=None,
        derandomize=not os.environ.get("REGKIT_EXAMPLES"),
        suppress_health_check=[HealthCheck.too_slow],
    )(given(_regularizers(), _weight_tensors())(test))


@pytest.mark.slow
@_property_test
def test_penalty_and_gradient_are_finite_and_match_numpy(regularizer, tensor):
    dtype, values = tensor
    if keras.backend.backend() == "jax" and dtype == "float64":
        return  # JAX computes in float32 unless x64 is enabled
    w, value, grad = value_and_gradient_in(regularizer, values, dtype)
    if not np.all(np.isfinite(w)):
        return  # the value rounded past the dtype's largest (bfloat16)
    result_dtype = "float64" if dtype == "float64" else "float32"
    # Below a thousand times the smallest normal number of the dtype
    # computed in, a result counts as zero: kernels that flush subnormals
    # to zero lose that much.
    floor = 1e3 * _smallest_normal(result_dtype)
    expected_value, expected_grad = _reference(regularizer, w, dtype)
    if keras.backend.backend() != "torch":
        # TensorFlow's and XLA's CPU kernels may compute with subnormals
        # as zeros (flush to zero): either reference is then right.
        flushed = np.where(np.abs(w) < _smallest_normal(result_dtype), 0, w)
        flushed_value, flushed_grad = _reference(regularizer, flushed, dtype)
        if not np.isclose(value, expected_value, rtol=1e-3, atol=0):
            expected_value = flushed_value
        close = np.isclose(grad, expected_grad, rtol=3e-2, atol=0)
        expected_grad = np.where(close, expected_grad, flushed_grad)
    _assert_matches(
        value,
        expected_value,
        result_dtype,
        floor,
        f"penalty of {regularizer!r} at {w!r}",
    )
    _assert_matches(
        grad,
        expected_grad,
        dtype,
        max(floor, _smallest_normal(dtype)),
        f"gradient of {regularizer!r} at {w!r}",
    )


# --- GroupLasso over attention heads --------------------------------------


def _head_norms_numpy(w, head_axis):
    moved = np.moveaxis(w, head_axis, 0)
    return np.sqrt((moved.reshape(moved.shape[0], -1) ** 2).sum(axis=1))


@pytest.mark.parametrize(
    "shape, head_axis", [((8, 3, 4), 1), ((3, 4, 8), 0)], ids=["qkv", "out"]
)
def test_group_lasso_heads_groups_each_head_of_a_projection(shape, head_axis):
    w = np.random.default_rng(0).normal(size=shape).astype("float32")
    penalty = GroupLasso(0.1, heads=3)
    norms = _head_norms_numpy(w, head_axis)
    group_size = w.size // 3
    expected = 0.1 * math.sqrt(group_size) * norms.sum()
    np.testing.assert_allclose(float(penalty(w)), expected, rtol=1e-5)
    np.testing.assert_allclose(penalty.group_norms(w), norms, rtol=1e-5)
    # the prox zeroes a head whose norm is under the threshold, exactly
    step = float(norms.min()) / (0.1 * math.sqrt(group_size)) * 1.0001
    shrunk = np.moveaxis(
        ops.convert_to_numpy(penalty.prox(w, step)), head_axis, 0
    )
    weakest = int(np.argmin(norms))
    assert np.all(shrunk[weakest] == 0.0)
    assert (
        np.count_nonzero(shrunk.reshape(3, -1), axis=1).tolist().count(0) == 1
    )


def test_group_lasso_heads_config_and_refusals():
    penalty = GroupLasso(0.1, heads=3)
    assert penalty.get_config() == {"strength": 0.1, "axis": -1, "heads": 3}
    assert GroupLasso(0.1).get_config() == {"strength": 0.1, "axis": -1}
    assert_config_round_trip(penalty)
    with pytest.raises(ValueError, match=r"`axis` or `heads`.*axis=0, heads=3"):
        GroupLasso(0.1, axis=0, heads=3)
    with pytest.raises(ValueError, match=r"Received: heads=0"):
        GroupLasso(0.1, heads=0)
    with pytest.raises(TypeError, match=r"Received: heads=2\.0"):
        GroupLasso(0.1, heads=2.0)
    for shape in [(4, 5), (3, 3, 4), (8, 2, 4)]:
        with pytest.raises(ValueError, match=r"GroupLasso\(heads=3\).*shape"):
            penalty(np.ones(shape, "float32"))


@pytest.mark.parametrize(
    "weight",
    [
        [[np.nan, 1.0], [0.0, 0.0]],  # TensorFlow's max skips the NaN
        [[np.nan, 0.0], [1.0, 1.0]],
        [[np.nan, np.nan], [0.0, 0.0]],
    ],
)
def test_group_lasso_of_a_group_holding_nan_is_nan(weight):
    # As L1 and L2 give NaN for a NaN weight, so does the group's norm: it
    # must not pass for a zero group and hide the NaN.
    penalty = GroupLasso(0.1, axis=0)  # groups are the rows
    w = np.asarray(weight, "float32")
    assert np.isnan(float(ops.convert_to_numpy(penalty(w))))
    norms = penalty.group_norms(w)
    assert np.isnan(norms[0]) and np.isfinite(norms[1])
    assert np.isnan(float(ops.convert_to_numpy(L1(0.1)(w))))
