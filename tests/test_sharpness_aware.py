"""SharpnessAware: one step against the two-gradient formula in numpy."""

import keras
import numpy as np
import pytest

from keras_regkit import L2, SharpnessAware
from keras_regkit._sharpness_aware import perturbation

_RNG = np.random.default_rng(0)
_X = _RNG.normal(size=(16, 3)).astype("float32")
_Y = _RNG.normal(size=(16, 1)).astype("float32")
_LR = 0.1
_L2 = 0.1


def _tiny_model():
    """x -> tanh(x W1 + b1) (W1 with L2) -> h W2 + b2."""
    keras.utils.set_random_seed(3)
    return keras.Sequential(
        [
            keras.Input((3,)),
            keras.layers.Dense(
                4, activation="tanh", kernel_regularizer=L2(_L2), name="a"
            ),
            keras.layers.Dense(1, name="b"),
        ]
    )


def _loss_and_gradients(w1, b1, w2, b2):
    """The loss (MSE + L2 on W1) and its gradients, in float64."""
    x, y = _X.astype("float64"), _Y.astype("float64")
    h = np.tanh(x @ w1 + b1)
    p = h @ w2 + b2
    loss = np.mean((p - y) ** 2) + _L2 * np.sum(w1**2)
    d = 2 * (p - y) / len(x)
    dh = d @ w2.T * (1 - h**2)
    grads = [x.T @ dh + 2 * _L2 * w1, dh.sum(0), h.T @ d, d.sum(0)]
    return loss, grads


def _numpy_sam_step(weights, rho, adaptive):
    loss, grads = _loss_and_gradients(*weights)
    scale = [np.abs(w) if adaptive else 1.0 for w in weights]
    norm = np.sqrt(
        sum(np.sum((s * g) ** 2) for s, g in zip(scale, grads, strict=True))
    )
    steps = [
        (w**2 if adaptive else 1.0) * g * rho / (norm + 1e-12)
        for w, g in zip(weights, grads, strict=True)
    ]
    _, perturbed = _loss_and_gradients(
        *[w + e for w, e in zip(weights, steps, strict=True)]
    )
    return loss, [w - _LR * g for w, g in zip(weights, perturbed, strict=True)]


def _one_step(model, **compile_kwargs):
    model.compile(keras.optimizers.SGD(_LR), "mse", **compile_kwargs)
    return model.fit(
        _X, _Y, batch_size=len(_X), epochs=1, shuffle=False, verbose=0
    )


@pytest.mark.parametrize("adaptive", [False, True])
@pytest.mark.parametrize("rho", [0.05, 0.5])
def test_one_step_is_the_two_gradient_formula(rho, adaptive):
    inner = _tiny_model()
    initial = [np.asarray(w, "float64") for w in inner.get_weights()]
    history = _one_step(SharpnessAware(inner, rho=rho, adaptive=adaptive))
    loss, expected = _numpy_sam_step(initial, rho, adaptive)
    for ours, theirs in zip(inner.get_weights(), expected, strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-6)
    # The loss logged is the first pass's, at the weights being trained.
    assert history.history["loss"][0] == pytest.approx(loss, rel=1e-6)
    # and the step is not a plain one: SAM moved the weights elsewhere.
    _, plain = _loss_and_gradients(*initial)
    plain_step = [w - _LR * g for w, g in zip(initial, plain, strict=True)]
    assert not np.allclose(inner.get_weights()[0], plain_step[0], atol=1e-5)


def _batch_norm_model():
    keras.utils.set_random_seed(5)
    return keras.Sequential(
        [
            keras.Input((3,)),
            keras.layers.Dense(4, kernel_regularizer=L2(0.01), name="a"),
            keras.layers.BatchNormalization(name="bn"),
            keras.layers.Dense(1, name="b"),
        ]
    )


def test_rho_zero_is_a_plain_step_exactly():
    plain, inner = _batch_norm_model(), _batch_norm_model()
    compile_kwargs = {"metrics": ["mae"]}
    fit_kwargs = {"batch_size": 8, "epochs": 2, "shuffle": False, "verbose": 0}
    plain.compile(keras.optimizers.Adam(0.01), "mse", **compile_kwargs)
    reference = plain.fit(_X, _Y, **fit_kwargs)
    model = SharpnessAware(inner, rho=0.0)
    model.compile(keras.optimizers.Adam(0.01), "mse", **compile_kwargs)
    history = model.fit(_X, _Y, **fit_kwargs)
    for ours, theirs in zip(
        inner.get_weights(), plain.get_weights(), strict=True
    ):
        np.testing.assert_array_equal(ours, theirs)
    assert history.history == reference.history


