"""Tests for keras_regkit.mc_predict.

The reference is closed form: a linear head after dropout has mean `x . w`
and variance `rate / (1 - rate) * sum((x_j w_j)**2)` per independent unit,
so the sampled mean and standard deviation are checked against numpy within
five standard errors.
"""

import gc
import json
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


def _assert_matches_closed_form(mean, std, x, rate, samples, per_unit=True):
    """Within five standard errors of the closed form, mean and std."""
    expected_mean, expected_std = _closed_form(x, rate, per_unit)
    np.testing.assert_allclose(
        mean, expected_mean, atol=float(5 * expected_std.max() / samples**0.5)
    )
    # the standard error of a standard deviation is about std / sqrt(2n)
    np.testing.assert_allclose(std, expected_std, rtol=5 / (2 * samples) ** 0.5)


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
        (lambda: keras.layers.Dropout(0.3), True),
        (lambda: keras.layers.Dropout(0.3, noise_shape=(1, None)), True),
        # multiplicative N(1, rate / (1 - rate)): the same variance
        (lambda: keras.layers.GaussianDropout(0.3), True),
    ],
    ids=[
        "Dropout",
        "Dropout(shared mask)",
        "Dropout(int)",
        "DropPath",
        "keras.Dropout",
        "keras.Dropout(shared mask)",
        "keras.GaussianDropout",
    ],
)
def test_matches_the_closed_form(make, per_unit, batch_size):
    samples = 3000
    x = _inputs()
    mean, std = keras_regkit.mc_predict(
        _linear_model(make()), x, samples=samples, batch_size=batch_size, seed=1
    )
    assert mean.shape == std.shape == (5, 1)
    assert mean.dtype == std.dtype == np.float32
    _assert_matches_closed_form(mean, std, x, 0.3, samples, per_unit)


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
    """The identity; remembers the batch sizes it was called with.

    `seen` lists them as Python sees them (every eager call, or once per
    trace of a compiled one); the variable `rows` adds them up as the
    calls run (on JAX the compiled passes do not write it back).
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.seen = []
        self.rows = self.add_weight(
            shape=(), initializer="zeros", dtype="int32", trainable=False
        )

    def call(self, inputs):
        rows = inputs.shape[0]
        if isinstance(rows, int):  # concrete calls only, not shape inference
            self.seen.append(rows)
            self.rows.assign_add(rows)
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
        return  # compiled and stateless: the count is not written back
    assert int(counter.rows.numpy()) == 10 * samples  # every row and sample
    if keras.backend.backend() == "torch":  # eager: Python sees every pass
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


def _pass_budget(monkeypatch, values):
    from keras_regkit import _monte_carlo as monte_carlo

    monkeypatch.setattr(monte_carlo, "PASS_ELEMENTS", {})
    monkeypatch.setattr(monte_carlo, "DEFAULT_PASS_ELEMENTS", values)


def test_pass_size_follows_the_largest_activation_not_their_sum(monkeypatch):
    before, after = _RowCounter(), _RowCounter()
    model = keras.Sequential(
        [
            keras.Input((FEATURES,)),
            keras.layers.Dense(40),
            keras.layers.Dense(40),
            keras.layers.Dense(40),
            before,
            Dropout(0.5),
            keras.layers.Dense(20),
            after,
            keras.layers.Dense(1),
        ]
    )
    _pass_budget(monkeypatch, 4000)
    before.seen, after.seen = [], []
    keras_regkit.mc_predict(model, _inputs(rows=100), samples=5)
    # The head's largest output holds 40 values a row: 4000 // 40 = 100
    # rows a pass, 20 of them copied 5 times; the trunk's widest is 40 too.
    assert max(before.seen) == 20
    assert max(after.seen) == 100


def test_pass_size_takes_unknown_lengths_from_the_inputs(monkeypatch):
    counter = _RowCounter()
    model = keras.Sequential(
        [
            keras.Input((None, 4)),
            Dropout(0.5),
            keras.layers.Dense(16),
            counter,
            keras.layers.Dense(1),
        ]
    )
    _pass_budget(monkeypatch, 16 * 50 * 10)
    counter.seen = []
    x = np.ones((30, 50, 4), "float32")  # sequences of 50 steps
    keras_regkit.mc_predict(model, x, samples=3)
    # 16 values for each of the 50 steps: 10 rows a pass, not 500
    assert max(counter.seen) == 9  # 3 rows, 3 copies of each


def test_first_dropout_inside_a_sub_model_tiles_the_inputs():
    inner = keras.Sequential([keras.Input((FEATURES,)), Dropout(0.3)])
    head = keras.layers.Dense(1, use_bias=False)
    model = keras.Sequential([keras.Input((FEATURES,)), inner, head])
    head.set_weights([_head_weights()])
    x = _inputs()
    samples = 3000
    mean, std = keras_regkit.mc_predict(model, x, samples=samples, seed=2)
    _assert_matches_closed_form(mean, std, x, 0.3, samples)


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


@pytest.mark.skipif(
    keras.backend.backend() == "torch", reason="PyTorch's passes are eager"
)
def test_compiled_passes_are_traced_once_for_repeated_calls():
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


@pytest.mark.skipif(
    keras.backend.backend() == "torch", reason="PyTorch's passes are eager"
)
def test_compiled_passes_see_a_keras_layers_new_rate():
    # Keras's layers hold their rates as Python floats, traced as constants
    layer = keras.layers.Dropout(0.5)
    model = _linear_model(layer)
    x = _inputs()
    keras_regkit.mc_predict(model, x, samples=4)
    layer.rate = 0.0  # no dropout left: every pass is the prediction
    with pytest.raises(ValueError, match="at least one dropout layer"):
        keras_regkit.mc_predict(model, x, samples=4)
    layer.rate = 0.3
    mean, std = keras_regkit.mc_predict(model, x, samples=3000, seed=1)
    _assert_matches_closed_form(mean, std, x, 0.3, 3000)


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


def test_alpha_dropout_matches_the_closed_form():
    rate, samples = 0.2, 3000
    x = _inputs()
    mean, std = keras_regkit.mc_predict(
        _linear_model(keras.layers.AlphaDropout(rate)), x, samples=samples
    )
    # dropped units take SELU's saturation value, then an affine map
    alpha_p = -1.6732632423543772 * 1.0507009873554805
    a = ((1 - rate) * (1 + rate * alpha_p**2)) ** -0.5
    b = -a * alpha_p * rate
    w = _head_weights()[:, 0]
    expected_mean = ((a * (x * (1 - rate) + alpha_p * rate) + b) * w).sum(1)
    expected_var = a**2 * rate * (1 - rate) * ((w * (x - alpha_p)) ** 2).sum(1)
    expected_std = np.sqrt(expected_var)[:, None]
    np.testing.assert_allclose(
        mean,
        expected_mean[:, None],
        atol=float(5 * expected_std.max() / samples**0.5),
    )
    np.testing.assert_allclose(std, expected_std, rtol=5 / (2 * samples) ** 0.5)


@pytest.mark.parametrize(
    "layer, shape, shared_axes",
    [
        (keras.layers.SpatialDropout1D(0.4), (6, FEATURES), (1,)),
        (
            keras.layers.SpatialDropout2D(0.4, data_format="channels_last"),
            (3, 2, FEATURES),
            (1, 2),
        ),
        (
            keras.layers.SpatialDropout2D(0.4, data_format="channels_first"),
            (FEATURES, 3, 2),
            (2, 3),
        ),
        (keras.layers.SpatialDropout3D(0.4), (2, 2, 2, FEATURES), (1, 2, 3)),
    ],
    ids=["1D", "2D", "2D(channels_first)", "3D"],
)
def test_spatial_dropout_drops_whole_channels(layer, shape, shared_axes):
    model = keras.Sequential([keras.Input(shape), layer])
    x = np.ones((2, *shape), "float32")
    samples = 2000
    mean, std = keras_regkit.mc_predict(model, x, samples=samples, seed=0)
    # each output is 0 or 1 / (1 - rate), the same over the shared axes
    np.testing.assert_allclose(mean, 1.0, atol=5 * (2 / 3) / samples**0.5)
    np.testing.assert_allclose(std, (0.4 / 0.6) ** 0.5, rtol=0.1)
    passes = _one_pass_each(model, x, samples=1)
    spread = np.ptp(passes, axis=shared_axes)
    np.testing.assert_array_equal(spread, 0.0)


def _one_pass_each(model, x, samples):
    """The output of one sampling pass, as `mc_predict` makes it."""
    mean, _ = keras_regkit.mc_predict(model, x, samples=samples, seed=5)
    return mean


def test_attention_dropout_of_multi_head_attention_samples():
    tokens = keras.Input((4, 8))
    attention = keras.layers.MultiHeadAttention(2, 4, dropout=0.5, seed=1)
    model = keras.Model(tokens, attention(tokens, tokens))
    x = np.random.default_rng(0).normal(size=(3, 4, 8)).astype("float32")
    mean, std = keras_regkit.mc_predict(model, x, samples=200, seed=0)
    assert np.all(std > 0)
    # the mean of unbiased dropout on the attention weights is the output
    np.testing.assert_allclose(
        mean, model.predict(x, verbose=0), atol=6 * std.max() / 200**0.5
    )


class _Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.hidden = keras.layers.Dense(8)
        self.drop = keras.layers.Dropout(0.5)
        self.out = keras.layers.Dense(1)

    def call(self, x, training=False):
        return self.out(self.drop(self.hidden(x), training=training))


def test_keras_layers_in_subclassed_and_nested_models():
    inner = keras.Sequential(
        [keras.Input((FEATURES,)), keras.layers.Dropout(0.3)], name="inner"
    )
    head = keras.layers.Dense(1, use_bias=False)
    inputs = keras.Input((FEATURES,))
    nested = keras.Model(inputs, head(inner(inputs)))
    head.set_weights([_head_weights()])
    subclassed = _Subclassed()
    x = _inputs()
    subclassed(x)
    samples = 3000
    mean, std = keras_regkit.mc_predict(nested, x, samples=samples, seed=2)
    _assert_matches_closed_form(mean, std, x, 0.3, samples)
    _, std = keras_regkit.mc_predict(subclassed, x, samples=20, seed=2)
    assert np.all(std > 0)


def _state_of(layers):
    return [
        (
            dict(vars(layer)).keys(),
            layer.get_config(),
            [ops.convert_to_numpy(v).copy() for v in layer.variables],
        )
        for layer in layers
    ]


def test_keras_layers_are_left_exactly_as_they_were():
    layers = [
        keras.layers.Dropout(0.5, seed=2),
        keras.layers.GaussianDropout(0.2, seed=3),
        keras.layers.AlphaDropout(0.1, seed=4),
    ]
    model = keras.Sequential(
        [keras.Input((FEATURES,)), *layers, keras.layers.Dense(2)]
    )
    model.compile(optimizer="sgd", loss="mse")
    x = _inputs(rows=16)
    model.fit(x, np.zeros((16, 2)), verbose=0)
    model.predict(x, verbose=0)
    before, predict_function = _state_of(layers), model.predict_function
    keras_regkit.mc_predict(model, x, samples=10, seed=0)
    for (keys, config, values), (keys2, config2, values2) in zip(
        before, _state_of(layers), strict=True
    ):
        assert keys == keys2 and config == config2
        for old, new in zip(values, values2, strict=True):
            np.testing.assert_array_equal(old, new)
    assert all("call" not in vars(layer) for layer in layers)
    assert model.predict_function is predict_function
    np.testing.assert_array_equal(
        model.predict(x, verbose=0), model.predict(x, verbose=0)
    )


def _graph_of(model):
    """The model's config, and how many nodes each layer has (Keras keeps
    them in private lists: building a sub-model would add some)."""
    return (
        json.dumps(model.get_config()),
        [
            (len(layer._inbound_nodes), len(layer._outbound_nodes))
            for layer in model.layers
        ],
    )


def test_functional_trunk_runs_once_per_row_unless_a_branch_skips_the_cut():
    before, after = _RowCounter(), _RowCounter()
    inputs = keras.Input((FEATURES,))
    hidden = before(keras.layers.BatchNormalization()(inputs))
    outputs = keras.layers.Dense(1)(after(keras.layers.Dropout(0.5)(hidden)))
    model = keras.Model(inputs, outputs)
    graph = _graph_of(model)
    before.seen, after.seen = [], []
    keras_regkit.mc_predict(model, _inputs(rows=10), samples=30)
    assert (before.seen, after.seen) == ([10], [300])
    assert _graph_of(model) == graph  # read, never changed
    # the head needs a tensor from before the dropout's input: no cut
    normalized = keras.layers.BatchNormalization()(inputs)
    dropped = keras.layers.Dropout(0.5)(before(normalized))
    model = keras.Model(inputs, keras.layers.Add()([normalized, dropped]))
    before.seen = []
    mean, std = keras_regkit.mc_predict(model, _inputs(rows=10), samples=30)
    assert before.seen == [300] and np.all(std > 0)


def test_a_model_without_stochastic_layers_is_refused():
    model = keras.Sequential(
        [
            keras.Input((3,)),
            keras.layers.GaussianNoise(0.5),
            keras.layers.Dropout(0.0),
            keras.layers.Dense(1),
        ]
    )
    with pytest.raises(ValueError, match=r"has none.*GaussianNoise"):
        keras_regkit.mc_predict(model, np.ones((2, 3)))


class _OwnDropout(keras.layers.Dropout):
    def call(self, inputs, training=False):
        return inputs


def test_a_dropout_subclass_with_its_own_call_is_left_off_with_a_warning():
    model = _linear_model(_OwnDropout(0.5, name="own_dropout"))
    with pytest.raises(ValueError, match="has none"):
        with pytest.warns(UserWarning, match="own_dropout.*replace its `call`"):
            keras_regkit.mc_predict(model, _inputs())


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


def test_the_dropout_inside_recurrent_cells_is_left_off_with_a_warning():
    model = keras.Sequential(
        [
            keras.Input((3, 2)),
            keras.layers.LSTM(4, dropout=0.2, name="lstm"),
            keras.layers.Dropout(0.5),
        ]
    )
    with pytest.warns(
        UserWarning, match=r"inside these recurrent layers: lstm"
    ):
        _, std = keras_regkit.mc_predict(model, np.ones((2, 3, 2)), samples=64)
    assert np.all(std > 0)


# 5 rows, 4 samples, at most 4 rows a pass: 4 copies of 1 row, 5 passes.
def _five_passes(verbose):
    model = _linear_model(Dropout(0.3))
    return keras_regkit.mc_predict(
        model, _inputs(rows=5), samples=4, batch_size=4, seed=0, verbose=verbose
    )


def test_verbose_1_shows_a_progress_bar_over_the_passes(capsys):
    _five_passes(verbose=1)
    out = capsys.readouterr().out
    # Keras's Progbar, redrawn in place: one line, ending at 5 of 5.
    assert out.count("\n") == 1
    assert "5/5" in out.split("\r")[-1] and "/pass" in out


@pytest.mark.parametrize("verbose, lines", [(0, 0), (2, 1)])
def test_verbose_0_is_silent_and_2_writes_one_line(capsys, verbose, lines):
    _five_passes(verbose=verbose)
    out = capsys.readouterr().out
    assert out.count("\n") == lines
    if lines:
        assert out.startswith("5/5")


def test_auto_verbosity_shows_progress_beyond_one_pass(capsys):
    model = _linear_model(Dropout(0.3))
    keras_regkit.mc_predict(model, _inputs(rows=5), samples=4, seed=0)
    assert capsys.readouterr().out == ""  # one pass: nothing to follow
    _five_passes(verbose="auto")
    assert "5/5" in capsys.readouterr().out
