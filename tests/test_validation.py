"""Bad input for every public constructor and function, in one table.

Each row: what is called, the exception it must raise, and a pattern the
message must match (the argument's name and the value received).
"""

import keras
import numpy as np
import pytest

import keras_regkit
from keras_regkit import schedules, selectors
from keras_regkit.callbacks import DropoutScheduler
from keras_regkit.layers import Dropout, DropPath
from keras_regkit.regularizers import L1, L2, ElasticNet, ExpAbs, GroupLasso

# Bad arguments are refused before anything reaches the Keras backend.
pytestmark = pytest.mark.backend_independent


def _model():
    return keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(2, name="dense")]
    )


def _bad_numbers(call, name, *, zero_ok=True):
    """Rows for a numeric argument that must be a finite, >= 0 float."""
    rows = [
        (lambda: call(-1.0), ValueError, rf"`{name}`.*Received: {name}=-1\.0"),
        (lambda: call(float("nan")), ValueError, rf"Received: {name}=nan"),
        (lambda: call(float("inf")), ValueError, rf"Received: {name}=inf"),
        (lambda: call(True), TypeError, rf"`{name}`.*Received: {name}=True"),
        (lambda: call("0.1"), TypeError, rf"Received: {name}='0\.1'"),
        (lambda: call(None), TypeError, rf"Received: {name}=None"),
        (lambda: call([0.1]), TypeError, rf"Received: {name}=\[0\.1\]"),
        (
            lambda: call(np.array([0.1, 0.2])),
            ValueError,
            rf"`{name}`.*not an array.*shape \(2,\)",
        ),
    ]
    if not zero_ok:
        rows.append((lambda: call(0.0), ValueError, rf"Received: {name}=0\.0"))
    return rows