def test_batch_norm_statistics_come_from_the_first_pass_only():
    inner = _batch_norm_model()
    w1, b1 = inner.get_layer("a").get_weights()
    _one_step(SharpnessAware(inner, rho=0.5))
    # Keras's update with momentum 0.99 from (0, 1), of the statistics of
    # the batch at the weights before the step: once.
    h = _X.astype("float64") @ w1 + b1
    bn = inner.get_layer("bn")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(bn.moving_mean), 0.01 * h.mean(0), rtol=1e-5
    )
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(bn.moving_variance),
        0.99 + 0.01 * h.var(0),
        rtol=1e-5,
    )


def test_fit_keeps_metrics_callbacks_and_predict():
    inner = _tiny_model()
    model = SharpnessAware(inner)
    model.compile(keras.optimizers.SGD(_LR), "mse", metrics=["mae"])
    stopper = keras.callbacks.EarlyStopping(
        "val_loss", patience=1, restore_best_weights=True
    )
    history = model.fit(
        _X,
        _Y,
        batch_size=8,
        epochs=3,
        verbose=0,
        validation_data=(_X, _Y),
        callbacks=[stopper],
    )
    assert sorted(history.history) == ["loss", "mae", "val_loss", "val_mae"]
    np.testing.assert_allclose(
        model.predict(_X, verbose=0), inner.predict(_X, verbose=0), rtol=1e-6
    )
    best = min(history.history["val_loss"])
    assert model.evaluate(_X, _Y, verbose=0)[0] == pytest.approx(best, rel=1e-5)


def test_an_embedding_model_trains():
    # TensorFlow's gradient of an Embedding is IndexedSlices.
    keras.utils.set_random_seed(0)
    inner = keras.Sequential(
        [
            keras.Input((5,), dtype="int32"),
            keras.layers.Embedding(10, 4, name="embed"),
            keras.layers.GlobalAveragePooling1D(),
            keras.layers.Dense(1),
        ]
    )
    before = inner.get_layer("embed").get_weights()[0]
    tokens = _RNG.integers(0, 10, size=(16, 5)).astype("int32")
    model = SharpnessAware(inner)
    model.compile(keras.optimizers.SGD(0.5), "mse")
    history = model.fit(tokens, _Y, batch_size=8, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert not np.allclose(inner.get_layer("embed").get_weights()[0], before)


def test_saves_and_loads_as_the_inner_model(tmp_path):
    inner = _tiny_model()
    model = SharpnessAware(inner)
    _one_step(model)
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    assert type(loaded) is keras.Sequential
    np.testing.assert_array_equal(
        loaded.predict(_X, verbose=0), inner.predict(_X, verbose=0)
    )
    model.save_weights(tmp_path / "model.weights.h5")
    fresh = _tiny_model()
    SharpnessAware(fresh).load_weights(tmp_path / "model.weights.h5")
    for ours, theirs in zip(
        fresh.get_weights(), inner.get_weights(), strict=True
    ):
        np.testing.assert_array_equal(ours, theirs)


def test_config_round_trip():
    model = SharpnessAware(_tiny_model(), rho=0.2, adaptive=True)
    copy = SharpnessAware.from_config(model.get_config())
    assert (copy.rho, copy.adaptive) == (0.2, True)
    assert [layer.name for layer in copy.inner_model.layers] == ["a", "b"]


def test_perturbation_of_no_gradient_is_none():
    steps = perturbation(
        [None, np.ones(2, "float32")], [np.ones(1), np.ones(2)], 1.0
    )
    assert steps[0] is None
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(steps[1]), [2**-0.5] * 2, rtol=1e-6
    )


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"rho": -0.1}, ValueError, "rho=-0.1"),
        ({"rho": float("nan")}, ValueError, "rho=nan"),
        ({"rho": "0.1"}, TypeError, "rho='0.1'"),
        ({"adaptive": "yes"}, TypeError, "adaptive='yes'"),
    ],
)
def test_bad_arguments_are_refused_by_name(kwargs, error, match):
    with pytest.raises(error, match=match):
        SharpnessAware(_tiny_model(), **kwargs)


def test_a_model_is_required():
    with pytest.raises(
        TypeError, match="argument `model`.*Received: model of type list"
    ):
        SharpnessAware([keras.layers.Dense(1)])
    with pytest.raises(ValueError, match="already SharpnessAware"):
        SharpnessAware(SharpnessAware(_tiny_model()))
