"""Tests for keras_regkit.callbacks.EarlyStopping.

Keras parity is checked differentially: ours and `keras.callbacks.
EarlyStopping` are driven through the same scripted sequences of logs, and
must stop at the same epoch with the same state and restored weights.
"""

import copy
import itertools
import warnings

import keras
import numpy as np
import pytest

from keras_regkit.callbacks import EarlyStopping

SEQUENCES = {
    "falls": [1.0, 0.9, 0.8, 0.7, 0.6, 0.5],
    "plateau": [1.0, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9],
    "dips then rises": [1.0, 0.8, 0.85, 0.9, 0.7, 0.95, 0.99, 1.2],
    "noisy": [0.5, 0.52, 0.49, 0.495, 0.5, 0.48, 0.481, 0.482, 0.483],
    "rises": [0.3, 0.4, 0.5, 0.6, 0.7],
    "nan": [1.0, 0.8, float("nan"), float("nan"), 0.7, float("nan")],
    "inf": [1.0, float("inf"), 0.9, float("-inf"), 0.95],
}


def _model():
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse", metrics=["accuracy", "mae"])
    return model


def drive(callback, values, monitor="val_loss", model=None, train=None):
    """Runs `callback` through `values`, one epoch each, as `fit` would.

    Each epoch's weights are set to the epoch number first, so the weights
    restored at the end tell which epoch they came from.
    """
    model = model or _model()
    callback.set_model(model)
    callback.set_params({"epochs": len(values), "verbose": 0, "steps": 1})
    model.stop_training = False
    callback.on_train_begin()
    ran = 0
    for epoch, value in enumerate(values):
        model.set_weights(
            [np.full(w.shape, epoch, "float32") for w in model.get_weights()]
        )
        callback.on_epoch_begin(epoch)
        loss = value if train is None else train[epoch]
        callback.on_epoch_end(epoch, {monitor: value, "loss": loss})
        ran += 1
        if model.stop_training:
            break
    callback.on_train_end()
    return {
        "epochs": ran,
        "stopped_epoch": callback.stopped_epoch,
        # repr, so that a NaN best compares equal to a NaN best
        "best": None if callback.best is None else repr(float(callback.best)),
        "best_epoch": callback.best_epoch,
        "wait": callback.wait,
        "weights_of_epoch": float(model.get_weights()[0].ravel()[0]),
    }


CASES = [
    dict(
        patience=patience,
        min_delta=min_delta,
        restore_best_weights=rbw,
        start_from_epoch=start,
        mode=mode,
    )
    for patience, min_delta, rbw, start, mode in itertools.product(
        [0, 1, 2, 3], [0, 0.05], [False, True], [0, 2], ["auto", "min", "max"]
    )
]


@pytest.mark.parametrize("name", list(SEQUENCES))
def test_matches_keras_on_scripted_sequences(name):
    for kwargs in CASES:
        values = SEQUENCES[name]
        theirs = drive(keras.callbacks.EarlyStopping(**kwargs), values)
        ours = drive(EarlyStopping(**kwargs), values)
        assert ours == theirs, kwargs


@pytest.mark.parametrize("baseline", [0.95, 0.85])
def test_matches_keras_with_a_baseline_reached(baseline):
    # Beaten from epoch 1 on: the region where Keras does what it documents
    values = SEQUENCES["dips then rises"]
    for patience in range(4):
        for rbw in (False, True):
            kwargs = dict(
                patience=patience, baseline=baseline, restore_best_weights=rbw
            )
            theirs = drive(keras.callbacks.EarlyStopping(**kwargs), values)
            ours = drive(EarlyStopping(**kwargs), values)
            assert ours == theirs, kwargs


def test_baseline_never_reached_stops_after_patience():
    # Keras 3.15 keeps training while the value improves without reaching
    # the baseline (keras-team/keras#13860); its docstring promises this:
    values = [1.0, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7]
    theirs = drive(
        keras.callbacks.EarlyStopping(patience=2, baseline=0.1), values
    )
    ours = drive(EarlyStopping(patience=2, baseline=0.1), values)
    assert theirs["epochs"] == len(values)  # the Keras bug, observed
    # every epoch misses the baseline: wait 1, 2 -> stop after 2 epochs
    assert ours["epochs"] == 2 and ours["stopped_epoch"] == 1