ROWS = [
    *_bad_numbers(lambda v: L1(l1=v), "l1"),
    *_bad_numbers(lambda v: L2(l2=v), "l2"),
    *_bad_numbers(lambda v: ElasticNet(l1=v), "l1"),
    *_bad_numbers(lambda v: ElasticNet(l2=v), "l2"),
    *_bad_numbers(lambda v: ExpAbs(strength=v), "strength"),
    *_bad_numbers(lambda v: ExpAbs(scale=v), "scale", zero_ok=False),
    (lambda: ExpAbs(scale=1e-40), ValueError, r"`scale`.*at least 1\.2e-38"),
    *_bad_numbers(lambda v: GroupLasso(strength=v), "strength"),
    (lambda: GroupLasso(axis=1.5), TypeError, r"`axis`.*Received: axis=1\.5"),
    (lambda: GroupLasso(axis=True), TypeError, r"Received: axis=True"),
    (lambda: GroupLasso(axis="-1"), TypeError, r"Received: axis='-1'"),
    (lambda: GroupLasso(axis=()), TypeError, r"Received: axis=\(\)"),
    (lambda: GroupLasso(axis=(0, 0)), ValueError, r"axis=\(0, 0\)"),
    (lambda: GroupLasso(axis=(0, 1.0)), TypeError, r"axis=\(0, 1\.0\)"),
    *_bad_numbers(lambda v: ElasticNet.from_ratio(v, 0.5), "alpha"),
    (
        lambda: ElasticNet.from_ratio(0.1, 1.5),
        ValueError,
        r"`l1_ratio`.*\[0, 1\].*Received: l1_ratio=1\.5",
    ),
    (lambda: ElasticNet.from_ratio(0.1, -0.1), ValueError, r"l1_ratio=-0\.1"),
    (lambda: ElasticNet.from_ratio(0.1, None), TypeError, r"l1_ratio=None"),
    *_bad_numbers(lambda v: L2.from_weight_decay(v), "weight_decay"),
    *_bad_numbers(lambda v: L2.from_course_lambda(v, 10), "lambda_"),
    (
        lambda: L2.from_course_lambda(0.1, 0),
        ValueError,
        r"`num_examples`.*positive integer.*Received: num_examples=0",
    ),
    (lambda: L2.from_course_lambda(0.1, 2.5), TypeError, r"num_examples=2\.5"),
    (lambda: L2.from_course_lambda(0.1, True), TypeError, r"num_examples=True"),
    (
        lambda: keras_regkit.regularizers.get("l3"),
        ValueError,
        r"`identifier`\. Unknown regularizer name: 'l3'\. "
        r"Valid names: 'l1', 'l2'",
    ),
    (
        lambda: keras_regkit.regularizers.get(0.01),
        TypeError,
        r"`identifier`.*Received: identifier=0\.01",
    ),
    (
        lambda: keras_regkit.regularize("model", kernel=L2()),
        TypeError,
        r"`model`.*keras\.Model.*Received: model='model'",
    ),
    (
        lambda: keras_regkit.regularize(_model(), kernel="l3"),
        ValueError,
        r"`kernel`.*Unknown regularizer name: 'l3'",
    ),
    (
        lambda: keras_regkit.regularize(_model(), kernel=0.01),
        TypeError,
        r"`kernel`.*Received: kernel=0\.01",
    ),
    (
        lambda: keras_regkit.regularize(_model(), bias=[L2()]),
        TypeError,
        r"`bias`",
    ),
    (
        lambda: keras_regkit.regularize(_model()),
        ValueError,
        r"Nothing to change: pass at least one of `kernel`",
    ),
    (
        lambda: keras_regkit.regularize(_model(), kernel=L2(), layers=3),
        TypeError,
        r"`layers`.*Received: layers=3",
    ),
    (
        lambda: keras_regkit.regularize(_model(), kernel=L2(), layers=[]),
        ValueError,
        r"`layers`.*non-empty.*Received: layers=\[\]",
    ),
    (
        lambda: keras_regkit.regularize(_model(), kernel=L2(), layers="conv*"),
        ValueError,
        r"'conv\*'.*matches no layer\. Layers available: 'dense'",
    ),
    (
        lambda: keras_regkit.regularize(_model(), rules={"*": L2()}, bias=L1()),
        ValueError,
        r"Pass either `rules`, or penalty arguments",
    ),
    (
        lambda: keras_regkit.regularize(_model(), rules=[("*", L2())]),
        TypeError,
        r"`rules`.*dict",
    ),
    (
        lambda: keras_regkit.regularize(_model(), rules={3: L2()}),
        TypeError,
        r"`rules`.*Received: rules=3",
    ),
    (
        lambda: keras_regkit.regularize(_model(), rules={"*": "lasso"}),
        ValueError,
        r"`rules\['\*'\]`.*Unknown regularizer name: 'lasso'",
    ),
    (
        lambda: keras_regkit.penalties(None),
        TypeError,
        r"`model`.*Received: model=None",
    ),
    (lambda: selectors.walk(3), TypeError, r"`model`.*Received: model=3"),
    (
        lambda: selectors.select(_model(), 3.5),
        TypeError,
        r"`layers`.*Received: layers=3\.5",
    ),
]


def _bad_rates(call, name):
    """Rows for an argument that must be a float in [0, 1)."""
    expected = r"Expected a float in \[0, 1\)\. "
    return [
        (lambda: call(-0.1), ValueError, rf"`{name}`.*Received: {name}=-0\.1"),
        (lambda: call(1.0), ValueError, rf"{expected}Received: {name}=1\.0"),
        (lambda: call(1), ValueError, rf"Received: {name}=1$"),
        (lambda: call(float("nan")), ValueError, rf"Received: {name}=nan"),
        (lambda: call(True), TypeError, rf"`{name}`.*Received: {name}=True"),
        (lambda: call("0.5"), TypeError, rf"Received: {name}='0\.5'"),
        (lambda: call(None), TypeError, rf"Received: {name}=None"),
    ]


def _set_rate(value):
    Dropout(0.5).rate = value


def _bad_seeds(call):
    return [
        (lambda: call(1.5), TypeError, r"`seed`.*Received: seed=1\.5"),
        (lambda: call(-1), ValueError, r"non-negative.*Received: seed=-1"),
        (lambda: call(True), TypeError, r"Received: seed=True"),
        (lambda: call("7"), TypeError, r"Received: seed='7'"),
    ]


