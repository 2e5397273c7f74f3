"""Tests for keras_regkit.layers.DropPath beyond the shared conformance suite.

`test_stochastic.py` checks the `training` flag, rates, seeds, gradients and
saving for every dropout-family layer; this file checks what is DropPath's
own: whole samples dropped, in residual blocks.
"""

import keras
import numpy as np
import pytest
from keras import ops

from keras_regkit.layers import DropPath


@pytest.mark.parametrize("shape", [(256,), (256, 5), (256, 4, 4, 3)])
def test_drops_whole_samples(shape):
    x = np.random.default_rng(0).uniform(1, 2, shape).astype("float32")
    out = ops.convert_to_numpy(DropPath(0.5, seed=4)(x, training=True))
    per_sample = out.reshape(shape[0], -1)
    dropped = np.all(per_sample == 0, axis=1)
    kept = np.all(per_sample != 0, axis=1)
    assert np.all(dropped | kept)  # never part of a sample
    assert 0 < dropped.mean() < 1
    np.testing.assert_allclose(out[kept], x[kept] * 2, rtol=1e-6)


def test_built_at_instantiation():
    layer = DropPath(0.1)
    assert layer.built
    assert len(layer.variables) == 2  # seed state and rate, both there


@pytest.mark.parametrize("training", [True, False])
def test_inputs_without_a_batch_dimension_fail_at_every_call(training):
    layer = DropPath(0.1)
    layer(np.ones((2, 3), "float32"), training=training)  # fits
    with pytest.raises(ValueError, match=r"needs inputs with a batch dim"):
        layer(np.float32(1.0), training=training)
    with pytest.raises(ValueError, match=r"Received inputs of shape \(\)"):
        layer.compute_output_shape(())


def _residual_block(rate):
    inputs = keras.Input((8,))
    branch = keras.layers.Dense(8, name="branch")(inputs)
    outputs = keras.layers.Add()([inputs, DropPath(rate, seed=2)(branch)])
    return keras.Model(inputs, outputs)


def test_a_dropped_branch_leaves_the_identity():
    model = _residual_block(0.5)
    x = np.random.default_rng(1).normal(size=(128, 8)).astype("float32")
    out = ops.convert_to_numpy(model(x, training=True))
    branch = ops.convert_to_numpy(model.get_layer("branch")(x))
    identity = np.all(np.isclose(out, x), axis=1)
    full = np.all(np.isclose(out, x + 2 * branch, rtol=1e-5), axis=1)
    assert np.all(identity | full)
    assert 0 < identity.mean() < 1
    np.testing.assert_allclose(
        ops.convert_to_numpy(model(x)), x + branch, rtol=1e-5, atol=1e-6
    )


def test_trains_in_a_residual_model():
    model = _residual_block(0.2)
    model.compile(optimizer="sgd", loss="mse")
    x = np.random.default_rng(2).normal(size=(64, 8)).astype("float32")
    history = model.fit(x, x, epochs=3, verbose=0)
    assert all(np.isfinite(history.history["loss"]))
