"""Tests for keras_regkit's compact and dead_units."""

import keras
import numpy as np
import pytest
from keras import layers, ops

from keras_regkit import L2, GroupLasso, compact, dead_units
from keras_regkit.callbacks import ProximalStep
from keras_regkit.layers import Dropout as RegkitDropout

# --- Helpers ---------------------------------------------------------------

# The layers start at zero: `_randomize` sets every weight anyway, and on JAX
# a random initializer compiles anew for each kernel shape, in the original
# and again in the compact model (up to a second each).


def dense(units, **kwargs):
    return layers.Dense(units, kernel_initializer="zeros", **kwargs)


def conv1d(filters, size, **kwargs):
    return layers.Conv1D(filters, size, kernel_initializer="zeros", **kwargs)


def conv2d(filters, size, **kwargs):
    return layers.Conv2D(filters, size, kernel_initializer="zeros", **kwargs)


def depthwise(size, **kwargs):
    return layers.DepthwiseConv2D(size, depthwise_initializer="zeros", **kwargs)


def _randomize(model, seed=0):
    """Random weights everywhere: nonzero biases, BN statistics that matter."""
    rng = np.random.default_rng(seed)
    for weight in model.weights:
        shape = tuple(weight.shape)
        if weight.path.endswith("moving_variance"):
            value = rng.uniform(0.5, 2.0, shape)
        else:
            value = rng.normal(0.0, 0.5, shape)
        weight.assign(value.astype(weight.dtype))


def _kill(model, name, units):
    """Zeros units (the last kernel axis) of a layer: kernel slice and bias."""
    layer = model.get_layer(name)
    kernel = ops.convert_to_numpy(layer.kernel).copy()
    kernel[..., units] = 0.0
    layer.kernel.assign(kernel)
    if layer.use_bias:
        bias = ops.convert_to_numpy(layer.bias).copy()
        bias[units] = 0.0
        layer.bias.assign(bias)


def _prepared(model, kills, seed=0):
    _randomize(model, seed)
    for name, units in kills.items():
        _kill(model, name, units)
    return model


def _inputs(model, rows=6, seed=1):
    rng = np.random.default_rng(seed)
    shapes = [tuple(t.shape[1:]) for t in model.inputs]
    arrays = [rng.normal(size=(rows,) + s).astype("float32") for s in shapes]
    return arrays[0] if len(arrays) == 1 else arrays


def _predict(model, x):
    return np.asarray(ops.convert_to_numpy(model(x, training=False)))


def _weights(model):
    return [np.array(ops.convert_to_numpy(w)) for w in model.weights]


def _dense_params(inputs, units):
    return inputs * units + units


def _conv_params(kernel, inputs, filters):
    return kernel * inputs * filters + filters


def _compact_and_check(model, expected_dead, expected_params):
    """Compacts `model`, checking predictions, size and the original."""
    x = _inputs(model)
    reference = _predict(model, x)
    original = _weights(model)
    assert dead_units(model) == expected_dead
    small = compact(model, verbose=0)
    np.testing.assert_allclose(_predict(small, x), reference, rtol=0, atol=1e-5)
    assert small.count_params() == expected_params
    for before, after in zip(original, _weights(model), strict=True):
        np.testing.assert_array_equal(before, after)
    np.testing.assert_array_equal(_predict(model, x), reference)
    return small


def _sequential(*stack, input_shape):
    return keras.Sequential([keras.Input(input_shape), *stack])


# --- Sequential models -----------------------------------------------------


@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid", "softplus"])
def test_dense_chain_loses_its_dead_units(activation):
    model = _sequential(
        dense(8, activation=activation, name="hidden1"),
        dense(5, activation=activation, name="hidden2"),
        dense(2, name="output"),
        input_shape=(6,),
    )
    _prepared(model, {"hidden1": [1, 4, 6], "hidden2": [0, 3]})
    expected = _dense_params(6, 5) + _dense_params(5, 3) + _dense_params(3, 2)
    small = _compact_and_check(
        model, {"hidden1": [1, 4, 6], "hidden2": [0, 3]}, expected
    )
    assert small.get_layer("hidden1").units == 5
    assert small.get_layer("hidden2").units == 3
    assert small.get_layer("output").units == 2
    assert isinstance(small, keras.Sequential)