ROWS += [
    *_bad_rates(lambda v: Dropout(v), "rate"),
    *_bad_rates(lambda v: DropPath(v), "rate"),
    *_bad_rates(_set_rate, "rate"),
    *_bad_seeds(lambda v: Dropout(0.5, seed=v)),
    *_bad_seeds(lambda v: DropPath(0.5, seed=v)),
    (
        lambda: Dropout(0.5, noise_shape="abc"),
        ValueError,
        r"`noise_shape`.*Received: noise_shape='abc'",
    ),
    (
        lambda: Dropout(0.5, noise_shape="Invalid"),
        ValueError,
        r"`noise_shape`.*Received: noise_shape='Invalid'",
    ),
    (
        lambda: Dropout(0.5, noise_shape=b"ab"),
        ValueError,
        r"Received: noise_shape=b'ab'",
    ),
    (
        lambda: Dropout(0.5, noise_shape=4),
        ValueError,
        r"Received: noise_shape=4",
    ),
    (
        lambda: Dropout(0.5, noise_shape=(None, 0)),
        ValueError,
        r"positive integers.*Received: noise_shape=\(None, 0\)",
    ),
    (
        lambda: Dropout(0.5, noise_shape=(None, 2.0)),
        ValueError,
        r"Received: noise_shape=\(None, 2\.0\)",
    ),
    (
        lambda: Dropout(0.5, noise_shape=(20, 1.5, 10)),
        ValueError,
        r"`noise_shape`.*Received: noise_shape=\(20, 1\.5, 10\)",
    ),
    (
        lambda: Dropout(0.5, noise_shape=[None, True]),
        ValueError,
        r"Received: noise_shape=\[None, True\]",
    ),
    (lambda: Dropout(0.5, mc=1), TypeError, r"`mc`.*bool.*Received: mc=1"),
    (lambda: DropPath(0.5, mc="yes"), TypeError, r"Received: mc='yes'"),
    (
        lambda: DropPath(0.5)(np.float32(1.0)),
        ValueError,
        r"DropPath needs inputs with a batch dimension",
    ),
    *_bad_rates(lambda v: schedules.Constant(v), "rate"),
    *_bad_rates(lambda v: schedules.LinearRamp(v, 0.1, 3), "start"),
    *_bad_rates(lambda v: schedules.LinearRamp(0.1, v, 3), "stop"),
    (
        lambda: schedules.LinearRamp(0.1, 0.2, 0),
        ValueError,
        r"`epochs`.*Received: epochs=0",
    ),
    (
        lambda: schedules.LinearRamp(0.1, 0.2, 2.5),
        TypeError,
        r"Received: epochs=2\.5",
    ),
    *_bad_rates(lambda v: schedules.Curriculum(v, 0.1), "max_rate"),
    *_bad_numbers(
        lambda v: schedules.Curriculum(0.5, v), "gamma", zero_ok=False
    ),
    (
        lambda: DropoutScheduler(0.5),
        TypeError,
        r"`schedule`.*callable.*Received: schedule=0\.5",
    ),
    (
        lambda: DropoutScheduler(lambda e: 0.1, layers=3),
        TypeError,
        r"`layers`.*Received: layers=3",
    ),
    (
        lambda: DropoutScheduler(lambda e: 0.1, verbose=2),
        ValueError,
        r"`verbose`.*Received: verbose=2",
    ),
    (
        lambda: keras_regkit.mc_predict(_model(), np.ones((2, 3))),
        ValueError,
        r"mc_predict needs a model with at least one dropout layer.*has none",
    ),
]


@pytest.mark.parametrize("call, error, pattern", ROWS)
def test_bad_input_raises_a_clear_error(call, error, pattern):
    with pytest.raises(error, match=pattern):
        call()


def _hyper_model(**kwargs):
    from keras_regkit.tuning import RegularizedHyperModel

    return RegularizedHyperModel(_model, **kwargs)


