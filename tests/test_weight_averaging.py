"""WeightAveraging: SWA and EMA against numpy averages of the snapshots."""

import copy
import math

import keras
import numpy as np
import pytest

from keras_regkit.callbacks import EarlyStopping, WeightAveraging

_RNG = np.random.default_rng(0)
_X = _RNG.normal(size=(32, 3)).astype("float32")
_Y = (_X @ np.array([[1.0], [-2.0], [0.5]]) + 0.3).astype("float32")
_VALIDATION = (_X[:16] + 0.3, _Y[:16])


def _model(batch_norm=False, learning_rate=0.05):
    keras.utils.set_random_seed(0)
    layers = [keras.Input((3,)), keras.layers.Dense(4, name="a")]
    if batch_norm:
        layers.append(keras.layers.BatchNormalization(name="bn"))
    layers.append(keras.layers.Dense(1, name="b"))
    model = keras.Sequential(layers)
    model.compile(keras.optimizers.SGD(learning_rate, momentum=0.5), "mse")
    return model


def _trainable(model):
    return [keras.ops.convert_to_numpy(v) for v in model.trainable_variables]


class _Snapshots(keras.callbacks.Callback):
    """The trainable weights at every batch's and epoch's end, and more."""

    def __init__(self):
        super().__init__()
        self.batches, self.epochs, self.at_validation = [], {}, {}
        self.rates = {}

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        rate = self.model.optimizer.learning_rate
        self.rates[epoch] = float(keras.ops.convert_to_numpy(rate))

    def on_train_batch_end(self, batch, logs=None):
        self.batches.append((self.epoch, _trainable(self.model)))

    def on_test_begin(self, logs=None):
        self.at_validation[self.epoch] = _trainable(self.model)

    def on_epoch_end(self, epoch, logs=None):
        self.epochs[epoch] = _trainable(self.model)


def _fit(model, callbacks, epochs=6, **kwargs):
    return model.fit(
        _X,
        _Y,
        batch_size=8,
        epochs=epochs,
        shuffle=False,
        verbose=0,
        callbacks=callbacks,
        **kwargs,
    )


def _assert_weights(ours, theirs):
    for a, b in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def test_swa_is_the_mean_of_the_epoch_snapshots():
    model, snapshots = _model(), _Snapshots()
    averaging = WeightAveraging(start_epoch=1, frequency=2)
    # Listed first, the recorder sees each epoch's training weights.
    _fit(model, [snapshots, averaging])
    averaged = [snapshots.epochs[epoch] for epoch in (1, 3, 5)]
    expected = [np.mean(ws, axis=0) for ws in zip(*averaged, strict=True)]
    assert averaging.count == 3
    _assert_weights(_trainable(model), expected)
    _assert_weights(averaging.averaged_weights, expected)


def test_ema_is_the_exponential_average_of_the_step_snapshots():
    model, snapshots = _model(), _Snapshots()
    averaging = WeightAveraging(
        start_epoch=2, frequency=3, mode="ema", decay=0.8
    )
    _fit(model, [snapshots, averaging])
    steps = [ws for epoch, ws in snapshots.batches if epoch >= 2][2::3]
    expected = [np.asarray(w, "float64") for w in steps[0]]
    for ws in steps[1:]:
        expected = [
            0.8 * a + 0.2 * w for a, w in zip(expected, ws, strict=True)
        ]
    assert averaging.count == len(steps) == 5  # 16 steps from epoch 2
    _assert_weights(_trainable(model), expected)


def test_validation_sees_the_averages_and_early_stopping_listed_after_wins():
    model, snapshots = _model(), _Snapshots()
    averaging = WeightAveraging(start_epoch=0, validate_averaged=True)
    stopping = EarlyStopping("val_loss", patience=10, restore_best_weights=True)
    history = _fit(
        model, [snapshots, averaging, stopping], validation_data=_VALIDATION
    )
    # Each epoch validates the mean of the epoch-end weights so far.
    trained = [snapshots.at_validation[epoch] for epoch in range(6)]
    for epoch, logged in enumerate(history.history["val_loss"]):
        so_far = trained[: epoch + 1]
        means = [np.mean(ws, axis=0) for ws in zip(*so_far, strict=True)]
        probe = _model()
        probe.set_weights(means)
        val_loss = probe.evaluate(*_VALIDATION, verbose=0)
        assert logged == pytest.approx(val_loss, rel=1e-5)
    # EarlyStopping, after WeightAveraging in the list, restored the
    # average that validated best: it has the last word.
    best = min(history.history["val_loss"])
    final = model.evaluate(*_VALIDATION, verbose=0)
    assert final == pytest.approx(best, rel=1e-5)