def test_sigmoid_constant_is_folded_into_the_next_bias():
    model = _sequential(
        dense(6, activation="sigmoid", name="hidden"),
        dense(3, name="output"),
        input_shape=(4,),
    )
    _prepared(model, {"hidden": [0, 2]})
    small = _compact_and_check(
        model, {"hidden": [0, 2]}, _dense_params(4, 4) + _dense_params(4, 3)
    )
    kernel, bias = model.get_layer("output").get_weights()
    expected_bias = bias + 0.5 * (kernel[0] + kernel[2])
    np.testing.assert_allclose(
        small.get_layer("output").get_weights()[1], expected_bias, atol=1e-6
    )


@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid"])
def test_a_zero_kernel_with_a_nonzero_bias_outputs_its_activation(activation):
    model = _sequential(
        dense(6, activation=activation, name="hidden"),
        dense(3, name="output"),
        input_shape=(4,),
    )
    _randomize(model)
    hidden = model.get_layer("hidden")
    kernel = ops.convert_to_numpy(hidden.kernel).copy()
    kernel[:, [1, 4]] = 0.0  # the biases stay nonzero
    hidden.kernel.assign(kernel)
    bias = ops.convert_to_numpy(hidden.bias)
    assert np.all(bias[[1, 4]] != 0.0)
    small = _compact_and_check(
        model, {"hidden": [1, 4]}, _dense_params(4, 4) + _dense_params(4, 3)
    )
    constants = _evaluate_activation(activation, bias[[1, 4]])
    out_kernel, out_bias = model.get_layer("output").get_weights()
    np.testing.assert_allclose(
        small.get_layer("output").get_weights()[1],
        out_bias + constants @ out_kernel[[1, 4]],
        atol=1e-6,
    )


def _evaluate_activation(name, values):
    """numpy reference of the activations the tests use."""
    values = np.asarray(values, "float64")
    return {
        "relu": np.maximum(values, 0.0),
        "tanh": np.tanh(values),
        "sigmoid": 1.0 / (1.0 + np.exp(-values)),
    }[name]


def test_a_zero_filter_with_a_nonzero_bias_into_a_same_conv_stays(capsys):
    model = _sequential(
        conv2d(4, 3, padding="same", activation="relu", name="conv1"),
        conv2d(3, 3, padding="same", name="conv2"),
        input_shape=(6, 6, 2),
    )
    _randomize(model)
    conv1 = model.get_layer("conv1")
    kernel = ops.convert_to_numpy(conv1.kernel).copy()
    kernel[..., 2] = 0.0
    conv1.kernel.assign(kernel)
    conv1.bias.assign(np.array([0.1, 0.2, 0.7, 0.3], "float32"))
    expected = _conv_params(9, 2, 4) + _conv_params(9, 4, 3)
    _compact_and_check(model, {}, expected)
    compact(model)
    assert "a 'same'-padded Conv2D `conv2`" in capsys.readouterr().out


@pytest.mark.parametrize("activation", ["relu", "sigmoid"])
def test_conv1d_filters(activation):
    model = _sequential(
        conv1d(6, 3, activation=activation, name="conv1"),
        conv1d(4, 3, name="conv2"),
        layers.GlobalAveragePooling1D(name="pool"),
        dense(2, name="output"),
        input_shape=(10, 3),
    )
    _prepared(model, {"conv1": [0, 5], "conv2": [1]})
    expected = (
        _conv_params(3, 3, 4) + _conv_params(3, 4, 3) + _dense_params(3, 2)
    )
    small = _compact_and_check(model, {"conv1": [0, 5], "conv2": [1]}, expected)
    assert small.get_layer("conv1").filters == 4
    assert small.get_layer("conv2").filters == 3


@pytest.mark.parametrize("padding", ["valid", "same"])
def test_conv2d_with_a_zero_constant_cuts_any_padding(padding):
    model = _sequential(
        conv2d(5, 3, activation="relu", name="conv1"),
        conv2d(4, 3, padding=padding, name="conv2"),
        layers.Flatten(name="flatten"),
        dense(2, name="output"),
        input_shape=(7, 7, 2),
    )
    _prepared(model, {"conv1": [1, 2], "conv2": [3]})
    side = 3 if padding == "valid" else 5
    expected = (
        _conv_params(9, 2, 3)
        + _conv_params(9, 3, 3)
        + _dense_params(side * side * 3, 2)
    )
    small = _compact_and_check(model, {"conv1": [1, 2], "conv2": [3]}, expected)
    assert small.get_layer("conv2").filters == 3