def _tuning():
    from keras_regkit import tuning  # imports keras-tuner

    return tuning


def _hp():
    import keras_tuner

    return keras_tuner.HyperParameters()


def _bad_flags(call, name):
    """Rows for an argument that must be True or False, nothing else."""
    expected = r"Expected a bool \(True or False\)\. "
    return [
        (
            lambda: call("False"),
            TypeError,
            rf"`{name}`.*Received: {name}='False'",
        ),
        (lambda: call(1), TypeError, rf"{expected}Received: {name}=1$"),
        (lambda: call(0), TypeError, rf"Received: {name}=0$"),
        (lambda: call(None), TypeError, rf"Received: {name}=None"),
    ]


def _bad_verbosity(call, top=1):
    """Rows for a `verbose` argument that takes 0 to `top`, nothing else."""
    accepted = "0 or 1" if top == 1 else "0, 1 or 2"
    return [
        (
            lambda: call("loud"),
            ValueError,
            r"`verbose`.*Received: verbose='loud'",
        ),
        (
            lambda: call(top + 1),
            ValueError,
            rf"{accepted}\. Received: verbose={top + 1}",
        ),
        (lambda: call(-1), ValueError, r"Received: verbose=-1"),
        (lambda: call(None), ValueError, r"Received: verbose=None"),
        (lambda: call(True), ValueError, r"Received: verbose=True"),
    ]


def _bad_optional_numbers(call, name):
    """Rows for an argument that is None or a number, never NaN."""
    return [
        (
            lambda: call(float("nan")),
            ValueError,
            rf"`{name}`.*not NaN\. Received: {name}=nan",
        ),
        (
            lambda: call(np.float32("nan")),
            ValueError,
            rf"Received: {name}=.*nan",
        ),
        (lambda: call("1"), TypeError, rf"Received: {name}='1'"),
        (lambda: call(True), TypeError, rf"Received: {name}=True"),
    ]


def _early_stopping(**kwargs):
    from keras_regkit.callbacks import EarlyStopping

    return EarlyStopping(**kwargs)


def _weight_shrinkage(**kwargs):
    from keras_regkit.callbacks import WeightShrinkage

    return WeightShrinkage(**{"method": "scale", **kwargs})