def test_early_stopping_listed_before_is_overridden_by_the_average():
    model, snapshots = _model(), _Snapshots()
    averaging = WeightAveraging(start_epoch=0, validate_averaged=True)
    stopping = EarlyStopping("val_loss", patience=10, restore_best_weights=True)
    _fit(model, [snapshots, stopping, averaging], validation_data=_VALIDATION)
    trained = [snapshots.at_validation[epoch] for epoch in range(6)]
    expected = [np.mean(ws, axis=0) for ws in zip(*trained, strict=True)]
    _assert_weights(_trainable(model), expected)


def _swa_rate(epoch, base, swa_lr, start, anneal):
    if epoch < start:
        return base
    progress = min(1.0, (epoch - start + 1) / anneal)
    return swa_lr + (base - swa_lr) * (1 + math.cos(math.pi * progress)) / 2


def test_swa_learning_rate_anneals_then_stays_and_is_put_back():
    model, snapshots = _model(learning_rate=0.1), _Snapshots()
    averaging = WeightAveraging(start_epoch=2, swa_lr=0.01, anneal_epochs=3)
    history = _fit(model, [averaging, snapshots], epochs=7)
    expected = [_swa_rate(e, 0.1, 0.01, 2, 3) for e in range(7)]
    # the rate in force during each epoch, and the one logged
    assert [snapshots.rates[e] for e in range(7)] == pytest.approx(expected)
    assert history.history["learning_rate"] == pytest.approx(expected)
    assert expected[4:] == pytest.approx([0.01] * 3)
    rate = model.optimizer.learning_rate
    assert float(keras.ops.convert_to_numpy(rate)) == pytest.approx(0.1)


def test_swa_learning_rate_without_annealing():
    averaging = WeightAveraging(start_epoch=1, swa_lr=0.02)
    assert [averaging.learning_rate(e, 0.1) for e in range(3)] == [
        0.1,
        0.02,
        0.02,
    ]


def test_batch_norm_statistics_are_those_of_a_full_pass():
    model = _model(batch_norm=True)
    averaging = WeightAveraging(
        start_epoch=1, batch_norm_data=_X, batch_size=len(_X)
    )
    _fit(model, [averaging], epochs=3)
    kernel, bias = model.get_layer("a").get_weights()
    inputs = _X.astype("float64") @ kernel + bias  # the BN layer's inputs
    bn = model.get_layer("bn")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(bn.moving_mean), inputs.mean(0), rtol=1e-5
    )
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(bn.moving_variance),
        inputs.var(0),
        rtol=1e-5,
    )


def test_batch_norm_data_the_model_cannot_take_leaves_the_training_weights():
    model, snapshots = _model(batch_norm=True, learning_rate=0.1), _Snapshots()
    averaging = WeightAveraging(
        start_epoch=1, swa_lr=0.01, batch_norm_data=np.ones((4, 7), "float32")
    )
    with pytest.raises(ValueError):
        _fit(model, [snapshots, averaging], epochs=3)
    _assert_weights(_trainable(model), snapshots.epochs[2])
    rate = model.optimizer.learning_rate
    assert float(keras.ops.convert_to_numpy(rate)) == pytest.approx(0.1)
    bn = model.get_layer("bn")
    assert np.all(np.isfinite(keras.ops.convert_to_numpy(bn.moving_mean)))


def test_verbose_says_what_replaced_the_weights(capsys):
    averaging = WeightAveraging(start_epoch=1, batch_norm_data=_X, verbose=1)
    _fit(_model(batch_norm=True), [averaging], epochs=3)
    assert capsys.readouterr().out == (
        "WeightAveraging: the weights are the swa average of 2 snapshots; "
        "BatchNorm statistics recomputed in 1 layer.\n"
    )


def test_batch_norm_without_data_is_refused_before_training():
    model = _model(batch_norm=True)
    before = _trainable(model)
    with pytest.raises(ValueError, match=r"batch_norm_data.*\(bn\)"):
        _fit(model, [WeightAveraging(start_epoch=0)])
    _assert_weights(_trainable(model), before)
    # and update_batch_norm=False keeps the statistics of training.
    _fit(model, [WeightAveraging(start_epoch=0, update_batch_norm=False)])