def test_conv2d_valid_folds_a_nonzero_constant():
    model = _sequential(
        conv2d(5, 3, activation="sigmoid", name="conv1"),
        conv2d(4, 3, strides=2, dilation_rate=1, name="conv2"),
        layers.GlobalMaxPooling2D(name="pool"),
        dense(2, name="output"),
        input_shape=(9, 9, 2),
    )
    _prepared(model, {"conv1": [0, 3]})
    expected = (
        _conv_params(9, 2, 3) + _conv_params(9, 3, 4) + _dense_params(4, 2)
    )
    _compact_and_check(model, {"conv1": [0, 3]}, expected)


@pytest.mark.parametrize(
    "center, scale", [(True, True), (False, True), (True, False)]
)
def test_conv_batch_norm_relu_conv(center, scale):
    model = _sequential(
        conv2d(6, 3, use_bias=False, name="conv1"),
        layers.BatchNormalization(center=center, scale=scale, name="bn"),
        layers.ReLU(name="relu"),
        conv2d(3, 3, name="conv2"),
        layers.GlobalAveragePooling2D(name="pool"),
        dense(2, name="output"),
        input_shape=(8, 8, 3),
    )
    _prepared(model, {"conv1": [2, 4]})
    bn_params = 4 * (2 + center + scale)
    expected = (
        9 * 3 * 4 + bn_params + _conv_params(9, 4, 3) + _dense_params(3, 2)
    )
    _compact_and_check(model, {"conv1": [2, 4]}, expected)


@pytest.mark.parametrize(
    "activation",
    [
        lambda: layers.ReLU(max_value=0.3, negative_slope=0.1, name="act"),
        lambda: layers.LeakyReLU(0.2, name="act"),
        lambda: layers.ELU(name="act"),
        lambda: layers.Activation("hard_sigmoid", name="act"),
        lambda: layers.Activation("swish", name="act"),
    ],
    ids=["ReLU", "LeakyReLU", "ELU", "hard_sigmoid", "swish"],
)
def test_activation_layers_are_evaluated_on_the_constant(activation):
    model = _sequential(
        dense(6, name="hidden"),
        layers.BatchNormalization(name="bn"),
        activation(),
        dense(2, name="output"),
        input_shape=(3,),
    )
    _prepared(model, {"hidden": [0, 1, 5]})
    expected = _dense_params(3, 3) + 4 * 3 + _dense_params(3, 2)
    _compact_and_check(model, {"hidden": [0, 1, 5]}, expected)


def test_softmax_mixes_channels_so_its_units_stay():
    model = _sequential(
        dense(5, name="hidden"),
        layers.Activation("softmax", name="softmax"),
        dense(4, activation="softmax", name="hidden2"),
        dense(2, name="output"),
        input_shape=(3,),
    )
    _prepared(model, {"hidden": [1, 3], "hidden2": [0]})
    _compact_and_check(model, {}, model.count_params())


def test_conv_maxpool_flatten_dense_cuts_every_position():
    model = _sequential(
        conv2d(4, 3, activation="sigmoid", name="conv"),
        layers.MaxPooling2D(2, name="pool"),
        layers.Flatten(name="flatten"),
        dense(3, activation="relu", name="dense"),
        dense(2, name="output"),
        input_shape=(8, 8, 2),
    )
    _prepared(model, {"conv": [1], "dense": [2]})
    # conv: 6x6 maps, pooled to 3x3: 9 positions of 3 remaining channels.
    expected = (
        _conv_params(9, 2, 3) + _dense_params(9 * 3, 2) + _dense_params(2, 2)
    )
    small = _compact_and_check(model, {"conv": [1], "dense": [2]}, expected)
    assert small.get_layer("dense").kernel.shape == (27, 2)


