"""Tests for keras_regkit.callbacks.PenaltyScheduler.

The proof that a new factor reaches the compiled train step is the loss
itself: with a learning rate of 0 the weights never move, so each epoch's
training loss is the data loss plus the scheduled penalty, and the penalty
the `RegularizationMonitor` logs must be the factor times the penalty the
model had when training began (computed with numpy).
"""

import copy
import weakref

import keras
import numpy as np
import pytest

from keras_regkit import L1, L2, ElasticNet, penalties
from keras_regkit.callbacks import PenaltyScheduler, RegularizationMonitor


class _Traces:
    """Counts the times `_Counted.call` runs in Python."""

    count = 0


class _Counted(keras.layers.Layer):
    """The identity; counts its Python calls (traces, when compiled)."""

    def __init__(self, counter, **kwargs):
        super().__init__(**kwargs)
        self._counter = counter

    def call(self, inputs):
        self._counter.count += 1
        return inputs


def _model(learning_rate=0.0, counter=None):
    """Input(4) -> a: Dense(3) with L2 -> b: Dense(1) with ElasticNet."""
    layers = [keras.Input((4,))]
    if counter is not None:
        layers.append(_Counted(counter, name="counted"))
    layers += [
        keras.layers.Dense(
            3,
            kernel_regularizer=L2(0.2),
            bias_regularizer=L1(0.3),
            bias_initializer="ones",
            name="a",
        ),
        keras.layers.Dense(
            1, kernel_regularizer=ElasticNet(0.05, 0.1), name="b"
        ),
    ]
    model = keras.Sequential(layers)
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=learning_rate),
        loss="mse",
    )
    return model


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 4)).astype("float32")
    y = rng.normal(size=(16, 1)).astype("float32")
    return x, y


def _fit(model, callbacks, epochs, **kwargs):
    x, y = _data()
    return model.fit(
        x,
        y,
        batch_size=16,
        epochs=epochs,
        verbose=0,
        callbacks=callbacks,
        **kwargs,
    )


def _numpy(variable):
    return np.asarray(keras.ops.convert_to_numpy(variable), dtype="float64")


def _base_penalties(model):
    """The model's penalty per layer, with numpy."""
    a, b = model.get_layer("a"), model.get_layer("b")
    return {
        "a": 0.2 * np.sum(_numpy(a.kernel) ** 2)
        + 0.3 * np.sum(np.abs(_numpy(a.bias))),
        "b": 0.05 * np.sum(np.abs(_numpy(b.kernel)))
        + 0.1 * np.sum(_numpy(b.kernel) ** 2),
    }


def _regularizers(model):
    return [
        (layer.name, name, getattr(layer, name))
        for layer in model.layers
        for name in ("kernel_regularizer", "bias_regularizer")
    ] + [(w.path, "variable", w.regularizer) for w in model.weights]


def test_the_compiled_step_adds_the_scheduled_penalty():
    model = _model(learning_rate=0.0)
    base = _base_penalties(model)
    total = base["a"] + base["b"]
    before = _regularizers(model)
    factors = [0.0, 1.0, 2.0, 0.5]
    history = _fit(
        model,
        [
            PenaltyScheduler(lambda epoch: factors[epoch]),
            RegularizationMonitor(),
        ],
        epochs=4,
        validation_data=_data(),
    )
    logged = history.history
    assert logged["penalty_factor"] == factors
    for key, reference in [("penalty", total), *base.items()]:
        key = key if key == "penalty" else f"penalty/{key}"
        expected = [factor * reference for factor in factors]
        np.testing.assert_allclose(logged[key], expected, rtol=1e-5)
    # Epoch 0 has no penalty: its loss is the data loss, which a learning
    # rate of 0 keeps the same in every epoch.
    data_loss = logged["loss"][0]
    for name in ("loss", "val_loss"):
        np.testing.assert_allclose(
            logged[name],
            [data_loss + factor * total for factor in factors],
            rtol=1e-5,
        )
    # The penalties are the user's again, and so is the compiled step.
    assert _regularizers(model) == before
    for (_, _, old), (_, _, new) in zip(
        before, _regularizers(model), strict=True
    ):
        assert old is new
    x, y = _data()
    np.testing.assert_allclose(
        model.evaluate(x, y, batch_size=16, verbose=0),
        data_loss + total,
        rtol=1e-5,
    )