@pytest.mark.parametrize(
    "monitor, values, epochs",
    [
        ("val_accuracy", [0.5, 0.6, 0.55, 0.54], 3),  # maximised
        ("val_mae", [0.5, 0.6, 0.55, 0.54], 2),  # minimised
        ("loss", [0.5, 0.6, 0.55, 0.54], 2),
    ],
)
def test_auto_mode_like_keras(monitor, values, epochs):
    model = _model()
    model.fit(np.ones((4, 1)), np.ones((4, 1)), verbose=0)  # builds metrics
    ours = drive(EarlyStopping(monitor, patience=1), values, monitor, model)
    theirs = drive(
        keras.callbacks.EarlyStopping(monitor, patience=1),
        values,
        monitor,
        model,
    )
    assert ours == theirs
    assert ours["epochs"] == epochs


def test_unknown_metric_direction_is_an_error():
    with pytest.raises(ValueError, match="cannot tell whether"):
        drive(EarlyStopping("val_mystery"), [1.0, 2.0], "val_mystery")


def test_restores_best_weights_when_another_callback_stopped():
    callback = EarlyStopping(patience=5, restore_best_weights=True)
    model = _model()
    callback.set_model(model)
    callback.on_train_begin()
    for epoch, value in enumerate([1.0, 0.5, 0.7]):
        model.set_weights(
            [np.full(w.shape, epoch, "float32") for w in model.get_weights()]
        )
        callback.on_epoch_end(epoch, {"val_loss": value})
    model.stop_training = True  # as TerminateOnNaN or a user would
    callback.on_train_end()
    assert model.get_weights()[0].ravel()[0] == 1.0
    assert callback.stop_reason == "another callback stopped training"


def test_relative_min_delta():
    values = [1.0, 0.95, 0.92, 0.91]  # improvements of 5%, 3.2%, 1.1%
    callback = EarlyStopping(patience=0, min_delta=0.02, min_delta_mode="rel")
    result = drive(callback, values)
    assert result["epochs"] == 4 and result["best_epoch"] == 2


def test_non_finite_value_stops_at_once_and_keeps_the_best():
    values = [1.0, 0.5, float("nan"), 0.4]
    callback = EarlyStopping(
        patience=5, check_finite=True, restore_best_weights=True
    )
    result = drive(callback, values)
    assert result["epochs"] == 3 and result["weights_of_epoch"] == 1.0
    assert "not finite" in callback.stop_reason


@pytest.mark.parametrize(
    "kwargs, epochs, reason",
    [
        ({"stopping_threshold": 0.6}, 3, "reached the stopping threshold"),
        ({"divergence_threshold": 1.5}, 5, "worse than the divergence"),
    ],
)
def test_thresholds(kwargs, epochs, reason):
    values = [1.0, 0.8, 0.6, 1.0, 2.0, 0.1]
    callback = EarlyStopping(patience=10, **kwargs)
    assert drive(callback, values)["epochs"] == epochs
    assert reason in callback.stop_reason


def test_missing_key_warns_once_or_raises():
    callback = EarlyStopping("val_auc", mode="max")
    with pytest.warns(UserWarning, match=r"`val_auc`.*Available keys: loss"):
        drive(callback, [1.0, 2.0, 3.0], monitor="loss")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        drive(EarlyStopping("val_auc", mode="max"), [1.0, 2.0], "loss")
    assert len([w for w in caught if "val_auc" in str(w.message)]) == 1
    with pytest.raises(ValueError, match=r"`val_auc`.*Available keys"):
        drive(EarlyStopping("val_auc", mode="max", strict=True), [1.0], "loss")