def test_a_raise_during_validation_of_the_averages_leaves_a_whole_set():
    class RaiseAtEpochEnd(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 2:
                raise RuntimeError("disk full")

    model, snapshots = _model(learning_rate=0.1), _Snapshots()
    averaging = WeightAveraging(
        start_epoch=1, swa_lr=0.01, validate_averaged=True
    )
    with pytest.raises(RuntimeError, match="disk full"):
        _fit(
            model,
            [snapshots, averaging, RaiseAtEpochEnd()],
            validation_data=_VALIDATION,
        )
    # The model holds the averages, all of them ...
    _assert_weights(_trainable(model), averaging.averaged_weights)
    # ... and restore() puts back the training weights and the rate.
    assert averaging.restore()
    _assert_weights(_trainable(model), snapshots.at_validation[2])
    rate = model.optimizer.learning_rate
    assert float(keras.ops.convert_to_numpy(rate)) == pytest.approx(0.1)
    assert not averaging.restore()  # nothing more


def test_the_next_fit_restores_what_a_raised_fit_left():
    class RaiseAtEpochEnd(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            raise RuntimeError("stop")

    model = _model(learning_rate=0.1)
    averaging = WeightAveraging(
        start_epoch=0, swa_lr=0.01, validate_averaged=True
    )
    with pytest.raises(RuntimeError):
        _fit(model, [averaging, RaiseAtEpochEnd()], validation_data=_VALIDATION)
    snapshots = _Snapshots()
    _fit(model, [averaging, snapshots], epochs=1)
    assert snapshots.rates[0] == pytest.approx(0.01)  # from the base, 0.1
    rate = model.optimizer.learning_rate
    assert float(keras.ops.convert_to_numpy(rate)) == pytest.approx(0.1)


def test_a_deep_copy_of_ema_updates_its_own_average():
    original = WeightAveraging(start_epoch=0, mode="ema", decay=0.5)
    copied = copy.deepcopy(original)
    assert copied.on_train_batch_end.__self__ is copied
    model = _model()
    _fit(model, [copied], epochs=1)
    assert (copied.count, original.count) == (4, 0)
    # SWA has no batch hook: Keras can run its steps asynchronously.
    swa = WeightAveraging(start_epoch=0)
    assert "on_train_batch_end" not in vars(swa)


def test_no_average_taken_warns_and_keeps_the_weights():
    model, snapshots = _model(), _Snapshots()
    with pytest.warns(UserWarning, match="took no average"):
        _fit(model, [snapshots, WeightAveraging(start_epoch=5)], epochs=2)
    _assert_weights(_trainable(model), snapshots.epochs[1])


def test_a_learning_rate_schedule_is_refused_with_swa_lr():
    model = _model()
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.9)
    model.compile(keras.optimizers.SGD(schedule), "mse")
    with pytest.raises(ValueError, match="swa_lr.*not a schedule"):
        _fit(model, [WeightAveraging(start_epoch=1, swa_lr=0.01)])


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"start_epoch": -1}, ValueError, "start_epoch=-1"),
        ({"start_epoch": 1.5}, TypeError, "start_epoch=1.5"),
        ({"decay": 0.0}, ValueError, r"decay.*\(0, 1\).*decay=0.0"),
        ({"decay": 1.0}, ValueError, "decay=1.0"),
        ({"decay": 1.5}, ValueError, "decay=1.5"),
        ({"mode": "mean"}, ValueError, "mode='mean'"),
        ({"frequency": 0}, ValueError, "frequency=0"),
        ({"swa_lr": 0.0}, ValueError, "swa_lr=0.0"),
        ({"anneal_epochs": 2}, ValueError, "without `swa_lr`"),
        ({"update_batch_norm": "yes"}, TypeError, "update_batch_norm='yes'"),
        ({"validate_averaged": 1}, TypeError, "validate_averaged=1"),
        ({"batch_size": 0}, ValueError, "batch_size=0"),
        ({"verbose": 2}, ValueError, "verbose=2"),
    ],
)
def test_bad_arguments_are_refused_by_name(kwargs, error, match):
    arguments = {"start_epoch": 0, **kwargs}
    with pytest.raises(error, match=match):
        WeightAveraging(**arguments)