@pytest.mark.parametrize("activation", ["relu", "sigmoid"])
def test_global_average_pooling_then_dense(activation):
    model = _sequential(
        conv2d(5, 3, activation=activation, padding="same", name="c"),
        layers.GlobalAveragePooling2D(name="pool"),
        dense(2, name="output"),
        input_shape=(6, 6, 3),
    )
    _prepared(model, {"c": [0, 1, 4]})
    expected = _conv_params(9, 3, 2) + _dense_params(2, 2)
    _compact_and_check(model, {"c": [0, 1, 4]}, expected)


@pytest.mark.parametrize(
    "activation, padding",
    [("sigmoid", "valid"), ("relu", "valid"), ("relu", "same")],
)
def test_depthwise_conv_cuts_its_channel_and_multiplier_outputs(
    activation, padding
):
    model = _sequential(
        conv2d(4, 3, activation=activation, name="conv"),
        depthwise(3, depth_multiplier=2, padding=padding, name="depthwise"),
        conv2d(3, 1, name="pointwise"),
        layers.GlobalAveragePooling2D(name="pool"),
        dense(2, name="output"),
        input_shape=(8, 8, 3),
    )
    _prepared(model, {"conv": [1]})
    # The depthwise outputs 2 and 3 of channel 1 are constant: bias and all.
    expected = (
        _conv_params(9, 3, 3)
        + (9 * 3 * 2 + 6)
        + _conv_params(1, 6, 3)
        + _dense_params(3, 2)
    )
    small = _compact_and_check(model, {"conv": [1]}, expected)
    assert small.get_layer("depthwise").kernel.shape[-2:] == (3, 2)


@pytest.mark.parametrize(
    "noise",
    [
        lambda: layers.Dropout(0.3, name="noise"),
        lambda: layers.GaussianNoise(0.2, name="noise"),
        lambda: RegkitDropout(0.3, name="noise"),
    ],
    ids=["Dropout", "GaussianNoise", "keras_regkit.Dropout"],
)
def test_dropout_in_the_chain_is_seen_through(noise):
    model = _sequential(
        dense(6, activation="sigmoid", name="hidden"),
        noise(),
        dense(2, name="output"),
        input_shape=(4,),
    )
    _prepared(model, {"hidden": [3, 5]})
    _compact_and_check(
        model, {"hidden": [3, 5]}, _dense_params(4, 4) + _dense_params(4, 2)
    )


def test_spatial_dropout_and_average_pooling_are_seen_through():
    model = _sequential(
        conv2d(4, 3, activation="sigmoid", name="conv"),
        layers.SpatialDropout2D(0.3, name="noise"),
        layers.AveragePooling2D(2, padding="same", name="pool"),
        conv2d(2, 2, name="conv2"),
        layers.Flatten(name="flatten"),
        dense(2, name="output"),
        input_shape=(7, 7, 2),
    )
    _prepared(model, {"conv": [0]})
    # 5x5 maps, pooled to 3x3, convolved to 2x2 with 2 filters.
    expected = (
        _conv_params(9, 2, 3) + _conv_params(4, 3, 2) + _dense_params(8, 2)
    )
    _compact_and_check(model, {"conv": [0]}, expected)


def test_sequential_built_without_an_input_layer():
    model = keras.Sequential(
        [dense(5, activation="relu", name="hidden"), dense(2)]
    )
    model.build((None, 3))
    _prepared(model, {"hidden": [0, 1]})
    _compact_and_check(
        model, {"hidden": [0, 1]}, _dense_params(3, 3) + _dense_params(3, 2)
    )


# --- Functional models -----------------------------------------------------


def _residual_model():
    inputs = keras.Input((5,), name="x")
    trunk = dense(6, activation="relu", name="trunk")(inputs)
    branch = dense(6, activation="relu", name="branch")(trunk)
    added = layers.Add(name="add")([trunk, branch])
    outputs = dense(2, name="output")(added)
    return keras.Model(inputs, outputs)


def test_residual_add_removes_a_channel_dead_in_both_inputs():
    model = _prepared(_residual_model(), {"trunk": [1, 4], "branch": [1]})
    # Channel 4 of the trunk stays: the branch is live there.
    expected = _dense_params(5, 5) + _dense_params(5, 5) + _dense_params(5, 2)
    small = _compact_and_check(model, {"trunk": [1], "branch": [1]}, expected)
    assert small.get_layer("trunk").units == 5
    assert small.get_layer("branch").units == 5