ROWS += [
    # ExpAbs: arguments for which its finiteness promise cannot hold.
    (
        lambda: ExpAbs(0.01, scale=1e-30),
        ValueError,
        r"largest slope.*overflows float32.*Received: strength=0\.01, "
        r"scale=1e-30",
    ),
    (
        lambda: ExpAbs(strength=1e10),
        ValueError,
        r"`strength`.*saturation point.*Received: strength=10000000000\.0",
    ),
    # EarlyStopping: every argument.
    (lambda: _early_stopping(monitor=None), TypeError, r"monitor=None"),
    (
        lambda: _early_stopping(min_delta=float("inf")),
        ValueError,
        r"`min_delta`.*finite number.*Received: min_delta=inf",
    ),
    (lambda: _early_stopping(min_delta=None), TypeError, r"min_delta=None"),
    (lambda: _early_stopping(min_delta="0"), TypeError, r"min_delta='0'"),
    (lambda: _early_stopping(patience=None), TypeError, r"patience=None"),
    (lambda: _early_stopping(patience=True), TypeError, r"patience=True"),
    *_bad_verbosity(lambda v: _early_stopping(verbose=v)),
    (lambda: _early_stopping(mode=None), ValueError, r"`mode`.*mode=None"),
    *_bad_optional_numbers(lambda v: _early_stopping(baseline=v), "baseline"),
    *_bad_flags(
        lambda v: _early_stopping(restore_best_weights=v),
        "restore_best_weights",
    ),
    (
        lambda: _early_stopping(start_from_epoch=1.5),
        TypeError,
        r"start_from_epoch=1\.5",
    ),
    *_bad_flags(lambda v: _early_stopping(check_finite=v), "check_finite"),
    *_bad_optional_numbers(
        lambda v: _early_stopping(stopping_threshold=v), "stopping_threshold"
    ),
    *_bad_optional_numbers(
        lambda v: _early_stopping(divergence_threshold=v),
        "divergence_threshold",
    ),
    *_bad_flags(lambda v: _early_stopping(strict=v), "strict"),
    (
        lambda: _early_stopping(criterion="gl", alpha=float("nan")),
        ValueError,
        r"`alpha`.*Received: alpha=nan",
    ),
    (
        lambda: _early_stopping(criterion="pq", alpha=1.0, strip_length=2.0),
        TypeError,
        r"strip_length=2\.0",
    ),
    (
        lambda: _early_stopping(criterion="pq", alpha=1.0, training_key=None),
        TypeError,
        r"`training_key`.*Received: training_key=None",
    ),
    # WeightShrinkage checks shrink's options when it is built.
    *_bad_flags(lambda v: _weight_shrinkage(bias=v), "bias"),
    *_bad_flags(lambda v: _weight_shrinkage(proximal=v), "proximal"),
    *_bad_verbosity(lambda v: _weight_shrinkage(verbose=v), top=2),
    (
        lambda: _weight_shrinkage(tolerance=float("nan")),
        ValueError,
        r"`tolerance`.*Received: tolerance=nan",
    ),
    (
        lambda: _weight_shrinkage(batch_size=0),
        ValueError,
        r"`batch_size`.*Received: batch_size=0",
    ),
    (
        lambda: _weight_shrinkage(finetune_epochs=True),
        TypeError,
        r"finetune_epochs=True",
    ),
    (
        lambda: _weight_shrinkage(monitor=3),
        TypeError,
        r"`monitor`.*Received: monitor=3",
    ),
    (
        lambda: _weight_shrinkage(levels=[float("nan")]),
        ValueError,
        r"`levels`.*Received: levels=nan",
    ),
    (
        lambda: _weight_shrinkage(validation_data=(1, 2, 3, 4)),
        ValueError,
        r"`validation_data`.*tuple of length 4",
    ),
    (
        lambda: _weight_shrinkage(method="prune", prune_scope=None),
        ValueError,
        r"`prune_scope`.*Received: prune_scope=None",
    ),
    # The keras-tuner integration.
    *_bad_flags(lambda v: _hyper_model(per_layer=v), "per_layer"),
    *_bad_flags(lambda v: _hyper_model(tunable=v), "tunable"),
    (
        lambda: _hyper_model(min_value=float("nan")),
        ValueError,
        r"`min_value`.*Received: min_value=nan",
    ),
    (
        lambda: _hyper_model(early_stopping="yes"),
        TypeError,
        r"`early_stopping`.*Received: early_stopping='yes'",
    ),
    (
        lambda: _hyper_model(shrinkage=3),
        TypeError,
        r"`shrinkage`.*Received: shrinkage=3",
    ),
    (
        lambda: _tuning().hp_dropout(_hp(), step=float("nan")),
        ValueError,
        r"`step`.*Received: step=nan",
    ),
    (
        lambda: _tuning().hp_regularizer(_hp(), max_value=0.0),
        ValueError,
        r"`max_value`.*Received: max_value=0\.0",
    ),
    # Monte-Carlo prediction and the callbacks with few arguments.
    (
        lambda: keras_regkit.mc_predict(_model(), np.ones((2, 3)), samples=0),
        ValueError,
        r"`samples`.*Received: samples=0",
    ),
    (
        lambda: keras_regkit.mc_predict(_model(), np.ones((2, 3)), samples=2.5),
        TypeError,
        r"`samples`.*Received: samples=2\.5",
    ),
    (
        lambda: keras_regkit.mc_predict(
            _model(), np.ones((2, 3)), batch_size=0
        ),
        ValueError,
        r"`batch_size`.*Received: batch_size=0",
    ),
    (
        lambda: keras_regkit.mc_predict(_model(), np.ones((2, 3)), seed=-1),
        ValueError,
        r"`seed`.*Received: seed=-1",
    ),
    (
        lambda: keras_regkit.callbacks.RegularizationMonitor(
            zero_tol=float("nan")
        ),
        ValueError,
        r"`zero_tol`.*Received: zero_tol=nan",
    ),
    (
        lambda: keras_regkit.callbacks.RegularizationMonitor(layers=3),
        TypeError,
        r"`layers`.*Received: layers=3",
    ),
    (
        lambda: keras_regkit.callbacks.ProximalStep(layers=3.0),
        TypeError,
        r"`layers`.*Received: layers=3\.0",
    ),
    (
        lambda: keras_regkit.callbacks.PenaltyScheduler(0.5),
        TypeError,
        r"`schedule`.*Received: schedule=0\.5",
    ),
    (
        lambda: keras_regkit.callbacks.PenaltyScheduler(
            lambda epoch: 1.0, verbose="yes"
        ),
        ValueError,
        r"`verbose`.*Received: verbose='yes'",
    ),
]