def test_reusable_deepcopyable_and_configurable():
    callback = EarlyStopping(patience=1)
    first = drive(callback, SEQUENCES["plateau"])
    second = drive(callback, SEQUENCES["plateau"])
    assert first == second
    copied = copy.deepcopy(EarlyStopping(patience=2, min_delta_mode="rel"))
    assert (
        copied.get_config()
        == EarlyStopping(patience=2, min_delta_mode="rel").get_config()
    )


def test_stops_a_real_fit():
    model = _model()
    history = model.fit(
        np.arange(20.0).reshape(20, 1),
        np.zeros((20, 1)),
        epochs=50,
        verbose=0,
        callbacks=[EarlyStopping("loss", stopping_threshold=1e9)],
    )
    assert len(history.history["loss"]) == 1


# A hand-computed example from Prechelt's definitions (section 2.2):
# E_va    1.0  0.8  0.7  0.75      0.9      1.0
# E_opt   1.0  0.8  0.7  0.7       0.7      0.7
# GL      0    0    0    7.142857  28.5714  42.857
# E_tr    1.0  0.6  0.5  0.45      0.44     0.43
# strips of k = 2 end at epochs 1, 3, 5 (0-based):
# P_2(3) = 1000 * ((0.5 + 0.45) / (2 * 0.45) - 1) = 55.556, PQ = 0.12857
# P_2(5) = 1000 * ((0.44 + 0.43) / (2 * 0.43) - 1) = 11.628, PQ = 3.6857
VALIDATION = [1.0, 0.8, 0.7, 0.75, 0.9, 1.0]
TRAINING = [1.0, 0.6, 0.5, 0.45, 0.44, 0.43]


@pytest.mark.parametrize(
    "criterion, alpha, stopped_epoch",
    [
        ("gl", 5.0, 3),  # 7.14 > 5
        ("gl", 10.0, 4),  # 28.6 > 10
        ("gl", 50.0, 0),  # never
        ("pq", 0.1, 3),  # 0.1286 > 0.1 at the strip ending at epoch 3
        ("pq", 0.2, 5),  # 3.69 > 0.2 at the next strip end
        ("pq", 5.0, 0),
    ],
)
def test_prechelt_criteria_by_hand(criterion, alpha, stopped_epoch):
    callback = EarlyStopping(criterion=criterion, alpha=alpha, strip_length=2)
    result = drive(callback, VALIDATION, train=TRAINING)
    assert result["stopped_epoch"] == stopped_epoch
    if criterion == "pq" and stopped_epoch == 3:
        assert callback._prechelt.progress == pytest.approx(55.5556, rel=1e-4)
        assert callback._prechelt.generalization_loss == pytest.approx(
            7.142857, rel=1e-6
        )


# Zero errors: the quotients at their limits (see `_prechelt`). GL is 0
# while E_va stays at E_opt = 0 and +inf once it rises; P_k is 0 for a
# strip of zeros and +inf for a strip that reaches 0; PQ stops when
# GL > alpha * P_k.
@pytest.mark.parametrize(
    "criterion, validation, training, stopped_epoch, reason",
    [
        ("gl", [0.5, 0.0, 0.0, 0.0], None, 0, None),
        ("gl", [0.5, 0.0, 0.0, 0.1], None, 3, "GL = inf > 5"),
        ("gl", [0.0, 0.0, 0.2, 0.1], None, 2, "GL = inf > 5"),
        # Training error 0 throughout: P_2 = 0, stop once GL > 0.
        ("pq", [0.5, 0.4, 0.3, 0.45], [0.0] * 4, 3, "= 50 / 0 > 5"),
        ("pq", [0.5, 0.4, 0.3, 0.3], [0.0] * 4, 0, None),
        # The strip reaches 0 from above: P_2 = inf, no stop on GL = 50.
        ("pq", [0.5, 0.4, 0.3, 0.45], [1.0, 0.5, 0.1, 0.0], 0, None),
        # E_opt = 0, then a rise, while training is at 0: inf > 5 * 0.
        ("pq", [0.0, 0.0, 0.0, 0.1], [0.0] * 4, 3, "= inf / 0 > 5"),
        # GL = inf and P_2 = inf: inf > 5 * inf is false, no stop.
        ("pq", [0.0, 0.0, 0.0, 0.1], [1.0, 0.5, 0.5, 0.0], 0, None),
    ],
)
def test_prechelt_criteria_at_zero_error(
    criterion, validation, training, stopped_epoch, reason
):
    callback = EarlyStopping(criterion=criterion, alpha=5.0, strip_length=2)
    result = drive(callback, validation, train=training)
    assert result["stopped_epoch"] == stopped_epoch
    if reason is None:
        assert callback.stop_reason is None
    else:
        assert reason in callback.stop_reason


