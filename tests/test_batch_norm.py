"""recompute_batch_norm: BatchNorm statistics from one pass over the data."""

import keras
import numpy as np
import pytest

from keras_regkit._batch_norm import batch_norm_layers, recompute_batch_norm

_RNG = np.random.default_rng(0)
_X = _RNG.normal(loc=2.0, scale=3.0, size=(40, 3)).astype("float32")


def _model():
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.Input((3,)),
            keras.layers.BatchNormalization(name="first"),
            keras.layers.Dense(4, name="dense"),
            keras.layers.BatchNormalization(name="second"),
            keras.layers.Dense(1, name="head"),
        ]
    )


def _statistics(layer):
    return (
        keras.ops.convert_to_numpy(layer.moving_mean),
        keras.ops.convert_to_numpy(layer.moving_variance),
    )


def test_one_batch_gives_the_mean_and_variance_of_the_data():
    model = _model()
    recompute_batch_norm(model, _X, batch_size=len(_X))
    mean, variance = _statistics(model.get_layer("first"))
    np.testing.assert_allclose(mean, _X.mean(0), rtol=1e-5)
    np.testing.assert_allclose(variance, _X.var(0), rtol=1e-5)


def test_batches_average_their_statistics_by_size():
    model = _model()
    weights = [w.copy() for w in model.get_weights()]
    layers = recompute_batch_norm(model, _X, batch_size=16)  # 16, 16, 8
    assert [layer.name for layer in layers] == ["first", "second"]
    batches = [_X[:16], _X[16:32], _X[32:]]
    sizes = np.array([16, 16, 8]) / 40
    mean, variance = _statistics(model.get_layer("first"))
    np.testing.assert_allclose(mean, _X.mean(0), rtol=1e-5)
    expected = sum(s * b.var(0) for s, b in zip(sizes, batches, strict=True))
    np.testing.assert_allclose(variance, expected, rtol=1e-5)
    # The second layer sees the first normalised by each batch's own
    # statistics (training mode), then the dense layer.
    kernel, bias = model.get_layer("dense").get_weights()
    gamma, beta = model.get_layer("first").get_weights()[:2]
    inputs = [
        ((b - b.mean(0)) / np.sqrt(b.var(0) + 1e-3) * gamma + beta) @ kernel
        + bias
        for b in batches
    ]
    mean, variance = _statistics(model.get_layer("second"))
    expected_mean = sum(
        s * h.mean(0) for s, h in zip(sizes, inputs, strict=True)
    )
    np.testing.assert_allclose(mean, expected_mean, rtol=1e-4, atol=1e-5)
    expected_var = sum(s * h.var(0) for s, h in zip(sizes, inputs, strict=True))
    np.testing.assert_allclose(variance, expected_var, rtol=1e-4)
    # The trainable weights and the layers' momentum are untouched.
    trainable = [w for w in model.trainable_weights]
    assert len(trainable) == 8
    assert model.get_layer("first").momentum == 0.99
    for ours, before, variable in zip(
        model.get_weights(), weights, model.weights, strict=True
    ):
        if variable.trainable:
            np.testing.assert_array_equal(ours, before)


def test_an_iterable_of_batches_is_read_as_fit_reads_it():
    model, reference = _model(), _model()
    recompute_batch_norm(reference, _X, batch_size=10)
    batches = [(_X[i : i + 10], np.zeros((10, 1))) for i in range(0, 40, 10)]
    recompute_batch_norm(model, iter(batches))
    for name in ("first", "second"):
        for ours, theirs in zip(
            _statistics(model.get_layer(name)),
            _statistics(reference.get_layer(name)),
            strict=True,
        ):
            np.testing.assert_allclose(ours, theirs, rtol=1e-6)


def test_frozen_layers_are_left_alone():
    model = _model()
    model.get_layer("second").trainable = False
    assert [layer.name for layer in batch_norm_layers(model)] == ["first"]
    recompute_batch_norm(model, _X)
    mean, variance = _statistics(model.get_layer("second"))
    np.testing.assert_array_equal(mean, np.zeros(4))
    np.testing.assert_array_equal(variance, np.ones(4))


def test_a_failure_midway_puts_the_statistics_back():
    model = _model()
    before = [_statistics(model.get_layer(n)) for n in ("first", "second")]

    def batches():
        yield _X[:20]
        raise RuntimeError("bad batch")

    with pytest.raises(RuntimeError, match="bad batch"):
        recompute_batch_norm(model, batches())
    for name, (mean, variance) in zip(("first", "second"), before, strict=True):
        ours = _statistics(model.get_layer(name))
        np.testing.assert_array_equal(ours[0], mean)
        np.testing.assert_array_equal(ours[1], variance)
    assert model.get_layer("first").momentum == 0.99


def test_bad_data_is_refused_by_name():
    with pytest.raises(TypeError, match="argument `data`.*of type int"):
        recompute_batch_norm(_model(), 3)
    with pytest.raises(ValueError, match="at least one row"):
        recompute_batch_norm(_model(), iter([]))
    with pytest.raises(ValueError, match="batch_size=0"):
        recompute_batch_norm(_model(), _X, batch_size=0)
