"""Tests for keras_regkit.callbacks.ProximalStep."""

import copy

import keras
import numpy as np
import pytest
from keras import ops

from keras_regkit.callbacks import ProximalStep
from keras_regkit.regularizers import L1, ElasticNet, GroupLasso


def _numpy(x):
    return np.asarray(ops.convert_to_numpy(x), dtype="float64")


def _soft_threshold(v, t):
    return np.sign(v) * np.maximum(np.abs(v) - t, 0.0)


def _sparse_problem(seed=0, rows=600, inputs=50, relevant=5):
    """Linear data where only the first `relevant` of `inputs` matter."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, inputs)).astype("float32")
    beta = np.zeros((inputs, 1), dtype="float32")
    beta[:relevant, 0] = rng.choice([-1.0, 1.0], relevant) * rng.uniform(
        1.0, 2.0, relevant
    )
    y = x @ beta + rng.normal(0, 0.5, (rows, 1)).astype("float32")
    return x, y


def _linear_model(inputs, regularizer, **dense_kwargs):
    return keras.Sequential(
        [
            keras.Input((inputs,)),
            keras.layers.Dense(
                1,
                kernel_regularizer=regularizer,
                kernel_initializer=keras.initializers.RandomNormal(
                    stddev=0.1, seed=1
                ),
                name="dense",
                **dense_kwargs,
            ),
        ]
    )


def _data_mse(model, x, y):
    """The validation error without any penalty term."""
    predictions = _numpy(model.predict(x, verbose=0))
    return float(np.mean((predictions - y) ** 2))


def test_l1_with_proximal_steps_gives_exact_zeros_where_keras_l1_gives_none():
    """The issue's proof: 50 inputs, 5 relevant."""
    x, y = _sparse_problem(rows=1000)
    x, x_val, y, y_val = x[:600], x[600:], y[:600], y[600:]
    # Full-batch steps: the proximal gradient method proper (with batches of
    # 100, strength 0.2 zeroes 44 of the 45 irrelevant weights).
    strength, fit = 0.1, {"epochs": 100, "batch_size": 600, "verbose": 0}

    plain = _linear_model(50, keras.regularizers.L1(strength))
    plain.compile(keras.optimizers.SGD(0.05), "mse")
    plain.fit(x, y, **fit)

    proximal = _linear_model(50, L1(strength))
    proximal.compile(keras.optimizers.SGD(0.05), "mse")
    proximal.fit(x, y, callbacks=[ProximalStep()], **fit)

    plain_kernel = _numpy(plain.get_layer("dense").kernel)[:, 0]
    kernel = _numpy(proximal.get_layer("dense").kernel)[:, 0]
    irrelevant = slice(5, None)
    assert np.mean(kernel[irrelevant] == 0.0) >= 0.9
    assert np.count_nonzero(plain_kernel == 0.0) == 0
    assert np.all(kernel[:5] != 0.0)  # the relevant inputs survive
    plain_error = _data_mse(plain, x_val, y_val)
    assert _data_mse(proximal, x_val, y_val) <= 1.05 * plain_error


def _one_step_reference(w, b, x, y, lr, threshold_per_lr):
    """One SGD step on the mse, then soft-thresholding of the kernel."""
    residual = x @ w + b - y
    grad_w = 2.0 * x.T @ residual / len(x)
    grad_b = 2.0 * residual.mean(axis=0)
    w = _soft_threshold(w - lr * grad_w, lr * threshold_per_lr)
    return w, b - lr * grad_b