def test_a_new_trace_only_when_a_factor_changes():
    counter = _Traces()
    model = _model(counter=counter)
    changed = []
    traces = []

    class Record(keras.callbacks.Callback):
        """Sees the train function each epoch runs, and counts traces."""

        def on_train_begin(self, logs=None):
            self.previous = None

        def on_epoch_begin(self, epoch, logs=None):
            # A weak reference: on JAX, holding on to the previous function
            # would let the new one reuse its trace (see the module notes).
            function = self.model.train_function
            if self.previous is not None:
                changed.append(function is not self.previous())
            self.previous = weakref.ref(function)
            self.count = counter.count

        def on_epoch_end(self, epoch, logs=None):
            traces.append(counter.count - self.count)

    factors = [1.0, 1.0, 0.5, 0.5, 0.5, 2.0]
    scheduler = PenaltyScheduler(lambda epoch: factors[epoch])
    _fit(model, [scheduler, Record()], epochs=len(factors))
    assert changed == [False, True, False, False, True]
    if keras.backend.backend() != "torch":  # torch runs `call` every step
        assert traces == [1, 0, 1, 0, 0, 1]

    changed.clear()
    traces.clear()
    constant = PenaltyScheduler(lambda epoch: 0.25)
    _fit(model, [constant, Record()], epochs=3)
    assert changed == [False, False]
    if keras.backend.backend() != "torch":
        # The one trace there is in the first epoch: the function rebuilt
        # for the factor 0.25 had not been traced yet.
        assert traces == [1, 0, 0]


def test_per_layer_factors_first_matching_key_wins():
    model = _model()
    base = _base_penalties(model)

    def schedule(epoch):
        return {"a": 0.5 * epoch, "*": 3.0}

    history = _fit(
        model,
        [PenaltyScheduler(schedule, verbose=0), RegularizationMonitor()],
        epochs=3,
    )
    logged = history.history
    np.testing.assert_allclose(
        logged["penalty/a"], [0.0, 0.5 * base["a"], base["a"]], rtol=1e-5
    )
    np.testing.assert_allclose(logged["penalty/b"], [3 * base["b"]] * 3)
    assert "penalty_factor" not in logged  # the factors differ


def test_layers_no_key_matches_keep_their_penalty():
    model = _model()
    base = _base_penalties(model)
    history = _fit(
        model,
        [PenaltyScheduler(lambda e: {"b": 0.0}), RegularizationMonitor()],
        epochs=1,
    )
    assert history.history["penalty/a"] == [pytest.approx(base["a"])]
    assert history.history["penalty/b"] == [0.0]


def test_a_key_left_out_later_keeps_the_factor_it_set():
    # The rule DropoutScheduler follows too: a layer no key matches is left
    # as it is, not reset.
    model = _model()
    base = _base_penalties(model)

    def schedule(epoch):
        return {"a": 0.0, "b": 0.0} if epoch == 0 else {"b": 2.0}

    history = _fit(
        model,
        [PenaltyScheduler(schedule), RegularizationMonitor()],
        epochs=2,
    )
    assert history.history["penalty/a"] == [0.0, 0.0]
    np.testing.assert_allclose(
        history.history["penalty/b"], [0.0, 2 * base["b"]], rtol=1e-5
    )


def test_layers_chooses_what_is_scheduled():
    model = _model()
    base = _base_penalties(model)
    history = _fit(
        model,
        [
            PenaltyScheduler(lambda e: 0.0, layers=keras.layers.Dense),
            RegularizationMonitor(),
        ],
        epochs=1,
    )
    assert history.history["penalty"] == [0.0]
    history = _fit(
        model,
        [PenaltyScheduler(lambda e: 2.0, layers="b"), RegularizationMonitor()],
        epochs=1,
    )
    assert history.history["penalty/a"] == [pytest.approx(base["a"])]
    assert history.history["penalty/b"] == [pytest.approx(2 * base["b"])]
    assert history.history["penalty_factor"] == [2.0]


def test_a_nested_model_key_covers_its_layers():
    inner = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(2, kernel_regularizer=L2(0.1), name="deep"),
        ],
        name="encoder",
    )
    model = keras.Sequential(
        [
            keras.Input((4,)),
            inner,
            keras.layers.Dense(1, kernel_regularizer=L2(0.1), name="head"),
        ]
    )
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    history = _fit(
        model,
        [
            PenaltyScheduler(lambda e: {"encoder": 0.0, "head": 1.0}),
            RegularizationMonitor(),
        ],
        epochs=1,
    )
    assert history.history["penalty/encoder/deep"] == [0.0]
    assert history.history["penalty/head"][0] > 0