def test_residual_add_with_one_dead_input_keeps_the_channel():
    model = _prepared(_residual_model(), {"branch": [0, 3]})
    _compact_and_check(model, {}, model.count_params())


def test_add_of_different_constants_folds_their_sum():
    inputs = keras.Input((4,), name="x")
    a = dense(5, activation="sigmoid", name="a")(inputs)
    b = dense(5, activation="exponential", name="b")(inputs)
    merged = layers.Average(name="average")([a, b])
    outputs = dense(2, name="output")(merged)
    model = _prepared(keras.Model(inputs, outputs), {"a": [2], "b": [2, 3]})
    expected = 2 * _dense_params(4, 4) + _dense_params(4, 2)
    _compact_and_check(model, {"a": [2], "b": [2]}, expected)


def test_concatenate_offsets_the_channels():
    inputs = keras.Input((4,), name="x")
    a = dense(4, activation="sigmoid", name="a")(inputs)
    b = dense(3, activation="relu", name="b")(inputs)
    joined = layers.Concatenate(name="concat")([a, b])
    outputs = dense(2, name="output")(joined)
    model = _prepared(keras.Model(inputs, outputs), {"a": [1], "b": [0, 2]})
    expected = _dense_params(4, 3) + _dense_params(4, 1) + _dense_params(4, 2)
    small = _compact_and_check(model, {"a": [1], "b": [0, 2]}, expected)
    assert small.get_layer("output").kernel.shape == (4, 2)


def test_conv_concatenate_and_two_consumers():
    inputs = keras.Input((6, 6, 2), name="x")
    a = conv2d(3, 3, activation="sigmoid", name="a")(inputs)
    b = conv2d(3, 3, activation="relu", name="b")(inputs)
    joined = layers.Concatenate(name="concat")([a, b])
    head1 = layers.GlobalAveragePooling2D(name="pool")(joined)
    head2 = conv2d(2, 3, name="conv")(joined)
    head2 = layers.Flatten(name="flatten")(head2)
    outputs = layers.Concatenate(name="heads")(
        [dense(2, name="out1")(head1), head2]
    )
    model = _prepared(keras.Model(inputs, outputs), {"a": [0], "b": [2]})
    expected = (
        2 * _conv_params(9, 2, 2) + _dense_params(4, 2) + _conv_params(9, 4, 2)
    )
    _compact_and_check(model, {"a": [0], "b": [2]}, expected)


def test_functional_model_with_two_outputs():
    inputs = keras.Input((4,), name="x")
    hidden = dense(5, activation="relu", name="hidden")(inputs)
    out1 = dense(2, name="out1")(hidden)
    out2 = dense(3, name="out2")(hidden)
    model = keras.Model(inputs, {"first": out1, "second": out2})
    _prepared(model, {"hidden": [1], "out2": [0]})
    x = _inputs(model)
    reference = model(x)
    assert dead_units(model) == {"hidden": [1]}
    small = compact(model, verbose=0)
    result = small(x)
    for key in ("first", "second"):
        np.testing.assert_allclose(
            ops.convert_to_numpy(result[key]),
            ops.convert_to_numpy(reference[key]),
            atol=1e-5,
        )
    assert small.get_layer("out2").units == 3


def test_call_arguments_are_respected():
    inputs = keras.Input((4,), name="x")
    hidden = dense(6, activation="sigmoid", name="hidden")(inputs)
    normed = layers.BatchNormalization(name="bn")(hidden, training=False)
    kept = dense(5, activation="sigmoid", name="kept")(normed)
    dropped = layers.Dropout(0.0, name="drop")(kept, training=True)
    outputs = dense(2, name="output")(dropped)
    model = keras.Model(inputs, outputs)
    _prepared(model, {"hidden": [2], "kept": [1, 4]})
    # `kept`'s units reach a Dropout that is on at inference: they stay.
    expected = _dense_params(4, 5) + 4 * 5 + _dense_params(5, 5) + 12
    _compact_and_check(model, {"hidden": [2]}, expected)


