"""Tests for what every keras_regkit dropout-family layer shares.

`LAYERS` drives one conformance suite over every layer: adding a layer
means adding one line there. Statistical checks use a fixed seed and a
tolerance of five standard deviations of the quantity tested.
"""

import copy
import json
import math

import keras
import numpy as np
import pytest
from backend_utils import gradient
from keras import ops
from layer_utils import STRUCTURES, ZeroFraction, build
from processes import run_in_fresh_process
from serialization import assert_config_round_trip

from keras_regkit.callbacks import DropoutScheduler
from keras_regkit.layers import Dropout, DropPath

# (factory, how many independent draws a (rows, features) input gets)
LAYERS = {
    "Dropout": (lambda rate, **kw: Dropout(rate, **kw), lambda r, f: r * f),
    "Dropout(noise_shape)": (
        lambda rate, **kw: Dropout(rate, noise_shape=(None, 1), **kw),
        lambda r, f: r,
    ),
    "DropPath": (lambda rate, **kw: DropPath(rate, **kw), lambda r, f: r),
}
NAMES = list(LAYERS)


def _tolerance(rate, draws):
    """Five standard deviations of the fraction of `draws` units dropped."""
    return 5 * math.sqrt(rate * (1 - rate) / draws)


def _numpy(x):
    return ops.convert_to_numpy(x)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("rate", [0.1, 0.5, 0.8])
def test_drops_about_rate_and_scales_the_rest(name, rate):
    make, draws = LAYERS[name]
    rows, features = 4000, 32
    x = np.random.default_rng(0).uniform(1, 2, (rows, features))
    x = x.astype("float32")
    out = _numpy(make(rate, seed=7)(x, training=True))
    dropped = out == 0
    assert abs(dropped.mean() - rate) < _tolerance(rate, draws(rows, features))
    np.testing.assert_allclose(
        out[~dropped], x[~dropped] / (1 - rate), rtol=1e-6
    )


@pytest.mark.parametrize("name", NAMES)
def test_preserves_the_mean(name):
    make, draws = LAYERS[name]
    rate, rows, features = 0.4, 20000, 16
    out = _numpy(make(rate, seed=3)(np.ones((rows, features)), training=True))
    # Each draw is 0 or 1/(1-rate): variance rate/(1-rate) around mean 1.
    sigma = math.sqrt(rate / (1 - rate) / draws(rows, features))
    assert abs(out.mean() - 1.0) < 5 * sigma


@pytest.mark.parametrize("name", NAMES)
def test_gradient_flows_through_kept_units_only(name):
    make, _ = LAYERS[name]
    rate = 0.5
    x = np.random.default_rng(1).uniform(1, 2, (64, 8)).astype("float32")
    # Two layers with one seed draw the same masks: one shows the mask, the
    # other is differentiated.
    out = _numpy(make(rate, seed=11)(x, training=True))
    differentiated = make(rate, seed=11)
    weights = np.random.default_rng(2).normal(size=x.shape).astype("float32")
    grad = gradient(
        lambda v: ops.sum(
            ops.multiply(differentiated(v, training=True), weights)
        ),
        x,
    )
    expected = np.where(out == 0, 0.0, weights / (1 - rate))
    np.testing.assert_allclose(grad, expected, rtol=1e-6)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("structure", STRUCTURES)
def test_training_flag_matrix(name, structure):
    make, draws = LAYERS[name]
    rate, rows, features = 0.5, 512, 64
    model, probe = build(structure, make(rate), features)
    model.compile(optimizer="sgd", loss="mse")
    x = np.ones((rows, features), "float32")
    y = np.zeros((rows, 1), "float32")
    contexts = {
        "fit": lambda: model.fit(x, y, batch_size=rows, verbose=0),
        "model(x, training=True)": lambda: model(x, training=True),
        "evaluate": lambda: model.evaluate(x, y, batch_size=rows, verbose=0),
        "predict": lambda: model.predict(x, batch_size=rows, verbose=0),
        "model(x)": lambda: model(x),
        "model(x, training=False)": lambda: model(x, training=False),
    }
    active = {}
    for context, run in contexts.items():
        probe.read()
        run()
        fraction = probe.read()
        assert fraction >= 0, f"{context}: the probe was not called"
        active[context] = fraction > 0
        if active[context]:
            tolerance = _tolerance(rate, draws(rows, features))
            assert abs(fraction - rate) < tolerance, context
    assert active == {
        "fit": True,
        "model(x, training=True)": True,
        "evaluate": False,
        "predict": False,
        "model(x)": False,
        "model(x, training=False)": False,
    }


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(
    "structure", ["functional", "sequential_in_functional"]
)
def test_mc_stays_on_at_inference(name, structure):
    make, _ = LAYERS[name]
    model, probe = build(structure, make(0.5, mc=True), 64)
    model.compile(optimizer="sgd", loss="mse")
    x, y = np.ones((256, 64), "float32"), np.zeros((256, 1), "float32")
    for run in (
        lambda: model.predict(x, verbose=0),
        lambda: model.evaluate(x, y, verbose=0),
        lambda: model(x),
        lambda: model(x, training=False),
        lambda: model.fit(x, y, verbose=0),
    ):
        probe.read()
        run()
        assert probe.read() > 0


