"""Tests for keras_regkit.layers.Dropout beyond the shared conformance suite.

`test_stochastic.py` checks what every dropout-family layer does; this file
checks what is Dropout's own: being a drop-in for `keras.layers.Dropout`,
`noise_shape`, and custom training loops on each backend.
"""

import keras
import numpy as np
import pytest
from keras import ops

from keras_regkit.layers import Dropout


def _model(dropout_class, **kwargs):
    return keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(8, name="hidden"),
            dropout_class(0.5, name="drop", **kwargs),
            keras.layers.Dense(1, name="head"),
        ]
    )


def test_config_has_every_keras_key():
    ours = Dropout(0.3, noise_shape=(None, 1), seed=4).get_config()
    theirs = keras.layers.Dropout(0.3, noise_shape=(None, 1), seed=4)
    theirs = theirs.get_config()
    assert set(theirs) <= set(ours)
    for key in set(theirs) - {"name"}:  # names are numbered per class
        assert ours[key] == theirs[key], key
    assert ours["mc"] is False


def test_builds_from_a_keras_dropout_config():
    config = keras.layers.Dropout(0.2, seed=3, name="d").get_config()
    layer = Dropout.from_config(config)
    assert (layer.rate, layer.seed, layer.name, layer.mc) == (
        0.2,
        3,
        "d",
        False,
    )


def test_swaps_for_keras_dropout_weights_and_all(tmp_path):
    keras_model = _model(keras.layers.Dropout)
    ours = _model(Dropout)
    assert len(ours.get_weights()) == len(keras_model.get_weights())
    path = str(tmp_path / "keras_dropout.weights.h5")
    keras_model.save_weights(path)
    ours.load_weights(path)
    x = np.random.default_rng(0).normal(size=(5, 6)).astype("float32")
    np.testing.assert_allclose(
        ops.convert_to_numpy(ours.predict(x, verbose=0)),
        ops.convert_to_numpy(keras_model.predict(x, verbose=0)),
        rtol=1e-6,
    )


def test_noise_shape_takes_none_entries_from_the_input():
    layer = Dropout(0.5, noise_shape=(None, 1, None), seed=2)
    x = np.ones((16, 5, 12), "float32")
    out = ops.convert_to_numpy(layer(x, training=True))
    # the same units are dropped at every timestep, different per sample
    np.testing.assert_array_equal(out, np.repeat(out[:, :1], 5, axis=1))
    assert not np.array_equal(out[0, 0], out[1, 0])
    assert 0 < (out == 0).mean() < 1


def test_noise_shape_with_none_entries_in_a_compiled_model():
    layer = Dropout(0.5, noise_shape=(None, 1, None))
    model = keras.Sequential(
        [keras.Input((None, 4)), layer, keras.layers.Dense(1)]
    )
    model.compile(optimizer="sgd", loss="mse")
    for timesteps in (3, 7):  # dimensions unknown until the call
        x = np.ones((8, timesteps, 4), "float32")
        model.fit(x, np.zeros((8, timesteps, 1)), verbose=0)


@pytest.mark.parametrize(
    "noise_shape, pattern",
    [
        ((None, 1), r"one entry per input dimension \(3 for inputs of shape"),
        ((None, 2, None), r"Each entry must be None, 1 or the input's size"),
    ],
)
def test_noise_shape_not_matching_the_input_fails_when_built(
    noise_shape, pattern
):
    with pytest.raises(ValueError, match=pattern):
        Dropout(0.5, noise_shape=noise_shape)(keras.Input((5, 3)))


def test_built_at_instantiation_like_keras_dropout():
    assert keras.layers.Dropout(0.5).built
    layer = Dropout(0.5)
    assert layer.built
    assert len(layer.variables) == 2  # seed state and rate, both there


@pytest.mark.parametrize("training", [True, False])
def test_noise_shape_not_matching_an_eager_call_fails(training):
    layer = Dropout(0.5, noise_shape=(None, 1, 4))
    layer(np.ones((2, 3, 4), "float32"), training=training)  # fits
    with pytest.raises(ValueError, match=r"Each entry must be None, 1 or"):
        layer(np.ones((2, 3, 5), "float32"), training=training)
    with pytest.raises(ValueError, match=r"one entry per input dimension"):
        layer(np.ones((2, 4), "float32"), training=training)


def test_noise_shape_not_matching_fails_in_a_sequential_model():
    with pytest.raises(ValueError, match=r"one entry per input dimension"):
        keras.Sequential([keras.Input((5, 3)), Dropout(0.5, (None, 1))])