def test_a_unit_stays_unless_every_consumer_accepts_the_cut():
    inputs = keras.Input((6, 6, 2), name="x")
    features = conv2d(4, 3, activation="sigmoid", name="features")(inputs)
    valid = conv2d(2, 3, name="valid")(features)
    same = conv2d(2, 3, padding="same", name="same")(features)
    pooled = [
        layers.GlobalAveragePooling2D(name=f"pool_{i}")(t)
        for i, t in enumerate([valid, same])
    ]
    outputs = layers.Concatenate(name="concat")(pooled)
    model = _prepared(keras.Model(inputs, outputs), {"features": [1, 2]})
    _compact_and_check(model, {}, model.count_params())


def test_regularizers_and_configs_are_carried_over():
    model = _sequential(
        dense(
            6,
            activation="relu",
            kernel_regularizer=GroupLasso(0.01),
            name="hidden",
        ),
        dense(2, kernel_regularizer=L2(0.1), name="output"),
        input_shape=(3,),
    )
    _prepared(model, {"hidden": [0, 4]})
    small = compact(model, verbose=0)
    config = small.get_layer("hidden").get_config()
    assert config == dict(model.get_layer("hidden").get_config(), units=4)
    regularizer = small.get_layer("hidden").kernel_regularizer
    assert isinstance(regularizer, GroupLasso)
    assert regularizer.strength == 0.01
    # The group penalty loses only its zero groups: it is unchanged.
    penalties = [
        float(ops.convert_to_numpy(m.get_layer("hidden").losses[0]))
        for m in (model, small)
    ]
    np.testing.assert_allclose(penalties[1], penalties[0], rtol=1e-6)


def test_functional_model_keeps_its_names_and_input_structure():
    first, second = keras.Input((3,)), keras.Input((2,))  # default names
    joined = layers.Concatenate(name="concat")([first, second])
    hidden = dense(4, activation="relu", name="hidden")(joined)
    model = keras.Model([first, second], dense(1, name="output")(hidden))
    _prepared(model, {"hidden": [3]})
    small = _compact_and_check(
        model, {"hidden": [3]}, _dense_params(5, 3) + _dense_params(3, 1)
    )
    assert [layer.name for layer in small.layers] == [
        layer.name for layer in model.layers
    ]
    assert small.name == model.name


def test_keras_ops_in_the_graph_are_not_seen_through():
    inputs = keras.Input((4,), name="x")
    hidden = dense(5, activation="relu", name="hidden")(inputs)
    doubled = ops.relu(hidden) * 2.0
    outputs = dense(2, name="output")(doubled)
    model = _prepared(keras.Model(inputs, outputs), {"hidden": [1]})
    _compact_and_check(model, {}, model.count_params())


def test_shared_layer_keeps_its_inputs():
    inputs = keras.Input((4,), name="x")
    hidden = dense(5, activation="relu", name="hidden")(inputs)
    shared = dense(3, name="shared")
    outputs = layers.Add(name="add")([shared(hidden), shared(hidden)])
    model = _prepared(keras.Model(inputs, outputs), {"hidden": [2]})
    _compact_and_check(model, {}, model.count_params())


def test_group_lasso_with_proximal_steps_then_compact():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 6)).astype("float32")
    y = x[:, :1] - x[:, 1:2]
    model = _sequential(
        layers.Dense(
            12,
            activation="relu",
            kernel_regularizer=GroupLasso(0.1),
            name="hidden",
        ),
        layers.Dense(1, name="output"),
        input_shape=(6,),
    )
    model.compile(keras.optimizers.SGD(0.05), "mse")
    model.fit(
        x, y, epochs=30, batch_size=64, verbose=0, callbacks=[ProximalStep()]
    )
    dead = dead_units(model)["hidden"]
    assert len(dead) >= 3
    # GroupLasso zeroes kernel columns only: the dead units' biases are
    # what training left, and their constant relu(bias) is folded.
    bias = ops.convert_to_numpy(model.get_layer("hidden").bias)
    assert np.any(bias[dead] != 0.0)
    left = 12 - len(dead)
    _compact_and_check(
        model, {"hidden": dead}, _dense_params(6, left) + _dense_params(left, 1)
    )


# --- What stays --------------------------------------------------------------


