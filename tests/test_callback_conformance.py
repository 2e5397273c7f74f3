"""What every keras_regkit callback promises, in one conformance suite.

`CASES` drives it over every public callback: adding a callback means
adding one entry there, with the arguments it is built with, the log keys
whose values depend on the epoch alone, what its state is after a `fit`,
and what a `fit` that raised midway leaves on the model. One model has
what every callback needs (L2 and L1 penalties, a constraint, a
keras_regkit `Dropout`), and every `fit` gets validation data.

The module tests (`test_<callback>.py`) hold what each callback does;
`test_distributed.py` holds them on several devices.
"""

import copy
import dataclasses
import gc
import inspect
import types
from collections.abc import Callable

import keras
import numpy as np
import pytest

from keras_regkit import L1, L2, callbacks
from keras_regkit.layers import Dropout
from keras_regkit.pruning import PolynomialDecay
from keras_regkit.schedules import LinearRamp

EPOCHS = 3
_RNG = np.random.default_rng(0)
_X = _RNG.normal(size=(32, 4)).astype("float32")
_Y = (_X[:, :2].sum(axis=1, keepdims=True) + 0.1).astype("float32")
_VALIDATION = (_X[:16] + 0.5, _Y[:16])
_MAX_NORM = keras.constraints.MaxNorm(3.0)  # checked by identity