ROWS += [
    # prox's step: numpy scalars and arrays are checked as numbers are.
    *_bad_numbers(lambda v: L1(0.1).prox(np.ones(3), v), "step"),
    (
        lambda: L1(0.1).prox(np.ones(3), np.float64(-1.0)),
        ValueError,
        r"`step`.*Received: step=.*-1\.0",
    ),
    (
        lambda: ExpAbs(0.1).prox(np.ones(3), np.float32("nan")),
        ValueError,
        r"`step`.*Received: step=.*nan",
    ),
]

ROWS += [
    # Found by the pass over 486 bad inputs (issue 20).
    (
        lambda: keras_regkit.regularizers.with_strength(None, 0.1),
        TypeError,
        r"`name`.*'l1', 'l2'.*Received: name=None",
    ),
    (
        lambda: keras_regkit.regularizers.with_strength("l2", -1.0),
        ValueError,
        r"`strength`.*Received: strength=-1\.0",
    ),
    (
        lambda: L1(10**400),
        ValueError,
        r"`l1`.*Received: l1=an integer of 1329 bits, too large for a float",
    ),
    (
        lambda: ExpAbs(strength=0.1, scale=-(10**400)),
        ValueError,
        r"`scale`.*too large for a float",
    ),
    (
        lambda: keras_regkit.regularize(
            _model(), kernel={"class_name": "NoSuchPenalty", "config": {}}
        ),
        TypeError,
        r"`kernel`\. Expected the config of a regularizer\. Received: "
        r"kernel=\{'class_name': 'NoSuchPenalty'",
    ),
    (
        lambda: keras_regkit.regularize(_model(), bias=GroupLasso(axis=1)),
        ValueError,
        r"`bias`: GroupLasso\(strength=0\.01, axis=1\) cannot penalise the "
        r"bias of layer 'dense', of shape \(2,\)\. .*axis 1 is out of range",
    ),
    (
        lambda: _tuning().hp_dropout(_hp(), name=""),
        ValueError,
        r"`name`\. Expected a non-empty string\. Received: name=''",
    ),
    (
        lambda: _tuning().hp_dropout(_hp(), name=None),
        TypeError,
        r"`name`.*Received: name=None",
    ),
    (
        lambda: _tuning().hp_regularizer(_hp(), name=""),
        ValueError,
        r"`name`.*Received: name=''",
    ),
]


def test_a_refused_penalty_leaves_the_model_as_it_was():
    model = _model()
    with pytest.raises(ValueError, match="cannot penalise the bias"):
        keras_regkit.regularize(model, kernel=L2(0.1), bias=GroupLasso(axis=1))
    assert model.get_layer("dense").kernel_regularizer is None


def test_keras_config_dicts_are_read_as_keras_reads_them():
    model = keras_regkit.regularize(
        _model(), kernel={"class_name": "L2", "config": {"l2": 0.1}}
    )
    penalty = model.get_layer("dense").kernel.regularizer
    assert isinstance(penalty, keras.regularizers.L2)
    assert float(penalty.l2) == pytest.approx(0.1)
    ours = keras_regkit.regularizers.serialize(L1(0.2))
    assert keras_regkit.regularizers.get(ours) == L1(0.2)
