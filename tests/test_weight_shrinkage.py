"""Tests for keras_regkit.callbacks.WeightShrinkage."""

import copy

import keras
import numpy as np
import pytest
from keras import ops

from keras_regkit.callbacks import EarlyStopping, WeightShrinkage


def _numpy(x):
    return np.asarray(ops.convert_to_numpy(x), dtype="float64")


def _data(seed=0, rows=60, inputs=30):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, inputs)).astype("float32")
    y = x[:, :2].sum(axis=1, keepdims=True) + rng.normal(0, 1, (rows, 1))
    return x, y.astype("float32")


def _model(inputs=30):
    model = keras.Sequential(
        [keras.Input((inputs,)), keras.layers.Dense(1, name="dense")]
    )
    model.compile(keras.optimizers.SGD(0.05), "mse")
    return model


class _WeightsAtEnd(keras.callbacks.Callback):
    """Records the weights when training ends, before later callbacks."""

    def on_train_end(self, logs=None):
        self.weights = [_numpy(w) for w in self.model.weights]


def _mse(weights, data):
    kernel, bias = weights
    x, y = data
    return float(np.mean((x @ kernel + bias - y) ** 2))


def test_uses_fits_validation_data_and_extends_the_history():
    train, validation = _data(), _data(seed=1, rows=200)
    model = _model()
    seen = _WeightsAtEnd()
    callback = WeightShrinkage(method="scale")
    history = model.fit(
        *train,
        validation_data=validation,
        epochs=30,
        verbose=0,
        callbacks=[seen, callback],
    )
    report = callback.report
    assert report.before.metric == pytest.approx(
        _mse(seen.weights, validation), rel=1e-5
    )
    assert report.after.metric <= report.before.metric
    shrunk = model.evaluate(*validation, verbose=0)
    for key in ("loss", "val_loss"):
        assert len(history.history[key]) == 31
    assert history.history["val_loss"][-1] == pytest.approx(shrunk, rel=1e-6)
    assert history.history["loss"][-1] == history.history["loss"][-2]
    assert history.epoch == list(range(31))


def test_uses_fits_validation_split():
    x, y = _data(rows=100)
    model = _model()
    seen = _WeightsAtEnd()
    callback = WeightShrinkage(method="soft_threshold")
    model.fit(
        x,
        y,
        validation_split=0.4,
        epochs=10,
        verbose=0,
        callbacks=[seen, callback],
    )
    # Keras takes the last 40% of the rows, unshuffled.
    assert callback.report.before.metric == pytest.approx(
        _mse(seen.weights, (x[60:], y[60:])), rel=1e-5
    )


@pytest.mark.parametrize(
    "shrink_options",
    [
        {"method": "penalty", "levels": [1e-3, 1e-2]},
        {"method": "prune", "levels": [0.3, 0.6]},
    ],
    ids=["penalty", "prune_then_finetune"],
)
@pytest.mark.parametrize("given", ["validation_data", "validation_split"])
def test_finetuning_with_fits_validation_keeps_the_users_history(
    shrink_options, given
):
    # Fine-tuning runs a nested `fit`, which takes fit's validation
    # iterator away when it ends and replaces `model.history`.
    train, validation = _data(rows=100), _data(seed=1, rows=200)
    model = _model()
    seen = _WeightsAtEnd()
    callback = WeightShrinkage(finetune_data=train, **shrink_options)
    if given == "validation_data":
        arguments = {"validation_data": validation}
    else:
        arguments = {"validation_split": 0.4}
        validation = (train[0][60:], train[1][60:])
    history = model.fit(
        *train,
        **arguments,
        epochs=5,
        verbose=0,
        callbacks=[seen, callback],
    )
    assert model.history is history
    assert history.epoch == list(range(6))
    assert {key: len(values) for key, values in history.history.items()} == {
        "loss": 6,
        "val_loss": 6,
    }
    assert callback.report.before.metric == pytest.approx(
        _mse(seen.weights, validation), rel=1e-5
    )
    shrunk = model.evaluate(*validation, verbose=0)
    assert history.history["val_loss"][-1] == pytest.approx(shrunk, rel=1e-6)
    assert callback.report.after.metric <= callback.report.before.metric
    # Keras's own state is as `fit` leaves it: nothing lent is left behind.
    assert getattr(model, "_eval_epoch_iterator", None) is None


def test_its_own_validation_data_wins():
    train, validation = _data(), _data(seed=1, rows=200)
    own = _data(seed=2, rows=100)
    model = _model()
    seen = _WeightsAtEnd()
    callback = WeightShrinkage(own, method="prune", levels=[0.5])
    model.fit(
        *train,
        validation_data=validation,
        epochs=5,
        verbose=0,
        callbacks=[seen, callback],
    )
    assert callback.report.before.metric == pytest.approx(
        _mse(seen.weights, own), rel=1e-5
    )


def test_shrinks_the_weights_early_stopping_restored():
    train, validation = _data(), _data(seed=1, rows=200)
    model = _model()
    stopper = EarlyStopping(patience=2, restore_best_weights=True)
    callback = WeightShrinkage(method="scale")
    model.fit(
        *train,
        validation_data=validation,
        epochs=60,
        verbose=0,
        callbacks=[stopper, callback],
    )
    best = [_numpy(w) for w in stopper.best_weights]
    assert callback.report.before.metric == pytest.approx(
        _mse(best, validation), rel=1e-5
    )


def test_no_validation_data_anywhere_is_a_clear_error_and_changes_nothing():
    model = _model()
    seen = _WeightsAtEnd()
    with pytest.raises(ValueError, match="has no validation data"):
        model.fit(
            *_data(),
            epochs=2,
            verbose=0,
            callbacks=[seen, WeightShrinkage(method="scale")],
        )
    for old, new in zip(seen.weights, model.weights, strict=True):
        np.testing.assert_array_equal(old, _numpy(new))


def test_bad_options_fail_at_construction():
    with pytest.raises(TypeError, match="method"):
        WeightShrinkage()
    with pytest.raises(ValueError, match="argument `method`"):
        WeightShrinkage(method="shrink")
    with pytest.raises(ValueError, match="argument `tolerance`"):
        WeightShrinkage(method="scale", tolerance=-1)
    with pytest.raises(ValueError, match="argument `validation_data`"):
        WeightShrinkage((1, 2, 3, 4), method="scale")


def test_survives_deepcopy_and_shares_its_data():
    validation = _data(seed=1, rows=200)
    callback = WeightShrinkage(validation, method="scale", levels=[0.1, 1.0])
    model = _model()
    model.fit(*_data(), epochs=3, verbose=0, callbacks=[callback])
    copied = copy.deepcopy(callback)
    assert copied.validation_data is callback.validation_data
    assert copied.shrink_options == {"method": "scale", "levels": [0.1, 1.0]}
    assert copied.report is not None  # a plain copy of the result
    model = _model()
    model.fit(*_data(), epochs=3, verbose=0, callbacks=[copied])
    assert copied.report is not callback.report
    assert [row.level for row in copied.report.rows] == [None, 0.1, 1.0]