def _model():
    """Input(4), hidden: Dense(8) with L2, drop: Dropout, head: Dense(1), L1."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(
                8,
                activation="tanh",
                kernel_regularizer=L2(0.01),
                kernel_constraint=_MAX_NORM,
                name="hidden",
            ),
            Dropout(0.1, seed=1, name="drop"),
            keras.layers.Dense(1, kernel_regularizer=L1(0.01), name="head"),
        ]
    )
    model.compile(keras.optimizers.SGD(0.05), "mse")
    return model


def _fit(model, callback, extra=(), **kwargs):
    return model.fit(
        _X,
        _Y,
        batch_size=8,
        epochs=EPOCHS,
        shuffle=False,
        verbose=0,
        validation_data=_VALIDATION,
        callbacks=[callback, *extra],
        **kwargs,
    )


def _numpy(x):
    return keras.ops.convert_to_numpy(x)


def _weights(model):
    return [np.array(w) for w in model.get_weights()]


def _penalties(model):
    """Each Dense kernel's penalty and constraint, on the variable and layer.

    Regularizers compare by value, constraints by identity.
    """
    return {
        name: (
            layer.kernel.regularizer,
            layer.kernel_regularizer,
            layer.kernel.constraint,
            layer.kernel_constraint,
        )
        for name in ("hidden", "head")
        for layer in [model.get_layer(name)]
    }


def _initial_penalties(factor=1.0):
    """`_penalties` of a new `_model()`, every strength times `factor`."""
    hidden, head = L2(0.01).scaled(factor), L1(0.01).scaled(factor)
    return {
        "hidden": (hidden, hidden, _MAX_NORM, _MAX_NORM),
        "head": (head, head, None, None),
    }


_INITIAL_PENALTIES = _initial_penalties()


# What each callback's state is after a `fit` that ended, as its docstring
# says; `history` is the `History` that `fit` returned.


def _dropout_scheduler_after_fit(callback, model, history):
    # "Rates stay at their last value after training."
    rate = callback.schedule(history.epoch[-1])
    assert model.get_layer("drop").rate == pytest.approx(rate)
    assert history.history["dropout_rate"][-1] == pytest.approx(rate)


def _early_stopping_after_fit(callback, model, history):
    # min_delta=10: only the run's first epoch improves, and patience 5
    # is never used up. A callback that kept the state of an earlier fit
    # would have another `best`, and would have stopped.
    assert callback.best == pytest.approx(history.history["val_loss"][0])
    assert callback.best_epoch == history.epoch[0]
    assert callback.wait == len(history.epoch) - 1
    assert (callback.stopped_epoch, callback.stop_reason) == (0, None)
    for restored, best in zip(
        _weights(model), callback.best_weights, strict=True
    ):  # restore_best_weights=True
        np.testing.assert_array_equal(restored, _numpy(best))


def _gradual_pruning_after_fit(callback, model, history):
    step = int(_numpy(model.optimizer.iterations)) - 1
    sparsity = callback.schedule.sparsity(min(step, 8))  # end_step=8
    zeros = round(sparsity * 32) + round(sparsity * 8)  # hidden, head
    assert history.history["sparsity"][-1] == pytest.approx(zeros / 40)
    assert callbacks.GradualPruning.release(model) == 0  # nothing left


def _penalty_scheduler_after_fit(callback, model, history):
    factors = [callback.schedule(epoch) for epoch in history.epoch]
    assert history.history["penalty_factor"] == pytest.approx(factors)


def _proximal_step_after_fit(callback, model, history):
    assert callbacks.ProximalStep.release(model) == 0  # nothing left


def _regularization_monitor_after_fit(callback, model, history):
    logged = history.history["penalty"][-1]
    assert logged == pytest.approx(callback.values()["penalty"], rel=1e-6)


def _learning_rate(model):
    return float(_numpy(model.optimizer.learning_rate))


def _weight_averaging_after_fit(callback, model, history):
    # start_epoch=1: this fit's epochs from 1 on, each averaged once, and
    # the average in the model; the optimizer's rate put back.
    assert callback.count == len([e for e in history.epoch if e >= 1])
    trainable = [_numpy(v) for v in model.trainable_variables]
    for ours, average in zip(trainable, callback.averaged_weights, strict=True):
        np.testing.assert_array_equal(ours, average)
    assert _learning_rate(model) == pytest.approx(0.05)


def _weight_shrinkage_after_fit(callback, model, history):
    assert callback.report is not None  # this fit's, not an earlier one's
    assert len(history.history["val_loss"]) == len(history.epoch)
    shrunk = model.evaluate(*_VALIDATION, verbose=0)
    assert history.history["val_loss"][-1] == pytest.approx(shrunk, rel=1e-5)


# What a `fit` that raised in its second epoch (index 1) leaves on the model:
# Keras then calls no `on_train_end`.


def _unchanged(callback, model):
    assert _penalties(model) == _INITIAL_PENALTIES


def _dropout_scheduler_after_raise(callback, model):
    _unchanged(callback, model)
    rate = callback.schedule(1)  # epoch 1 began; its rate stays
    assert model.get_layer("drop").rate == pytest.approx(rate)


def _gradual_pruning_after_raise(callback, model):
    # The masks stay on the kernels, after their own constraints, until
    # `GradualPruning.release(model)` or the next `fit`.
    for name, initial in _INITIAL_PENALTIES.items():
        layer = model.get_layer(name)
        assert layer.kernel.regularizer == initial[0]
        assert layer.kernel.constraint.constraint is initial[2]
        assert layer.kernel_constraint is initial[3]


def _penalty_scheduler_after_raise(callback, model):
    # The scaled penalties stay in the loss until `restore()` or the next
    # `fit`; the layer attributes (what a save writes) are never touched.
    factor = callback.schedule(1)
    assert factor not in (0.0, 1.0)
    scaled, initial = _initial_penalties(factor), _INITIAL_PENALTIES
    assert _penalties(model) == {
        name: (scaled[name][0], *initial[name][1:]) for name in initial
    }


def _proximal_step_after_raise(callback, model):
    # The penalties stay detached, the proximal constraints in place,
    # until `ProximalStep.release(model)` or the next `fit`; the layer
    # attributes are never touched.
    for name, initial in _INITIAL_PENALTIES.items():
        layer = model.get_layer(name)
        assert layer.kernel.regularizer is None
        assert layer.kernel_regularizer == initial[1]
        assert layer.kernel.constraint not in (None, initial[2])
        assert layer.kernel_constraint is initial[3]


def _weight_averaging_after_raise(callback, model):
    # Epoch 1 began with the SWA rate, which stays until `restore()`.
    _unchanged(callback, model)
    assert _learning_rate(model) == pytest.approx(0.01)


def _weight_shrinkage_after_raise(callback, model):
    _unchanged(callback, model)
    assert callback.report is None  # no shrink: it runs in on_train_end


def _nothing(callback, model):
    pass


def _release(callback, model):
    assert callbacks.ProximalStep.release(model) == 2


def _release_masks(callback, model):
    assert callbacks.GradualPruning.release(model) == 2


def _restore(callback, model):
    callback.restore()


@dataclasses.dataclass(frozen=True)
class Case:
    cls: type
    args: dict
    after_fit: Callable
    after_raise: Callable = _unchanged
    # the call that repairs what a raised `fit` left, other than a new fit
    repair: Callable = _nothing
    # log keys whose values depend on the epoch alone
    epoch_keys: tuple = ()

    def make(self):
        return self.cls(**self.args)


CASES = {
    case.cls.__name__: case
    for case in [
        Case(
            callbacks.DropoutScheduler,
            {"schedule": LinearRamp(0.0, 0.3, epochs=2)},
            _dropout_scheduler_after_fit,
            after_raise=_dropout_scheduler_after_raise,
            epoch_keys=("dropout_rate",),
        ),
        Case(
            callbacks.EarlyStopping,
            {
                "monitor": "val_loss",
                "min_delta": 10.0,
                "patience": 5,
                "restore_best_weights": True,
            },
            _early_stopping_after_fit,
        ),
        Case(
            callbacks.GradualPruning,
            {
                "schedule": PolynomialDecay(
                    0.0, 0.5, begin_step=0, end_step=8, frequency=2
                )
            },
            _gradual_pruning_after_fit,
            after_raise=_gradual_pruning_after_raise,
            repair=_release_masks,
        ),
        Case(
            callbacks.PenaltyScheduler,
            {"schedule": LinearRamp(0.0, 0.5, epochs=2)},
            _penalty_scheduler_after_fit,
            after_raise=_penalty_scheduler_after_raise,
            repair=_restore,
            epoch_keys=("penalty_factor",),
        ),
        Case(
            callbacks.ProximalStep,
            {},
            _proximal_step_after_fit,
            after_raise=_proximal_step_after_raise,
            repair=_release,
        ),
        Case(
            callbacks.RegularizationMonitor,
            {"zero_tol": 1e-3},
            _regularization_monitor_after_fit,
        ),
        Case(
            callbacks.WeightAveraging,
            {"start_epoch": 1, "swa_lr": 0.01, "validate_averaged": True},
            _weight_averaging_after_fit,
            after_raise=_weight_averaging_after_raise,
            repair=_restore,
        ),
        Case(
            callbacks.WeightShrinkage,
            {"method": "prune", "levels": [0.5]},
            _weight_shrinkage_after_fit,
            after_raise=_weight_shrinkage_after_raise,
        ),
    ]
}
NAMES = list(CASES)


def test_every_public_callback_has_a_case():
    assert sorted(NAMES) == sorted(callbacks.__all__)


def _reachable(root):
    """`{id: object}` of what `root` refers to, directly or not.

    Functions, classes and modules are not followed: a schedule's globals
    are the test module's, not the callback's.
    """
    skipped = (type, types.ModuleType, types.FunctionType)
    found = {}
    stack = [root]
    while stack:
        obj = stack.pop()
        if id(obj) in found or isinstance(obj, skipped):
            continue
        found[id(obj)] = obj
        stack.extend(gc.get_referents(obj))
    return found


def _parts(model):
    """The model, its layers, its variables and its optimizer's."""
    parts = [model, model.optimizer, *model.layers, *model.variables]
    return parts + list(model.optimizer.variables)


