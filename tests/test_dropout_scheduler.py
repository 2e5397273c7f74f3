"""Tests for keras_regkit.callbacks.DropoutScheduler.

Rates are checked where they matter: the fraction of zeros the compiled
train step actually produced, recorded by a probe layer after each epoch.
"""

import copy
import math

import keras
import numpy as np
import pytest
from layer_utils import ZeroFraction

from keras_regkit import schedules
from keras_regkit.callbacks import DropoutScheduler
from keras_regkit.layers import Dropout, DropPath

ROWS, FEATURES = 256, 64


def _tolerance(rate, draws=ROWS * FEATURES):
    return 5 * math.sqrt(rate * (1 - rate) / draws) + 1e-12


class _Record(keras.callbacks.Callback):
    """Reads the probes at the end of every epoch."""

    def __init__(self, probes):
        super().__init__()
        self.probes = probes
        self.fractions = {name: [] for name in probes}

    def on_epoch_end(self, epoch, logs=None):
        for name, probe in self.probes.items():
            self.fractions[name].append(probe.read())


def _model(*names, layer_class=Dropout):
    """Input -> (layer -> probe) for each name -> Dense(1)."""
    inputs = keras.Input((FEATURES,))
    hidden = inputs
    probes = {}
    for name in names:
        hidden = layer_class(0.0, name=name)(hidden)
        probes[name] = ZeroFraction(name=f"{name}_probe")
        hidden = probes[name](hidden)
    model = keras.Model(inputs, keras.layers.Dense(1)(hidden))
    model.compile(optimizer="sgd", loss="mse")
    return model, probes


def _fit(model, callbacks, epochs, **kwargs):
    x = np.ones((ROWS, FEATURES), "float32")
    y = np.zeros((ROWS, 1), "float32")
    return model.fit(
        x,
        y,
        batch_size=ROWS,
        epochs=epochs,
        verbose=0,
        callbacks=callbacks,
        **kwargs,
    )


@pytest.mark.parametrize(
    "schedule",
    [
        schedules.Constant(0.3),
        schedules.LinearRamp(0.0, 0.6, epochs=4),
        schedules.Curriculum(0.7, gamma=0.5),
        lambda epoch: [0.5, 0.1, 0.8, 0.0, 0.4, 0.2][epoch],
    ],
    ids=["Constant", "LinearRamp", "Curriculum", "function"],
)
def test_the_train_step_drops_what_the_schedule_says(schedule):
    model, probes = _model("drop")
    record = _Record(probes)
    history = _fit(model, [DropoutScheduler(schedule), record], epochs=6)
    expected = [schedule(epoch) for epoch in range(6)]
    for rate, fraction in zip(expected, record.fractions["drop"], strict=True):
        assert abs(fraction - rate) <= _tolerance(rate), (rate, fraction)
    assert history.history["dropout_rate"] == pytest.approx(expected)
    assert model.get_layer("drop").rate == pytest.approx(expected[-1])


def test_per_layer_rates_by_name_and_glob():
    model, probes = _model("drop_a", "drop_b", "other")

    def schedule(epoch):
        return {"drop_a": 0.1 * (epoch + 1), "drop_*": 0.5}

    record = _Record(probes)
    history = _fit(model, [DropoutScheduler(schedule), record], epochs=3)
    for epoch in range(3):
        rate_a = 0.1 * (epoch + 1)
        assert abs(record.fractions["drop_a"][epoch] - rate_a) <= _tolerance(
            rate_a
        )
    # drop_b comes after drop_a: it sees what drop_a kept, then drops half
    for epoch, fraction in enumerate(record.fractions["drop_b"]):
        rate_a = 0.1 * (epoch + 1)
        combined = 1 - (1 - rate_a) * 0.5
        assert abs(fraction - combined) <= _tolerance(combined)
    assert record.fractions["other"] == pytest.approx(
        record.fractions["drop_b"]
    )
    assert model.get_layer("other").rate == 0.0  # no key matched it
    assert "dropout_rate" not in history.history  # the rates differ


def test_layers_selects_what_is_scheduled():
    model, probes = _model("first", "second")
    record = _Record(probes)
    _fit(model, [DropoutScheduler(lambda e: 0.5, layers="first"), record], 2)
    assert model.get_layer("first").rate == 0.5
    assert model.get_layer("second").rate == 0.0