def test_each_step_is_a_gradient_step_then_the_prox():
    x, y = _sparse_problem(rows=16, inputs=6, relevant=2)
    model = _linear_model(6, L1(0.3))
    model.compile(keras.optimizers.SGD(0.1), "mse")
    w, b = (_numpy(v) for v in model.get_layer("dense").weights)
    for _ in range(3):
        w, b = _one_step_reference(w, b, x, y, 0.1, 0.3)
    model.fit(
        x,
        y,
        batch_size=16,
        epochs=3,
        verbose=0,
        shuffle=False,
        callbacks=[ProximalStep()],
    )
    kernel, bias = (_numpy(v) for v in model.get_layer("dense").weights)
    np.testing.assert_allclose(kernel, w, atol=1e-6)
    np.testing.assert_allclose(bias, b, atol=1e-6)


def test_the_learning_rate_of_each_update_is_the_step():
    x, y = _sparse_problem(rows=8, inputs=4, relevant=2)
    schedule = keras.optimizers.schedules.ExponentialDecay(
        0.2, decay_steps=1, decay_rate=0.5
    )
    model = _linear_model(4, L1(0.5))
    model.compile(keras.optimizers.SGD(schedule), "mse")
    w, b = (_numpy(v) for v in model.get_layer("dense").weights)
    for step in range(3):
        lr = 0.2 * 0.5**step
        w, b = _one_step_reference(w, b, x, y, lr, 0.5)
    model.fit(
        x, y, batch_size=8, epochs=3, verbose=0, callbacks=[ProximalStep()]
    )
    np.testing.assert_allclose(
        _numpy(model.get_layer("dense").kernel), w, atol=1e-6
    )


def test_the_penalty_leaves_the_loss_during_fit_and_comes_back():
    x, y = _sparse_problem(rows=32, inputs=5, relevant=2)
    model = _linear_model(5, L1(0.1), kernel_constraint="non_neg")
    model.compile(keras.optimizers.SGD(0.05), "mse")
    kernel = model.get_layer("dense").kernel
    own_constraint = kernel.constraint
    seen = []
    watch = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: seen.append(len(model.losses))
    )
    model.fit(
        x,
        y,
        epochs=2,
        batch_size=16,
        verbose=0,
        callbacks=[ProximalStep(), watch],
    )
    assert seen == [0, 0, 0, 0]
    assert kernel.regularizer == L1(0.1)
    assert kernel.constraint is own_constraint
    assert len(model.losses) == 1
    # The weight's own constraint held after each prox.
    assert np.all(_numpy(kernel) >= 0.0)
    # The layer's configuration was never touched.
    config = model.get_layer("dense").get_config()
    assert config["kernel_regularizer"]["class_name"] == "L1"


def test_keras_l1l2_is_taken_over_and_other_weights_are_left_alone():
    x, y = _sparse_problem(rows=32, inputs=5, relevant=2)
    model = keras.Sequential(
        [
            keras.Input((5,)),
            keras.layers.Dense(
                4, kernel_regularizer=keras.regularizers.L1L2(0.2, 0.1)
            ),
            keras.layers.Dense(1, kernel_regularizer=lambda w: ops.sum(w)),
        ]
    )
    model.compile(keras.optimizers.SGD(0.01), "mse")
    counts = []
    watch = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: counts.append(len(model.losses))
    )
    model.fit(x, y, epochs=1, verbose=0, callbacks=[ProximalStep(), watch])
    assert counts == [1]  # the custom penalty stays a loss term
    assert isinstance(
        model.layers[0].kernel.regularizer, keras.regularizers.L1L2
    )


def test_layers_selector_limits_the_weights():
    model = keras.Sequential(
        [
            keras.Input((5,)),
            keras.layers.Dense(4, kernel_regularizer=L1(0.5), name="first"),
            keras.layers.Dense(1, kernel_regularizer=L1(0.5), name="last"),
        ]
    )
    model.compile(keras.optimizers.SGD(0.1), "mse")
    counts = []
    watch = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: counts.append(len(model.losses))
    )
    x, y = _sparse_problem(rows=32, inputs=5, relevant=2)
    model.fit(
        x,
        y,
        epochs=1,
        verbose=0,
        callbacks=[ProximalStep(layers="first"), watch],
    )
    assert counts == [1]