def _training(model, callback):
    history = _fit(model, callback)
    return history.epoch, history.history, _weights(model)


def _assert_same_training(ours, reference):
    epochs, logs, weights = ours
    assert epochs == reference[0]
    assert logs.keys() == reference[1].keys()
    for key, values in logs.items():
        np.testing.assert_allclose(values, reference[1][key], rtol=1e-6)
    for ours, theirs in zip(weights, reference[2], strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", NAMES)
def test_deep_copies_before_and_after_fit_train_alike(name):
    original = CASES[name].make()
    before = copy.deepcopy(original)
    model = _model()
    reference = _training(model, original)
    after = copy.deepcopy(original)
    reachable = _reachable(after)
    held = [
        getattr(part, "path", None) or type(part).__name__
        for part in _parts(model)
        if id(part) in reachable
    ]
    assert not held, f"the copy refers to the model it was copied from: {held}"
    state = _weights(model), _penalties(model), model.get_layer("drop").rate
    for copied in (before, after):
        assert copied is not original
        fresh = _model()
        _assert_same_training(_training(fresh, copied), reference)
        assert copied.model is fresh
    # Training the copies left the original's model as it was.
    weights, penalties, rate = state
    for ours, theirs in zip(_weights(model), weights, strict=True):
        np.testing.assert_array_equal(ours, theirs)
    assert _penalties(model) == penalties
    assert model.get_layer("drop").rate == rate
    assert original.model is model


# Keras Tuner deep-copies the callbacks of every trial; a copy that carries
# a copy of the model it trained is wasteful at best.
@pytest.mark.parametrize("name", NAMES)
def test_a_copy_made_after_fit_carries_no_model(name):
    callback = CASES[name].make()
    _fit(_model(), callback)
    copied = copy.deepcopy(callback)
    assert copied.model is None
    models = [
        obj
        for obj in _reachable(copied).values()
        if isinstance(obj, keras.Model)
    ]
    assert not models


@pytest.mark.parametrize("name", NAMES)
def test_one_instance_serves_several_fits(name):
    case = CASES[name]
    callback = case.make()
    model = _model()
    first = _fit(model, callback)
    assert first.epoch[:EPOCHS] == list(range(EPOCHS))
    case.after_fit(callback, model, first)
    assert _penalties(model) == _INITIAL_PENALTIES
    second = _fit(model, callback)
    assert second.epoch == first.epoch
    assert second.history.keys() == first.history.keys()
    for key in case.epoch_keys:
        assert second.history[key] == first.history[key]
    case.after_fit(callback, model, second)
    assert _penalties(model) == _INITIAL_PENALTIES
    third = _fit(model, callback, initial_epoch=1)
    assert third.epoch == first.epoch[1:]
    assert third.history.keys() == first.history.keys()
    for key in case.epoch_keys:
        assert third.history[key] == first.history[key][1:]
    case.after_fit(callback, model, third)
    assert _penalties(model) == _INITIAL_PENALTIES


def _listed(value):
    """`value` with tuples as lists: a config may hold a checked copy."""
    if isinstance(value, (list, tuple)):
        return [_listed(item) for item in value]
    return value


# Keras's base class has no `get_config`; ours all have one.
@pytest.mark.parametrize("name", NAMES)
def test_get_config_names_every_argument(name):
    case = CASES[name]
    callback = case.make()
    config = callback.get_config()
    parameters = list(inspect.signature(case.cls.__init__).parameters.values())
    named = [
        parameter.name
        for parameter in parameters[1:]
        if parameter.kind
        not in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD)
    ]
    # and the arguments given through **kwargs (WeightShrinkage's options)
    expected = named + [key for key in case.args if key not in named]
    missing = [key for key in expected if key not in config]
    assert not missing, f"get_config() lacks {missing}"
    for key, value in case.args.items():
        assert _listed(config[key]) == _listed(value)
    assert case.cls(**config).get_config() == config


class _RaiseMidway(keras.callbacks.Callback):
    """Raises RuntimeError after the second step of epoch 1, the second."""

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.epoch == 1 and batch == 1:
            # `self.model` writes JAX's training state back to the model.
            self.weights = _weights(self.model)
            raise RuntimeError("midway")


@pytest.mark.parametrize("name", NAMES)
def test_a_fit_that_raises_midway(name):
    case = CASES[name]
    callback = case.make()
    model = _model()
    for repair in (case.repair, _nothing):
        raising = _RaiseMidway()
        with pytest.raises(RuntimeError, match="midway"):
            _fit(model, callback, extra=[raising])
        # Nothing restored (no best weights, no shrinking) nor changed.
        for ours, theirs in zip(_weights(model), raising.weights, strict=True):
            np.testing.assert_array_equal(ours, theirs)
        case.after_raise(callback, model)
        repair(callback, model)
        if repair is not _nothing:
            assert _penalties(model) == _INITIAL_PENALTIES
    # The next fit with the same callback repairs what is left, and works.
    history = _fit(model, callback)
    assert history.epoch[:EPOCHS] == list(range(EPOCHS))
    case.after_fit(callback, model, history)
    assert _penalties(model) == _INITIAL_PENALTIES
