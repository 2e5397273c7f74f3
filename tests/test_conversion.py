"""Tests for keras_regkit.layers.convert_dropout."""

import warnings

import keras
import numpy as np
import pytest
from keras import ops

from keras_regkit.layers import Dropout, convert_dropout

FEATURES = 16


def _mlp(dropout):
    return keras.Sequential(
        [
            keras.Input((FEATURES,)),
            keras.layers.Dense(FEATURES, name="hidden"),
            dropout,
            keras.layers.Dense(1, name="head"),
        ],
        name="mlp",
    )


def _numpy(x):
    return ops.convert_to_numpy(x)


def test_converts_in_place_keeping_name_rate_seed_and_predictions():
    layer = keras.layers.Dropout(0.3, noise_shape=(None, FEATURES), seed=4)
    model = _mlp(layer)
    x = np.random.default_rng(0).normal(size=(8, FEATURES)).astype("float32")
    before = _numpy(model(x))
    weights = [w.copy() for w in model.get_weights()]
    state = _numpy(layer.seed_generator.state).copy()
    assert convert_dropout(model) == ["dropout"]
    assert model.layers[1] is layer and isinstance(layer, Dropout)
    assert (layer.name, layer.rate, layer.seed) == ("dropout", 0.3, 4)
    assert layer.noise_shape == (None, FEATURES) and layer.mc is False
    np.testing.assert_array_equal(_numpy(layer.seed_generator.state), state)
    np.testing.assert_array_equal(_numpy(model(x)), before)
    for old, new in zip(weights, model.get_weights(), strict=True):
        np.testing.assert_array_equal(old, new)
    assert layer.get_config() == Dropout(
        0.3, (None, FEATURES), 4
    ).get_config() | {"name": "dropout"}


def test_a_converted_layer_drops_like_dropout_and_its_rate_can_change():
    layer = keras.layers.Dropout(0.25, seed=1)
    convert_dropout(_mlp(layer))
    out = _numpy(layer(np.ones((200, 50), "float32"), training=True))
    assert sorted(set(out.ravel().tolist())) == [0.0, np.float32(1 / 0.75)]
    assert (out == 0).mean() == pytest.approx(0.25, abs=0.02)
    layer.rate = 0.5
    out = _numpy(layer(np.ones((200, 50), "float32"), training=True))
    assert (out == 0).mean() == pytest.approx(0.5, abs=0.02)


@pytest.mark.parametrize(
    "layer, shape, shared_axes",
    [
        (keras.layers.SpatialDropout1D(0.5), (6, FEATURES), (1,)),
        (
            keras.layers.SpatialDropout2D(0.5, data_format="channels_first"),
            (FEATURES, 3, 2),
            (2, 3),
        ),
        (keras.layers.SpatialDropout3D(0.5), (2, 2, 2, FEATURES), (1, 2, 3)),
    ],
    ids=["1D", "2D(channels_first)", "3D"],
)
def test_spatial_dropouts_keep_dropping_whole_channels(
    layer, shape, shared_axes
):
    model = keras.Sequential([keras.Input(shape), layer])
    convert_dropout(model)
    out = _numpy(layer(np.ones((4, *shape), "float32"), training=True))
    np.testing.assert_array_equal(np.ptp(out, axis=shared_axes), 0.0)
    assert 0 < (out == 0).mean() < 1


def test_the_next_fit_uses_the_new_rate_of_a_compiled_model():
    model = _mlp(keras.layers.Dropout(0.0, name="dropout"))  # no generator
    model.compile(optimizer="sgd", loss="mse")
    x = np.ones((32, FEATURES), "float32")
    y = np.zeros((32, 1), "float32")
    model.fit(x, y, verbose=0)
    convert_dropout(model)
    model.get_layer("dropout").rate = 0.5
    # with a rate, two evaluations in training mode differ
    hidden = keras.Model(model.inputs[0], model.get_layer("dropout").output)
    first, second = (_numpy(hidden(x, training=True)) for _ in "ab")
    assert not np.array_equal(first, second)
    history = model.fit(x, y, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_mc_true_keeps_dropout_on_at_inference():
    model = _mlp(keras.layers.Dropout(0.5))
    convert_dropout(model, mc=True)
    x = np.ones((4, FEATURES), "float32")
    assert not np.array_equal(
        model.predict(x, verbose=0), model.predict(x, verbose=0)
    )


def test_nested_and_attention_dropouts_are_converted_with_a_warning(tmp_path):
    inner = _mlp(keras.layers.Dropout(0.2, name="inner_dropout"))
    tokens = keras.Input((4, 8))
    attention = keras.layers.MultiHeadAttention(2, 4, dropout=0.1, name="mha")
    quiet = keras.layers.MultiHeadAttention(2, 4, name="quiet")  # dropout=0
    mixed = quiet(attention(tokens, tokens), tokens)
    pooled = keras.layers.Dense(FEATURES)(keras.layers.Flatten()(mixed))
    model = keras.Model(
        tokens, inner(keras.layers.GaussianDropout(0.1)(pooled))
    )
    with pytest.warns(UserWarning, match=r"Dropout layers again.*mha/dropout"):
        paths = convert_dropout(model)
    assert paths == ["mha/dropout", "mlp/inner_dropout"]
    assert isinstance(attention._dropout_layer, Dropout)
    assert not isinstance(quiet._dropout_layer, Dropout)
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(
        loaded.get_layer("mlp").get_layer("inner_dropout"), Dropout
    )
    x = np.random.default_rng(1).normal(size=(2, 4, 8)).astype("float32")
    np.testing.assert_allclose(
        _numpy(loaded(x)), _numpy(model(x)), rtol=1e-6, atol=1e-6
    )


def test_leaves_other_noise_and_subclasses_alone():
    class OwnDropout(keras.layers.Dropout):
        pass

    model = keras.Sequential(
        [
            keras.Input((FEATURES,)),
            keras.layers.GaussianDropout(0.2),
            keras.layers.AlphaDropout(0.2),
            OwnDropout(0.2),
        ]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert convert_dropout(model) == []
    assert not any(isinstance(layer, Dropout) for layer in model.layers)


def test_rate_one_is_refused_before_any_change():
    first = keras.layers.Dropout(0.5, name="first")
    model = keras.Sequential(
        [keras.Input((3,)), first, keras.layers.Dropout(1.0, name="whole")]
    )
    with pytest.raises(ValueError, match=r"rate 1\): whole\. Nothing"):
        convert_dropout(model)
    assert type(first) is keras.layers.Dropout


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"model": "model"}, TypeError, r"Received: model='model'"),
        ({"mc": 1}, TypeError, r"`mc`.*Received: mc=1"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    arguments = {"model": _mlp(keras.layers.Dropout(0.1)), **kwargs}
    with pytest.raises(error, match=match):
        convert_dropout(**arguments)