def test_group_lasso_zeroes_whole_units():
    x, y = _sparse_problem(rows=128, inputs=6, relevant=2)
    model = keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(8, kernel_regularizer=GroupLasso(0.1, axis=0)),
            keras.layers.Dense(1),
        ]
    )
    model.compile(keras.optimizers.SGD(0.05), "mse")
    model.fit(
        x, y, epochs=100, batch_size=128, verbose=0, callbacks=[ProximalStep()]
    )
    kernel = _numpy(model.layers[0].kernel)
    zero_rows = np.all(kernel == 0.0, axis=1)
    # The 4 irrelevant inputs are dropped as whole groups, the 2 others kept.
    np.testing.assert_array_equal(zero_rows, [False, False] + [True] * 4)
    assert np.all((kernel == 0.0).sum(axis=1)[~zero_rows] == 0)


def test_a_fit_that_raises_is_repaired_by_release_and_by_the_next_fit():
    x, y = _sparse_problem(rows=32, inputs=5, relevant=2)
    model = _linear_model(5, ElasticNet(0.1, 0.1))
    model.compile(keras.optimizers.SGD(0.05), "mse")
    kernel = model.get_layer("dense").kernel

    class Boom(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        model.fit(x, y, verbose=0, callbacks=[ProximalStep(), Boom()])
    assert kernel.regularizer is None  # Keras called no on_train_end
    assert ProximalStep.release(model) == 1
    assert kernel.regularizer == ElasticNet(0.1, 0.1)
    assert kernel.constraint is None
    assert ProximalStep.release(model) == 0

    with pytest.raises(RuntimeError, match="boom"):
        model.fit(x, y, verbose=0, callbacks=[ProximalStep(), Boom()])
    model.fit(x, y, verbose=0, callbacks=[ProximalStep()])
    assert kernel.regularizer == ElasticNet(0.1, 0.1)
    assert kernel.constraint is None


def test_survives_deepcopy_and_reuse_across_fits():
    x, y = _sparse_problem(rows=32, inputs=5, relevant=2)
    callback = copy.deepcopy(ProximalStep(layers=["dense"]))
    assert callback.layers == ["dense"]
    model = _linear_model(5, L1(0.2))
    model.compile(keras.optimizers.SGD(0.05), "mse")
    for _ in range(2):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[callback])
        assert model.get_layer("dense").kernel.regularizer == L1(0.2)


def test_nothing_to_do_is_an_error_naming_the_penalties_found():
    x, y = _sparse_problem(rows=8, inputs=3, relevant=1)
    model = _linear_model(3, lambda w: ops.sum(ops.abs(w)))
    model.compile("sgd", "mse")
    with pytest.raises(ValueError, match="dense/kernel have no proximal"):
        model.fit(x, y, verbose=0, callbacks=[ProximalStep()])
    plain = _linear_model(3, None)
    plain.compile("sgd", "mse")
    with pytest.raises(ValueError, match="found no trainable weight"):
        plain.fit(x, y, verbose=0, callbacks=[ProximalStep()])
    with pytest.raises(ValueError, match="matches no layer"):
        model.fit(x, y, verbose=0, callbacks=[ProximalStep(layers="nope")])


def test_bad_selector_is_refused_at_construction():
    with pytest.raises(TypeError, match="argument `layers`"):
        ProximalStep(layers=3)