def test_a_subclass_with_its_own_build_is_built_by_keras():
    class Scaled(Dropout):
        def build(self, input_shape):
            self.scale = self.add_weight(shape=(), initializer="ones")

        def call(self, inputs, training=False):
            return super().call(inputs, training=training) * self.scale

    layer = Scaled(0.5)
    assert not layer.built
    out = layer(np.ones((2, 3), "float32"))
    assert layer.built and len(layer.weights) == 1
    np.testing.assert_allclose(ops.convert_to_numpy(out), np.ones((2, 3)))


@pytest.mark.parametrize(
    "noise_shape",
    ["Invalid", (20, 1.5, 10), 4, (None, 0), (2, -1), ("a", 2)],
)
def test_bad_noise_shape_is_a_value_error_as_in_keras(noise_shape):
    with pytest.raises(ValueError):
        keras.layers.Dropout(0.5, noise_shape=noise_shape)
    with pytest.raises(ValueError, match=r"Invalid value received for arg"):
        Dropout(0.5, noise_shape=noise_shape)


@pytest.mark.parametrize(
    "noise_shape", [(None, 1), [None, 1], [2, None], range(1, 3), (1, 1)]
)
def test_noise_shapes_keras_takes_are_taken(noise_shape):
    theirs = keras.layers.Dropout(0.5, noise_shape=noise_shape).noise_shape
    ours = Dropout(0.5, noise_shape=noise_shape).noise_shape
    assert isinstance(ours, tuple) and ours == tuple(theirs)


def test_masks_pass_through_to_an_lstm():
    inputs = keras.Input((None,), dtype="int32")
    embedded = keras.layers.Embedding(10, 3, mask_zero=True)(inputs)
    outputs = keras.layers.LSTM(2)(Dropout(0.5)(embedded))
    model = keras.Model(inputs, outputs)
    padded = model.predict(np.array([[3, 4, 0, 0]]), verbose=0)
    trimmed = model.predict(np.array([[3, 4]]), verbose=0)
    np.testing.assert_allclose(padded, trimmed, rtol=1e-5)


def _custom_loop_model():
    """Dense(16) with an identity kernel, then Dropout: batch 1 shows units."""
    layer = Dropout(0.5, seed=8)
    model = keras.Sequential(
        [
            keras.Input((16,)),
            keras.layers.Dense(
                16, use_bias=False, kernel_initializer="identity"
            ),
            layer,
        ]
    )
    return model


def _check_kept_units(outputs, kernel_gradient):
    """Units dropped in the output get no gradient; kept ones get 2."""
    outputs = np.asarray(outputs)[0]
    dropped = outputs == 0
    assert 0 < dropped.sum() < dropped.size
    expected = np.broadcast_to(np.where(dropped, 0.0, 2.0), (16, 16))
    np.testing.assert_allclose(np.asarray(kernel_gradient), expected)


@pytest.mark.tensorflow_only
def test_custom_loop_with_gradient_tape():
    import tensorflow as tf

    model = _custom_loop_model()
    x = np.ones((1, 16), "float32")
    with tf.GradientTape() as tape:
        outputs = model(x, training=True)
        loss = tf.reduce_sum(outputs)
    kernel_gradient = tape.gradient(loss, model.trainable_variables[0])
    _check_kept_units(outputs.numpy(), kernel_gradient.numpy())
    np.testing.assert_array_equal(model(x, training=False).numpy(), x)


@pytest.mark.jax_only
def test_custom_loop_with_jax_grad():
    import jax

    model = _custom_loop_model()
    trainable = [v.value for v in model.trainable_variables]
    non_trainable = [v.value for v in model.non_trainable_variables]
    x = np.ones((1, 16), "float32")

    def loss(trainable, non_trainable):
        outputs, non_trainable = model.stateless_call(
            trainable, non_trainable, x, training=True
        )
        return outputs.sum(), (outputs, non_trainable)

    grads, (outputs, updated) = jax.grad(loss, has_aux=True)(
        trainable, non_trainable
    )
    _check_kept_units(outputs, grads[0])
    # the seed generator moved on, so the next step draws a new mask
    assert any(
        not np.array_equal(a, b)
        for a, b in zip(updated, non_trainable, strict=True)
    )
    inference, _ = model.stateless_call(
        trainable, non_trainable, x, training=False
    )
    np.testing.assert_array_equal(np.asarray(inference), x)


@pytest.mark.torch_only
def test_custom_loop_with_torch_autograd():
    model = _custom_loop_model()
    x = np.ones((1, 16), "float32")
    outputs = model(x, training=True)
    outputs.sum().backward()
    kernel = model.trainable_variables[0].value
    _check_kept_units(
        outputs.detach().cpu().numpy(), kernel.grad.detach().cpu().numpy()
    )
    inference = model(x, training=False)
    np.testing.assert_array_equal(inference.detach().cpu().numpy(), x)