def test_drop_path_only_when_selected():
    model, _ = _model("path", layer_class=DropPath)
    with pytest.raises(ValueError, match="found no keras_regkit Dropout"):
        _fit(model, [DropoutScheduler(lambda e: 0.3)], 1)
    _fit(model, [DropoutScheduler(lambda e: 0.3, layers=DropPath)], 1)
    assert model.get_layer("path").rate == 0.3


def test_keras_dropout_is_named_when_nothing_can_be_scheduled():
    model = keras.Sequential(
        [keras.Input((3,)), keras.layers.Dropout(0.2, name="kd")]
    )
    model.compile(optimizer="sgd", loss="mse")
    with pytest.raises(ValueError, match=r"\(kd\).*keras_regkit\.layers"):
        model.fit(
            np.ones((4, 3)),
            np.ones((4, 3)),
            verbose=0,
            callbacks=[DropoutScheduler(lambda e: 0.1)],
        )


@pytest.mark.parametrize(
    "bad, shown",
    [(1.5, r"1\.5"), (-0.1, r"-0\.1"), (float("nan"), "nan"), ("0.2", "'0.2'")],
)
def test_bad_rate_fails_before_the_first_step(bad, shown):
    model, _ = _model("drop")
    before = [np.array(w) for w in model.get_weights()]

    def schedule(epoch):
        return 0.2 if epoch < 3 else bad

    with pytest.raises(
        ValueError,
        match=rf"for epoch 3\. Expected a float in \[0, 1\)\. "
        rf"Received: rate={shown}",
    ):
        _fit(model, [DropoutScheduler(schedule)], epochs=5)
    for old, new in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(old, new)
    assert model.get_layer("drop").rate == 0.0


def test_a_key_that_names_no_scheduled_layer_fails():
    model, _ = _model("drop")
    with pytest.raises(ValueError, match=r"epoch 0.*\['dorp'\].*\['drop'\]"):
        _fit(model, [DropoutScheduler(lambda e: {"dorp": 0.1})], 1)


def test_a_key_naming_an_enclosing_layer_covers_its_dropout():
    # As in PenaltyScheduler and regularize(rules=...): the first key that
    # matches the layer or a layer enclosing it decides.
    block = keras.Sequential(
        [keras.Input((3,)), Dropout(0.0, name="inner")], name="block"
    )
    model = keras.Sequential(
        [
            keras.Input((3,)),
            block,
            Dropout(0.0, name="outer"),
            keras.layers.Dense(3, name="dense"),
        ]
    )
    model.compile(optimizer="sgd", loss="mse")

    def schedule(epoch):
        return {"block": 0.3, "*": 0.1} if epoch == 0 else {"outer": 0.2}

    model.fit(
        np.ones((4, 3)),
        np.ones((4, 3)),
        epochs=2,
        verbose=0,
        callbacks=[DropoutScheduler(schedule)],
    )
    assert block.get_layer("inner").rate == pytest.approx(0.3)  # kept
    assert model.get_layer("outer").rate == pytest.approx(0.2)


def test_schedule_keys_must_be_selectors():
    model, _ = _model("drop")
    with pytest.raises(TypeError, match="`schedule key`.*3"):
        _fit(model, [DropoutScheduler(lambda e: {3: 0.1})], 1)


def test_initial_epoch_and_reuse_across_fit_calls():
    model, _ = _model("drop")
    scheduler = DropoutScheduler(schedules.LinearRamp(0.0, 0.4, epochs=4))
    history = _fit(model, [scheduler], epochs=4, initial_epoch=2)
    assert history.history["dropout_rate"] == pytest.approx([0.2, 0.3])
    other, _ = _model("drop")
    history = _fit(other, [copy.deepcopy(scheduler)], epochs=1)
    assert history.history["dropout_rate"] == [0.0]
    history = _fit(other, [scheduler], epochs=2)  # the same instance again
    assert history.history["dropout_rate"] == pytest.approx([0.0, 0.1])


def test_verbose_prints_the_rates(capsys):
    model, _ = _model("drop")
    _fit(model, [DropoutScheduler(lambda e: 0.25, verbose=1)], 1)
    assert "Epoch 1: DropoutScheduler set drop=0.25." in capsys.readouterr().out