@pytest.mark.parametrize("scheduler_first", [True, False])
def test_penalty_scheduler_sets_the_strength_of_the_proximal_step(
    scheduler_first,
):
    """Epoch 0 at factor 0 (no thresholding), epoch 1 at factor 1."""
    from keras_regkit.callbacks import PenaltyScheduler

    x, y = _sparse_problem(rows=64, inputs=10, relevant=2)
    model = _linear_model(10, L1(0.5))
    model.compile(keras.optimizers.SGD(0.1), "mse")
    kernel = model.get_layer("dense").kernel
    zeros, losses = [], []

    def record(epoch, logs):
        zeros.append(int(np.sum(_numpy(kernel) == 0.0)))
        losses.append(len(model.losses))

    watch = keras.callbacks.LambdaCallback(on_epoch_end=record)
    scheduler = PenaltyScheduler(lambda epoch: [0.0, 1.0][epoch])
    pair = [scheduler, ProximalStep()]
    if not scheduler_first:
        pair.reverse()
    model.fit(x, y, epochs=2, batch_size=8, verbose=0, callbacks=[*pair, watch])
    assert zeros[0] == 0 and zeros[1] >= 6
    assert losses == [0, 0]  # never a loss term as well
    assert kernel.regularizer == L1(0.5)
    assert kernel.constraint is None


def test_group_lasso_over_heads_switches_off_a_whole_attention_head():
    from keras_regkit import regularize
    from keras_regkit.callbacks import RegularizationMonitor

    tokens = keras.Input((4, 8))
    attention = keras.layers.MultiHeadAttention(
        2, 4, use_bias=False, name="attention"
    )
    flat = keras.layers.Flatten()(attention(tokens, tokens))
    model = keras.Model(tokens, keras.layers.Dense(1, name="head")(flat))
    regularize(model, kernel=GroupLasso(0.05, heads=2), layers="attention")
    projections = [
        attention.query_dense,
        attention.key_dense,
        attention.value_dense,
        attention.output_dense,
    ]
    for layer in projections:  # head 1 starts weak, head 0 strong
        kernel = ops.convert_to_numpy(layer.kernel).copy()
        head_axis = 0 if layer is attention.output_dense else 1
        np.moveaxis(kernel, head_axis, 0)[1] *= 1e-3
        layer.kernel.assign(kernel)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    x = np.random.default_rng(0).normal(size=(16, 4, 8)).astype("float32")
    history = model.fit(
        x,
        np.zeros((16, 1), "float32"),
        epochs=3,
        batch_size=16,
        verbose=0,
        callbacks=[ProximalStep(), RegularizationMonitor()],
    )
    for layer in projections:
        kernel = ops.convert_to_numpy(layer.kernel)
        heads = np.moveaxis(
            kernel, 0 if layer is attention.output_dense else 1, 0
        )
        assert np.all(heads[1] == 0.0), layer.name
        assert np.count_nonzero(heads[0]) == heads[0].size, layer.name
    logs = history.history
    assert logs["head_norm/attention/query/1"][-1] == 0.0
    assert logs["head_norm/attention/query/0"][-1] > 0.5
    # one penalty for the four projections: saved in the layer's config
    config = attention.get_config()["kernel_regularizer"]["config"]
    assert config == {"strength": 0.05, "axis": -1, "heads": 2}


@pytest.mark.parametrize("steps, expected", [(1, 1.0), (2, 0.99), (4, 0.98)])
def test_gradient_accumulation_takes_one_proximal_step_per_update(
    steps, expected
):
    # Zero inputs: no data gradient, so only the L1(0.1) prox moves the
    # weight, by learning rate 0.1 times 0.1 per update, and an update
    # comes every second step.
    model = keras.Sequential(
        [
            keras.Input((1,)),
            keras.layers.Dense(
                1,
                use_bias=False,
                kernel_initializer="ones",
                kernel_regularizer=L1(0.1),
                name="dense",
            ),
        ]
    )
    model.compile(
        keras.optimizers.SGD(0.1, gradient_accumulation_steps=2), "mse"
    )
    model.fit(
        np.zeros((steps, 1), "float32"),
        np.zeros((steps, 1), "float32"),
        batch_size=1,
        shuffle=False,
        verbose=0,
        callbacks=[ProximalStep()],
    )
    kernel = _numpy(model.get_layer("dense").kernel)
    np.testing.assert_allclose(kernel, [[expected]], rtol=1e-6)
