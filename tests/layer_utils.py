"""Test layers and model builders shared by the dropout-family tests."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_regkit_tests")
class ZeroFraction(keras.layers.Layer):
    """The identity, recording the fraction of zeros in its last input.

    The record is a non-trainable variable, so it is updated from inside
    compiled `fit`, `evaluate` and `predict` steps on every backend.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.fraction = self.add_weight(
            shape=(),
            initializer=keras.initializers.Constant(-1.0),
            trainable=False,
            name="fraction",
            aggregation="only_first_replica",
        )

    def call(self, inputs):
        zeros = ops.cast(ops.equal(inputs, 0), "float32")
        self.fraction.assign(ops.mean(zeros))
        return inputs

    def read(self):
        """The recorded fraction, then resets the record to -1."""
        value = float(ops.convert_to_numpy(self.fraction))
        self.fraction.assign(-1.0)
        return value


class ForwardsTraining(keras.Model):
    """A subclassed model that passes `training` on by hand."""

    def __init__(self, dropout, **kwargs):
        super().__init__(**kwargs)
        self.dropout = dropout
        self.probe = ZeroFraction()
        self.head = keras.layers.Dense(1)

    def call(self, inputs, training=None):
        hidden = self.dropout(inputs, training=training)
        return self.head(self.probe(hidden))


def _inner(dropout, probe, kind, features):
    if kind == "sequential":
        return keras.Sequential(
            [keras.Input((features,)), dropout, probe], name="inner"
        )
    inputs = keras.Input((features,))
    return keras.Model(inputs, probe(dropout(inputs)), name="inner")


def build(structure, dropout, features):
    """A model holding `dropout` followed by a `ZeroFraction` probe.

    `structure` is one of STRUCTURES. Returns `(model, probe)`; the model
    ends in `Dense(1)`, so it can be fitted on a regression target.
    """
    if structure == "subclassed":
        model = ForwardsTraining(dropout)
        model(keras.ops.ones((1, features)))  # builds its layers
        return model, model.probe
    probe = ZeroFraction()
    if structure == "sequential":
        model = keras.Sequential(
            [keras.Input((features,)), dropout, probe, keras.layers.Dense(1)]
        )
    elif structure == "functional":
        inputs = keras.Input((features,))
        model = keras.Model(
            inputs, keras.layers.Dense(1)(probe(dropout(inputs)))
        )
    elif structure == "sequential_in_functional":
        inputs = keras.Input((features,))
        inner = _inner(dropout, probe, "sequential", features)
        model = keras.Model(inputs, keras.layers.Dense(1)(inner(inputs)))
    elif structure == "functional_in_sequential":
        inner = _inner(dropout, probe, "functional", features)
        model = keras.Sequential(
            [keras.Input((features,)), inner, keras.layers.Dense(1)]
        )
    else:
        raise ValueError(structure)
    return model, probe


STRUCTURES = (
    "sequential",
    "functional",
    "sequential_in_functional",
    "functional_in_sequential",
    "subclassed",
)