@pytest.mark.parametrize("criterion", ["gl", "pq"])
def test_prechelt_criteria_survive_a_perfect_fit(criterion):
    # y = x is learnt exactly: the MAE on training and validation data
    # reaches 0.0 and stays there.
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(0.1), "mse", metrics=["mae"])
    model.set_weights([np.ones((1, 1)), np.zeros(1)])
    x = np.linspace(-1, 1, 8, dtype="float32")[:, None]
    callback = EarlyStopping(
        "val_mae", criterion=criterion, alpha=1.0, training_key="mae"
    )
    history = model.fit(
        x,
        x,
        validation_data=(x, x),
        epochs=6,
        verbose=0,
        callbacks=[callback],
    )
    assert history.history["val_mae"] == [0.0] * 6
    assert callback.stop_reason is None


@pytest.mark.parametrize("strips, stopped_epoch", [(1, 3), (2, 5), (3, 0)])
def test_prechelt_up_counts_successive_rising_strips(strips, stopped_epoch):
    # strip ends (k = 2) at epochs 1, 3, 5: 0.8, then 0.9 (rose), 1.0 (rose)
    values = [1.0, 0.8, 0.7, 0.9, 0.95, 1.0]
    callback = EarlyStopping(criterion="up", alpha=strips, strip_length=2)
    assert drive(callback, values)["stopped_epoch"] == stopped_epoch


def test_prechelt_needs_a_minimized_quantity():
    model = _model()
    model.fit(np.ones((4, 1)), np.ones((4, 1)), verbose=0)
    callback = EarlyStopping("val_accuracy", criterion="gl", alpha=5.0)
    with pytest.raises(ValueError, match="minimized; `val_accuracy`"):
        drive(callback, [0.5, 0.6], "val_accuracy", model)


@pytest.mark.parametrize(
    "criterion, validation, training, key",
    [
        # A cosine-similarity loss, in [-1, 1]: -0.9 rising to -0.5 is a
        # worsening that GL would read as a negative loss of generality.
        ("gl", [-0.9, -0.7, -0.5], None, "val_loss"),
        ("pq", [-0.9, -0.7, -0.5], [0.3] * 3, "val_loss"),
        ("pq", [0.5, 0.4, 0.6], [0.3, -0.1, 0.2], "loss"),
    ],
)
def test_gl_and_pq_refuse_negative_errors(criterion, validation, training, key):
    callback = EarlyStopping(criterion=criterion, alpha=5.0, strip_length=2)
    epoch = 2 if key == "loss" else 1
    with pytest.raises(
        ValueError,
        match=rf"criterion='{criterion}'\) needs errors of at least 0.*"
        rf"`{key}` was -0\.\d+ at epoch {epoch}\. .*criterion='up'",
    ):
        drive(callback, validation, train=training)


def test_up_takes_negative_errors():
    # UP only compares: a negative loss rising strip after strip stops it.
    values = [-1.0, -0.9, -0.95, -0.8, -0.85, -0.7]
    callback = EarlyStopping(criterion="up", alpha=2, strip_length=2)
    assert drive(callback, values)["stopped_epoch"] == 5