def test_output_layer_units_stay(capsys):
    model = _sequential(
        dense(4, activation="relu", name="hidden"),
        dense(3, activation="sigmoid", name="output"),
        input_shape=(3,),
    )
    _prepared(model, {"output": [1]})
    small = _compact_and_check(model, {}, model.count_params())
    assert tuple(small.outputs[0].shape) == (None, 3)
    compact(model)
    assert (
        "output: kept 1 zero unit: their constant output 0.5 reaches the "
        "model's output" in capsys.readouterr().out
    )


def _same_conv_model():
    return _sequential(
        conv2d(5, 3, activation="sigmoid", name="conv1"),
        conv2d(2, 3, padding="same", name="conv2"),
        layers.GlobalAveragePooling2D(name="pool"),
        dense(2, name="output"),
        input_shape=(6, 6, 2),
    )


def _dense_without_bias_model():
    return _sequential(
        dense(5, activation="sigmoid", name="conv1"),
        dense(2, use_bias=False, name="conv2"),
        input_shape=(3,),
    )


def _layer_norm_model():
    return _sequential(
        dense(5, activation="relu", name="conv1"),
        layers.LayerNormalization(name="norm"),
        dense(2, name="output"),
        input_shape=(3,),
    )


def _mc_dropout_model():
    return _sequential(
        dense(5, activation="sigmoid", name="conv1"),
        RegkitDropout(0.0, mc=True, name="drop"),
        dense(2, name="output"),
        input_shape=(3,),
    )


def _causal_conv_model():
    return _sequential(
        conv1d(5, 2, activation="sigmoid", name="conv1"),
        conv1d(2, 2, padding="causal", name="conv2"),
        layers.Flatten(name="flatten"),
        input_shape=(5, 2),
    )


@pytest.mark.parametrize(
    "build, message",
    [
        (
            _same_conv_model,
            "conv1: kept 3 zero units: their constant output 0.5 reaches a "
            "'same'-padded Conv2D `conv2`",
        ),
        (
            _causal_conv_model,
            "conv1: kept 3 zero units: their constant output 0.5 reaches a "
            "'causal'-padded Conv1D `conv2`",
        ),
        (
            _dense_without_bias_model,
            "conv1: kept 3 zero units: their constant output 0.5 reaches "
            "`conv2`, a Dense without bias",
        ),
        (
            _layer_norm_model,
            "conv1: kept 3 zero units: their constant output 0 reaches "
            "`norm`, a LayerNormalization that compact does not see through",
        ),
        (
            _mc_dropout_model,
            "conv1: kept 3 zero units: their constant output 0.5 reaches "
            "`drop`, a Dropout that stays on at inference (mc=True)",
        ),
    ],
    ids=["same_conv", "causal_conv", "no_bias", "layer_norm", "mc_dropout"],
)
def test_inexact_removals_keep_the_units_and_say_why(build, message, capsys):
    model = _prepared(build(), {"conv1": [0, 2, 3]})
    _compact_and_check(model, {}, model.count_params())
    capsys.readouterr()
    compact(model, verbose=1)
    out = capsys.readouterr().out
    assert message in out, out


def test_residual_log_names_the_add(capsys):
    model = _prepared(_residual_model(), {"branch": [0, 3]})
    compact(model)
    assert (
        "branch: kept 2 zero units: their constant output 0 reaches `add`, "
        "an Add whose other inputs are not constant there"
    ) in capsys.readouterr().out


def test_a_layer_with_every_unit_dead_keeps_one(capsys):
    model = _sequential(
        dense(3, activation="relu", name="hidden"),
        dense(2, name="output"),
        input_shape=(4,),
    )
    _prepared(model, {"hidden": [0, 1, 2]})
    small = _compact_and_check(
        model, {"hidden": [1, 2]}, _dense_params(4, 1) + _dense_params(1, 2)
    )
    assert small.get_layer("hidden").units == 1
    compact(model)
    assert "hidden: kept 1 zero unit: every unit is zero" in (
        capsys.readouterr().out
    )


def test_no_dead_units_gives_an_equal_model(capsys):
    model = _sequential(
        dense(4, activation="relu", name="hidden"),
        dense(2, name="output"),
        input_shape=(3,),
    )
    _randomize(model)
    params = model.count_params()
    small = _compact_and_check(model, {}, params)
    assert small is not model
    assert small.get_config() == model.get_config()
    for before, after in zip(_weights(model), _weights(small), strict=True):
        np.testing.assert_array_equal(before, after)
    compact(model)
    assert (
        capsys.readouterr().out
        == f"Parameters: {params} -> {params} (0 removed)\n"
    )


