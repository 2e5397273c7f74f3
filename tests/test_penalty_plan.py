"""Tests for keras_regkit.PenaltyPlan: penalties carried to another model."""

import json

import keras
import numpy as np
import pytest

from keras_regkit import L1, L2, ElasticNet, PenaltyPlan, penalties, regularize


class _Block(keras.layers.Layer):
    """Builds its projection from arguments that take no penalty."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.projection = keras.layers.Dense(units, name="projection")

    def call(self, x):
        return self.projection(x)

    def get_config(self):
        return {**super().get_config(), "units": self.units}


def _model(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((3,))
    hidden = _Block(4, name="block")(inputs)
    outputs = keras.layers.Dense(1, name="head")(hidden)
    return keras.Model(inputs, outputs)


def _regularized():
    model = _model()
    with pytest.warns(UserWarning, match="block/projection"):
        regularize(
            model,
            rules={
                "block*": {"kernel": ElasticNet(1e-3, 3e-4), "bias": L1(0.1)},
                "*": L2(1 / 3),  # a float that needs all of its bits
            },
        )
    return model


def test_of_records_every_penalised_weight():
    plan = PenaltyPlan.of(_regularized())
    assert plan.penalties == {
        "block/projection": {"kernel": ElasticNet(1e-3, 3e-4), "bias": L1(0.1)},
        "head": {"kernel": L2(1 / 3)},
    }
    assert repr(plan) == "PenaltyPlan(3 weights in 2 layers)"


def test_a_saved_plan_gives_another_copy_the_same_penalties_to_the_bit(
    tmp_path,
):
    model = _regularized()
    path = tmp_path / "penalties.json"
    PenaltyPlan.of(model).save(path)
    other = _model()  # the same weights, no penalties
    assert penalties(other) == {}
    assert PenaltyPlan.load(path).apply(other) is other
    assert penalties(other) == penalties(model)  # floats compared exactly
    assert other.get_layer("head").kernel_regularizer == L2(1 / 3)
    json.loads(path.read_text())  # plain JSON


def test_apply_rebuilds_the_compiled_functions():
    model = _model()
    model.compile(optimizer="sgd", loss="mse")
    x, y = np.ones((2, 3), "float32"), np.zeros((2, 1), "float32")
    before = model.evaluate(x, y, verbose=0)
    PenaltyPlan({"head": {"kernel": L2(1.0)}}).apply(model)
    kernel = keras.ops.convert_to_numpy(model.get_layer("head").kernel)
    after = model.evaluate(x, y, verbose=0)
    np.testing.assert_allclose(after - before, np.sum(kernel**2), rtol=1e-5)


def test_frozen_weights_are_recorded_too():
    model = _regularized()
    model.get_layer("head").trainable = False
    assert "head" in PenaltyPlan.of(model).penalties


def test_a_weight_the_model_lacks_is_refused_before_any_change():
    plan = PenaltyPlan(
        {"head": {"kernel": "l2"}, "missing": {"kernel": L1(1.0)}}
    )
    model = _model()
    with pytest.raises(ValueError, match=r"missing/kernel.*Layers available"):
        plan.apply(model)
    assert penalties(model) == {}


@pytest.mark.parametrize(
    "value, error, match",
    [
        (["head"], TypeError, r"`penalties`.*Received: penalties=\['head'\]"),
        ({"head": "l2"}, TypeError, r"Received: 'head': 'l2'"),
        ({"head": {"kernel": "l3"}}, ValueError, r"penalties\['head'\]"),
    ],
)
def test_bad_plans(value, error, match):
    with pytest.raises(error, match=match):
        PenaltyPlan(value)