@pytest.mark.parametrize(
    "kwargs, error, pattern",
    [
        ({"patience": -1}, ValueError, r"`patience`.*Received: patience=-1"),
        ({"patience": 1.5}, TypeError, r"Received: patience=1\.5"),
        ({"mode": "up"}, ValueError, r"`mode`.*Received: mode='up'"),
        ({"criterion": "x"}, ValueError, r"`criterion`.*criterion='x'"),
        ({"criterion": "gl"}, TypeError, r"`alpha`.*Received: alpha=None"),
        ({"criterion": "gl", "alpha": 0.0}, ValueError, r"alpha=0\.0"),
        ({"criterion": "up", "alpha": 1.5}, TypeError, r"alpha=1\.5"),
        ({"alpha": 2.0}, ValueError, r"`alpha`.*not 'patience'"),
        ({"strip_length": 0}, ValueError, r"`strip_length`.*=0"),
        ({"stopping_threshold": "0.1"}, TypeError, r"threshold='0\.1'"),
        ({"divergence_threshold": True}, TypeError, r"threshold=True"),
        ({"baseline": [1]}, TypeError, r"`baseline`.*baseline=\[1\]"),
        ({"min_delta": float("nan")}, ValueError, r"`min_delta`.*nan"),
        ({"min_delta_mode": "pct"}, ValueError, r"min_delta_mode='pct'"),
        ({"monitor": 3}, TypeError, r"`monitor`.*monitor=3"),
        ({"start_from_epoch": -2}, ValueError, r"start_from_epoch=-2"),
    ],
)
def test_bad_arguments(kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        EarlyStopping(**kwargs)


def test_verbose_prints_why_it_stopped(capsys):
    callback = EarlyStopping(patience=1, verbose=1, restore_best_weights=True)
    drive(callback, SEQUENCES["rises"])
    printed = capsys.readouterr().out
    assert "Epoch 2: early stopping: no improvement of val_loss in 1" in printed
    assert "Restoring model weights from the end of the best epoch: 1." in (
        printed
    )


class _Scripted(keras.callbacks.Callback):
    """Writes `score` into the logs and records the weights, every epoch."""

    def __init__(self, scores):
        super().__init__()
        self.scores = scores
        self.weights = []

    def on_epoch_end(self, epoch, logs=None):
        logs["score"] = self.scores[epoch]
        self.weights.append([np.array(w) for w in self.model.get_weights()])


def test_restores_the_best_epochs_weights_after_a_real_fit():
    # On JAX the train step donates its input buffers: a snapshot that
    # merely referenced them would be deleted by the next step.
    model = _model()
    scripted = _Scripted([0.9, 0.5, 0.7, 0.8, 0.95, 0.6])
    model.fit(
        np.random.default_rng(0).normal(size=(32, 1)),
        np.ones((32, 1)),
        epochs=6,
        verbose=0,
        callbacks=[
            scripted,
            EarlyStopping(
                "score", mode="min", patience=3, restore_best_weights=True
            ),
        ],
    )
    assert len(scripted.weights) == 5  # stopped after 3 epochs without gain
    for restored, best in zip(
        model.get_weights(), scripted.weights[1], strict=True
    ):
        np.testing.assert_array_equal(restored, best)
    assert not np.array_equal(scripted.weights[1][0], scripted.weights[4][0])


def test_monitor_op_like_keras_own_test():
    # The cases of Keras's early_stopping_test.py::test_early_stopping
    rng = np.random.default_rng(0)
    x, y = rng.random((10, 5)), rng.random((10, 1))
    model = keras.Sequential(
        [
            keras.Input((5,)),
            keras.layers.Dense(1, activation="relu"),
            keras.layers.Dense(1, activation="relu"),
        ]
    )
    model.compile(
        loss="mae",
        optimizer="adam",
        metrics=[
            "mse",
            "acc",
            "accuracy",
            "hinge",
            keras.metrics.F1Score(name="f1_score"),
        ],
    )
    cases = [
        ("max", "val_mse", keras.ops.greater),
        ("min", "val_loss", keras.ops.less),
        ("auto", "val_mse", keras.ops.less),
        ("auto", "loss", keras.ops.less),
        ("auto", "acc", keras.ops.greater),
        ("auto", "val_accuracy", keras.ops.greater),
        ("auto", "hinge", keras.ops.less),
        ("auto", "f1_score", keras.ops.greater),
    ]
    for mode, monitor, expected in cases:
        callback = EarlyStopping(monitor=monitor, mode=mode)
        model.fit(
            x,
            y,
            batch_size=5,
            validation_data=(x, y),
            callbacks=[callback],
            epochs=2,
            verbose=0,
        )
        assert callback.monitor_op is expected, (mode, monitor)
    with pytest.raises(ValueError, match="cannot tell whether"):
        model.fit(
            x,
            y,
            callbacks=[EarlyStopping(monitor="unknown")],
            epochs=2,
            verbose=0,
        )


def test_an_array_valued_metric_is_refused_by_name():
    callback = EarlyStopping("val_f1", mode="max")
    with pytest.raises(ValueError, match=r"`val_f1` is an array of shape"):
        drive(callback, [np.array([0.1, 0.2, 0.3])], monitor="val_f1")
    one = drive(
        EarlyStopping("val_f1", mode="max"), [np.array([0.5])], "val_f1"
    )
    assert one["best"] == "0.5"


def test_config_names_every_argument_and_rebuilds_the_callback():
    import inspect

    callback = EarlyStopping(
        "val_mae", criterion="pq", alpha=0.5, strip_length=3, patience=2
    )
    config = callback.get_config()
    parameters = inspect.signature(EarlyStopping.__init__).parameters
    assert set(config) == set(parameters) - {"self"}
    assert EarlyStopping(**config).get_config() == config


def test_best_weights_stay_readable_after_the_model_runs_again():
    """On JAX the restored arrays must not be the ones `best_weights` holds:
    compiled steps donate (delete) the arrays of the model's variables."""
    rng = np.random.default_rng(0)
    x, y = rng.random((32, 5)), rng.random((32, 1))
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    stopper = EarlyStopping(
        monitor="loss", patience=1, restore_best_weights=True
    )
    model.fit(x, y, epochs=3, verbose=0, callbacks=[stopper])
    model.fit(x, y, epochs=1, verbose=0)
    model.evaluate(x, y, verbose=0)
    best = [keras.ops.convert_to_numpy(w) for w in stopper.best_weights]
    assert all(np.all(np.isfinite(w)) for w in best)


class _KerasTestModel:
    """The test double of Keras's own `early_stopping_test.py`.

    It has no variables: its "weights" are an int, which the callback only
    reads with `get_weights()` and puts back with `set_weights()`.
    """

    def __init__(self):
        self.stop_training = False
        self.weights = -1

    def get_weights(self):
        return self.weights

    def set_weights(self, weights):
        self.weights = weights

    def set_weight_to_epoch(self, epoch):
        self.weights = epoch


class _ListModel(_KerasTestModel):
    """A double whose weights are a list it changes in place."""

    def __init__(self):
        super().__init__()
        self.weights = [1]

    def set_weight_to_epoch(self, epoch):
        self.weights[0] = epoch


def drive_double(callback, losses, model, stop_at=None):
    """Runs `callback` on a test double as Keras's own tests do.

    `stop_at`: the epoch at which another callback stops training.
    """
    callback.set_model(model)
    callback.on_train_begin()
    ran = 0
    for epoch, loss in enumerate(losses):
        ran += 1
        model.set_weight_to_epoch(epoch=epoch)
        callback.on_epoch_end(epoch, logs={"val_loss": loss})
        if epoch == stop_at:
            model.stop_training = True
        if model.stop_training:
            break
    callback.on_train_end()
    return {
        "epochs": ran,
        "stopped_epoch": callback.stopped_epoch,
        "best": callback.best,
        "best_epoch": callback.best_epoch,
        "wait": callback.wait,
        "weights": copy.deepcopy(model.get_weights()),
    }


# Keras's test_early_stopping_final_weights_when_restoring_model_weights
DOUBLE_SCENARIOS = {
    "restores the best": (
        dict(patience=2),
        [0.2, 0.15, 0.1, 0.11, 0.12],
        None,
        {"epochs": 5, "weights": 2},
    ),
    "baseline never beaten": (
        dict(patience=5, baseline=0.5),
        [0.9, 0.8, 0.7, 0.71, 0.72, 0.73],
        None,
        {"epochs": 5, "weights": 2},
    ),
    "stopped by another callback": (
        dict(patience=5, baseline=0.5),
        [0.9, 0.8, 0.7, 0.71, 0.72, 0.73],
        3,
        {"epochs": 4, "weights": 2},
    ),
}


@pytest.mark.parametrize("name", list(DOUBLE_SCENARIOS))
def test_restores_the_weights_of_a_model_with_only_get_set_weights(name):
    kwargs, losses, stop_at, expected = DOUBLE_SCENARIOS[name]
    kwargs = dict(monitor="val_loss", restore_best_weights=True, **kwargs)
    theirs = drive_double(
        keras.callbacks.EarlyStopping(**kwargs),
        losses,
        _KerasTestModel(),
        stop_at,
    )
    ours = drive_double(
        EarlyStopping(**kwargs), losses, _KerasTestModel(), stop_at
    )
    assert ours == theirs
    assert (ours["epochs"], ours["weights"]) == (
        expected["epochs"],
        expected["weights"],
    )


@pytest.mark.parametrize("name", list(DOUBLE_SCENARIOS))
def test_keeps_a_copy_of_what_get_weights_returns(name):
    # Keras keeps the list itself, which the model then changes in place,
    # and restores the last epoch's weights; a copy is kept here.
    kwargs, losses, stop_at, expected = DOUBLE_SCENARIOS[name]
    stopper = EarlyStopping(restore_best_weights=True, **kwargs)
    ours = drive_double(stopper, losses, _ListModel(), stop_at)
    assert ours["epochs"] == expected["epochs"]
    assert ours["weights"] == [expected["weights"]]
    assert stopper.best_weights == [expected["weights"]]
    assert stopper.model.weights is not stopper.best_weights


@pytest.mark.parametrize("restore_best_weights", [False, True])
@pytest.mark.parametrize("patience", [0, 1, 2, 3])
def test_patience_on_a_test_double_like_keras(patience, restore_best_weights):
    # Keras's test_early_stopping_patience, on its model-less double
    losses = [10.0, 9.0, 8.0, 9.0, 8.9, 8.8, 8.7, 8.6, 8.5]
    kwargs = dict(
        monitor="val_loss",
        patience=patience,
        restore_best_weights=restore_best_weights,
    )
    theirs = drive_double(
        keras.callbacks.EarlyStopping(**kwargs), losses, _KerasTestModel()
    )
    ours = drive_double(EarlyStopping(**kwargs), losses, _KerasTestModel())
    assert ours == theirs
    assert ours["stopped_epoch"] == max(patience, 1) + 2
    last = ours["stopped_epoch"]
    assert ours["weights"] == (2 if restore_best_weights else last)


@pytest.mark.parametrize("baseline", [0.85, 0.95])
def test_baseline_beaten_on_a_test_double_like_keras(baseline):
    # Beaten from epoch 1 on, where Keras does what it documents (see
    # test_baseline_never_reached_stops_after_patience); the baseline that
    # is never beaten is in DOUBLE_SCENARIOS.
    losses = [0.9, 0.8, 0.7, 0.71, 0.72, 0.73, 0.74, 0.75]
    for patience in range(4):
        kwargs = dict(
            patience=patience, baseline=baseline, restore_best_weights=True
        )
        theirs = drive_double(
            keras.callbacks.EarlyStopping(**kwargs), losses, _KerasTestModel()
        )
        ours = drive_double(EarlyStopping(**kwargs), losses, _KerasTestModel())
        assert ours == theirs, kwargs


def test_best_weights_of_a_keras_model_stay_on_device():
    stopper = EarlyStopping(monitor="val_loss", restore_best_weights=True)
    drive(stopper, [1.0, 0.5, 0.7])
    assert stopper.best_weights
    assert all(keras.ops.is_tensor(w) for w in stopper.best_weights)
    assert not any(isinstance(w, np.ndarray) for w in stopper.best_weights)