def test_keras_recipe_for_mc_dropout_is_off_in_predict():
    # Why `mc=True` exists: Keras's own recipe, observed on Keras 3.15.
    inputs = keras.Input((64,))
    probe = ZeroFraction()
    hidden = probe(keras.layers.Dropout(0.5)(inputs, training=True))
    model = keras.Model(inputs, hidden)
    x = np.ones((8, 64), "float32")
    model(x)
    assert probe.read() > 0  # on in a direct call ...
    model.predict(x, verbose=0)
    assert probe.read() == 0  # ... silently off in predict


@pytest.mark.parametrize("name", NAMES)
def test_rate_change_reaches_the_compiled_train_step(name):
    make, draws = LAYERS[name]
    rows, features = 512, 64
    layer = make(0.1)
    model, probe = build("functional", layer, features)
    model.compile(optimizer="sgd", loss="mse")
    x, y = np.ones((rows, features), "float32"), np.zeros((rows, 1))
    measured = []
    for rate in (0.1, 0.6, 0.0, 0.3):
        layer.rate = rate
        model.fit(x, y, batch_size=rows, verbose=0)
        measured.append(probe.read())
    for rate, fraction in zip((0.1, 0.6, 0.0, 0.3), measured, strict=True):
        tolerance = _tolerance(rate, draws(rows, features)) if rate else 0
        assert abs(fraction - rate) <= tolerance, (rate, fraction)


class _CountsTraces(keras.layers.Layer):
    """The identity; counts how often its Python `call` runs."""

    calls = 0

    def call(self, inputs):
        type(self).calls += 1
        return inputs


def test_rate_changes_trace_nothing_again():
    if keras.backend.backend() == "torch":
        pytest.skip("PyTorch runs train steps eagerly: nothing is traced")
    _CountsTraces.calls = 0
    layer = Dropout(0.5)
    model = keras.Sequential(
        [keras.Input((8,)), layer, _CountsTraces(), keras.layers.Dense(1)]
    )
    model.compile(optimizer="sgd", loss="mse")
    x, y = np.ones((64, 8), "float32"), np.zeros((64, 1), "float32")
    model.fit(x, y, batch_size=16, epochs=2, verbose=0)
    traced = _CountsTraces.calls
    rates = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    model.fit(
        x,
        y,
        batch_size=16,
        epochs=len(rates),
        verbose=0,
        callbacks=[DropoutScheduler(lambda epoch: rates[epoch])],
    )
    assert layer.rate == 0.6
    assert _CountsTraces.calls == traced


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_masks_in_a_fresh_process(name):
    make, _ = LAYERS[name]
    layer = make(0.5, seed=42)
    here = [
        _numpy(layer(np.ones((4, 6), "float32"), training=True))
        for _ in range(3)
    ]
    factory = {
        "Dropout": "Dropout(0.5, seed=42)",
        "Dropout(noise_shape)": "Dropout(0.5, noise_shape=(None, 1), seed=42)",
        "DropPath": "DropPath(0.5, seed=42)",
    }[name]
    output = run_in_fresh_process(
        f"""
        import json
        import keras, numpy as np
        from keras_regkit.layers import DropPath, Dropout
        layer = {factory}
        masks = [
            keras.ops.convert_to_numpy(
                layer(np.ones((4, 6), "float32"), training=True)
            ).tolist()
            for _ in range(3)
        ]
        print(json.dumps(masks))
        """
    )
    there = json.loads(output.strip().splitlines()[-1])
    np.testing.assert_array_equal(np.array(there), np.array(here))
    assert not np.array_equal(here[0], here[1])  # a sequence, not a repeat