def test_a_shared_regularizer_stays_shared_and_comes_back():
    shared = L2(0.1)
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(
                2,
                kernel_regularizer=shared,
                bias_regularizer=shared,
                activity_regularizer=shared,  # not a weight's: left alone
                name="dense",
            ),
        ]
    )
    model.compile(optimizer="sgd", loss="mse")
    layer = model.get_layer("dense")
    seen = []

    class Look(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append(
                (
                    layer.kernel_regularizer,
                    layer.bias_regularizer,
                    layer.kernel.regularizer,
                    layer.bias.regularizer,
                    layer.activity_regularizer,
                )
            )

    _fit(model, [PenaltyScheduler(lambda e: 0.5), Look()], epochs=1)
    # The weights share one scaled penalty; the layer's configuration
    # keeps the user's, and so does the activity penalty (not a weight's).
    assert seen[0][2] == L2(0.05) and seen[0][3] is seen[0][2]
    assert all(penalty is shared for penalty in (*seen[0][:2], seen[0][4]))
    assert layer.kernel_regularizer is shared
    assert layer.kernel.regularizer is shared
    assert layer.bias.regularizer is shared


def test_keras_regularizers_cannot_be_scaled():
    model = _model()
    model.get_layer("b").kernel.regularizer = keras.regularizers.L2(0.1)
    before = _regularizers(model)
    with pytest.raises(
        TypeError,
        match=r"only scale keras_regkit regularizers\. Layer 'b' has the "
        r"penalty .* \(L2\) on its weight 'kernel'",
    ):
        _fit(model, [PenaltyScheduler(lambda e: 0.5)], epochs=1)
    assert _regularizers(model) == before
    # Leaving the layer out works.
    _fit(model, [PenaltyScheduler(lambda e: 0.5, layers="a")], epochs=1)


def test_nothing_to_schedule_fails():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    with pytest.raises(
        ValueError, match="found no trainable weight with a penalty in model"
    ):
        _fit(model, [PenaltyScheduler(lambda e: 1.0)], epochs=1)
    model = _model()
    model.get_layer("a").trainable = False
    model.compile(optimizer="sgd", loss="mse")
    with pytest.raises(
        ValueError, match=r"with a penalty among layers 'a' in model"
    ):
        _fit(model, [PenaltyScheduler(lambda e: 1.0, layers="a")], epochs=1)


def test_a_selector_matching_no_layer_fails_naming_the_layers():
    with pytest.raises(
        ValueError,
        match=r"selector 'c' \(argument `layers`\) matches no layer of model "
        r".*Layers available: 'a', 'b'",
    ):
        _fit(_model(), [PenaltyScheduler(lambda e: 1.0, layers="c")], 1)


@pytest.mark.parametrize(
    "bad, shown",
    [
        (-0.5, r"-0\.5"),
        (float("nan"), "nan"),
        (float("inf"), "inf"),
        ("0.5", "'0.5'"),
        (True, "True"),
        ({"a": -1.0}, r"-1\.0"),
    ],
)
def test_bad_factor_fails_before_the_first_step(bad, shown):
    model = _model(learning_rate=0.1)
    weights = [np.array(w) for w in model.get_weights()]
    before = _regularizers(model)

    def schedule(epoch):
        return 0.5 if epoch < 3 else bad

    with pytest.raises(
        ValueError,
        match=r"invalid factor( for 'a')? for epoch 3\. Expected a "
        rf"non-negative finite float\. Received: factor={shown}$",
    ):
        _fit(model, [PenaltyScheduler(schedule)], epochs=5)
    for old, new in zip(weights, model.get_weights(), strict=True):
        np.testing.assert_array_equal(old, new)
    assert _regularizers(model) == before


def test_a_key_that_names_no_scheduled_layer_fails():
    with pytest.raises(
        ValueError,
        match=r"PenaltyScheduler: the schedule's factors for epoch 0 name "
        r"layers that are not scheduled: \['c'\]\. Scheduled layers: "
        r"\['a', 'b'\]",
    ):
        _fit(_model(), [PenaltyScheduler(lambda e: {"c": 1.0})], 1)


def test_penalties_come_back_after_fit_raises():
    model = _model()  # a learning rate of 0: the weights stay as they are
    before = _regularizers(model)
    base = _base_penalties(model)
    x, y = _data()
    loss = model.evaluate(x, y, batch_size=16, verbose=0)
    scheduler = PenaltyScheduler(lambda epoch: [1.0, 0.0][epoch])

    class Fail(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:
                raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError, match="interrupted"):
        _fit(model, [scheduler, Fail()], epochs=2)
    # Keras skips on_train_end: the scaled penalties are still in the loss,
    # though never in the configuration a save writes...
    assert model.get_layer("a").kernel.regularizer == L2(0.0)
    assert model.get_layer("a").kernel_regularizer == L2(0.2)
    unpenalised = model.evaluate(x, y, batch_size=16, verbose=0)
    assert unpenalised == pytest.approx(loss - base["a"] - base["b"])
    scheduler.restore()  # ... until restore() puts them back,
    assert _regularizers(model) == before
    assert model.evaluate(x, y, batch_size=16, verbose=0) == (
        pytest.approx(loss)
    )
    scheduler.restore()  # (twice is harmless)

    with pytest.raises(RuntimeError, match="interrupted"):
        _fit(model, [scheduler, Fail()], epochs=2)
    assert model.get_layer("b").kernel.regularizer == ElasticNet(0.0, 0.0)
    # ... or the next fit with the same scheduler does, before it begins.
    history = _fit(model, [scheduler, RegularizationMonitor()], epochs=1)
    assert _regularizers(model) == before
    assert history.history["penalty"] == [
        pytest.approx(base["a"] + base["b"], rel=1e-5)
    ]


def _interrupted(model, schedule):
    """`fit` with a PenaltyScheduler, interrupted as epoch 1 begins."""

    class Fail(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _fit(model, [PenaltyScheduler(schedule), Fail()], epochs=2)


def test_a_new_scheduler_never_takes_a_scaled_penalty_for_its_base():
    # The notebook case: a cell interrupted while the penalties are scaled
    # to 0, then run again with a fresh scheduler.
    model = _model()
    before = _regularizers(model)
    _interrupted(model, lambda epoch: 0.0)
    assert model.get_layer("a").kernel.regularizer == L2(0.0)
    history = _fit(
        model,
        [PenaltyScheduler(lambda epoch: 1.0), RegularizationMonitor()],
        epochs=1,
    )
    base = _base_penalties(model)
    assert history.history["penalty"] == [
        pytest.approx(base["a"] + base["b"], rel=1e-5)
    ]
    assert _regularizers(model) == before


def test_a_model_saved_after_an_interrupted_fit_keeps_its_penalties(
    tmp_path,
):
    model = _model()
    _interrupted(model, lambda epoch: 0.5)
    path = tmp_path / "interrupted.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.get_layer("a").kernel.regularizer == L2(0.2)
    assert loaded.get_layer("b").kernel.regularizer == ElasticNet(0.05, 0.1)


def test_restore_with_a_model_puts_back_what_any_scheduler_left():
    model = _model()
    before = _regularizers(model)
    _interrupted(model, lambda epoch: 0.0)
    PenaltyScheduler(lambda epoch: 1.0).restore(model)
    assert _regularizers(model) == before
    assert penalties(model)["a"]["kernel"] == pytest.approx(
        0.2 * np.sum(_numpy(model.get_layer("a").kernel) ** 2), rel=1e-5
    )


def test_initial_epoch_reuse_across_fits_and_deep_copies():
    def schedule(epoch):
        return 0.25 * epoch

    scheduler = PenaltyScheduler(schedule)
    model = _model()
    copied_before = copy.deepcopy(scheduler)
    history = _fit(model, [scheduler], epochs=4, initial_epoch=2)
    assert history.history["penalty_factor"] == [0.5, 0.75]
    copied_after = copy.deepcopy(scheduler)
    assert copied_after.model is None  # the model is not copied along
    for callback in (scheduler, copied_before, copied_after):
        history = _fit(_model(), [callback], epochs=2)
        assert history.history["penalty_factor"] == [0.0, 0.25]


def test_verbose_prints_the_changes(capsys):
    model = _model()
    factors = [0.0, 0.0, 1.0]
    _fit(model, [PenaltyScheduler(lambda e: factors[e], verbose=1)], 3)
    _fit(model, [PenaltyScheduler(lambda e: {"a": 2.0}, verbose=1)], 1)
    assert capsys.readouterr().out.split("\n") == [
        "",
        "Epoch 1: PenaltyScheduler set the penalty factor to 0.",
        "",
        "Epoch 3: PenaltyScheduler set the penalty factor to 1.",
        "",
        "Epoch 1: PenaltyScheduler set the penalty factors a=2, b=1.",
        "",
    ]


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"schedule": 0.5}, TypeError, r"`schedule`.*schedule=0\.5$"),
        ({"layers": 3}, TypeError, r"`layers`.*layers=3$"),
        ({"verbose": 2}, ValueError, r"`verbose`.*verbose=2$"),
        ({"verbose": True}, ValueError, r"`verbose`.*verbose=True$"),
    ],
)
def test_arguments_are_checked_when_built(kwargs, error, match):
    kwargs.setdefault("schedule", lambda epoch: 1.0)
    with pytest.raises(error, match="Invalid value received for argument "):
        PenaltyScheduler(**kwargs)
    with pytest.raises(error, match=match):
        PenaltyScheduler(**kwargs)