# --- The log ---------------------------------------------------------------


def test_verbose_log_lists_each_changed_layer(capsys):
    model = _sequential(
        conv2d(4, 3, activation="sigmoid", name="conv"),
        layers.BatchNormalization(name="bn"),
        layers.Flatten(name="flatten"),
        dense(3, name="output"),
        input_shape=(4, 4, 1),
    )
    _prepared(model, {"conv": [0, 3]})
    before = model.count_params()
    small = compact(model, verbose=1)
    after = small.count_params()
    assert capsys.readouterr().out.splitlines() == [
        "conv: 4 -> 2 filters (2 removed)",
        "bn: 4 -> 2 channels",
        "output: 16 -> 8 inputs (8 constant inputs folded into the bias)",
        f"Parameters: {before} -> {after} ({before - after} removed)",
    ]


def test_verbose_0_prints_nothing(capsys):
    model = _prepared(_residual_model(), {"trunk": [1], "branch": [1]})
    compact(model, verbose=0)
    assert capsys.readouterr().out == ""


# --- The compact model is a plain Keras model --------------------------------


def test_compact_model_saves_loads_and_trains(tmp_path):
    model = _sequential(
        conv2d(4, 3, activation="relu", name="conv"),
        layers.BatchNormalization(name="bn"),
        layers.GlobalAveragePooling2D(name="pool"),
        dense(3, activation="sigmoid", name="hidden"),
        dense(2, name="output"),
        input_shape=(5, 5, 2),
    )
    _prepared(model, {"conv": [2], "hidden": [0]})
    model.compile("sgd", "mse")
    small = compact(model, verbose=0)
    assert not small.compiled
    x = _inputs(small)
    path = str(tmp_path / "small.keras")
    small.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(_predict(loaded, x), _predict(small, x), atol=0)
    assert loaded.get_layer("conv").filters == 3
    loaded.compile(keras.optimizers.SGD(0.01), "mse")
    y = np.zeros((len(x), 2), "float32")
    history = loaded.fit(x, y, epochs=1, batch_size=len(x), verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_functional_compact_model_saves_and_loads(tmp_path):
    model = _prepared(_residual_model(), {"trunk": [1], "branch": [1]})
    small = compact(model, verbose=0)
    x = _inputs(model)
    path = str(tmp_path / "small.keras")
    small.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(
        _predict(loaded, x), _predict(model, x), atol=1e-5
    )
    assert [layer.name for layer in loaded.layers] == [
        layer.name for layer in model.layers
    ]


# --- Errors ----------------------------------------------------------------


@pytest.mark.parametrize(
    "verbose, error",
    [(2, ValueError), (-1, ValueError), (True, TypeError), ("1", TypeError)],
)
def test_bad_verbose_is_refused(verbose, error):
    model = _sequential(dense(2), input_shape=(3,))
    with pytest.raises(
        error,
        match=(
            r"Invalid value received for argument `verbose`\. Expected 0 or "
            rf"1\. Received: verbose={verbose!r}"
        ),
    ):
        compact(model, verbose=verbose)


class _Subclassed(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = dense(2)

    def call(self, inputs):
        return self.dense(inputs)


def test_subclassed_model_is_refused():
    model = _Subclassed()
    model(np.zeros((1, 3), "float32"))
    with pytest.raises(ValueError, match="`_Subclassed` is a subclassed model"):
        compact(model)
    with pytest.raises(ValueError, match="subclassed model"):
        dead_units(model)


def test_unbuilt_model_is_refused():
    model = keras.Sequential([dense(2)])
    with pytest.raises(ValueError, match="Build it first"):
        compact(model)


def test_nested_model_is_refused():
    inner = keras.Sequential(
        [keras.Input((2,)), dense(3, name="inner_dense")], name="inner"
    )
    model = _sequential(inner, dense(1), input_shape=(2,))
    with pytest.raises(ValueError, match="`inner` is a nested model"):
        compact(model)


def test_a_layer_is_not_a_model():
    with pytest.raises(TypeError, match="Expected a built Sequential or"):
        compact(dense(2))