@pytest.mark.parametrize("name", NAMES)
def test_unseeded_layers_draw_different_masks(name):
    make, _ = LAYERS[name]
    x = np.ones((64, 16), "float32")
    first = _numpy(make(0.5)(x, training=True))
    second = _numpy(make(0.5)(x, training=True))
    assert not np.array_equal(first, second)


@pytest.mark.parametrize("name", NAMES)
def test_rate_is_state_not_a_weight(name):
    make, _ = LAYERS[name]
    layer = make(0.25)
    model = keras.Sequential([keras.Input((4,)), layer])
    assert layer.get_weights() == []
    assert model.get_weights() == []
    assert layer.weights == []
    rate_variables = [
        v for v in model.non_trainable_variables if v.name == "rate"
    ]
    assert len(rate_variables) == 1
    layer.rate = 0.75
    assert float(_numpy(rate_variables[0])) == 0.75
    assert layer.get_config()["rate"] == 0.75


@pytest.mark.parametrize("name", NAMES)
def test_config_round_trip_and_deepcopy(name):
    make, _ = LAYERS[name]
    layer = make(0.3, seed=5, mc=True, name="noisy")
    layer.rate = 0.35
    rebuilt = assert_config_round_trip(layer)
    assert rebuilt.get_config() == layer.get_config()
    assert rebuilt.rate == 0.35 and rebuilt.mc and rebuilt.seed == 5
    copied = copy.deepcopy(layer)
    assert copied.get_config() == layer.get_config()
    copied.rate = 0.1
    assert layer.rate == 0.35


@pytest.mark.parametrize("name", NAMES)
def test_symbolic_call_and_masking(name):
    make, _ = LAYERS[name]
    layer = make(0.5)
    inputs = keras.Input((5,))
    assert tuple(layer(inputs).shape) == (None, 5)
    mask = np.array([True, False])
    assert layer.compute_mask(np.ones((2, 5)), mask) is mask


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(
    "policy", ["float32", "mixed_float16", "mixed_bfloat16", "bfloat16"]
)
@pytest.mark.parametrize("input_dtype", ["float32", "float16"])
def test_dtype_follows_keras(name, policy, input_dtype):
    make, draws = LAYERS[name]
    ours = make(0.5, seed=1, dtype=policy)
    keras_dropout = keras.layers.Dropout(0.5, seed=1, dtype=policy)
    x = np.ones((400, 32), input_dtype)
    out = ours(x, training=True)
    assert out.dtype == keras_dropout(x, training=True).dtype
    values = _numpy(ops.cast(out, "float32"))
    assert set(np.unique(values)) <= {0.0, 2.0}
    assert abs((values == 0).mean() - 0.5) < _tolerance(0.5, draws(400, 32))


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_keras_file_loads_in_a_fresh_process(name, tmp_path):
    make, _ = LAYERS[name]
    layer = make(0.3, seed=9, mc=True, name="noisy")
    layer.rate = 0.45  # the saved rate is the current one
    inputs = keras.Input((6,))
    model = keras.Model(inputs, keras.layers.Dense(2)(layer(inputs)))
    path = str(tmp_path / "model.keras")
    model.save(path)
    output = run_in_fresh_process(
        f"""
        import json
        import keras
        import keras_regkit
        model = keras.saving.load_model({path!r})
        layer = model.get_layer("noisy")
        print(json.dumps([
            type(layer).__module__, layer.get_config(),
            len(model.get_weights()),
        ]))
        """
    )
    module, config, weight_count = json.loads(output.strip().splitlines()[-1])
    assert module == type(layer).__module__
    assert config == json.loads(json.dumps(layer.get_config()))
    assert config["rate"] == 0.45
    assert weight_count == len(model.get_weights())


@pytest.mark.tensorflow_only
def test_exported_saved_model_serves_with_mc_dropout(tmp_path):
    import tensorflow as tf

    layer = Dropout(0.5, mc=True, seed=1)
    model = keras.Sequential([keras.Input((64,)), layer])
    layer.rate = 0.25  # the export reads the rate's variable
    model.export(str(tmp_path / "exported"), verbose=False)
    served = tf.saved_model.load(str(tmp_path / "exported"))
    out = served.serve(np.ones((64, 64), "float32")).numpy()
    np.testing.assert_allclose(out[out != 0], 1 / 0.75, rtol=1e-6)
    assert abs((out == 0).mean() - 0.25) < _tolerance(0.25, 64 * 64)
