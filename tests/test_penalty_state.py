"""Tests for keras_regkit._penalty_state: where a weight's penalty is."""

import keras
import numpy as np
import pytest

from keras_regkit import L1, L2, ElasticNet, shrink
from keras_regkit._penalty_state import (
    ProximalConstraint,
    current_penalty,
    proximal_penalty,
    proximal_targets,
    release_proximal_steps,
    set_penalty,
    start_proximal_steps,
)


def _model(kernel=None, bias=None):
    model = keras.Sequential(
        [
            keras.Input((3,)),
            keras.layers.Dense(
                2,
                kernel_regularizer=L1(0.1) if kernel is None else kernel,
                bias_regularizer=bias,
                kernel_constraint=keras.constraints.NonNeg(),
                name="dense",
            ),
        ]
    )
    model.compile(keras.optimizers.SGD(0.1), "mse")
    return model


def test_set_penalty_without_proximal_steps_sets_the_loss_term():
    model = _model()
    kernel = model.get_layer("dense").kernel
    set_penalty(kernel, L2(0.5))
    assert kernel.regularizer == L2(0.5)
    assert current_penalty(kernel) == L2(0.5)


def test_penalty_moves_into_proximal_steps_and_back():
    model = _model()
    kernel = model.get_layer("dense").kernel
    own_constraint = kernel.constraint

    start_proximal_steps(model, proximal_targets(model))

    assert kernel.regularizer is None  # out of the loss
    assert isinstance(kernel.constraint, ProximalConstraint)
    assert current_penalty(kernel) == L1(0.1)
    set_penalty(kernel, L1(0.3))  # e.g. PenaltyScheduler, mid-training
    assert kernel.regularizer is None
    assert current_penalty(kernel) == L1(0.3)
    assert kernel.constraint.penalty == L1(0.3)

    assert release_proximal_steps(model) == 1
    assert kernel.regularizer == L1(0.3)
    assert kernel.constraint is own_constraint
    assert release_proximal_steps(model) == 0


def test_the_constraint_takes_the_prox_then_the_weights_own_constraint():
    model = _model()
    kernel = model.get_layer("dense").kernel
    start_proximal_steps(model, proximal_targets(model))
    w = np.array([[0.5, -0.5], [0.05, 2.0], [-2.0, 0.0]], "float32")
    # Soft-thresholding by lr * l1 = 0.01, then NonNeg.
    expected = np.maximum(np.sign(w) * np.maximum(np.abs(w) - 0.01, 0), 0)
    got = keras.ops.convert_to_numpy(kernel.constraint(w))
    np.testing.assert_allclose(got, expected, rtol=1e-6)


@pytest.mark.parametrize(
    "keras_penalty, expected",
    [
        (keras.regularizers.L1(0.25), L1(0.25)),
        (keras.regularizers.L2(0.25), L2(0.25)),
        (keras.regularizers.L1L2(0.25, 0.5), ElasticNet(0.25, 0.5)),
    ],
    ids=["l1", "l2", "l1l2"],
)
def test_keras_penalties_are_taken_over(keras_penalty, expected):
    assert proximal_penalty(keras_penalty) == expected


def test_a_penalty_without_prox_has_none():
    assert proximal_penalty(keras.regularizers.OrthogonalRegularizer()) is None
    model = _model(kernel=keras.regularizers.OrthogonalRegularizer())
    with pytest.raises(ValueError, match="dense/kernel have no proximal"):
        proximal_targets(model)


class _RaisingBatches(keras.utils.PyDataset):
    def __init__(self, x, y, fail_on):
        super().__init__()
        self.x, self.y, self.fail_on, self.served = x, y, fail_on, 0

    def __len__(self):
        return len(self.x) // 8

    def __getitem__(self, index):
        self.served += 1
        if self.served == self.fail_on:
            raise RuntimeError("data broke")
        rows = slice(8 * index, 8 * (index + 1))
        return self.x[rows], self.y[rows]


def test_shrink_fine_tuning_that_raises_leaves_no_proximal_step_behind():
    # shrink(method="penalty") fine-tunes with proximal steps on every
    # penalised weight of the chosen layers, the bias included, although
    # only kernels are shrunk; a fit that raises must put all of them back.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 3)).astype("float32")
    y = rng.normal(size=(32, 2)).astype("float32")
    model = _model(bias=L2(0.1))
    model.fit(x, y, epochs=1, verbose=0)
    with pytest.raises(Exception, match="data broke"):
        shrink(
            model,
            (x, y),
            method="penalty",
            levels=[0.01],
            finetune_data=_RaisingBatches(x, y, fail_on=2),
        )
    layer = model.get_layer("dense")
    assert not any(
        isinstance(v.constraint, ProximalConstraint) for v in model.variables
    )
    assert layer.bias.regularizer == L2(0.1)
    assert layer.kernel.regularizer == L1(0.1)
    assert isinstance(layer.kernel.constraint, keras.constraints.NonNeg)
