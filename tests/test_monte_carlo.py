"""Tests for keras_regkit.mc_predict.

The reference is closed form: a linear head after dropout has mean `x . w`
and variance `rate / (1 - rate) * sum((x_j w_j)**2)` per independent unit,
so the sampled mean and standard deviation are checked against numpy within
five standard errors.
"""

import gc
import math
import weakref

import keras
import numpy as np
import pytest
from keras import ops

import keras_regkit
from keras_regkit.layers import Dropout, DropPath

FEATURES = 12


def _inputs(rows=5, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(0.5, 1.5, (rows, FEATURES)).astype("float32")


def _head_weights():
    return np.linspace(-1.0, 1.0, FEATURES).astype("float32")[:, None]


def _linear_model(layer):
    head = keras.layers.Dense(1, use_bias=False, name="head")
    model = keras.Sequential([keras.Input((FEATURES,)), layer, head])
    head.set_weights([_head_weights()])
    return model


def _closed_form(x, rate, per_unit):
    terms = x * _head_weights()[:, 0]
    mean = terms.sum(axis=1, keepdims=True)
    if per_unit:
        variance = rate / (1 - rate) * (terms**2).sum(axis=1, keepdims=True)
    else:  # one draw per row scales the whole row
        variance = rate / (1 - rate) * mean**2
    return mean, np.sqrt(variance)


# None: one pass; 1001: each row alone, 3 passes of 1001, 1001 and 998
# copies; 6007: all 3000 copies of 2 rows, then of the last row
@pytest.mark.parametrize("batch_size", [None, 1001, 6007])
@pytest.mark.parametrize(
    "make, per_unit",
    [
        (lambda: Dropout(0.3), True),
        (lambda: Dropout(0.3, noise_shape=(1, None)), True),  # shared rows
        (lambda: Dropout(0.3, noise_shape=(None, FEATURES)), True),
        (lambda: DropPath(0.3), False),
    ],
    ids=["Dropout", "Dropout(shared mask)", "Dropout(int)", "DropPath"],
)
def test_matches_the_closed_form(make, per_unit, batch_size):
    samples = 3000
    x = _inputs()
    mean, std = keras_regkit.mc_predict(
        _linear_model(make()), x, samples=samples, batch_size=batch_size, seed=1
    )
    expected_mean, expected_std = _closed_form(x, 0.3, per_unit)
    assert mean.shape == std.shape == (5, 1)
    assert mean.dtype == std.dtype == np.float32
    np.testing.assert_allclose(
        mean, expected_mean, atol=float(5 * expected_std.max() / samples**0.5)
    )
    # the standard error of a standard deviation is about std / sqrt(2n)
    np.testing.assert_allclose(std, expected_std, rtol=5 / (2 * samples) ** 0.5)


def test_agrees_with_a_loop_of_predict_calls():
    model = _linear_model(Dropout(0.3, mc=True))
    x = _inputs(rows=40)
    samples = 100
    passes = np.stack(
        [model.predict(x, verbose=0) for _ in range(samples)], axis=0
    )
    mean, std = keras_regkit.mc_predict(model, x, samples=samples, seed=0)
    _, expected_std = _closed_form(x, 0.3, True)
    # two independent 100-sample means differ by sqrt(2) standard errors
    gap = 2**0.5 * float(expected_std.max()) / samples**0.5
    np.testing.assert_allclose(mean, passes.mean(0), atol=5 * gap)
    # a std over 100 samples is off by 1/sqrt(200), 7%; 40 rows average
    # that to 1.1%, and the ratio of two such averages to 1.6%
    assert std.mean() / passes.std(0).mean() == pytest.approx(1, abs=0.08)


def test_same_seed_same_result_and_none_draws_anew():
    model = _linear_model(Dropout(0.5))
    x = _inputs()
    first = keras_regkit.mc_predict(model, x, samples=20, seed=3)
    again = keras_regkit.mc_predict(model, x, samples=20, seed=3)
    other = keras_regkit.mc_predict(model, x, samples=20, seed=4)
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert not np.array_equal(first[0], other[0])
    unseeded = [keras_regkit.mc_predict(model, x, samples=20) for _ in "ab"]
    assert not np.array_equal(unseeded[0][0], unseeded[1][0])


def _snapshot(model):
    return [ops.convert_to_numpy(v).copy() for v in model.variables]


def test_leaves_the_model_exactly_as_it_was():
    layers = [Dropout(0.5, seed=2), DropPath(0.2, seed=3)]
    model = keras.Sequential(
        [
            keras.Input((FEATURES,)),
            layers[0],
            keras.layers.BatchNormalization(),
            keras.layers.Dense(4),
            layers[1],
        ]
    )
    model.compile(optimizer="sgd", loss="mse")
    x = _inputs(rows=16)
    model.fit(x, np.zeros((16, 4)), verbose=0)
    model.predict(x, verbose=0)
    before = _snapshot(model)
    predict_function = model.predict_function
    keras_regkit.mc_predict(model, x, samples=10, seed=0)
    for old, new in zip(before, _snapshot(model), strict=True):
        np.testing.assert_array_equal(old, new)
    assert model.predict_function is predict_function
    assert [layer.rate for layer in layers] == [0.5, 0.2]
    np.testing.assert_array_equal(
        model.predict(x, verbose=0), model.predict(x, verbose=0)
    )


def test_restores_the_layers_when_the_model_fails():
    model = _linear_model(Dropout(0.5))
    with pytest.raises(ValueError):
        keras_regkit.mc_predict(model, np.ones((3, FEATURES + 1)), samples=2)
    x = _inputs()
    np.testing.assert_array_equal(
        ops.convert_to_numpy(model(x)), ops.convert_to_numpy(model(x))
    )


def test_batch_norm_stays_in_inference_mode():
    model = keras.Sequential(
        [
            keras.Input((FEATURES,)),
            keras.layers.BatchNormalization(),
            Dropout(0.3),
            keras.layers.Dense(1),
        ]
    )
    x = _inputs(rows=4)
    model.compile(optimizer="sgd", loss="mse")
    model.fit(_inputs(rows=64, seed=5) * 3, np.zeros((64, 1)), verbose=0)
    samples = 3000
    mean, std = keras_regkit.mc_predict(model, x, samples=samples, seed=0)
    # dropout is unbiased, so the mean is the deterministic prediction
    np.testing.assert_allclose(
        mean,
        model.predict(x, verbose=0),
        atol=float(5 * std.max() / samples**0.5),
    )


class _RowCounter(keras.layers.Layer):
    """The identity; remembers the batch sizes it was called with."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.seen = []

    def call(self, inputs):
        rows = inputs.shape[0]
        if isinstance(rows, int):  # eager calls only, not shape inference
            self.seen.append(rows)
        return inputs


@pytest.mark.parametrize("batch_size", [1, 7, 64])
def test_no_pass_holds_more_rows_than_batch_size(batch_size):
    counter = _RowCounter()
    model = keras.Sequential(
        [keras.Input((FEATURES,)), Dropout(0.5), counter, keras.layers.Dense(1)]
    )
    x = _inputs(rows=10)
    samples = 9
    counter.seen = []
    keras_regkit.mc_predict(model, x, samples=samples, batch_size=batch_size)
    assert max(counter.seen) <= batch_size
    if keras.backend.backend() == "jax":
        return  # compiled: Python sees one trace per shape, not every pass
    assert sum(counter.seen) == 10 * samples  # every row, every sample
    # as few passes as the budget allows
    assert len(counter.seen) <= math.ceil(10 * samples / batch_size) + 10


def test_default_budget_stacks_all_samples_in_one_pass_for_small_inputs():
    counter = _RowCounter()
    model = keras.Sequential(
        [keras.Input((FEATURES,)), Dropout(0.5), counter, keras.layers.Dense(1)]
    )
    counter.seen = []
    keras_regkit.mc_predict(model, _inputs(rows=10), samples=30)
    assert counter.seen == [300]


def test_layers_before_the_first_dropout_run_once_per_row():
    before, after = _RowCounter(), _RowCounter()
    model = keras.Sequential(
        [
            keras.Input((FEATURES,)),
            keras.layers.Dense(8),
            before,
            Dropout(0.5),
            after,
            keras.layers.Dense(1),
        ]
    )
    before.seen, after.seen = [], []
    keras_regkit.mc_predict(model, _inputs(rows=10), samples=30)
    assert (before.seen, after.seen) == ([10], [300])


def test_first_dropout_inside_a_sub_model_tiles_the_inputs():
    inner = keras.Sequential([keras.Input((FEATURES,)), Dropout(0.3)])
    head = keras.layers.Dense(1, use_bias=False)
    model = keras.Sequential([keras.Input((FEATURES,)), inner, head])
    head.set_weights([_head_weights()])
    x = _inputs()
    samples = 3000
    mean, std = keras_regkit.mc_predict(model, x, samples=samples, seed=2)
    expected_mean, expected_std = _closed_form(x, 0.3, True)
    np.testing.assert_allclose(
        mean, expected_mean, atol=float(5 * expected_std.max() / samples**0.5)
    )
    np.testing.assert_allclose(std, expected_std, rtol=5 / (2 * samples) ** 0.5)


def test_padding_masks_are_stacked_with_the_rows():
    model = keras.Sequential(
        [
            keras.Input((None,), dtype="int32"),
            keras.layers.Embedding(10, 4, mask_zero=True),
            Dropout(0.3),
            keras.layers.LSTM(3),
        ]
    )
    padded = np.array([[3, 4, 0, 0], [5, 0, 0, 0]])
    mean, std = keras_regkit.mc_predict(model, padded, samples=16, seed=0)
    assert mean.shape == std.shape == (2, 3)
    assert np.all(std > 0)


@pytest.mark.jax_only
def test_jax_compiles_once_for_repeated_calls():
    counter = _RowCounter()
    model = keras.Sequential(
        [keras.Input((FEATURES,)), Dropout(0.5), counter, keras.layers.Dense(1)]
    )
    x = _inputs(rows=10)
    counter.seen = []
    first = keras_regkit.mc_predict(model, x, samples=30)
    traced = len(counter.seen)
    model.layers[0].rate = 0.2  # a rate is a variable: no new trace either
    second = keras_regkit.mc_predict(model, x, samples=30)
    assert traced == 1 and len(counter.seen) == 1
    assert not np.array_equal(first[1], second[1])


def test_models_are_not_kept_alive():
    model = _linear_model(Dropout(0.5))
    keras_regkit.mc_predict(model, _inputs(), samples=4)
    alive = weakref.ref(model)
    del model
    gc.collect()
    assert alive() is None


def test_several_inputs_and_outputs():
    left = keras.Input((3,), name="left")
    right = keras.Input((2,), name="right")
    merged = Dropout(0.5)(keras.layers.Concatenate()([left, right]))
    model = keras.Model(
        {"left": left, "right": right},
        [keras.layers.Dense(1)(merged), keras.layers.Dense(2)(merged)],
    )
    x = {"left": np.ones((4, 3)), "right": np.ones((4, 2))}
    mean, std = keras_regkit.mc_predict(model, x, samples=8, seed=0)
    assert [m.shape for m in mean] == [(4, 1), (4, 2)]
    assert [s.shape for s in std] == [(4, 1), (4, 2)]


def test_one_sample_has_no_spread():
    _, std = keras_regkit.mc_predict(
        _linear_model(Dropout(0.5)), _inputs(), samples=1
    )
    np.testing.assert_array_equal(std, 0.0)


def test_a_model_without_our_layers_is_refused():
    model = keras.Sequential(
        [
            keras.Input((3,)),
            keras.layers.Dropout(0.5, name="keras_drop"),
            keras.layers.Dense(1),
        ]
    )
    with pytest.raises(ValueError, match=r"keras_drop.*keras_regkit\.layers"):
        keras_regkit.mc_predict(model, np.ones((2, 3)))


@pytest.mark.parametrize(
    "kwargs, error, pattern",
    [
        ({"samples": 0}, ValueError, r"`samples`.*Received: samples=0"),
        ({"samples": 2.0}, TypeError, r"Received: samples=2\.0"),
        ({"batch_size": 0}, ValueError, r"Received: batch_size=0"),
        ({"seed": -1}, ValueError, r"`seed`.*Received: seed=-1"),
        ({"seed": "1"}, TypeError, r"Received: seed='1'"),
        ({"x": iter([1])}, TypeError, r"`x`.*Received: x of type"),
        (
            {"x": {"a": np.ones((2, 1)), "b": np.ones((3, 1))}},
            ValueError,
            r"same, non-zero number of rows.*\(2, 1\), \(3, 1\)",
        ),
        ({"model": "model"}, TypeError, r"`model`.*Received: model='model'"),
    ],
)
def test_bad_arguments(kwargs, error, pattern):
    arguments = {
        "model": _linear_model(Dropout(0.5)),
        "x": _inputs(),
        **kwargs,
    }
    with pytest.raises(error, match=pattern):
        keras_regkit.mc_predict(**arguments)
